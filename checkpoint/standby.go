package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/xl-kemari/xl-kemari/arbiter"
	"github.com/xl-kemari/xl-kemari/checkpoint/epoch"
	"github.com/xl-kemari/xl-kemari/checkpoint/wire"
	"github.com/xl-kemari/xl-kemari/diskbuf"
	"github.com/xl-kemari/xl-kemari/libxl"
)

// StandbyConfig configures a Standby.
type StandbyConfig struct {
	Epoch epoch.Config
	// DiskMode is how the domain's disks are protected.
	DiskMode diskbuf.Mode
	// Disks opens the backing stores for a replica of info (this host's
	// copies in replicate mode, the shared disks in shared mode).
	Disks func(info libxl.DomainInfo) ([]diskbuf.Store, error)
	// OnActivate, if set, runs after the replica was activated (address
	// announcements, status files); on the loop goroutine.
	OnActivate func(dom libxl.DomID, info libxl.DomainInfo)
	// Once: serve one protection session, then return (xl-kemari receive).
	Once bool
	// AnswerTakenOver: once the replica is activated, Run does not return
	// but keeps the listener and answers every primary that connects for
	// this domain with TAKEN_OVER (protocol §7.7), until ctx ends (then it
	// returns nil). Without it Run returns at the activation and later
	// primaries find nobody listening (a caller that routes connections
	// itself answers them with AnswerTakenOver).
	AnswerTakenOver bool
	// Verify recomputes the replica's memory digest from its pages before
	// activating it and reports whether it equals the last committed
	// epoch's (costs one pass over guest memory on the failover path).
	Verify bool
	// Limits bound what a primary may make this standby hold
	// (docs/protocol.md §9); zero fields take their defaults.
	Limits   StandbyLimits
	Logger   *slog.Logger
	Observer func(Observation)
	// AdoptTimeout: no timeout was configured here; the one the primary
	// announces (a TIMEOUT record, docs/protocol.md §5.13) replaces
	// Epoch.Timeout.
	AdoptTimeout bool
}

// Standby holds the replica of one protected domain and takes over when
// the primary dies.
type Standby struct {
	cfg  StandbyConfig
	sink libxl.Sink
	ln   Listener
	arb  arbiter.Arbiter
	log  *slog.Logger

	m      *epoch.Standby
	t0     time.Time
	events chan sevent
	done   chan struct{}
	status statusBox

	// Owned by the loop goroutine.
	conn     *sconn
	gen      uint64
	session  [16]byte
	info     libxl.DomainInfo
	replica  libxl.DomID
	has      bool // a replica exists
	disk     *diskbuf.Replica
	digest   *memDigest
	fb       *fallbackReplica // the previous replica while a new one is built
	memDisks bool             // cfg.Disks is the default: fresh stores per replica
	stage    stagedEpoch
	budget   epochBudget // what one epoch of s.info may stage
	// sessionErr is why the current session failed (a bad frame, a
	// limit, a commit), nil while it is well; a one-shot standby with
	// nothing to hold returns it.
	sessionErr error
	rate       rateWindow
	commits    uint64
	discarded  uint64
	promoteC   chan struct{}
	lostAt     time.Time
	activated  libxl.DomID
	lastPages  int
	mode       diskbuf.Mode
	waitLapsed context.CancelFunc // ends the ActWaitLapsed under way, if any
	watchStop  context.CancelFunc // ends the lease watch (watchLease), if any
	watchFor   [16]byte           // the session watched
	wg         sync.WaitGroup     // every goroutine started
	decodeBuf  []byte
	pfnBuf     []libxl.PFN
}

// fallbackReplica is a retired replica kept, whole, at its last committed
// epoch while the primary rebuilds the replica from a full sync (protocol
// §7.4): if the primary dies before the new one commits, the standby
// resumes this one.
type fallbackReplica struct {
	replica libxl.DomID
	disk    *diskbuf.Replica
	digest  *memDigest
	epoch   uint64
}

// stagedEpoch is the epoch under reception.
type stagedEpoch struct {
	open    bool // between EPOCH_BEGIN and EPOCH_END
	epoch   uint64
	initial bool
	index   map[libxl.PFN]int // pfn → page slot in data
	pfns    []libxl.PFN
	data    []byte
	states  []libxl.State
	digest  stagedDigest
	use     epochUse
}

func (s *stagedEpoch) reset(e uint64, initial bool, base *memDigest) {
	s.epoch, s.initial, s.open = e, initial, false
	if s.index == nil {
		s.index = map[libxl.PFN]int{}
	}
	clear(s.index)
	s.pfns, s.data, s.states = s.pfns[:0], s.data[:0], s.states[:0]
	s.use = epochUse{}
	s.digest.reset(base)
}

func (s *stagedEpoch) put(p libxl.PFN, page []byte) {
	if i, ok := s.index[p]; ok {
		copy(s.data[i*libxl.PageSize:], page)
	} else {
		s.index[p] = len(s.pfns)
		s.pfns = append(s.pfns, p)
		s.data = append(s.data, page...)
	}
	s.digest.put(p, page)
}

type sevent struct {
	gen  uint64
	conn *sconn
	rec  wire.Record
	err  error
	ev   epoch.Event // arbiter answers
	ack  chan struct{}
}

