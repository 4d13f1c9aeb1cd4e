package xen

import (
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/xen/libxcstream"
)

// Route (a), standby side: a pvReplica is a libxl_domain_create_restore
// (checkpointed REMUS stream) reading a pipe, plus the canonical pages the
// engine writes (it reads them back as XOR bases and for digests). Each
// committed epoch (RestoreState) is checked at once and queued for a writer
// goroutine, which encodes it from the pages into the pipe (the first one
// starts the restore); Activate closes the pipe, so libxl builds the domain
// from the last whole checkpoint, then renames it and unpauses it.
//
// A queued checkpoint carries its pages as they were committed, and a page
// that a snapshot may still see is replaced, not overwritten, when the
// engine writes it again (copy on write, per page), so the writer encodes
// each checkpoint as it was committed while the engine goes on
// committing: a restore slower than the checkpoints (the first one is the
// whole guest) neither tears them nor stalls the standby's loop, whose
// heartbeats and acks would stop. (It did, in the lab, when the engine
// waited for the writer: 7 s to feed 192 MiB under load, and the primary
// gave up on its silent standby.)

// replicaBase is the first DomID the Sink hands out for a replica under
// restore: beyond domid_t (16 bits), so never a real domain's.
const replicaBase libxl.DomID = 0x10000

// maxReplicaPages is 16 TiB of guest memory, the most an x86 host of Xen
// 4.17 addresses, so the largest guest a primary can really have.
const maxReplicaPages = 16 << 40 / libxl.PageSize

// restorer is what a pvReplica needs of Xen: a Context (ctxRestorer), or
// a fake libxl in tests.
type restorer interface {
	// CreateRestore runs libxl_domain_create_restore (REMUS) of a domain
	// configured by configJSON, named name, from r, until r ends
	// (Context.DomainCreateRestore); the domain is left paused.
	CreateRestore(configJSON []byte, name string, r *os.File) (libxl.DomID, error)
	Rename(id libxl.DomID, oldName, newName string) error
	Unpause(id libxl.DomID) error
	Destroy(id libxl.DomID) error
	NameToID(name string) (libxl.DomID, error)
}

type pvReplica struct {
	x     restorer
	id    libxl.DomID // synthetic, >= replicaBase
	name  string      // the domain's name once activated
	tmp   string      // its name while restored
	pages uint64
	info  libxl.DomainInfo // the shape it was created with (Describe)

	// mu guards store, gen and cur: WritePages and restoreState hold it,
	// ReadPages read-holds it. store[pfn] is the page (nil: never written,
	// zeros); gen[pfn] the snapshot generation it was allocated in. A page
	// of an older generation than cur may be in a queued checkpoint's
	// snapshot, so it is replaced, never written in place.
	mu    sync.RWMutex
	store [][]byte
	gen   []uint32
	cur   uint32

	// Loop-owned (the engine's one goroutine per replica).
	pending *libxl.Bitmap // pages written since the last checkpoint
	started bool          // a checkpoint with the stream headers was queued
	closed  bool          // activated or destroyed: no more epochs

	endOnce   sync.Once
	jobs      chan replicaJob
	cfg       []byte   // libxl JSON for the restore
	rd        *os.File // the restore's end of the pipe
	w         *os.File
	writeDone chan struct{}
	werr      error // the writer's failure; read after writeDone, or under wmu
	wmu       sync.Mutex

	restoreDone chan struct{}
	domid       libxl.DomID // after restoreDone
	rerr        error       // after restoreDone

	// backlog counts the checkpoints and pages queued for the writer and
	// not yet written into the pipe (what Activate must still feed).
	backlogJobs, backlogPages atomic.Int64
	log                       *slog.Logger // never nil

	// Loop-owned: prepare ran (stages holds its part of the times).
	prepared bool
	stages   activationStages
	tPrep    time.Time
}

// activationStages is where an Activate's time went, stage by stage, as
// the standby's log reports it ("replica activation"): feeding the
// writer's backlog into the pipe, libxl's end of the restore after the
// pipe is closed (libxc applies the last checkpoint and completes the
// stream, libxl builds the devices and runs their hotplug scripts), the
// rename, the unpause.
type activationStages struct {
	backlogJobs, backlogPages int64
	drain, restore, rename    time.Duration
	unpause                   time.Duration
}

type replicaJob struct {
	pfns   []libxl.PFN
	states []libxl.State
	data   [][]byte // pfns' pages as committed (nil: zeros; copy on write)
}

