package xen

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/xen/libxcstream"
)

// Route (a), primary side: a pvStream runs xc_domain_save of one PV domain
// into a pipe for as long as the engine keeps the domain's log-dirty mode
// on, and maps the engine's calls (libxl.StreamCapture) onto libxc's
// callbacks:
//
//	engine                      save thread (xc_domain_save)      reader
//	SetLogDirty(true)   ──start──> headers, round 0 (all pages) ───> Capture
//	                               precopy_policy(i, -1): write a round-end
//	                               marker, wait for the engine    ─> rounds++
//	ReadAndClearDirty   ──continue (2nd call on)─> round i ...
//	  (waits for the marker; returns the pages read since the last call)
//	Suspend             ──stop / next checkpoint─> suspend callback: waits
//	  DomainSuspendOnly ──ok──> libxc sends the last pages, the state
//	                            records and CHECKPOINT ───────────> Capture done
//	Resume (waits for postcopy: all of it is in the pipe)
//	  DomainResume      ──ok──> postcopy returns; checkpoint callback waits
//	ReadAndClearDirty     (waits for the CHECKPOINT; the checkpoint's pages)
//	ReadPages, CaptureState (from the complete Capture)
//	SetLogDirty(false)  ──end──> checkpoint callback returns 0
//
// The reader drains the pipe into the Capture on its own goroutine, always
// (after a parse error into io.Discard). The pipe holds pipeBytes, so
// libxc writes a checkpoint of up to that many bytes without waiting for
// the reader, and the guest resumes as soon as libxc is done with it; the
// engine reads the checkpoint afterwards (ReadAndClearDirty may follow
// Resume). (The engine may also read it before Resume, as the contract
// suite does.)

// pipeBytes is the save pipe's capacity: 4,096 dirty pages a checkpoint
// (the lab guest's p90 is 2,900). While the reader lags (the initial
// sync's first pass) the pipe is full: this much dom0 kernel memory per
// protected domain.
const pipeBytes = 16 << 20

// ErrStream: the domain's save stream broke or ended; the engine must
// start a new one (a full sync).
var ErrStream = errors.New("xen: capture stream broken")

// errStreamStopped is a callback's answer when the engine stops the
// stream or failed its part: libxc then aborts the save.
var errStreamStopped = errors.New("xen: capture stream stopped")

// saver is what a pvStream needs of Xen: a Context (ctxSaver), or a fake
// libxc in tests.
type saver interface {
	// SaveRemus runs xc_domain_save (LIVE, REMUS) of dom into w with cb
	// (Context.DomainSaveRemus).
	SaveRemus(dom libxl.DomID, w *os.File, cb *SaveCallbacks) error
	// SuspendOnly suspends dom (libxl_domain_suspend_only).
	SuspendOnly(dom libxl.DomID) error
	// ResumeCancel resumes dom with suspend-cancel (libxl_domain_resume).
	ResumeCancel(dom libxl.DomID) error
}

// saveWait is the libxc callback the save thread is blocked in.
type saveWait int

const (
	waitNone       saveWait = iota
	waitPolicy              // precopy_policy after a round: another round, or stop and copy
	waitSuspend             // suspend: the engine suspends the guest
	waitPostcopy            // postcopy: the engine resumes the guest
	waitCheckpoint          // checkpoint: another checkpoint, or end
)

// saveAnswer is the engine's answer to a waiting callback.
type saveAnswer int

const (
	ansNone saveAnswer = iota
	ansGo              // go on: another round, the guest is suspended/resumed, another checkpoint
	ansStop            // stop and copy, or end the stream, or the engine's call failed
)