// NewStandby builds a standby driver that accepts primaries on ln.
func NewStandby(cfg StandbyConfig, sink libxl.Sink, ln Listener, arb arbiter.Arbiter) (*Standby, error) {
	if err := cfg.Epoch.Validate(); err != nil {
		return nil, err
	}
	if arb == nil {
		arb = arbiter.None{}
	}
	cfg.Epoch.Arbiter = arb.Configured()
	_, leases := arb.(arbiter.Leaser)
	cfg.Epoch.Lease = leases && cfg.Epoch.Arbiter
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	memDisks := cfg.Disks == nil
	if memDisks {
		cfg.Disks = func(info libxl.DomainInfo) ([]diskbuf.Store, error) {
			var st []diskbuf.Store
			for _, d := range info.Disks {
				st = append(st, diskbuf.NewMemStore(int64(d.Sectors)*diskbuf.SectorSize))
			}
			return st, nil
		}
	}
	s := &Standby{cfg: cfg, sink: sink, ln: ln, arb: arb, log: cfg.Logger, m: epoch.NewStandby(cfg.Epoch), memDisks: memDisks,
		events: make(chan sevent, 16), done: make(chan struct{}), promoteC: make(chan struct{}, 1)}
	s.status.update(func(st *Status) { st.Role = "standby"; st.Peer = ln.String(); st.State = "waiting" })
	s.initStandbyTimeout()
	return s, nil
}

// Status returns a snapshot. Safe from any goroutine.
func (s *Standby) Status() Status { return s.status.get() }

// Promote asks for a failover by hand (`xl kemari failover`); it is
// honoured only with a complete checkpoint, and goes through the arbiter.
func (s *Standby) Promote() {
	select {
	case s.promoteC <- struct{}{}:
	default:
	}
}

// Activated returns the replica's DomID once it runs here.
func (s *Standby) Activated() (libxl.DomID, bool) {
	st := s.status.get()
	return s.activated, st.State == "active"
}

func (s *Standby) now() epoch.Duration { return epoch.Duration(time.Since(s.t0)) }

func (s *Standby) post(e sevent) bool {
	select {
	case s.events <- e:
		return true
	case <-s.done:
		return false
	}
}

// Run serves primaries until ctx ends, the replica is activated (returns
// nil; the guest runs on), or, with Once, the session ends.
func (s *Standby) Run(ctx context.Context) error {
	s.t0 = time.Now()
	defer s.wg.Wait()
	defer close(s.done)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			if !s.post(sevent{conn: &sconn{c: c}}) {
				c.Close()
				return
			}
		}
	}()
	defer func() {
		if s.watchStop != nil {
			s.watchStop()
		}
		s.stopWaitLapsed()
		s.ln.Close()
		if s.conn != nil {
			// Write what is queued first (the answer to a GOODBYE, a
			// refusal), then close; closeGrace bounds a peer that does
			// not read. Closing at once lost the answer to the goodbye of
			// a one-shot standby's primary, whose stop then waited out its
			// whole timeout and ended as a standby loss.
			s.conn.hangUp()
		}
		if s.has && s.m.State() != epoch.SActive {
			s.sink.Destroy(s.replica)
		}
		s.dropFallback()
	}()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		switch st := s.m.State(); {
		case st == epoch.SActive && s.cfg.AnswerTakenOver:
			return s.answerAfterActivation(ctx)
		case st == epoch.SActive:
			return nil
		case st == epoch.SDenied:
			return fmt.Errorf("checkpoint: the arbiter kept the domain on the primary")
		case s.cfg.Once && st == epoch.SStopped:
			return nil
		case s.cfg.Once && s.sessionErr != nil && s.conn == nil && s.nothingHeld():
			// The session failed and left nothing worth waiting for the
			// primary's return with: end, as an error (issue 12).
			return fmt.Errorf("%w: %w", ErrSession, s.sessionErr)
		}
		if d := s.m.Deadline(); d >= 0 {
			timer.Reset(time.Duration(d - s.now()))
		} else {
			timer.Reset(time.Hour)
		}
		var acts []epoch.Action
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			acts = s.m.Step(epoch.Event{Kind: epoch.EvTick, Now: s.now()})
		case <-s.promoteC:
			acts = s.m.Step(epoch.Event{Kind: epoch.EvPromote, Now: s.now()})
		case e := <-s.events:
			var err error
			acts, err = s.handle(e)
			if e.ack != nil {
				close(e.ack)
			}
			if err != nil {
				return err
			}
		}
		if err := s.apply(ctx, acts); err != nil {
			return err
		}
		s.watchLease(ctx)
	}
}

// watchLease keeps, while the standby holds a checkpoint it could resume,
// one WaitLapsed on the primary's lease running (looked at again a
// quarter of the timeout after each return): file: judges a lease lapsed
// by how long its observer has seen it unchanged, so an observer that
// looks only once the primary is gone would wait a whole ttl more before
// taking over from a dead host. It decides nothing itself.
func (s *Standby) watchLease(ctx context.Context) {
	l, ok := s.arb.(arbiter.Leaser)
	if !ok || !s.cfg.Epoch.Lease {
		return
	}
	switch st := s.m.State(); {
	case st == epoch.SReady || st == epoch.SArbitrating || st == epoch.SSyncing && s.m.Fallback() != 0:
		if s.watchStop != nil && s.watchFor == s.session {
			return
		}
	default:
		if s.watchStop != nil {
			s.watchStop()
			s.watchStop = nil
		}
		return
	}
	if s.watchStop != nil {
		s.watchStop()
	}
	wctx, cancel := context.WithCancel(ctx)
	s.watchStop, s.watchFor = cancel, s.session
	sess, pause := s.session, time.Duration(s.cfg.Epoch.Timeout)/4
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			l.WaitLapsed(wctx, sess, arbiter.Primary)
			select {
			case <-time.After(pause):
			case <-wctx.Done():
				return
			case <-s.done:
				return
			}
		}
	}()
}

