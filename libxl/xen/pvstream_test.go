package xen

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/xen/libxcstream"
)

// fakeXC plays xc_domain_save (LIVE, REMUS) as xg_sr_save.c drives its
// callbacks, over a fake guest that writes a few pages whenever it runs
// between two callbacks, so that a pvStream can be driven the way the
// engine drives it without Xen.
type fakeXC struct {
	pages int

	// Faults.
	garbage     bool // a malformed PAGE_DATA after round 0
	failSuspend bool

	mu        sync.Mutex
	mem       [][]byte
	dirty     map[uint64]bool // written since last sent
	gen       int
	suspended bool
	snap      [][]byte // memory when last suspended
	hot       int      // if set, the guest writes only pfns below it (each checkpoint rewrites the last's)
	saveErr   error
	saved     chan struct{}
}

func newFakeXC(pages int) *fakeXC {
	f := &fakeXC{pages: pages, dirty: map[uint64]bool{}, saved: make(chan struct{})}
	for i := range pages {
		f.mem = append(f.mem, bytes.Repeat([]byte{byte(i)}, libxl.PageSize))
	}
	return f
}

// run lets the guest write n pages, if it is not suspended.
func (f *fakeXC) run(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.suspended {
		return
	}
	for range n {
		f.gen++
		p := uint64(f.gen*7+3) % uint64(f.pages)
		if f.hot > 0 {
			p = uint64(f.gen*7+3) % uint64(f.hot)
		}
		binaryFill(f.mem[p], f.gen)
		f.dirty[p] = true
	}
}

func binaryFill(b []byte, v int) {
	for i := range b {
		b[i] = byte(v + i)
	}
}

func (f *fakeXC) SuspendOnly(dom libxl.DomID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failSuspend {
		return errors.New("fake: the guest did not answer")
	}
	if f.suspended {
		return errors.New("fake: already suspended")
	}
	f.suspended = true
	f.snap = nil
	for _, p := range f.mem {
		f.snap = append(f.snap, slices.Clone(p))
	}
	return nil
}

func (f *fakeXC) ResumeCancel(dom libxl.DomID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.suspended {
		return errors.New("fake: not suspended")
	}
	f.suspended = false
	return nil
}

func rec(t libxcstream.RecordType, body []byte) []byte {
	return libxcstream.AppendRecord(nil, libxcstream.Record{Type: t, Body: body})
}