// pvStream is route (a)'s capture of one PV domain.
type pvStream struct {
	x     saver
	dom   libxl.DomID
	pages uint64
	r, w  *os.File

	mu   sync.Mutex
	cond sync.Cond
	// Protected by mu.
	cur       *libxcstream.Capture   // being filled by the reader
	full      []*libxcstream.Capture // complete checkpoints not yet handed out
	ck        *libxcstream.Capture   // the checkpoint handed out, until the next one
	fresh     *libxl.Bitmap          // pfns read since the last ReadAndClearDirty
	rounds    int                    // round-end markers read
	handed    int                    // pre-copy rounds handed to the engine
	precopy   bool                   // the first checkpoint's live rounds go on
	wait      saveWait
	answer    saveAnswer
	suspended bool // by the engine's Suspend, until its Resume
	owed      bool // a checkpoint was taken that ReadAndClearDirty has not handed out
	captured  bool // CaptureState taken for ck
	stopping  bool
	err       error // first failure of the save, the reader or the pipe
	saveDone  chan struct{}
	readDone  chan struct{}
}

// startStream starts xc_domain_save of dom, a domain of the given number
// of pages, into a new pipe and its reader.
func startStream(x saver, dom libxl.DomID, pages uint64) (*pvStream, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("xen: save pipe: %w", err)
	}
	// A pipe that holds a whole checkpoint lets libxc write it without
	// waiting for the reader, so the guest resumes as soon as libxc is
	// done; the kernel allocates its pages only as they fill. Root may
	// exceed fs.pipe-max-size; if not, 1 MiB still saves context switches.
	for _, size := range []int{pipeBytes, 1 << 20} {
		if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, w.Fd(), syscall.F_SETPIPE_SZ, uintptr(size)); e == 0 {
			break
		}
	}
	s := &pvStream{x: x, dom: dom, pages: pages, r: r, w: w, cur: libxcstream.NewCapture(),
		fresh: libxl.NewBitmap(pages), precopy: true, saveDone: make(chan struct{}), readDone: make(chan struct{})}
	s.cond.L = &s.mu
	go s.save()
	go s.read()
	return s, nil
}

// fail records the stream's first failure and wakes every waiter.
// Callers hold mu.
func (s *pvStream) fail(err error) {
	if s.err == nil {
		s.err = fmt.Errorf("%w: domain %d: %w", ErrStream, s.dom, err)
	}
	s.cond.Broadcast()
}

// save runs xc_domain_save until the stream ends.
func (s *pvStream) save() {
	defer close(s.saveDone)
	err := s.x.SaveRemus(s.dom, s.w, &SaveCallbacks{
		Precopy:    s.precopyPolicy,
		Suspend:    func() error { return s.await(waitSuspend) },
		Postcopy:   func() error { return s.await(waitPostcopy) },
		Checkpoint: func() bool { return s.await(waitCheckpoint) == nil },
	})
	s.w.Close()
	s.mu.Lock()
	if err == nil {
		err = errors.New("the save ended")
	}
	s.fail(err)
	s.mu.Unlock()
}

// precopyPolicy is libxc's precopy_policy. It is called before each live
// round with the round's dirty count, and after each round with -1; only
// the latter is a decision point (the round is whole in the pipe).
func (s *pvStream) precopyPolicy(iteration int, dirty int64) bool {
	if dirty != -1 {
		return true
	}
	if _, err := s.w.Write(libxcstream.AppendRecord(nil, libxcstream.Record{Type: libxcstream.RecKemariRoundEnd})); err != nil {
		s.mu.Lock()
		s.fail(fmt.Errorf("round-end marker: %w", err))
		s.mu.Unlock()
		return false
	}
	return s.await(waitPolicy) == nil
}

// await blocks the save thread in callback w until the engine answers;
// nil means go on.
func (s *pvStream) await(w saveWait) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wait, s.answer = w, ansNone
	s.cond.Broadcast()
	for s.answer == ansNone && s.err == nil && !s.stopping {
		s.cond.Wait()
	}
	a := s.answer
	s.wait, s.answer = waitNone, ansNone
	s.cond.Broadcast()
	if a != ansGo {
		return errStreamStopped
	}
	return nil
}