// handle turns one input into machine events, doing the staging work
// records carry.
func (s *Standby) handle(e sevent) ([]epoch.Action, error) {
	now := s.now()
	switch {
	case e.conn != nil && e.rec == nil && e.err == nil:
		// A new connection: it replaces the current one (a primary that
		// reconnected before we noticed its old stream broke).
		if s.conn != nil {
			s.conn.c.Close()
			acts := s.m.Step(epoch.Event{Kind: epoch.EvDisconnected, Now: now})
			if err := s.apply(context.Background(), acts); err != nil {
				return nil, err
			}
		}
		s.stopWaitLapsed() // a primary is back: its lease is not the question now
		s.gen++
		e.conn.gen = s.gen
		s.conn = e.conn
		s.sessionErr = nil
		e.conn.q = make(chan wire.Record, 1024)
		e.conn.fin = make(chan struct{})
		s.wg.Add(2)
		go func() { defer s.wg.Done(); e.conn.write(s) }()
		go func() { defer s.wg.Done(); e.conn.read(s) }()
		return nil, nil
	case e.ev.Kind != 0:
		return s.m.Step(epoch.Event{Kind: e.ev.Kind, Now: now}), nil
	}
	if s.conn == nil || e.gen != s.conn.gen {
		return nil, nil // from a replaced connection
	}
	if e.err != nil {
		var fe *wire.FrameError
		if errors.As(e.err, &fe) {
			// Fatal to the stream (protocol §4.2), whatever the machine's
			// state: the reader stopped at it.
			return s.fail(fmt.Errorf("bad frame from primary: %w", e.err), now), nil
		}
		s.log.Info("primary connection closed", "err", e.err)
		if !s.conn.hello {
			// Nothing of this session was taken: for a one-shot standby
			// the session is over, and it failed.
			s.sessionErr = fmt.Errorf("%w: stream ended before its HELLO: %w", ErrPeer, e.err)
		}
		s.conn.c.Close()
		s.conn = nil
		return s.m.Step(epoch.Event{Kind: epoch.EvDisconnected, Now: now}), nil
	}
	var out []epoch.Action
	out = append(out, s.m.Step(epoch.Event{Kind: epoch.EvFrame, Now: now})...)
	switch r := e.rec.(type) {
	case *wire.Hello:
		return s.hello(r, now)
	case *wire.EpochBegin:
		initial := r.Flags&wire.EpochInitial != 0
		s.stage.reset(r.Epoch, initial, s.digest)
		if s.disk != nil {
			s.disk.Discard()
		}
		acts := s.destroyNow(s.m.Step(epoch.Event{Kind: epoch.EvEpochBegin, Epoch: r.Epoch, Initial: initial,
			Resync: r.Flags&wire.EpochResync != 0, Now: now}))
		if slices.ContainsFunc(acts, func(a epoch.Action) bool { return a.Kind == epoch.ActDisconnect }) {
			// Refused (out of order): nothing to build or stage for it.
			return append(out, acts...), nil
		}
		if err := s.ensureReplica(); err != nil {
			return append(append(out, acts...), s.fail(err, now)...), nil
		}
		s.stage.reset(r.Epoch, initial, s.digest)
		s.stage.open = true
		return append(out, acts...), nil
	case *wire.Pages, *wire.State, *wire.Disk:
		if !s.has || !s.stage.open {
			return append(out, s.fail(fmt.Errorf("%w: %s outside an epoch", ErrPeer, r.Type()), now)...), nil
		}
		// Charged before it is staged: nothing beyond the budget is
		// ever allocated (protocol §9).
		if err := s.stage.use.charge(s.budget, s.stage.epoch, e.rec); err != nil {
			return append(out, s.fail(err, now)...), nil
		}
		if err := s.stageRecord(e.rec); err != nil {
			return append(out, s.fail(fmt.Errorf("epoch %d: %s: %w", s.stage.epoch, r.Type(), err), now)...), nil
		}
	case *wire.EpochEnd:
		want := s.stage.digest.sum()
		if s.stage.initial {
			want = s.digest.sum // applied directly
		}
		ok := r.MemDigest == want
		if !ok {
			s.log.Warn("epoch memory digest mismatch: discarding", "epoch", r.Epoch,
				"primary", fmt.Sprintf("%016x", r.MemDigest), "replica", fmt.Sprintf("%016x", s.stage.digest.sum()))
		}
		return append(out, s.m.Step(epoch.Event{Kind: epoch.EvEpochEnd, Epoch: r.Epoch, Verified: ok, Initial: s.stage.initial && r.Epoch == 0, Now: now})...), nil
	case *wire.Heartbeat:
		if s.disk != nil {
			s.disk.Flushed(r.Flushed)
		}
	case *wire.Timeout:
		s.adoptTimeout(r, now)
	case *wire.Goodbye:
		s.conn.send(&wire.Goodbye{Code: wire.GoodbyeStop, Message: "replica discarded"})
		return append(out, s.m.Step(epoch.Event{Kind: epoch.EvGoodbye, Now: now})...), nil
	default:
		return append(out, s.fail(fmt.Errorf("%w: unexpected %s record", ErrPeer, r.Type()), now)...), nil
	}
	return out, nil
}

// stageRecord stages a PAGES, STATE or DISK record of the open epoch.
func (s *Standby) stageRecord(rec wire.Record) error {
	switch r := rec.(type) {
	case *wire.Pages:
		return s.stagePages(r)
	case *wire.State:
		s.stage.states = append(s.stage.states, libxl.State{Kind: libxl.StateKind(r.Kind), Index: r.Index, Data: append([]byte(nil), r.Data...)})
	case *wire.Disk:
		if s.disk == nil {
			return fmt.Errorf("%w: no disks", ErrPeer)
		}
		return s.disk.Stage(diskbuf.Write{Disk: r.Disk, Sector: r.Sector, Data: r.Data})
	}
	return nil
}