// sendDirty writes the pages written since last sent; pfn 1 is typed as
// a page table, as a PV guest's are.
func (f *fakeXC) sendDirty(w *os.File) error {
	f.mu.Lock()
	var pfns []uint64
	for p := range f.dirty {
		pfns = append(pfns, p)
	}
	slices.Sort(pfns)
	clear(f.dirty)
	var pages []libxcstream.Page
	var data []byte
	for _, p := range pfns {
		typ := libxcstream.PageNormal
		if p == 1 {
			typ = libxcstream.PageL1
		}
		pages = append(pages, libxcstream.Page{PFN: p, Type: typ})
		data = append(data, f.mem[p]...)
	}
	f.mu.Unlock()
	for i := 0; i < len(pages); i += libxcstream.MaxPagesPerRecord {
		j := min(i+libxcstream.MaxPagesPerRecord, len(pages))
		body, err := libxcstream.AppendPageData(nil, pages[i:j], data[i*libxl.PageSize:j*libxl.PageSize])
		if err != nil {
			return err
		}
		if _, err := w.Write(rec(libxcstream.RecPageData, body)); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeXC) SaveRemus(dom libxl.DomID, w *os.File, cb *SaveCallbacks) (err error) {
	defer func() {
		f.mu.Lock()
		f.saveErr = err
		f.mu.Unlock()
		close(f.saved)
	}()
	hdr := libxcstream.Header{Version: 3, Type: libxcstream.DomainX86PV, PageShift: 12, XenMajor: 4, XenMinor: 17}
	if _, err := w.Write(hdr.Append(nil)); err != nil {
		return err
	}
	if _, err := w.Write(rec(libxcstream.RecX86PVInfo, make([]byte, 8))); err != nil {
		return err
	}
	f.mu.Lock()
	for p := range f.pages {
		f.dirty[uint64(p)] = true
	}
	f.mu.Unlock()
	// send_memory_live
	it, count := 0, int64(f.pages)
	for x := 0; ; {
		cont := cb.Precopy(it, count)
		x++
		if count > 0 {
			if err := f.sendDirty(w); err != nil {
				return err
			}
			if f.garbage && x == 1 {
				w.Write(rec(libxcstream.RecPageData, []byte{1, 2, 3}))
			}
		}
		if !cont {
			break
		}
		it = x
		if !cb.Precopy(it, -1) {
			break
		}
		f.run(5) // the guest ran during the round
		f.mu.Lock()
		count = int64(len(f.dirty))
		f.mu.Unlock()
	}
	for {
		f.run(3)
		if err := cb.Suspend(); err != nil {
			return err
		}
		f.mu.Lock()
		susp := f.suspended
		f.mu.Unlock()
		if !susp {
			return errors.New("fake: domain has not been suspended")
		}
		if err := f.sendDirty(w); err != nil {
			return err
		}
		vcpu := make([]byte, 16)
		for _, r := range [][]byte{rec(libxcstream.RecX86PVVCPUBasic, vcpu), rec(libxcstream.RecSharedInfo, make([]byte, 8)),
			rec(libxcstream.RecCheckpoint, nil)} {
			if _, err := w.Write(r); err != nil {
				return err
			}
		}
		if err := cb.Postcopy(); err != nil {
			return err
		}
		if !cb.Checkpoint() {
			return nil
		}
	}
}

// replica is what a standby would hold: the latest copy of every page.
type replica map[libxl.PFN][]byte

func (r replica) apply(pfns []libxl.PFN, data []byte) {
	for i, p := range pfns {
		r[p] = slices.Clone(data[i*libxl.PageSize : (i+1)*libxl.PageSize])
	}
}

func (r replica) equal(mem [][]byte) error {
	for p, m := range mem {
		got, ok := r[libxl.PFN(p)]
		if !ok {
			return fmt.Errorf("pfn %d never shipped", p)
		}
		if !bytes.Equal(got, m) {
			return fmt.Errorf("pfn %d differs from the guest's at the checkpoint", p)
		}
	}
	return nil
}

func readAll(t *testing.T, s *pvStream, bm *libxl.Bitmap, extra []libxl.PFN) ([]libxl.PFN, []byte) {
	t.Helper()
	bm.Reset()
	if err := s.readAndClear(bm); err != nil {
		t.Fatalf("ReadAndClearDirty: %v", err)
	}
	pfns := bm.AppendSet(nil)
	for _, p := range extra {
		if !bm.Test(p) {
			pfns = append(pfns, p)
		}
	}
	data := make([]byte, len(pfns)*libxl.PageSize)
	if err := s.readPages(pfns, data); err != nil {
		t.Fatalf("ReadPages: %v", err)
	}
	return pfns, data
}

// TestPVStreamAsTheEngineDrivesIt: pre-copy rounds, then checkpoints, as
// checkpoint.Primary calls a libxl.StreamCapture Source; the pages shipped
// rebuild the guest's memory at every checkpoint, the state blobs make
// checkpoints the restore's encoder takes, and ending the stream ends
// libxc's save cleanly.
func TestPVStreamAsTheEngineDrivesIt(t *testing.T) {
	const pages = 1500 // two PAGE_DATA records in round 0
	f := newFakeXC(pages)
	s, err := startStream(f, 7, pages)
	if err != nil {
		t.Fatal(err)
	}
	rep := replica{}
	bm := libxl.NewBitmap(pages)
	var extra []libxl.PFN
	for round := range 4 {
		pfns, data := readAll(t, s, bm, nil)
		if round == 0 && len(pfns) != pages {
			t.Fatalf("round 0: %d pages, want all %d", len(pfns), pages)
		}
		if round == 3 {
			extra = pfns // the engine stops: these go with the checkpoint
			break
		}
		rep.apply(pfns, data)
	}
	if err := s.readAndClear(libxl.NewBitmap(pages - 1)); !errors.Is(err, libxl.ErrRange) {
		t.Errorf("short bitmap: %v, want ErrRange", err)
	}
	if _, err := s.captureState(nil); !errors.Is(err, libxl.ErrBadState) {
		t.Errorf("CaptureState while running: %v, want ErrBadState", err)
	}
	var all []libxl.PFN
	for k := range rep {
		all = append(all, k)
	}
	for ck := 1; ck <= 5; ck++ {
		if err := s.suspend(); err != nil {
			t.Fatalf("checkpoint %d: Suspend: %v", ck, err)
		}
		if err := s.suspend(); !errors.Is(err, libxl.ErrBadState) {
			t.Errorf("Suspend twice: %v, want ErrBadState", err)
		}
		pfns, data := readAll(t, s, bm, extra)
		extra = nil
		rep.apply(pfns, data)
		// The contract: a suspended guest writes nothing, so reading the
		// log again before Resume finds it empty (and must not wait for a
		// checkpoint libxc will not send until the guest resumes).
		again := libxl.NewBitmap(pages)
		if err := s.readAndClear(again); err != nil || again.Count() != 0 {
			t.Errorf("checkpoint %d: second read while suspended = %v, %v; want empty, nil", ck, again, err)
		}
		states, err := s.captureState(nil)
		if err != nil {
			t.Fatalf("checkpoint %d: CaptureState: %v", ck, err)
		}
		if _, err := s.captureState(nil); !errors.Is(err, libxl.ErrBadState) {
			t.Errorf("checkpoint %d: CaptureState twice: %v, want ErrBadState", ck, err)
		}
		// The standby's first checkpoint carries every page written to
		// the replica since the sync began; later ones their own.
		ship := pfns
		if ck == 1 {
			for _, p := range pfns {
				if !slices.Contains(all, p) {
					all = append(all, p)
				}
			}
			ship = all
		}
		if err := libxcstream.Check(ship, states, ck > 1); err != nil {
			t.Errorf("checkpoint %d: the restore would refuse it: %v", ck, err)
		}
		f.mu.Lock()
		err = rep.equal(f.snap)
		f.mu.Unlock()
		if err != nil {
			t.Errorf("checkpoint %d (%d pages): %v", ck, len(pfns), err)
		}
		if err := s.resume(); err != nil {
			t.Fatalf("checkpoint %d: Resume: %v", ck, err)
		}
		if err := s.readAndClear(bm); !errors.Is(err, libxl.ErrBadState) {
			t.Errorf("pre-copy read after the first checkpoint: %v, want ErrBadState", err)
		}
	}
	s.end()
	<-f.saved
	if f.saveErr != nil {
		t.Errorf("the save ended with %v, want a clean stop", f.saveErr)
	}
	if err := s.suspend(); !errors.Is(err, ErrStream) {
		t.Errorf("Suspend after the end: %v, want ErrStream", err)
	}
}

// TestPVStreamEnds: the stream can be ended at any point of the engine's
// cycle, and never leaves the guest suspended.
func TestPVStreamEnds(t *testing.T) {
	for _, at := range []string{"start", "pre-copy", "suspended", "captured", "between"} {
		t.Run(at, func(t *testing.T) {
			f := newFakeXC(64)
			s, err := startStream(f, 7, 64)
			if err != nil {
				t.Fatal(err)
			}
			bm := libxl.NewBitmap(64)
			step := func(name string, fn func() error) bool {
				if at == name {
					return false
				}
				if err := fn(); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				return true
			}
			_ = step("start", func() error { return nil }) &&
				step("pre-copy", func() error { return s.readAndClear(bm) }) &&
				step("suspended", s.suspend) &&
				step("captured", func() error {
					if err := s.readAndClear(bm); err != nil {
						return err
					}
					_, err := s.captureState(nil)
					return err
				}) &&
				step("between", s.resume)
			s.end()
			<-f.saved
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.suspended {
				t.Error("the guest was left suspended")
			}
		})
	}
}

// TestPVStreamFailures: a stream the reader cannot parse, or a guest that
// does not suspend, fails the engine's calls with an error (ErrStream once
// broken) and still lets libxc finish, so nothing hangs.
func TestPVStreamFailures(t *testing.T) {
	t.Run("garbage", func(t *testing.T) {
		f := newFakeXC(64)
		f.garbage = true
		s, _ := startStream(f, 7, 64)
		bm := libxl.NewBitmap(64)
		err := s.readAndClear(bm)
		if err == nil {
			err = s.readAndClear(bm)
		}
		if !errors.Is(err, ErrStream) {
			t.Errorf("ReadAndClearDirty over a malformed stream: %v, want ErrStream", err)
		}
		<-f.saved
		s.end()
	})
	t.Run("suspend", func(t *testing.T) {
		f := newFakeXC(64)
		f.failSuspend = true
		s, _ := startStream(f, 7, 64)
		bm := libxl.NewBitmap(64)
		if err := s.readAndClear(bm); err != nil {
			t.Fatal(err)
		}
		if err := s.suspend(); err == nil {
			t.Fatal("Suspend of a guest that does not answer succeeded")
		}
		<-f.saved
		if err := s.suspend(); !errors.Is(err, ErrStream) {
			t.Errorf("Suspend after a failed one: %v, want ErrStream", err)
		}
		s.end()
		if f.suspended {
			t.Error("guest left suspended")
		}
	})
}