// waitFor blocks the engine until the save thread waits in one of ws and
// has no answer yet, and returns which. Callers hold mu.
func (s *pvStream) waitFor(ws ...saveWait) (saveWait, error) {
	for {
		if s.err != nil {
			return waitNone, s.err
		}
		if s.answer == ansNone {
			for _, w := range ws {
				if s.wait == w {
					return w, nil
				}
			}
		}
		s.cond.Wait()
	}
}

// tell answers the waiting callback. Callers hold mu.
func (s *pvStream) tell(a saveAnswer) {
	s.answer = a
	s.cond.Broadcast()
}

// read parses the pipe into captures until it ends, then drains it.
func (s *pvStream) read() {
	defer close(s.readDone)
	defer s.r.Close()
	err := s.parse()
	s.mu.Lock()
	s.fail(err)
	s.mu.Unlock()
	// Whatever went wrong, libxc must never block on a full pipe.
	io.Copy(io.Discard, s.r)
}

func (s *pvStream) parse() error {
	rd := libxcstream.NewReader(s.r)
	hdr, err := rd.ReadHeader()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.cur.SetHeader(hdr)
	s.mu.Unlock()
	for {
		rec, err := rd.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("the save stream ended")
			}
			return err
		}
		var pd libxcstream.PageData
		switch rec.Type {
		case libxcstream.RecKemariRoundEnd:
			s.mu.Lock()
			s.rounds++
			s.cond.Broadcast()
			s.mu.Unlock()
			continue
		case libxcstream.RecPageData:
			if pd, err = libxcstream.ParsePageData(rec.Body); err != nil {
				return err
			}
		}
		s.mu.Lock()
		for _, p := range pd.Pages {
			if p.PFN >= s.pages {
				s.mu.Unlock()
				return fmt.Errorf("pfn %d beyond the domain's %d pages", p.PFN, s.pages)
			}
			s.fresh.Set(libxl.PFN(p.PFN))
		}
		done, err := s.cur.Add(rec)
		if done {
			s.full = append(s.full, s.cur)
			s.cur = libxcstream.NewCapture()
			s.cond.Broadcast()
		}
		s.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// readAndClear implements Source.ReadAndClearDirty: on a running domain
// one pre-copy round, on a suspended one the checkpoint just taken (and,
// read again before Resume, nothing: a suspended guest writes nothing).
func (s *pvStream) readAndClear(dst *libxl.Bitmap) error {
	if dst.Len() < s.pages {
		return fmt.Errorf("xen: ReadAndClearDirty(%d): bitmap of %d bits for %d pages: %w", s.dom, dst.Len(), s.pages, libxl.ErrRange)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.suspended || s.owed {
		// The checkpoint of the last suspension, before or after Resume:
		// libxc wrote it whole while the guest was suspended. A second
		// read finds nothing new (libxc waits for the next checkpoint).
		if s.owed {
			for len(s.full) == 0 {
				if s.err != nil {
					return s.err
				}
				s.cond.Wait()
			}
			s.ck, s.full = s.full[0], s.full[1:]
			s.captured, s.precopy, s.owed = false, false, false
		}
	} else {
		if !s.precopy {
			return fmt.Errorf("xen: ReadAndClearDirty(%d): %w: a running domain's pre-copy rounds end with the stream's first checkpoint", s.dom, libxl.ErrBadState)
		}
		if s.handed > 0 {
			// libxc waits after round handed-1: ask for another.
			if _, err := s.waitFor(waitPolicy); err != nil {
				return err
			}
			s.tell(ansGo)
		}
		for s.rounds <= s.handed {
			if s.err != nil {
				return s.err
			}
			s.cond.Wait()
		}
		s.handed++
	}
	dst.Or(s.fresh)
	s.fresh.Reset()
	return nil
}

// suspend implements Source.Suspend: it lets libxc on to its suspend
// callback, suspends the guest, and lets libxc send the checkpoint.
func (s *pvStream) suspend() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.suspended {
		return fmt.Errorf("xen: Suspend(%d): %w: already suspended", s.dom, libxl.ErrBadState)
	}
	w, err := s.waitFor(waitPolicy, waitCheckpoint)
	if err != nil {
		return err
	}
	if w == waitPolicy {
		s.tell(ansStop) // stop and copy: the first checkpoint
	} else {
		s.tell(ansGo) // another checkpoint
	}
	if _, err := s.waitFor(waitSuspend); err != nil {
		return err
	}
	s.mu.Unlock()
	err = s.x.SuspendOnly(s.dom)
	s.mu.Lock()
	if err != nil {
		s.tell(ansStop) // libxc aborts the stream; the guest runs on
		return err
	}
	// The last checkpoint was readable until now (libxl.StreamCapture);
	// this suspension's comes with its ReadAndClearDirty.
	s.suspended, s.owed, s.ck = true, true, nil
	s.tell(ansGo)
	return nil
}

