package checkpoint_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/xl-kemari/xl-kemari/checkpoint"
	"github.com/xl-kemari/xl-kemari/checkpoint/epoch"
	"github.com/xl-kemari/xl-kemari/checkpoint/wire"
	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/sim"
)

// streamTag marks the blob the fake stream backend adds to every capture:
// which stream, and which checkpoint of it, the state belongs to.
const streamTag = 0x57ea

// streamLog collects what the fake backends saw break the
// libxl.StreamCapture rules, from both sides.
type streamLog struct {
	mu         sync.Mutex
	violations []string
	streams    int // streams started on the source
	replicas   int // replicas created on the sink
	live       int // replicas on the sink now
	maxLive    int // the most replicas the sink held at once
	restored   int // checkpoints restored
}

func (l *streamLog) violate(format string, args ...any) {
	l.mu.Lock()
	l.violations = append(l.violations, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

// streamHV is a sim backend that claims to capture its domains as a
// stream (libxl.StreamCapture) and checks that the engine drives it as
// the contract says a stream must be driven: a new stream per
// SetLogDirty(true), exactly one CaptureState per checkpoint after its
// ReadPages, and on the sink every checkpoint of one stream, in order and
// with no gap, starting from the stream's first, into a replica no other
// stream has fed. A resync would break the last rule: it ships a later
// checkpoint of an old stream, or a new stream's, into a replica the
// standby already holds.
type streamHV struct {
	*sim.Hypervisor
	on  bool // StreamCaptured's answer
	log *streamLog

	mu        sync.Mutex
	stream    uint64 // source: current stream, 0 none
	next      uint64 // source: the next stream's number
	seq       uint64 // source: checkpoints of the current stream
	suspended bool
	read      bool // ReadPages since Suspend
	captures  int  // CaptureState calls since Suspend
	// The last checkpoint, copied when ReadAndClearDirty returned it while
	// suspended, as a real stream's is: readable after Resume too, until
	// the next Suspend. The guest's memory runs on meanwhile, so an engine
	// that read live memory after Resume would ship pages of the wrong
	// moment, and the replica's digest would not match.
	snap      bool
	onSuspend func(stream uint64) // if set, called before each Suspend
	owed      *libxl.Bitmap       // the dirty set of a checkpoint taken at Resume, until read
	snapPages []byte
	snapState []libxl.State
	replicas  map[libxl.DomID]*replicaFeed
}

type replicaFeed struct{ stream, seq uint64 }

func newStreamHV(on bool, log *streamLog, first uint64) *streamHV {
	h, _ := sim.New(nil)
	return &streamHV{Hypervisor: h, on: on, log: log, next: first, replicas: map[libxl.DomID]*replicaFeed{}}
}

func (f *streamHV) StreamCaptured(t libxl.DomainType) bool { return f.on && t == libxl.TypePVH }

func (f *streamHV) SetLogDirty(dom libxl.DomID, on bool) error {
	if err := f.Hypervisor.SetLogDirty(dom, on); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.snap && f.captures != 1 {
		f.log.violate("a checkpoint ended with %d CaptureState calls", f.captures)
	}
	f.snap, f.captures = false, 0 // a stream's end ends its checkpoint
	if on {
		f.stream, f.seq = f.next, 0
		f.next++
		f.log.mu.Lock()
		f.log.streams++
		f.log.mu.Unlock()
	} else {
		f.stream = 0
	}
	return nil
}

func (f *streamHV) Suspend(dom libxl.DomID) error {
	f.mu.Lock()
	hook, stream := f.onSuspend, f.stream
	f.mu.Unlock()
	if hook != nil {
		hook(stream)
	}
	if err := f.Hypervisor.Suspend(dom); err != nil {
		return err
	}
	f.mu.Lock()
	if f.snap && f.captures != 1 {
		f.log.violate("a checkpoint ended with %d CaptureState calls", f.captures)
	}
	f.suspended, f.read, f.captures, f.snap, f.owed = true, false, 0, false, nil
	f.mu.Unlock()
	return nil
}

func (f *streamHV) ReadAndClearDirty(dom libxl.DomID, dst *libxl.Bitmap) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.owed != nil {
		// The checkpoint taken while suspended, read after Resume.
		dst.Or(f.owed)
		f.owed = nil
		return nil
	}
	if err := f.Hypervisor.ReadAndClearDirty(dom, dst); err != nil {
		return err
	}
	if !f.suspended {
		return nil // a pre-copy round: live pages, read at once
	}
	return f.snapshot(dom)
}

// snapshot copies the suspended guest as the stream's checkpoint. Callers
// hold mu.
func (f *streamHV) snapshot(dom libxl.DomID) error {
	info, err := f.Hypervisor.Describe(dom)
	if err != nil {
		return err
	}
	all := make([]libxl.PFN, info.Pages)
	for i := range all {
		all[i] = libxl.PFN(i)
	}
	f.snapPages = make([]byte, info.Pages*libxl.PageSize)
	if err := f.Hypervisor.ReadPages(dom, all, f.snapPages); err != nil {
		return err
	}
	if f.snapState, err = f.Hypervisor.CaptureState(dom, nil); err != nil {
		return err
	}
	f.snap = true
	return nil
}

func (f *streamHV) ReadPages(dom libxl.DomID, pfns []libxl.PFN, dst []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.captures > 0 {
		f.log.violate("ReadPages after the checkpoint's CaptureState")
	}
	f.read = true
	if !f.snap {
		return f.Hypervisor.ReadPages(dom, pfns, dst)
	}
	for i, q := range pfns {
		copy(dst[i*libxl.PageSize:(i+1)*libxl.PageSize], f.snapPages[int(q)*libxl.PageSize:])
	}
	return nil
}

func (f *streamHV) CaptureState(dom libxl.DomID, dst []libxl.State) ([]libxl.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.snap {
		f.log.violate("CaptureState without a checkpoint")
		return dst, libxl.ErrBadState
	}
	dst = append(dst, f.snapState...)
	f.captures++
	switch {
	case f.captures > 1:
		f.log.violate("CaptureState called %d times in one checkpoint", f.captures)
	case !f.read:
		f.log.violate("CaptureState before the checkpoint's ReadPages")
	case f.stream == 0:
		f.log.violate("CaptureState outside a stream (log-dirty off)")
	}
	f.seq++
	tag := binary.LittleEndian.AppendUint64(nil, f.stream)
	tag = binary.LittleEndian.AppendUint64(tag, f.seq)
	return append(dst, libxl.State{Kind: libxl.StatePlatform, Index: streamTag, Data: tag}), nil
}

func (f *streamHV) Resume(dom libxl.DomID) error {
	f.mu.Lock()
	if f.suspended && !f.snap && f.stream != 0 {
		// As xc_domain_save does, the checkpoint was written while the
		// guest was suspended, whether or not the engine read it yet.
		info, err := f.Hypervisor.Describe(dom)
		if err == nil {
			f.owed = libxl.NewBitmap(info.Pages)
			err = f.Hypervisor.ReadAndClearDirty(dom, f.owed)
		}
		if err == nil {
			err = f.snapshot(dom)
		}
		if err != nil {
			f.mu.Unlock()
			return err
		}
	}
	f.suspended = false
	f.mu.Unlock()
	return f.Hypervisor.Resume(dom)
}

func (f *streamHV) CreateReplica(info libxl.DomainInfo) (libxl.DomID, error) {
	dom, err := f.Hypervisor.CreateReplica(info)
	if err != nil {
		return dom, err
	}
	f.mu.Lock()
	f.replicas[dom] = &replicaFeed{}
	f.mu.Unlock()
	f.log.mu.Lock()
	f.log.replicas++
	f.log.live++
	f.log.maxLive = max(f.log.maxLive, f.log.live)
	f.log.mu.Unlock()
	return dom, nil
}

func (f *streamHV) Destroy(dom libxl.DomID) error {
	f.mu.Lock()
	_, ok := f.replicas[dom]
	delete(f.replicas, dom)
	f.mu.Unlock()
	if ok {
		f.log.mu.Lock()
		f.log.live--
		f.log.mu.Unlock()
	}
	return f.Hypervisor.Destroy(dom)
}

func (f *streamHV) RestoreState(dom libxl.DomID, st []libxl.State) error {
	var rest []libxl.State
	var stream, seq uint64
	tags := 0
	for _, s := range st {
		if s.Kind == libxl.StatePlatform && s.Index == streamTag && len(s.Data) == 16 {
			stream, seq = binary.LittleEndian.Uint64(s.Data), binary.LittleEndian.Uint64(s.Data[8:])
			tags++
			continue
		}
		rest = append(rest, s)
	}
	f.mu.Lock()
	r := f.replicas[dom]
	switch {
	case !f.on:
	case tags != 1:
		f.log.violate("replica %d: epoch with %d stream captures", dom, tags)
	case r == nil:
		f.log.violate("replica %d: state for a replica never created", dom)
	case r.stream == 0 && seq != 1:
		f.log.violate("replica %d: first state is checkpoint %d of stream %d, not its first (a resync)", dom, seq, stream)
	case r.stream != 0 && stream != r.stream:
		f.log.violate("replica %d of stream %d fed stream %d (a resync)", dom, r.stream, stream)
	case r.stream != 0 && seq != r.seq+1:
		f.log.violate("replica %d: checkpoint %d of stream %d after %d (a gap)", dom, seq, stream, r.seq)
	}
	if r != nil {
		r.stream, r.seq = stream, seq
	}
	f.mu.Unlock()
	f.log.mu.Lock()
	f.log.restored++
	f.log.mu.Unlock()
	return f.Hypervisor.RestoreState(dom, rest)
}

// cutter keeps the primary's live connections so a test can break them.
type cutter struct {
	mu    sync.Mutex
	conns []checkpoint.Conn
}

func (c *cutter) wrap(cn checkpoint.Conn) checkpoint.Conn {
	c.mu.Lock()
	c.conns = append(c.conns, cn)
	c.mu.Unlock()
	return cn
}

func (c *cutter) cut() {
	c.mu.Lock()
	for _, cn := range c.conns {
		cn.Close()
	}
	c.conns = nil
	c.mu.Unlock()
}

// runStreamCluster protects a sim guest whose backend says (on) or does
// not say its capture is a stream, breaks the replication connection
// cuts times, each once the domain is protected again, and stops.
// streamRig is a primary and a standby host with the fake stream backend,
// a guest on the primary, and a transport whose connections a test can cut.
type streamRig struct {
	log    *streamLog
	hp, hs *streamHV
	dom    libxl.DomID
	ecfg   epoch.Config
	net    *checkpoint.PipeNetwork
	cut    *cutter
}

func newStreamRig(t *testing.T, on bool, seed uint64) *streamRig {
	r := &streamRig{log: &streamLog{}, cut: &cutter{}, net: checkpoint.NewPipeNetwork(),
		ecfg: epoch.Config{Mode: epoch.ModeEpoch, Interval: epoch.Duration(20 * time.Millisecond),
			Timeout: epoch.Duration(200 * time.Millisecond), Reprotect: true}}
	r.hp, r.hs = newStreamHV(on, r.log, 1), newStreamHV(on, r.log, 1)
	t.Cleanup(func() {
		r.hp.DestroyAll()
		r.hs.DestroyAll()
		r.hp.Close()
		r.hs.Close()
	})
	var err error
	r.dom, err = r.hp.CreateDomain(sim.DomainConfig{Name: "g", Pages: 256, Workload: sim.WorkloadUniform,
		Rate: 2000, Seed: seed, Quantum: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r.net.Wrap = r.cut.wrap
	return r
}

func runStreamCluster(t *testing.T, on bool, cuts int) *streamLog {
	r := newStreamRig(t, on, 3)
	log, hp, hs, dom, ecfg, net, cut := r.log, r.hp, r.hs, r.dom, r.ecfg, r.net, r.cut
	protected := make(chan struct{}, 16)
	committed := make(chan struct{}, 1)
	var commitsMu sync.Mutex
	commits := 0
	p, err := checkpoint.NewPrimary(checkpoint.PrimaryConfig{Epoch: ecfg, Domain: dom, Codec: wire.CodecLZ4,
		SyncStopPages: 16, Observer: func(o checkpoint.Observation) {
			if o.Kind == checkpoint.ObsState && o.State == "protected" {
				protected <- struct{}{}
			}
		}}, hp, net, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := checkpoint.NewStandby(checkpoint.StandbyConfig{Epoch: ecfg, Observer: func(o checkpoint.Observation) {
		if o.Kind == checkpoint.ObsCommit {
			select {
			case committed <- struct{}{}:
			default:
			}
			commitsMu.Lock()
			commits++
			commitsMu.Unlock()
		}
	}}, hs, net, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pdone := make(chan error, 1)
	go func() { pdone <- p.Run(ctx) }()
	go s.Run(ctx)
	for i := 0; i <= cuts; i++ {
		<-protected
		commitsMu.Lock()
		before := commits
		commitsMu.Unlock()
		// A checkpoint must commit on this connection before the next
		// cut; the bubble's clock bounds the wait.
		deadline := time.After(2 * time.Second)
		for done := false; !done; {
			select {
			case <-committed:
				commitsMu.Lock()
				done = commits > before
				commitsMu.Unlock()
			case <-deadline:
				t.Fatalf("connection %d: no checkpoint committed while protected", i+1)
			}
		}
		if i < cuts {
			cut.cut()
		}
	}
	p.Stop()
	if err := <-pdone; err != nil {
		t.Fatalf("primary: %v", err)
	}
	if st := s.Status(); st.State == "active" {
		t.Fatalf("the standby took over: %+v", st)
	}
	return log
}

// TestStreamCaptureNeverResyncs: a backend whose capture is a stream gets
// a full sync into a fresh replica on every reconnection, and exactly one
// CaptureState per checkpoint, each reaching the replica in order.
func TestStreamCaptureNeverResyncs(t *testing.T) {
	const cuts = 3
	synctest.Test(t, func(t *testing.T) {
		log := runStreamCluster(t, true, cuts)
		for _, v := range log.violations {
			t.Error(v)
		}
		if log.streams != cuts+1 || log.replicas != cuts+1 {
			t.Errorf("%d streams into %d replicas for %d connections; want one fresh stream and replica each",
				log.streams, log.replicas, cuts+1)
		}
		if log.restored == 0 {
			t.Error("no checkpoint restored")
		}
	})
}

// TestStreamCaptureControl runs the same cuts with a plain backend: the
// engine resynchronises the replica it holds, which shows the cuts above
// can reach the resync path that a stream must never take. Where a cut
// lands decides whether the standby resynchronises or rebuilds (both are
// legitimate; under -race a schedule rebuilt on every reconnection), so
// the test asserts the invariant, not a count: never more than one replica
// of the session at once.
func TestStreamCaptureControl(t *testing.T) {
	const cuts = 3
	synctest.Test(t, func(t *testing.T) {
		log := runStreamCluster(t, false, cuts)
		if log.maxLive > 1 {
			t.Errorf("plain backend: %d replicas of the session at once; want at most 1", log.maxLive)
		}
		t.Logf("%d replicas for %d connections", log.replicas, cuts+1)
	})
}

// TestStreamFallbackOnDeathDuringRebuild: the connection breaks, the
// primary rebuilds the stream-fed replica with a full sync, and dies just
// before that sync's checkpoint. The standby must resume the replica it
// held before the break (its fallback, at the last epoch it acknowledged,
// which covers every output the primary released), not lose the guest.
func TestStreamFallbackOnDeathDuringRebuild(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { runFallback(t, true) })
}

// TestStreamFallbackNoRoom: a sink without room for a second replica
// (libxl.ReplicaRoom) gets the replica rebuilt in place, as before the
// fallback existed: the same death then leaves nothing to resume.
func TestStreamFallbackNoRoom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { runFallback(t, false) })
}

// noRoomHV is a stream sink whose host has room for one replica only.
type noRoomHV struct{ *streamHV }

func (h noRoomHV) RoomFor(info libxl.DomainInfo) error {
	if len(h.Domains()) == 0 {
		return nil
	}
	return fmt.Errorf("no room for %q", info.Name)
}

func runFallback(t *testing.T, room bool) {
	r := newStreamRig(t, true, 5)
	log, hp, hs, dom, ecfg, net, cut := r.log, r.hp, r.hs, r.dom, r.ecfg, r.net, r.cut
	pctx, kill := context.WithCancel(context.Background())
	defer kill()
	acked := make(chan uint64, 64)
	p, err := checkpoint.NewPrimary(checkpoint.PrimaryConfig{Epoch: ecfg, Domain: dom, Codec: wire.CodecLZ4,
		SyncStopPages: 16, Observer: func(o checkpoint.Observation) {
			if o.Kind == checkpoint.ObsRelease {
				select {
				case acked <- o.Epoch:
				default:
				}
			}
		}}, hp, net, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var sink libxl.Sink = hs
	if !room {
		sink = noRoomHV{hs}
	}
	var activated []checkpoint.Observation
	var obsMu sync.Mutex
	s, err := checkpoint.NewStandby(checkpoint.StandbyConfig{Epoch: ecfg, Verify: true, Observer: func(o checkpoint.Observation) {
		if o.Kind == checkpoint.ObsActivate {
			obsMu.Lock()
			activated = append(activated, o)
			obsMu.Unlock()
		}
	}}, sink, net, nil)
	if err != nil {
		t.Fatal(err)
	}
	pdone := make(chan error, 1)
	go func() { pdone <- p.Run(pctx) }()
	sdone := make(chan error, 1)
	sctx, scancel := context.WithCancel(context.Background())
	defer scancel()
	go func() { sdone <- s.Run(sctx) }()

	// A few acknowledged checkpoints on the first stream.
	for n := 0; n < 3; n++ {
		select {
		case <-acked:
		case <-time.After(5 * time.Second):
			t.Fatal("no checkpoint acknowledged on the first connection")
		}
	}
	// The second stream (the rebuild) never reaches its checkpoint:
	// the primary dies as it suspends the guest for it.
	hp.mu.Lock()
	hp.onSuspend = func(stream uint64) {
		if stream >= 2 {
			kill()
			cut.cut()
		}
	}
	hp.mu.Unlock()
	cut.cut()
	if err := <-pdone; err != nil && err != context.Canceled {
		t.Logf("primary: %v", err)
	}
	released := p.Status().Epoch // the primary released output through this epoch at most
	if !room {
		// Rebuilt in place: after the timeout the standby has nothing
		// to resume and waits for a primary.
		for deadline := time.After(10 * time.Second); s.Status().State != "waiting"; {
			select {
			case err := <-sdone:
				t.Fatalf("standby ended: %v (%+v)", err, s.Status())
			case <-deadline:
				t.Fatalf("standby %+v, want waiting", s.Status())
			case <-time.After(50 * time.Millisecond): // the bubble's clock
			}
		}
		if doms := hs.Domains(); len(doms) != 0 {
			t.Fatalf("standby host holds %v with no replica to resume", doms)
		}
		scancel()
		<-sdone
		return
	}
	select {
	case err := <-sdone:
		if err != nil {
			t.Fatalf("standby: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the standby did not take over: %+v", s.Status())
	}
	st := s.Status()
	if st.State != "active" || st.ActivatedEpoch < released || st.ActivatedEpoch == 0 {
		t.Fatalf("standby %s at epoch %d; the primary had released output through epoch %d", st.State, st.ActivatedEpoch, released)
	}
	obsMu.Lock()
	defer obsMu.Unlock()
	if len(activated) != 1 || activated[0].Msg != "verified" {
		t.Fatalf("activation: %+v, want one, its memory verified against the committed digest", activated)
	}
	if log.streams < 2 || log.replicas < 2 {
		t.Fatalf("%d streams, %d replicas: the rebuild did not start", log.streams, log.replicas)
	}
	if doms := hs.Domains(); len(doms) != 1 {
		t.Fatalf("standby host holds %d domains after the failover (%v), want the activated one only", len(doms), doms)
	}
	for _, v := range log.violations {
		t.Error(v)
	}
}