// newReplica starts the restore of a PV replica of info, called id.
func newReplica(x restorer, id libxl.DomID, info libxl.DomainInfo) (*pvReplica, error) {
	if len(info.Config) == 0 {
		return nil, fmt.Errorf("xen: CreateReplica(%q): no libxl configuration in the description", info.Name)
	}
	// The size comes from the primary's HELLO and sizes the arrays below
	// (28 octets a page before any page arrives): refuse what no Xen host
	// holds before allocating for it. The engine has asked RoomFor too.
	if info.Pages == 0 || info.Pages > maxReplicaPages {
		return nil, fmt.Errorf("xen: CreateReplica(%q): %w: %d pages, want 1..%d", info.Name, libxl.ErrRange, info.Pages, uint64(maxReplicaPages))
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("xen: restore pipe: %w", err)
	}
	syscall.Syscall(syscall.SYS_FCNTL, w.Fd(), syscall.F_SETPIPE_SZ, 1<<20)
	rep := &pvReplica{x: x, id: id, name: info.Name, tmp: fmt.Sprintf("%s--kemari-%d-%d", info.Name, os.Getpid(), id-replicaBase),
		pages: info.Pages, info: info, store: make([][]byte, info.Pages), gen: make([]uint32, info.Pages),
		pending: libxl.NewBitmap(info.Pages), jobs: make(chan replicaJob, 1024), w: w,
		writeDone: make(chan struct{}), restoreDone: make(chan struct{}), log: slog.New(slog.DiscardHandler)}
	rep.cfg, rep.rd = info.Config, r
	go rep.write()
	return rep, nil
}

// errNoRestore: the replica ended before its first checkpoint, so no
// restore ever ran.
var errNoRestore = fmt.Errorf("%w: no checkpoint was restored", libxl.ErrBadState)

// startRestore starts libxl's restore, with the first checkpoint: libxl
// must never see a stream that ends before its header (Xen 4.17's
// libxl_domain_create_restore then calls a NULL callback and takes the
// process down).
func (r *pvReplica) startRestore() {
	go func() {
		defer close(r.restoreDone)
		r.domid, r.rerr = r.x.CreateRestore(r.cfg, r.tmp, r.rd)
		r.rd.Close()
	}()
}

// write encodes queued checkpoints into the restore's pipe.
func (r *pvReplica) write() {
	defer close(r.writeDone)
	var enc libxcstream.Encoder
	for j := range r.jobs {
		r.wmu.Lock()
		failed := r.werr != nil
		r.wmu.Unlock()
		if !failed {
			err := enc.WriteCheckpoint(r.w, j.pfns, func(i int) []byte {
				if d := j.data[i]; d != nil {
					return d
				}
				return zeroPage
			}, j.states)
			if err != nil {
				r.wmu.Lock()
				r.werr = fmt.Errorf("xen: replica %q: feeding the restore: %w", r.tmp, err)
				r.wmu.Unlock()
			}
		}
		r.backlogJobs.Add(-1)
		r.backlogPages.Add(-int64(len(j.pfns)))
	}
}

var zeroPage = make([]byte, libxl.PageSize)

// page returns pfn's stored contents (aliased). Callers read-hold mu.
func (r *pvReplica) page(pfn libxl.PFN) []byte {
	if p := r.store[pfn]; p != nil {
		return p
	}
	return zeroPage
}

func (r *pvReplica) check(op string, pfns []libxl.PFN, n int) error {
	if r.closed {
		return fmt.Errorf("xen: %s(%d): %w: the replica was activated or destroyed", op, r.id, libxl.ErrBadState)
	}
	if n < len(pfns)*libxl.PageSize {
		return fmt.Errorf("xen: %s(%d): %d bytes for %d pages: %w", op, r.id, n, len(pfns), libxl.ErrRange)
	}
	for _, p := range pfns {
		if uint64(p) >= r.pages {
			return fmt.Errorf("xen: %s(%d): pfn %d of %d: %w", op, r.id, p, r.pages, libxl.ErrRange)
		}
	}
	return nil
}

func (r *pvReplica) writePages(pfns []libxl.PFN, data []byte) error {
	if err := r.check("WritePages", pfns, len(data)); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, p := range pfns {
		if r.store[p] == nil || r.gen[p] != r.cur {
			r.store[p], r.gen[p] = make([]byte, libxl.PageSize), r.cur
		}
		copy(r.store[p], data[i*libxl.PageSize:])
		r.pending.Set(p)
	}
	return nil
}