// fail ends the session on err: reported, the machine discards what is
// staged, and the stream is dropped even where the machine had no
// connection to drop (a bad frame before the HELLO).
func (s *Standby) fail(err error, now epoch.Duration) []epoch.Action {
	s.log.Warn("session failed", "epoch", s.stage.epoch, "err", err)
	s.observe(Observation{Kind: ObsError, Epoch: s.stage.epoch, Msg: err.Error()})
	s.sessionErr = err
	var acts []epoch.Action
	for _, a := range s.m.Step(epoch.Event{Kind: epoch.EvStreamError, Now: now}) {
		if a.Kind != epoch.ActNack {
			acts = append(acts, a)
		} else if s.conn != nil {
			// The driver knows better than the machine's "malformed
			// frame" what went wrong: say it, with the NACK code of a
			// limit (could not stage) where it is one.
			code := wire.NackUnspecified
			if errors.Is(err, ErrLimit) {
				code = wire.NackApply
			}
			s.conn.send(&wire.Nack{Epoch: a.Epoch, Code: code, Message: truncate(err.Error(), wire.MaxString)})
		}
	}
	return append(acts, epoch.Action{Kind: epoch.ActDisconnect, Reason: err.Error()})
}

// nothingHeld reports whether the standby holds no checkpoint to resume:
// no replica, or one still syncing (a reconnect rebuilds it) with no
// fallback.
func (s *Standby) nothingHeld() bool {
	switch s.m.State() {
	case epoch.SWaiting:
		return true
	case epoch.SSyncing:
		return s.m.Fallback() == 0
	}
	return false
}

func (s *Standby) hello(h *wire.Hello, now epoch.Duration) ([]epoch.Action, error) {
	if h.Role != wire.RolePrimary {
		return s.fail(fmt.Errorf("%w: HELLO role %d is not a primary's", ErrPeer, h.Role), now), nil
	}
	// Before the machine hears of it: a HELLO this standby cannot hold
	// must cost nothing, neither an allocation nor the replica it holds.
	if err := s.cfg.Limits.checkDomain(fromDesc(h.Domain)); err != nil {
		s.refuse(h, err)
		return s.fail(err, now), nil
	}
	// Only a complete checkpoint of the same session is worth resuming
	// from (protocol §7.4); anything else is rebuilt by an initial sync.
	//
	// A replica fed by a stream capture (libxl.StreamCapture) cannot take
	// a second stream: every connection rebuilds it from a full sync.
	same := s.has && h.Session == s.session && s.m.State() == epoch.SReady && !s.streamed(fromDesc(h.Domain).Type)
	// Otherwise, while the session is the same the primary has held its
	// output since our last ack, so the replica we hold stays as the
	// fallback until the rebuilt one commits (protocol §7.4), provided
	// the rebuild cannot touch its disks.
	retire := h.Session == s.session && s.disksPerReplica()
	if retire && !same && s.has && s.m.State() == epoch.SReady {
		if r, ok := s.sink.(libxl.ReplicaRoom); ok {
			if err := r.RoomFor(s.info); err != nil {
				s.log.Warn("no room to keep the replica while the primary rebuilds it; rebuilding without a fallback", "err", err)
				retire = false
			}
		}
	}
	acts := s.destroyNow(s.m.Step(epoch.Event{Kind: epoch.EvHello, HasReplica: same, Retire: retire, Now: now}))
	if s.m.State() != epoch.SSyncing && s.m.State() != epoch.SReady {
		return acts, nil
	}
	if !same {
		s.destroyReplica()
		s.info, s.session = fromDesc(h.Domain), h.Session
		s.mode = diskbuf.Replicate
		if h.Flags&wire.HelloSharedDisk != 0 {
			s.mode = diskbuf.Shared
		}
		if s.mode != s.cfg.DiskMode && len(s.info.Disks) > 0 {
			s.log.Warn("disk mode differs from the primary's; using the primary's", "primary", s.mode, "here", s.cfg.DiskMode)
		}
		s.status.update(func(st *Status) { st.Domain = s.info.Name })
	}
	if err := s.ensureReplica(); err != nil {
		s.refuse(h, err)
		return append(acts, s.fail(err, now)...), nil
	}
	s.conn.hello = true
	reply := &wire.Hello{Version: wire.Version, Role: wire.RoleStandby, Session: s.session,
		Domain: toDesc(s.info), Codec: h.Codec, Inflight: h.Inflight, Committed: s.m.Committed(), MemDigest: s.digest.sum,
		Flags: wire.HelloFences}
	s.conn.send(reply)
	return acts, nil
}

// refuse answers a HELLO this standby will not serve: a HELLO (nothing
// held for it), since a GOODBYE may only follow one (protocol §5.12), and
// a GOODBYE saying why.
func (s *Standby) refuse(h *wire.Hello, err error) {
	s.conn.send(&wire.Hello{Version: wire.Version, Role: wire.RoleStandby, Session: h.Session, Domain: h.Domain,
		Codec: h.Codec, Inflight: max(h.Inflight, 1)})
	s.conn.send(&wire.Goodbye{Code: wire.GoodbyeIncompatible, Message: truncate(err.Error(), wire.MaxString)})
}

// truncate cuts msg to at most n octets.
func truncate(msg string, n int) string {
	if len(msg) > n {
		return msg[:n]
	}
	return msg
}

// destroyNow carries out the ActDestroyReplica and ActRetire actions of
// acts at once, before the caller builds the next replica, and returns the
// others: left in, apply would destroy or retire the new replica too.
func (s *Standby) destroyNow(acts []epoch.Action) []epoch.Action {
	out := acts[:0:0]
	for _, a := range acts {
		switch a.Kind {
		case epoch.ActDestroyReplica:
			s.destroyReplica()
		case epoch.ActRetire:
			s.retire(a.Epoch)
		default:
			out = append(out, a)
		}
	}
	return out
}

// disksPerReplica reports whether building a new replica leaves the
// current one's disks alone: it has none, they are shared storage that a
// sync does not write, or each replica gets fresh stores.
func (s *Standby) disksPerReplica() bool {
	return len(s.info.Disks) == 0 || s.mode == diskbuf.Shared || s.memDisks
}

// retire sets the replica aside as the fallback at committed epoch e.
func (s *Standby) retire(e uint64) {
	if !s.has {
		return
	}
	s.dropFallback()
	s.fb = &fallbackReplica{replica: s.replica, disk: s.disk, digest: s.digest, epoch: e}
	s.has, s.disk, s.digest = false, nil, nil
	s.log.Info("replica kept as the fallback while the primary rebuilds it", "epoch", e)
	s.status.update(func(st *Status) { st.FallbackEpoch = e })
}