// readPages implements Source.ReadPages from the capture: during pre-copy
// the stream's first, still open; after it the last checkpoint handed out,
// suspended or resumed (libxl.StreamCapture).
func (s *pvStream) readPages(pfns []libxl.PFN, dst []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.cur
	if !s.precopy {
		c = s.ck
	}
	if c == nil {
		return fmt.Errorf("xen: ReadPages(%d): %w: no checkpoint read yet", s.dom, libxl.ErrBadState)
	}
	for i, p := range pfns {
		if !c.ReadPage(uint64(p), dst[i*libxl.PageSize:]) {
			return fmt.Errorf("xen: ReadPages(%d): pfn %d is not in the stream's capture: %w", s.dom, p, libxl.ErrRange)
		}
	}
	return nil
}

// captureState implements Source.CaptureState: the checkpoint's records,
// once.
func (s *pvStream) captureState(dst []libxl.State) ([]libxl.State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.ck == nil:
		return dst, fmt.Errorf("xen: CaptureState(%d): %w: no checkpoint taken", s.dom, libxl.ErrBadState)
	case s.captured:
		return dst, fmt.Errorf("xen: CaptureState(%d): %w: the checkpoint's state was already taken", s.dom, libxl.ErrBadState)
	}
	s.captured = true
	return s.ck.AppendStates(dst), nil
}

// resume implements Source.Resume: libxc has written the checkpoint and
// waits in postcopy; the guest runs again, and libxc waits for the next
// checkpoint. A broken stream still resumes the guest.
func (s *pvStream) resume() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.suspended {
		return fmt.Errorf("xen: Resume(%d): %w: not suspended", s.dom, libxl.ErrBadState)
	}
	_, serr := s.waitFor(waitPostcopy)
	s.mu.Unlock()
	err := s.x.ResumeCancel(s.dom)
	s.mu.Lock()
	if err != nil {
		if serr == nil {
			s.tell(ansStop)
		}
		return err
	}
	s.suspended = false // ck stays readable until the next checkpoint
	if serr == nil {
		s.tell(ansGo)
	}
	return nil
}

// end stops the stream and waits for the save and the reader. A guest the
// stream left suspended is resumed.
func (s *pvStream) end() { s.stop(true) }

// gone stops the stream of a domain that no longer exists, which there is
// no resuming.
//
//lint:ignore U1000 called by the cgo backend (hypervisor.go, build tag xen)
func (s *pvStream) gone() { s.stop(false) }

func (s *pvStream) stop(resume bool) {
	s.mu.Lock()
	s.stopping = true
	s.cond.Broadcast()
	susp := s.suspended
	s.suspended = false
	s.mu.Unlock()
	if susp && resume {
		s.x.ResumeCancel(s.dom)
	}
	<-s.saveDone
	<-s.readDone
}