func (r *pvReplica) readPages(pfns []libxl.PFN, dst []byte) error {
	if len(dst) < len(pfns)*libxl.PageSize {
		return fmt.Errorf("xen: ReadPages(%d): %d bytes for %d pages: %w", r.id, len(dst), len(pfns), libxl.ErrRange)
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	for i, p := range pfns {
		if uint64(p) >= r.pages {
			return fmt.Errorf("xen: ReadPages(%d): pfn %d of %d: %w", r.id, p, r.pages, libxl.ErrRange)
		}
		copy(dst[i*libxl.PageSize:(i+1)*libxl.PageSize], r.page(p))
	}
	return nil
}

// restoreState queues the committed epoch: the pages written since the
// last one, with its state blobs. It checks the checkpoint first, so an
// epoch it accepts is one the restore can take.
func (r *pvReplica) restoreState(st []libxl.State) error {
	if err := r.check("RestoreState", nil, 0); err != nil {
		return err
	}
	r.wmu.Lock()
	werr := r.werr
	r.wmu.Unlock()
	if werr != nil {
		return werr
	}
	select {
	case <-r.restoreDone:
		return fmt.Errorf("xen: replica %q: the restore ended early: %v", r.tmp, r.rerr)
	default:
	}
	pfns := r.pending.AppendSet(nil)
	if err := libxcstream.Check(pfns, st, r.started); err != nil {
		return fmt.Errorf("xen: RestoreState(%d): %w", r.id, err)
	}
	if !r.started {
		r.startRestore()
	}
	r.started = true
	r.pending.Reset()
	r.mu.Lock()
	data := make([][]byte, len(pfns))
	for i, p := range pfns {
		data[i] = r.store[p]
	}
	r.cur++ // every page now stored may be read by a queued job
	r.mu.Unlock()
	r.backlogJobs.Add(1)
	r.backlogPages.Add(int64(len(pfns)))
	r.jobs <- replicaJob{pfns: pfns, states: slices.Clone(st), data: data}
	return nil
}

// finish closes the stream after the queued checkpoints and waits for the
// restore to build the domain from the last whole one. st, when not nil,
// gets the time of each part.
func (r *pvReplica) finish(st *activationStages) (libxl.DomID, error) {
	r.endOnce.Do(func() {
		t := time.Now()
		if st != nil {
			st.backlogJobs, st.backlogPages = r.backlogJobs.Load(), r.backlogPages.Load()
		}
		close(r.jobs)
		<-r.writeDone
		r.w.Close()
		if st != nil {
			st.drain = time.Since(t)
		}
		if !r.started {
			r.rd.Close()
			r.domid, r.rerr = libxl.DomIDInvalid, errNoRestore
			close(r.restoreDone)
		}
	})
	t := time.Now()
	<-r.restoreDone
	if st != nil {
		st.restore = time.Since(t)
	}
	return r.domid, r.rerr
}

// prepare: the slow part of activate, which runs nothing: end the stream
// and wait for libxl to build the paused domain (ActivationPreparer).
func (r *pvReplica) prepare() error {
	if !r.started {
		return fmt.Errorf("xen: PrepareActivate(%d): %w: no checkpoint restored", r.id, libxl.ErrBadState)
	}
	r.closed = true
	if !r.prepared {
		r.prepared, r.tPrep = true, time.Now()
		r.finish(&r.stages)
	}
	if r.rerr != nil {
		return fmt.Errorf("xen: PrepareActivate(%d): %w", r.id, r.rerr)
	}
	return nil
}

// activate: finish the restore (unless prepare did), name the domain as
// the primary's, unpause. It logs where the time went (activationStages).
func (r *pvReplica) activate() (libxl.DomID, error) {
	if !r.started {
		return libxl.DomIDInvalid, fmt.Errorf("xen: Activate(%d): %w: no checkpoint restored", r.id, libxl.ErrBadState)
	}
	r.closed = true
	st := &r.stages
	wait := time.Duration(0)
	if r.prepared {
		wait = time.Since(r.tPrep) - st.drain - st.restore
	}
	defer func() {
		r.log.Info("replica activation", "replica", r.tmp, "backlog_checkpoints", st.backlogJobs,
			"backlog_pages", st.backlogPages, "drain", st.drain, "restore_end", st.restore,
			"prepared", r.prepared, "waited_after_prepare", wait, "rename", st.rename, "unpause", st.unpause)
	}()
	if !r.prepared {
		r.finish(st)
	}
	id, err := r.domid, r.rerr
	if err != nil {
		return libxl.DomIDInvalid, fmt.Errorf("xen: Activate(%d): %w", r.id, err)
	}
	if r.werr != nil {
		// The restore resumed from an earlier checkpoint than committed.
		r.x.Destroy(id)
		return libxl.DomIDInvalid, fmt.Errorf("xen: Activate(%d): %w", r.id, r.werr)
	}
	t := time.Now()
	if err := r.x.Rename(id, r.tmp, r.name); err != nil {
		return id, fmt.Errorf("xen: Activate(%d): the replica stays paused as %q: %w", r.id, r.tmp, err)
	}
	st.rename = time.Since(t)
	t = time.Now()
	if err := r.x.Unpause(id); err != nil {
		return id, err
	}
	st.unpause = time.Since(t)
	return id, nil
}

// destroy ends the restore and destroys whatever it built.
func (r *pvReplica) destroy() error {
	id, err := r.finish(nil)
	if err != nil {
		// libxl cleaned up a failed restore, unless it got as far as
		// naming the domain.
		if d, lerr := r.x.NameToID(r.tmp); lerr == nil {
			return r.x.Destroy(d)
		}
		return nil
	}
	return r.x.Destroy(id)
}