// dropFallback destroys the fallback replica, if any.
func (s *Standby) dropFallback() {
	if s.fb == nil {
		return
	}
	if err := s.sink.Destroy(s.fb.replica); err != nil {
		s.log.Warn("destroy fallback replica", "err", err)
	}
	s.fb = nil
	s.status.update(func(st *Status) { st.FallbackEpoch = 0 })
}

// useFallback gives up the replica being built; the fallback becomes the
// replica again, at its committed epoch.
func (s *Standby) useFallback() error {
	if s.fb == nil {
		return fmt.Errorf("checkpoint: no fallback replica to resume")
	}
	s.destroyReplica()
	fb := s.fb
	s.fb = nil
	s.replica, s.disk, s.digest, s.has = fb.replica, fb.disk, fb.digest, true
	s.stage.reset(0, false, s.digest)
	s.log.Warn("primary lost while the replica was rebuilt; resuming the previous replica", "epoch", fb.epoch)
	s.status.update(func(st *Status) { st.FallbackEpoch = 0; st.Epoch = fb.epoch })
	return nil
}

// streamed reports whether the sink captures domains of type t as a
// stream.
func (s *Standby) streamed(t libxl.DomainType) bool {
	sc, ok := s.sink.(libxl.StreamCapture)
	return ok && sc.StreamCaptured(t)
}

// ensureReplica creates a fresh (zeroed, paused) replica of s.info and
// opens its disks, if none exists.
func (s *Standby) ensureReplica() error {
	if s.has {
		return nil
	}
	if err := s.cfg.Limits.checkDomain(s.info); err != nil {
		return err
	}
	if r, ok := s.sink.(libxl.ReplicaRoom); ok {
		// Before the backend allocates anything for it.
		if err := r.RoomFor(s.info); err != nil {
			return fmt.Errorf("%w: HELLO domain.pages %d: no room for the replica: %w", ErrLimit, s.info.Pages, err)
		}
	}
	dom, err := s.sink.CreateReplica(s.info)
	if err != nil {
		s.log.Error("create replica", "err", err)
		return fmt.Errorf("cannot create replica: %w", err)
	}
	stores, err := s.cfg.Disks(s.info)
	if err != nil {
		s.sink.Destroy(dom)
		return fmt.Errorf("cannot open disks: %w", err)
	}
	s.replica, s.has = dom, true
	s.disk = diskbuf.NewReplica(s.mode, stores)
	s.digest = newMemDigest(s.info.Pages)
	s.budget = s.cfg.Limits.budget(s.info)
	return nil
}

func (s *Standby) destroyReplica() {
	if s.has {
		if err := s.sink.Destroy(s.replica); err != nil {
			s.log.Warn("destroy replica", "err", err)
		}
		s.has = false
		s.disk = nil
	}
}

// stagePages decodes a PAGES record into the staged epoch. The XOR base
// of a page is its latest copy: staged in this epoch, else the replica's.
func (s *Standby) stagePages(r *wire.Pages) error {
	if !s.has || !s.stage.open {
		return fmt.Errorf("%w: pages outside an epoch", ErrPeer)
	}
	if !s.stage.initial {
		if done, err := s.stageDirect(r); done {
			return err
		}
	}
	n := len(r.PFNs) * libxl.PageSize
	if cap(s.decodeBuf) < n {
		s.decodeBuf = make([]byte, n)
	}
	out := s.decodeBuf[:n]
	base := func(pfn uint64, dst []byte) error {
		if i, ok := s.stage.index[libxl.PFN(pfn)]; ok {
			copy(dst, s.stage.data[i*libxl.PageSize:(i+1)*libxl.PageSize])
			return nil
		}
		return s.sink.ReadPages(s.replica, []libxl.PFN{libxl.PFN(pfn)}, dst)
	}
	pfns, err := wire.DecodePages(r, base, out)
	if err != nil {
		return err
	}
	for _, p := range pfns {
		if p >= s.info.Pages {
			return fmt.Errorf("%w: pfn %d beyond the domain's %d pages", ErrPeer, p, s.info.Pages)
		}
	}
	if s.stage.initial {
		// A pre-copy round goes straight into the replica, which cannot
		// run before the sync's checkpoint commits: no staging copy of a
		// whole guest. A round that then fails verification costs the
		// replica (it is rebuilt by the next sync).
		s.pfnBuf = s.pfnBuf[:0]
		for _, p := range pfns {
			s.pfnBuf = append(s.pfnBuf, libxl.PFN(p))
		}
		if err := s.sink.WritePages(s.replica, s.pfnBuf, out); err != nil {
			return err
		}
		s.digest.update(s.pfnBuf, out)
		return nil
	}
	for i, p := range pfns {
		s.stage.put(libxl.PFN(p), out[i*libxl.PageSize:(i+1)*libxl.PageSize])
	}
	return nil
}

// stageDirect decodes r straight into the staging area when none of its
// pages is staged already (the common case: a capture has each page
// once), saving a copy per page. It reports false, having done nothing,
// when it cannot.
func (s *Standby) stageDirect(r *wire.Pages) (bool, error) {
	for _, p := range r.PFNs {
		if _, dup := s.stage.index[libxl.PFN(p)]; dup || p >= s.info.Pages {
			return false, nil
		}
	}
	st := &s.stage
	off := len(st.data)
	n := len(r.PFNs) * libxl.PageSize
	st.data = slices.Grow(st.data, n)[:off+n]
	base := func(pfn uint64, dst []byte) error {
		if i, ok := st.index[libxl.PFN(pfn)]; ok {
			copy(dst, st.data[i*libxl.PageSize:(i+1)*libxl.PageSize])
			return nil
		}
		return s.sink.ReadPages(s.replica, []libxl.PFN{libxl.PFN(pfn)}, dst)
	}
	pfns, err := wire.DecodePages(r, base, st.data[off:])
	if err != nil {
		st.data = st.data[:off]
		return true, err
	}
	for i, p := range pfns {
		if _, dup := st.index[libxl.PFN(p)]; dup {
			// Duplicates inside the record itself: undo, take the slow path.
			for _, q := range pfns[:i] {
				delete(st.index, libxl.PFN(q))
			}
			st.pfns = st.pfns[:off/libxl.PageSize]
			st.data = st.data[:off]
			return false, nil
		}
		st.index[libxl.PFN(p)] = len(st.pfns)
		st.pfns = append(st.pfns, libxl.PFN(p))
		st.digest.put(libxl.PFN(p), st.data[off+i*libxl.PageSize:off+(i+1)*libxl.PageSize])
	}
	return true, nil
}

func (s *Standby) observe(o Observation) {
	o.Time = time.Now()
	if s.cfg.Observer != nil {
		s.cfg.Observer(o)
	}
}

func (s *Standby) apply(ctx context.Context, acts []epoch.Action) error {
	for _, a := range acts {
		switch a.Kind {
		case epoch.ActCommit:
			if err := s.commit(a.Epoch); err != nil {
				// The replica may be torn: it can never be activated. The
				// session ends, not the standby; the actions after the
				// commit (its ACK above all) assumed it and are dropped.
				err = fmt.Errorf("epoch %d: commit: %w", a.Epoch, err)
				s.log.Error("commit failed; discarding the replica", "epoch", a.Epoch, "err", err)
				s.observe(Observation{Kind: ObsError, Epoch: a.Epoch, Msg: err.Error()})
				s.sessionErr = err
				return s.apply(ctx, s.m.Step(epoch.Event{Kind: epoch.EvCommitFailed, Epoch: a.Epoch, Now: s.now()}))
			}
		case epoch.ActAck:
			// Observed before the ack leaves, so an observer knows epoch
			// k is committed before any output of k can be released.
			s.observe(Observation{Kind: ObsCommit, Epoch: a.Epoch, Pages: s.lastPages})
			if s.conn != nil {
				s.conn.send(&wire.Ack{Epoch: a.Epoch, MemDigest: s.digest.sum})
			}
		case epoch.ActDiscard:
			s.discarded++
			if s.stage.initial {
				// Part of a pre-copy round is in the replica already.
				s.destroyReplica()
			}
			if s.disk != nil {
				s.disk.Discard()
			}
			s.stage.reset(0, false, s.digest)
			s.status.update(func(st *Status) { st.Discarded = s.discarded })
		case epoch.ActNack:
			if s.conn != nil {
				s.conn.send(&wire.Nack{Epoch: a.Epoch, Code: wire.NackDigest, Message: a.Reason})
			}
		case epoch.ActTakenOver:
			// Written before the hang-up that follows: the primary reads
			// it, whenever it next reads, and fences. (protocol §7.7)
			if s.conn != nil {
				s.conn.send(&wire.Heartbeat{SentNanos: time.Now().UnixNano(), Epoch: a.Epoch})
				s.conn.send(&wire.Goodbye{Code: wire.GoodbyeTakenOver, Message: takenOverMessage(a.Epoch)})
			}
		case epoch.ActDisconnect:
			if s.conn != nil {
				s.conn.hangUp()
				s.conn = nil
			}
		case epoch.ActHeartbeat:
			if s.conn != nil {
				s.conn.send(&wire.Heartbeat{SentNanos: time.Now().UnixNano(), Epoch: s.m.Committed()})
			}
		case epoch.ActAcquire:
			s.stopWaitLapsed()
			s.wg.Add(1)
			go func() { defer s.wg.Done(); s.acquire(ctx) }()
		case epoch.ActWaitLapsed:
			s.stopWaitLapsed()
			wctx, cancel := context.WithCancel(ctx)
			s.waitLapsed = cancel
			sess := s.session
			s.wg.Add(1)
			go func() { defer s.wg.Done(); s.awaitLapse(wctx, sess) }()
		case epoch.ActActivate:
			if err := s.activate(activationReason(acts)); err != nil {
				return err
			}
		case epoch.ActDestroyReplica:
			s.destroyReplica()
		case epoch.ActRetire:
			s.retire(a.Epoch)
		case epoch.ActDropFallback:
			s.dropFallback()
		case epoch.ActUseFallback:
			if err := s.useFallback(); err != nil {
				return err
			}
		case epoch.ActNotify:
			st := s.m.State().String()
			s.log.Info("state", "state", st, "why", a.Reason)
			s.status.update(func(x *Status) { x.State = st; x.StateSince = time.Now() })
			s.observe(Observation{Kind: ObsState, State: st, Msg: a.Reason})
		}
	}
	return nil
}

// commit applies the staged epoch to the replica.
func (s *Standby) commit(e uint64) error {
	if len(s.stage.pfns) > 0 {
		if err := s.sink.WritePages(s.replica, s.stage.pfns, s.stage.data); err != nil {
			return err
		}
	}
	if len(s.stage.states) > 0 {
		if err := s.sink.RestoreState(s.replica, s.stage.states); err != nil {
			return err
		}
	}
	if s.disk != nil {
		if err := s.disk.Commit(e); err != nil {
			return err
		}
	}
	s.stage.digest.commit()
	s.lastPages = len(s.stage.pfns)
	s.commits++
	now := time.Now()
	r := s.rate.add(now)
	n := len(s.stage.pfns)
	s.status.update(func(st *Status) {
		st.Epoch = e
		st.Checkpoints = s.commits
		st.EpochRate = r
		st.LastDirty = n
	})
	s.lostAt = time.Time{}
	return nil
}

func (s *Standby) stopWaitLapsed() {
	if s.waitLapsed != nil {
		s.waitLapsed()
		s.waitLapsed = nil
	}
}

// awaitLapse waits until no lease of the primary is live on session and
// posts EvLapsed (protocol §7.8); retried while the arbiter is
// unreachable, until ctx ends (a reconnect, the timeout's own failover).
func (s *Standby) awaitLapse(ctx context.Context, session [16]byte) {
	l := s.arb.(arbiter.Leaser)
	for {
		err := l.WaitLapsed(ctx, session, arbiter.Primary)
		if err == nil {
			s.post(sevent{ev: epoch.Event{Kind: epoch.EvLapsed}})
			return
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("arbiter unreachable while waiting for the primary's lease to lapse", "err", err)
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return
		case <-s.done:
			return
		}
	}
}

func (s *Standby) acquire(ctx context.Context) {
	if k, ok := askArbiter(ctx, s.done, s.arb, s.session, arbiter.Standby, s.log, "replica stays paused"); ok {
		s.post(sevent{ev: epoch.Event{Kind: k}})
	}
}

// activate resumes the replica at the last committed checkpoint. (I3)
func (s *Standby) activate(reason string) error {
	t := s.noteActivating(reason)
	// The disks first: the replica's devices may need them.
	var tDisk time.Duration
	if s.disk != nil {
		if err := s.disk.Activate(); err != nil {
			return fmt.Errorf("checkpoint: activate disks: %w", err)
		}
		tDisk = time.Since(t)
	}
	// A backend that builds the replica only now (Xen's stream-fed PV
	// replicas: libxl applies the last checkpoint and creates the devices)
	// does so while the digest is checked, rather than after it: neither
	// runs the guest, and the verdict is the same.
	var prep chan error
	if p, ok := s.sink.(libxl.ActivationPreparer); ok {
		prep = make(chan error, 1)
		go func() { prep <- p.PrepareActivate(s.replica) }()
	}
	var digest uint64
	verdict := "not verified"
	var tVerify, tPrep time.Duration
	if s.cfg.Verify {
		tv := time.Now()
		d, err := ReplicaDigest(s.sink, s.replica, s.info.Pages)
		switch {
		case err != nil:
			verdict = "verification failed: " + err.Error()
		case d == s.digest.sum:
			verdict = "verified"
		default:
			verdict = fmt.Sprintf("MISMATCH: replica %016x, committed %016x", d, s.digest.sum)
			s.log.Error("replica differs from the last committed epoch", "replica", d, "committed", s.digest.sum)
		}
		digest = d
		tVerify = time.Since(tv)
	}
	if prep != nil {
		err := <-prep
		tPrep = time.Since(t)
		if err != nil {
			return fmt.Errorf("checkpoint: activate replica: %w", err)
		}
	}
	t0 := time.Now()
	if err := s.sink.Activate(s.replica); err != nil {
		return fmt.Errorf("checkpoint: activate replica: %w", err)
	}
	s.activated = s.replica
	took := time.Since(t)
	e := s.m.Committed()
	s.status.update(func(st *Status) { st.ActivatedEpoch = e; st.Activation = Dur(took) })
	s.log.Info(fmt.Sprintf("activated at epoch %d in %s after the decision", e, roundDur(took)), "epoch", e, "took", took,
		"verify", tVerify, "prepared", tPrep, "disks", tDisk, "sink", time.Since(t0), "memory", verdict)
	s.observe(Observation{Kind: ObsActivate, Epoch: e, Digest: digest, Took: took, Msg: verdict})
	if s.cfg.OnActivate != nil {
		s.cfg.OnActivate(s.replica, s.info)
	}
	return nil
}

func takenOverMessage(e uint64) string {
	return fmt.Sprintf("taken over at epoch %d: the domain runs on the standby now; this copy must not run", e)
}

// answerAfterActivation serves the listener once the replica runs here
// (StandbyConfig.AnswerTakenOver): every primary that connects is told
// the domain was taken over, so that a stalled or partitioned primary
// coming back fences its copy. Until ctx ends.
func (s *Standby) answerAfterActivation(ctx context.Context) error {
	e := s.m.Committed()
	s.log.Info("replica active; answering primaries that come back with TAKEN_OVER", "epoch", e)
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-s.events:
			switch {
			case ev.conn != nil && ev.rec == nil && ev.err == nil:
				c := ev.conn.c
				s.wg.Add(1)
				go func() {
					defer s.wg.Done()
					s.answerConn(ctx, c, e)
				}()
			case ev.ack != nil:
				close(ev.ack) // a record of the connection hung up on
			}
		}
	}
}

// answerConn reads a primary's HELLO on c and answers it with TAKEN_OVER
// at epoch e, if it names this standby's domain or session; any other
// HELLO is refused as incompatible.
func (s *Standby) answerConn(ctx context.Context, c Conn, e uint64) {
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	t := time.AfterFunc(5*closeGrace, func() { c.Close() })
	defer t.Stop()
	defer c.Close()
	r := wire.NewReader(c, wire.DefaultLimits())
	if _, _, err := r.ReadHeader(); err != nil {
		return
	}
	rec, err := r.Next()
	if err != nil {
		return
	}
	h, ok := rec.(*wire.Hello)
	if !ok || h.Role != wire.RolePrimary {
		return
	}
	if h.Session != s.session && !sameDomain(fromDesc(h.Domain), s.info) {
		s.log.Warn("refused a primary of another domain: this standby's replica runs", "domain", h.Domain.Name)
		w := wire.NewWriter(c)
		if w.WriteHeader(0) == nil {
			w.Write(&wire.Hello{Version: wire.Version, Role: wire.RoleStandby, Session: h.Session, Domain: h.Domain,
				Codec: h.Codec, Inflight: max(h.Inflight, 1)})
			w.Write(&wire.Goodbye{Code: wire.GoodbyeIncompatible, Message: "this standby holds no replica: its domain runs here since a failover"})
			w.Flush()
		}
		return
	}
	s.log.Warn("a primary of the domain came back after the takeover: told it to fence", "domain", h.Domain.Name, "epoch", e)
	s.observe(Observation{Kind: ObsWarning, Epoch: e, Msg: "primary came back after the takeover; told to fence"})
	WriteTakenOver(c, h, e)
}

// sameDomain reports whether a and b name one domain: the same UUID when
// both have one, else the same name.
func sameDomain(a, b libxl.DomainInfo) bool {
	if a.UUID != ([16]byte{}) && b.UUID != ([16]byte{}) {
		return a.UUID == b.UUID
	}
	return a.Name != "" && a.Name == b.Name
}

// WriteTakenOver answers a primary's HELLO h on c (whose stream header
// and HELLO were read) with the standby's stream: a HELLO with
// TAKEN_OVER (committed 0: no replica), a HEARTBEAT carrying epoch e, the
// checkpoint the replica resumed from, and GOODBYE(taken over) (protocol
// §7.7). The caller closes c.
func WriteTakenOver(c Conn, h *wire.Hello, e uint64) error {
	w := wire.NewWriter(c)
	if err := w.WriteHeader(0); err != nil {
		return err
	}
	for _, rec := range []wire.Record{
		&wire.Hello{Version: wire.Version, Role: wire.RoleStandby, Session: h.Session, Domain: h.Domain,
			Codec: h.Codec, Inflight: max(h.Inflight, 1), Flags: wire.HelloTakenOver},
		&wire.Heartbeat{SentNanos: time.Now().UnixNano(), Epoch: e},
		&wire.Goodbye{Code: wire.GoodbyeTakenOver, Message: takenOverMessage(e)},
	} {
		if err := w.Write(rec); err != nil {
			return err
		}
	}
	return w.Flush()
}

// ReplicaDigest recomputes the replica's memory digest from its pages (for
// checks: it must equal the digest of the last committed epoch).
func ReplicaDigest(sink libxl.Sink, dom libxl.DomID, pages uint64) (uint64, error) {
	d := newMemDigest(pages)
	const batch = 1024
	buf := make([]byte, batch*libxl.PageSize)
	pfns := make([]libxl.PFN, 0, batch)
	for base := uint64(0); base < pages; base += batch {
		pfns = pfns[:0]
		for p := base; p < min(base+batch, pages); p++ {
			pfns = append(pfns, libxl.PFN(p))
		}
		if err := sink.ReadPages(dom, pfns, buf[:len(pfns)*libxl.PageSize]); err != nil {
			return 0, err
		}
		d.update(pfns, buf)
	}
	return d.sum, nil
}

// Digest returns the committed replica's memory digest (loop-owned state;
// call only after Run returned).
func (s *Standby) Digest() uint64 {
	if s.digest == nil {
		return 0
	}
	return s.digest.sum
}

// sconn is the standby's end of one connection. The reader goroutine
// hands each record to the loop and waits until the loop is done with it
// (records alias the reader's buffer); a writer goroutine sends what the
// loop queues, so the loop never blocks on the network.
type sconn struct {
	gen   uint64
	c     Conn
	q     chan wire.Record
	hello bool // its HELLO was taken (loop goroutine only)

	fin     chan struct{} // closed by hangUp: write what is queued, then close
	finOnce sync.Once
	grace   *time.Timer
}

// closeGrace is how long a connection the standby hangs up on has to take
// the records queued for it (the NACK or GOODBYE saying why) before it is
// closed regardless.
const closeGrace = time.Second

// hangUp ends the connection once the records queued for the primary are
// written: by the loop, which forgets the connection (its reader's
// records are ignored from then on), or by the writer when the standby
// ends. Safe from both; only the first call counts.
func (c *sconn) hangUp() {
	c.finOnce.Do(func() {
		c.grace = time.AfterFunc(closeGrace, func() { c.c.Close() })
		close(c.fin)
	})
}

func (c *sconn) read(s *Standby) {
	r := wire.NewReader(c.c, wire.DefaultLimits())
	if _, _, err := r.ReadHeader(); err != nil {
		s.post(sevent{gen: c.gen, conn: c, err: err})
		return
	}
	for {
		rec, err := r.Next()
		ack := make(chan struct{})
		if !s.post(sevent{gen: c.gen, conn: c, rec: rec, err: err, ack: ack}) {
			return
		}
		if err != nil {
			return
		}
		select {
		case <-ack:
		case <-s.done:
			return
		}
	}
}

func (c *sconn) write(s *Standby) {
	w := wire.NewWriter(c.c)
	if err := w.WriteHeader(0); err != nil {
		c.c.Close()
		return
	}
	for {
		select {
		case rec := <-c.q:
			if err := w.Write(rec); err != nil {
				c.c.Close()
				return
			}
			if len(c.q) == 0 {
				if err := w.Flush(); err != nil {
					c.c.Close()
					return
				}
			}
		case <-c.fin:
			c.drain(w)
			return
		case <-s.done:
			// The standby ended (a one-shot one on this session's
			// failure): the primary still gets what says why.
			c.hangUp()
			c.drain(w)
			return
		}
	}
}

// drain writes what is queued, then closes the connection. A primary that
// does not read it is cut off by the grace timer of hangUp.
func (c *sconn) drain(w *wire.Writer) {
	for len(c.q) > 0 {
		if w.Write(<-c.q) != nil {
			break
		}
	}
	w.Flush()
	c.grace.Stop()
	c.c.Close()
}

// send queues one record (loop goroutine only). Records are copied by the
// caller's construction (fresh values), so the writer may hold them.
func (c *sconn) send(rec wire.Record) {
	if c.q == nil {
		return
	}
	if _, hb := rec.(*wire.Heartbeat); hb {
		select {
		case c.q <- rec:
		default:
		}
		return
	}
	select {
	case c.q <- rec:
	default:
		// The primary stopped reading: it is as good as gone.
		c.c.Close()
	}
}
