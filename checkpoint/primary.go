package checkpoint

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/xl-kemari/xl-kemari/arbiter"
	"github.com/xl-kemari/xl-kemari/checkpoint/epoch"
	"github.com/xl-kemari/xl-kemari/checkpoint/wire"
	"github.com/xl-kemari/xl-kemari/diskbuf"
	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/netbuf"
)

// Errors of the drivers.
var (
	// ErrFenced: the arbiter gave the domain to the standby; the primary
	// destroyed its copy.
	ErrFenced = errors.New("checkpoint: fenced by the arbiter")
	// ErrPeer: the peer broke the protocol (bad hello, wrong role, ...).
	ErrPeer = errors.New("checkpoint: peer protocol error")
	// ErrGuest: the hypervisor failed a call the guest cannot survive
	// (resume after a checkpoint).
	ErrGuest = errors.New("checkpoint: guest could not be resumed")
)

// TakenOverError is what Run returns when the standby said it activated
// its replica (protocol §7.7): the primary fenced, destroying its copy of
// the guest and discarding held output. errors.Is(err, ErrFenced) holds.
type TakenOverError struct {
	Epoch uint64 // the checkpoint the standby resumed from (0: not said)
}

func (e *TakenOverError) Error() string {
	return fmt.Sprintf("checkpoint: taken over by the standby at epoch %d; guest destroyed", e.Epoch)
}

// Is makes a takeover a fencing.
func (e *TakenOverError) Is(target error) bool { return target == ErrFenced }

// PrimaryConfig configures a Primary.
type PrimaryConfig struct {
	Epoch  epoch.Config
	Domain libxl.DomID
	Codec  wire.Codec
	// CacheBytes bounds the XOR-delta cache of last-sent pages (0: 64 MiB).
	CacheBytes int
	// SyncStopPages ends the pre-copy when a round has at most this many
	// dirty pages (0: 4096, 16 MiB); SyncMaxRounds bounds the rounds (0: 10).
	SyncStopPages int
	SyncMaxRounds int
	// Session identifies this protection; zero picks a random one.
	Session [16]byte
	// SharedDisk says the domain's disks are on shared storage.
	SharedDisk bool
	// DiskSectors sizes disk i (512-byte sectors) where the Source
	// describes it as 0: the Xen backend does not know the size of a disk
	// served by the NBD front; the front's store does.
	DiskSectors []uint64
	// ConnectTimeout bounds one dial plus hello exchange (0: Timeout/3, so
	// a hung attempt gives way to a new one within the standby's
	// timeout). An ssh transport, which starts a remote process, needs
	// more on its first connection.
	ConnectTimeout time.Duration
	Logger         *slog.Logger
	// Observer, if set, receives every Observation, on the loop goroutine:
	// it must not block.
	Observer func(Observation)
	// DeriveTimeout: no timeout was configured; Epoch.Timeout is the
	// conservative default until one is derived from what this primary
	// measures, and announced to the standby (timeout.go).
	DeriveTimeout bool
}

// Primary protects one running domain: it drives an epoch.Primary machine
// against a hypervisor Source, a connection to the standby, the domain's
// output buffers and its disk path.
type Primary struct {
	cfg  PrimaryConfig
	src  libxl.Source
	dial Dialer
	nets []netbuf.Buffer
	disk *diskbuf.Primary // nil: no disks
	arb  arbiter.Arbiter
	// leaser is arb's lease capability (nil: none): output is released
	// only while lease is valid (issue 14 point 4).
	leaser arbiter.Leaser
	log    *slog.Logger

	m        *epoch.Primary
	t0       time.Time
	events   chan pevent
	stopC    chan struct{} // closed by Stop
	stopOnce sync.Once
	done     chan struct{}
	status   statusBox

	// Owned by the loop goroutine (and by the sync goroutine while the
	// machine is in PSyncing, when the loop does not touch them).
	info     libxl.DomainInfo
	stream   bool // the Source captures this domain as a stream (libxl.StreamCapture); set before any goroutine starts
	conn     *pconn
	gen      uint64
	dirty    *libxl.Bitmap
	digest   *memDigest
	history  []histEntry
	local    []epoch.Event
	barriers map[uint64]time.Time
	rate     rateWindow
	bw       byteRate // wire bytes per second, for Status.Bandwidth
	pauses   struct{ n, sum, max time.Duration }
	tune     *timeoutTuner // the derived timeout's measures
	dirtySum uint64
	takenAt  *TakenOverError // the standby said it took over
	lease    arbiter.Lease   // the lease on the current session, once held
	leaseFor [16]byte        // the session of the Hold under way or of lease
	// Leases granted to a Hold goroutine, handed to the loop (a lease an
	// event carried could be left in the queue when Run ends, renewed for
	// ever); closed once Run no longer takes them: the goroutine then
	// releases its lease itself.
	afterLeaseLost bool // an EvLeaseLost is being stepped
	leaseMu        sync.Mutex
	leaseGot       []pendingLease // protected by leaseMu
	leaseStopped   bool           // protected by leaseMu
	syncing        chan struct{}  // closed when the running pre-copy goroutine ends
	wg             sync.WaitGroup // every goroutine started
	stages         chan []byte    // staging buffers for reuse: no page faults in the pause
}

type histEntry struct {
	epoch  uint64
	pfns   []libxl.PFN
	writes []diskbuf.Write
}

type pendingLease struct {
	l    arbiter.Lease
	sess [16]byte
}

type pevent struct {
	gen   uint64
	ev    epoch.Event
	lease bool     // a Hold succeeded: take p.leaseGot
	sess  [16]byte // EvLeaseLost: the session of the lease
	conn  *pconn   // EvConnected
	why   string
	final uint64      // a full sync's pre-copy ended: take checkpoint final
	extra []libxl.PFN // ... with these pages too
}

// NewPrimary builds a primary driver. nets are the domain's output
// buffers (one per NIC); disk may be nil for a domain without disks.
func NewPrimary(cfg PrimaryConfig, src libxl.Source, dial Dialer, nets []netbuf.Buffer, disk *diskbuf.Primary, arb arbiter.Arbiter) (*Primary, error) {
	if err := cfg.Epoch.Validate(); err != nil {
		return nil, err
	}
	if arb == nil {
		arb = arbiter.None{}
	}
	cfg.Epoch.Arbiter = arb.Configured()
	leaser, _ := arb.(arbiter.Leaser)
	cfg.Epoch.Lease = leaser != nil && cfg.Epoch.Arbiter
	if cfg.Epoch.Inflight <= 0 {
		cfg.Epoch.Inflight = 1
	}
	if cfg.CacheBytes == 0 {
		cfg.CacheBytes = 64 << 20
	}
	if cfg.SyncStopPages == 0 {
		cfg.SyncStopPages = 4096
	}
	if cfg.SyncMaxRounds == 0 {
		cfg.SyncMaxRounds = 10
	}
	if cfg.Session == ([16]byte{}) {
		rand.Read(cfg.Session[:])
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Primary{cfg: cfg, src: src, dial: dial, nets: nets, disk: disk, arb: arb, leaser: leaser, log: cfg.Logger,
		m: epoch.NewPrimary(cfg.Epoch), events: make(chan pevent, 1024), stopC: make(chan struct{}),
		done: make(chan struct{}), barriers: map[uint64]time.Time{}, stages: make(chan []byte, cfg.Epoch.Inflight+2)}
	p.status.update(func(s *Status) { s.Role = "primary"; s.Peer = dial.String(); s.State = "idle" })
	p.initTimeout()
	return p, nil
}

// Status returns a snapshot for `xl kemari status`. Safe from any goroutine.
func (p *Primary) Status() Status { return p.status.get() }

// Stop asks for a clean stop (protocol §7.5): goodbye to the standby,
// which discards its replica, then release of all held output; if the
// standby does not confirm within the timeout, it is declared lost as in
// any other loss (the arbiter's grant first, when one is configured). Run
// returns when done (nil, or ErrFenced). Safe from any goroutine, any
// number of times, before or during Run: a stop is never lost.
func (p *Primary) Stop() {
	p.stopOnce.Do(func() { close(p.stopC) })
}

func (p *Primary) now() epoch.Duration { return epoch.Duration(time.Since(p.t0)) }

func (p *Primary) post(e pevent) {
	select {
	case p.events <- e:
	case <-p.done:
	}
}

// Run protects the domain until Stop (returns nil), fencing (ErrFenced),
// a fatal guest error, or ctx's end. Cancelling ctx models the death of
// this process: the connection is dropped without a goodbye and held
// output is discarded, never released (fail closed).
func (p *Primary) Run(ctx context.Context) (err error) {
	p.t0 = time.Now()
	// Every goroutine the driver starts has ended when Run returns.
	defer p.wg.Wait()
	defer close(p.done)
	info, err := p.src.Describe(p.cfg.Domain)
	if err != nil {
		return fmt.Errorf("checkpoint: describe domain %d: %w", p.cfg.Domain, err)
	}
	for i := range info.Disks {
		if info.Disks[i].Sectors == 0 && i < len(p.cfg.DiskSectors) {
			info.Disks[i].Sectors = p.cfg.DiskSectors[i]
		}
	}
	p.info = info
	if sc, ok := p.src.(libxl.StreamCapture); ok && sc.StreamCaptured(info.Type) {
		p.stream = true
	}
	p.status.update(func(s *Status) { s.Domain = info.Name })
	p.dirty = libxl.NewBitmap(info.Pages)
	p.digest = newMemDigest(info.Pages)
	// Until the first checkpoint output flows: there is nothing yet a
	// standby could resume from.
	for _, n := range p.nets {
		if err := n.Unprotect(); err != nil {
			return fmt.Errorf("checkpoint: output buffer: %w", err)
		}
	}
	if p.disk != nil {
		if err := p.disk.Unprotect(); err != nil {
			return err
		}
	}
	p.noteUnheld()
	waiting := make(chan struct{}, 1)
	for _, n := range p.nets {
		if ch := n.Waiting(); ch != nil && p.cfg.Epoch.Mode == epoch.ModeEvent {
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				for {
					select {
					case <-ch:
						select {
						case waiting <- struct{}{}:
						default:
						}
					case <-p.done:
						return
					}
				}
			}()
		}
	}
	defer func() {
		if p.conn != nil {
			p.conn.close()
		}
		if p.syncing != nil {
			<-p.syncing
		}
		if p.stream {
			// Nobody will take the rest of the stream; a later protection
			// starts a new one. The domain may be gone (fenced).
			p.src.SetLogDirty(p.cfg.Domain, false)
		}
		if ctx.Err() != nil {
			// Death of the holder: nothing held may leak.
			for _, n := range p.nets {
				n.Discard()
			}
		}
	}()
	if !p.cfg.Epoch.Arbiter {
		p.log.Warn(FailStopWarning)
		p.observe(Observation{Kind: ObsWarning, Msg: FailStopWarning})
	}
	if p.leaser != nil {
		p.holdLease(ctx)
		defer func() {
			p.leaseMu.Lock()
			p.leaseStopped = true
			got := p.leaseGot
			p.leaseGot = nil
			p.leaseMu.Unlock()
			for _, g := range got {
				releaseSoon(g.l)
			}
			if p.lease == nil {
				return
			}
			if ctx.Err() != nil {
				// Death of the holder: as a killed process's, the lease
				// ends without a word to the arbiter (arbiter.Abandoner).
				if a, ok := p.lease.(arbiter.Abandoner); ok {
					a.Abandon()
				}
				return
			}
			releaseSoon(p.lease)
		}()
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	stopC := p.stopC // nil once the stop is in the machine
	p.local = append(p.local, epoch.Event{Kind: epoch.EvStart})
	for {
		for len(p.local) > 0 {
			ev := p.local[0]
			p.local = p.local[1:]
			ev.Now = p.now()
			ev.LeaseUntil = p.leaseUntil()
			if err := p.apply(ctx, p.m.Step(ev)); err != nil {
				return err
			}
			if ev.Kind == epoch.EvLeaseLost && p.afterLeaseLost {
				p.afterLeaseLost = false
				switch p.m.State() {
				case epoch.PSyncing, epoch.PReconnecting, epoch.PConnecting:
					// Lost where it decides nothing (before the first
					// checkpoint): hold anew.
					p.lease = nil
					p.holdLease(ctx)
				}
			}
		}
		switch p.m.State() {
		case epoch.PStopped:
			return nil
		case epoch.PFenced:
			if p.takenAt != nil {
				return p.takenAt
			}
			return ErrFenced
		}
		if d := p.m.Deadline(); d >= 0 {
			timer.Reset(time.Duration(d - p.now()))
		} else {
			timer.Reset(time.Hour)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-stopC:
			stopC = nil
			p.local = append(p.local, epoch.Event{Kind: epoch.EvStop})
		case e := <-p.events:
			if e.lease {
				p.leaseMu.Lock()
				got := p.leaseGot
				p.leaseGot = nil
				p.leaseMu.Unlock()
				for _, g := range got {
					p.gotLease(g.l, g.sess)
				}
				continue
			}
			if e.ev.Kind == epoch.EvLeaseLost {
				if e.sess != p.leaseFor {
					continue // the lease of a session given up
				}
				p.log.Warn("arbiter lease lost; output held", "why", e.why)
				p.local = append(p.local, e.ev)
				p.afterLeaseLost = true
				continue
			}
			if e.final != 0 {
				// The pre-copy converged: the sync's checkpoint, with
				// output held from its barrier on. EvSyncDone goes in
				// before any ack of it can be read.
				if p.conn != nil && e.gen == p.conn.gen && p.m.State() == epoch.PSyncing {
					if err := p.checkpoint(e.final, 0, true, e.extra, nil); err != nil {
						return err
					}
					p.local = append(p.local, epoch.Event{Kind: epoch.EvSyncDone, Epoch: e.final})
				}
				continue
			}
			if e.ev.Kind == epoch.EvTakenOver {
				// From any connection or attempt, current or not: the
				// standby's word that the domain runs there now.
				if p.takenAt == nil {
					p.takenAt = &TakenOverError{Epoch: e.ev.Epoch}
					p.log.Error("the standby took over the domain; fencing", "epoch", e.ev.Epoch, "why", e.why)
				}
				p.local = append(p.local, e.ev)
				continue
			}
			if e.ev.Kind == epoch.EvConnected || e.ev.Kind == epoch.EvConnectFailed {
				if e.gen != p.gen {
					if e.conn != nil {
						e.conn.close()
					}
					continue
				}
				if e.conn != nil {
					p.conn = e.conn
					p.conn.start(p)
				}
			} else if e.gen != 0 && (p.conn == nil || e.gen != p.conn.gen) {
				continue // from a connection already dropped
			}
			if e.why != "" {
				p.log.Info("connection event", "event", e.ev.Kind, "why", e.why)
			}
			p.local = append(p.local, e.ev)
		case <-timer.C:
			p.local = append(p.local, epoch.Event{Kind: epoch.EvTick})
		case <-waiting:
			p.local = append(p.local, epoch.Event{Kind: epoch.EvOutputWaiting})
		}
	}
}

func (p *Primary) observe(o Observation) {
	o.Time = time.Now()
	if p.cfg.Observer != nil {
		p.cfg.Observer(o)
	}
}

// apply carries out the machine's actions in order.
func (p *Primary) apply(ctx context.Context, acts []epoch.Action) error {
	for _, a := range acts {
		switch a.Kind {
		case epoch.ActConnect:
			p.gen++
			p.wg.Add(1)
			go func(gen uint64, sess [16]byte) { defer p.wg.Done(); p.connect(ctx, gen, sess) }(p.gen, p.cfg.Session)
		case epoch.ActSync:
			if err := p.startSync(a); err != nil {
				return err
			}
		case epoch.ActCheckpoint:
			if err := p.checkpoint(a.Epoch, 0, false, nil, nil); err != nil {
				return err
			}
		case epoch.ActRelease:
			if p.leaser != nil && (p.lease == nil || !p.lease.Valid(time.Now())) {
				// The machine saw the lease valid at the event's time; it
				// ended since (this process did not run meanwhile). Held:
				// a later release covers it, the lease's loss decides.
				p.log.Warn("output not released: the arbiter lease is no longer valid", "epoch", a.Epoch)
				continue
			}
			if err := p.release(a.Epoch); err != nil {
				return err
			}
		case epoch.ActUnprotect:
			if err := p.unprotect(); err != nil {
				return err
			}
			// Re-protection is a new protection session: the arbiter's
			// grant for the old one stays with whoever won it.
			rand.Read(p.cfg.Session[:])
			if p.leaser != nil {
				p.holdLease(ctx)
			}
			p.status.update(func(s *Status) { s.UnprotectedSince = time.Now() })
		case epoch.ActFence:
			for _, n := range p.nets {
				n.Discard()
			}
			if p.disk != nil {
				p.disk.Discard()
			}
			if err := p.src.Destroy(p.cfg.Domain); err != nil {
				p.log.Error("fencing: destroy failed", "err", err)
			}
		case epoch.ActGoodbye:
			// The machine times an unanswered goodbye out (its deadline).
			if p.conn != nil {
				p.conn.send(sendItem{kind: itemGoodbye})
			}
		case epoch.ActTeardown:
			if err := p.unprotect(); err != nil {
				return err
			}
		case epoch.ActHeartbeat:
			if p.conn != nil {
				p.conn.send(sendItem{kind: itemHeartbeat, epoch: p.m.Acked()})
			}
		case epoch.ActDisconnect:
			if p.conn != nil {
				p.conn.close()
				p.conn = nil
			}
		case epoch.ActAcquire:
			p.wg.Add(1)
			go func() { defer p.wg.Done(); p.acquire(ctx) }()
		case epoch.ActNotify:
			st := p.m.State().String()
			p.log.Info("state", "state", st, "why", a.Reason)
			p.status.update(func(s *Status) {
				s.State = st
				s.StateSince = time.Now()
				if st == "protected" {
					s.UnprotectedSince = time.Time{}
					s.SyncPercent = 100
					noteProtected(s)
				}
			})
			p.observe(Observation{Kind: ObsState, State: st, Msg: a.Reason})
		}
	}
	return nil
}

func (p *Primary) unprotect() error {
	for _, n := range p.nets {
		if err := n.Unprotect(); err != nil {
			return fmt.Errorf("checkpoint: unprotect output: %w", err)
		}
	}
	if p.disk != nil {
		if err := p.disk.Unprotect(); err != nil {
			return err
		}
	}
	p.history = p.history[:0]
	clear(p.barriers)
	p.endStream()
	p.noteUnheld()
	return nil
}

// endStream ends a stream capture no standby takes any more, so the
// backend's save engine stops tracking the guest (a stream is never
// resumed: the next sync starts a new one). A pre-copy still unwinding on
// its goroutine owns the Source; the next sync then ends the stream.
func (p *Primary) endStream() {
	if !p.stream {
		return
	}
	if p.syncing != nil {
		select {
		case <-p.syncing:
			p.syncing = nil
		default:
			return
		}
	}
	if err := p.src.SetLogDirty(p.cfg.Domain, false); err != nil {
		p.log.Warn("ending the capture stream", "err", err)
	}
}

// releaseSoon releases l, giving the arbiter a second to hear it (else
// the lease lapses there after its ttl).
func releaseSoon(l arbiter.Lease) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.Release(ctx)
}

// leaseUntil is the end of the lease's validity on the machine's clock,
// 0 without a valid lease.
func (p *Primary) leaseUntil() epoch.Duration {
	if p.lease == nil || !p.lease.Valid(time.Now()) {
		return 0
	}
	return epoch.Duration(p.lease.Until().Sub(p.t0))
}

// holdLease gives up the lease of an earlier session, if any, and starts
// taking one on the current session, in the background (loop goroutine).
func (p *Primary) holdLease(ctx context.Context) {
	if old := p.lease; old != nil {
		p.lease = nil
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			releaseSoon(old)
		}()
	}
	sess := p.cfg.Session
	p.leaseFor = sess
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		l, err := holdLease(ctx, p.done, p.leaser, sess, arbiter.Primary, leaseTTL(p.cfg.Epoch), p.log)
		switch {
		case err == nil:
			p.leaseMu.Lock()
			stopped := p.leaseStopped
			if !stopped {
				p.leaseGot = append(p.leaseGot, pendingLease{l, sess})
			}
			p.leaseMu.Unlock()
			if stopped {
				releaseSoon(l)
				return
			}
			p.post(pevent{lease: true})
		case errors.Is(err, arbiter.ErrDenied):
			// The standby owns the session: a loss, which the arbiter
			// answers with a refusal (fenced).
			p.post(pevent{ev: epoch.Event{Kind: epoch.EvLeaseLost}, why: err.Error(), sess: sess})
		}
	}()
}

// gotLease takes a lease Hold returned for sess (loop goroutine) and
// watches it: its loss is the machine's EvLeaseLost.
func (p *Primary) gotLease(l arbiter.Lease, sess [16]byte) {
	if sess != p.leaseFor || p.lease != nil {
		// For a session given up meanwhile.
		p.wg.Add(1)
		go func() { defer p.wg.Done(); releaseSoon(l) }()
		return
	}
	p.lease = l
	p.log.Info("arbiter lease held; output is released only while it is valid", "until", time.Until(l.Until()).Round(time.Millisecond))
	p.local = append(p.local, epoch.Event{Kind: epoch.EvTick}) // releases what waited for it
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		select {
		case <-l.Done():
		case <-p.done:
			return
		}
		if errors.Is(l.Err(), arbiter.ErrLeaseLost) {
			p.post(pevent{ev: epoch.Event{Kind: epoch.EvLeaseLost}, why: l.Err().Error(), sess: sess})
		}
	}()
}

func (p *Primary) acquire(ctx context.Context) {
	if k, ok := askArbiter(ctx, p.done, p.arb, p.cfg.Session, arbiter.Primary, p.log, "output stays held"); ok {
		p.post(pevent{ev: epoch.Event{Kind: k}})
	}
}

// connect dials and exchanges hellos; it runs on its own goroutine.
func (p *Primary) connect(ctx context.Context, gen uint64, session [16]byte) {
	fail := func(err error) {
		p.log.Debug("connect failed", "err", err)
		p.post(pevent{gen: gen, ev: epoch.Event{Kind: epoch.EvConnectFailed}, why: err.Error()})
	}
	// A hello exchange that hangs (a lost record) must give way to a new
	// attempt well within the standby's timeout.
	ct := p.cfg.ConnectTimeout
	if ct <= 0 {
		ct = p.tune.current() / 3 // the derived timeout once there is one
	}
	dctx, cancel := context.WithTimeout(ctx, ct)
	defer cancel()
	c, err := p.dial.Dial(dctx)
	if err != nil {
		fail(err)
		return
	}
	pc := newPConn(gen, c, p.cfg.Codec, p.cfg.CacheBytes, p.cfg.Epoch.Inflight)
	hello := &wire.Hello{Version: wire.Version, Role: wire.RolePrimary, Session: session,
		Domain: toDesc(p.info), Codec: p.cfg.Codec, Inflight: uint32(p.cfg.Epoch.Inflight)}
	if p.cfg.SharedDisk {
		hello.Flags |= wire.HelloSharedDisk
	}
	// The hello exchange must not outlive the timeout either.
	stop := context.AfterFunc(dctx, func() { c.Close() })
	defer stop()
	if err := pc.w.WriteHeader(0); err == nil {
		err = pc.w.Write(hello)
		if err == nil {
			err = pc.w.Flush()
		}
		if err != nil {
			c.Close()
			fail(err)
			return
		}
	}
	if _, _, err := pc.r.ReadHeader(); err != nil {
		c.Close()
		fail(err)
		return
	}
	rec, err := pc.r.Next()
	if err != nil {
		c.Close()
		fail(err)
		return
	}
	sh, ok := rec.(*wire.Hello)
	if !ok || sh.Role != wire.RoleStandby {
		c.Close()
		fail(fmt.Errorf("%w: expected the standby's hello, got %v", ErrPeer, rec.Type()))
		return
	}
	if sh.Flags&wire.HelloTakenOver != 0 {
		// The standby activated its replica of this domain (protocol
		// §7.7): what follows says at which epoch and why.
		e, why := readTakenOver(pc.r)
		c.Close()
		p.post(pevent{gen: gen, ev: epoch.Event{Kind: epoch.EvTakenOver, Epoch: e}, why: why})
		return
	}
	// A stream capture cannot be resumed (libxl.StreamCapture): whatever
	// the standby holds, the sync is a full one into a fresh replica.
	has := sh.Session == session && sh.Committed > 0 && !p.stream
	if !stop() {
		c.Close()
		fail(dctx.Err())
		return
	}
	p.post(pevent{gen: gen, conn: pc, ev: epoch.Event{Kind: epoch.EvConnected, Epoch: sh.Committed, HasReplica: has,
		Fences: sh.Flags&wire.HelloFences != 0}})
}

// readTakenOver reads what follows a HELLO with TAKEN_OVER: a HEARTBEAT
// with the epoch the standby resumed at, and a GOODBYE saying why. A
// stream that ends early still says the standby took over.
func readTakenOver(r *wire.Reader) (uint64, string) {
	var e uint64
	why := "standby answered HELLO with TAKEN_OVER"
	for range 4 {
		rec, err := r.Next()
		if err != nil {
			break
		}
		switch x := rec.(type) {
		case *wire.Heartbeat:
			e = x.Epoch
		case *wire.Goodbye:
			return e, why + ": " + x.Message
		}
	}
	return e, why
}

// checkpoint captures epoch e: suspend, barrier, dirty log, copy, state,
// resume; then queues it for sending. extra PFNs and writes (resync) are
// shipped with it. protect turns output holding on at the barrier (the
// first checkpoint of a sync).
func (p *Primary) checkpoint(e uint64, flags uint32, protect bool, extra []libxl.PFN, extraWrites []diskbuf.Write) error {
	dom := p.cfg.Domain
	t0 := time.Now()
	if err := p.src.Suspend(dom); err != nil {
		// The guest keeps running; this epoch cannot be shipped. Drop the
		// stream: the reconnect resynchronises what it would have carried.
		p.log.Error("suspend failed", "epoch", e, "err", err)
		p.observe(Observation{Kind: ObsError, Epoch: e, Msg: "suspend: " + err.Error()})
		if p.conn != nil {
			p.local = append(p.local, epoch.Event{Kind: epoch.EvDisconnected})
		}
		return nil
	}
	if protect {
		for _, n := range p.nets {
			n.Protect()
		}
		p.noteHeld(e)
	}
	var berr error
	for _, n := range p.nets {
		if err := n.Barrier(e); err != nil && berr == nil {
			berr = err
		}
	}
	var writes []diskbuf.Write
	if p.disk != nil {
		writes = p.disk.Barrier(e)
		// Disk front: no disk request is answered until this epoch's
		// memory is captured (diskbuf.Primary.Barrier).
		defer p.disk.Open()
	}
	tBarrier := time.Now()
	var pause time.Duration
	resume := func() error {
		if err := p.src.Resume(dom); err != nil {
			return fmt.Errorf("%w: epoch %d: %w", ErrGuest, e, err)
		}
		pause = time.Since(t0)
		return nil
	}
	if p.stream {
		// The hypervisor's save engine wrote the checkpoint (its dirty set
		// and pages) while the guest was suspended: it is a private copy
		// already (libxl.StreamCapture), read below with the guest running.
		if err := resume(); err != nil {
			return err
		}
	}
	tRead := time.Now()
	p.dirty.Reset()
	derr := p.src.ReadAndClearDirty(dom, p.dirty)
	pfns := p.dirty.AppendSet(make([]libxl.PFN, 0, p.dirty.Count()))
	if len(extra) > 0 {
		seen := libxl.NewBitmap(p.info.Pages)
		for _, q := range pfns {
			seen.Set(q)
		}
		for _, q := range extra {
			if !seen.Test(q) {
				seen.Set(q)
				pfns = append(pfns, q)
			}
		}
	}
	var (
		pages   []byte
		states  []libxl.State
		rerr    error
		serr    error
		copyDur time.Duration
	)
	copyOut := func() {
		t := time.Now()
		defer func() { copyDur = time.Since(t) }()
		pages = p.stage(len(pfns) * libxl.PageSize)
		rerr = p.src.ReadPages(dom, pfns, pages)
		states, serr = p.src.CaptureState(dom, nil)
	}
	tDirty := time.Now()
	if !p.stream {
		// Live memory: copy it while the guest cannot change it.
		copyOut()
		if err := resume(); err != nil {
			return err
		}
	} else {
		copyOut()
	}
	p.log.Debug("pause", "epoch", e, "pages", len(pfns), "suspend+barrier", tBarrier.Sub(t0),
		"dirty", tDirty.Sub(tRead), "copy", copyDur, "copy-while-paused", !p.stream, "total", pause)
	if err := errors.Join(berr, derr, rerr, serr); err != nil {
		p.log.Error("capture failed", "epoch", e, "err", err)
		p.observe(Observation{Kind: ObsError, Epoch: e, Msg: "capture: " + err.Error()})
		if p.conn != nil {
			p.local = append(p.local, epoch.Event{Kind: epoch.EvDisconnected})
		}
		return nil
	}
	p.barriers[e] = time.Now()
	p.digest.update(pfns, pages)
	writes = append(extraWrites, writes...)
	p.history = append(p.history, histEntry{epoch: e, pfns: pfns, writes: writes})
	// Observed before it is queued, so an observer has seen checkpoint e
	// before any ack of it can exist.
	p.recordCheckpoint(e, pause, len(pfns))
	if p.conn != nil {
		p.conn.send(sendItem{kind: itemBegin, epoch: e, flags: flags})
		for i := 0; i < len(pfns); i += wire.MaxPagesPerRecord {
			j := min(i+wire.MaxPagesPerRecord, len(pfns))
			p.conn.send(sendItem{kind: itemPages, pfns: pfns[i:j], data: pages[i*libxl.PageSize : j*libxl.PageSize]})
		}
		p.conn.send(sendItem{kind: itemEnd, epoch: e, states: states, writes: writes, digest: p.digest.sum, stage: pages})
	} else {
		p.unstage(pages)
	}
	return nil
}

func (p *Primary) recordCheckpoint(e uint64, pause time.Duration, n int) {
	p.tune.pause(pause)
	p.pauses.n++
	p.pauses.sum += pause
	p.pauses.max = max(p.pauses.max, pause)
	p.dirtySum += uint64(n)
	now := time.Now()
	r := p.rate.add(now)
	cnt := p.pauses.n
	avg := p.pauses.sum / cnt
	mx := p.pauses.max
	avgDirty := float64(p.dirtySum) / float64(cnt)
	var raw, wireB uint64
	if p.conn != nil {
		st := p.conn.stats()
		raw, wireB = st.RawBytes, st.WireBytes
	}
	bw := p.bw.add(now, wireB)
	p.status.update(func(s *Status) {
		s.Checkpoints = uint64(cnt)
		s.EpochRate = r
		s.LastPause, s.AvgPause, s.MaxPause = Dur(pause), Dur(avg), Dur(mx)
		s.LastDirty, s.AvgDirty = n, avgDirty
		if raw > 0 {
			s.BytesRaw, s.BytesWire = raw, wireB
			s.Compression = float64(raw) / float64(max(wireB, 1))
		}
		s.Bandwidth = bw
	})
	p.observe(Observation{Kind: ObsCheckpoint, Epoch: e, Pause: pause, Pages: n, Digest: p.digest.sum})
}

// release lets out the output of every epoch <= e (its ack arrived).
func (p *Primary) release(e uint64) error {
	for _, n := range p.nets {
		if err := n.Release(e); err != nil {
			return fmt.Errorf("checkpoint: release epoch %d: %w", e, err)
		}
	}
	if p.disk != nil {
		if err := p.disk.Release(e); err != nil {
			return fmt.Errorf("checkpoint: release disk epoch %d: %w", e, err)
		}
	}
	now := time.Now()
	var lat time.Duration
	if t, ok := p.barriers[e]; ok {
		lat = now.Sub(t)
	}
	for k := range p.barriers {
		if k <= e {
			delete(p.barriers, k)
		}
	}
	i := 0
	for i < len(p.history) && p.history[i].epoch <= e {
		i++
	}
	p.history = append(p.history[:0], p.history[i:]...)
	var held, rel uint64
	for _, n := range p.nets {
		st := n.Stats()
		held += st.HeldFrames
		rel += st.Released
	}
	p.status.update(func(s *Status) {
		s.Epoch = e
		if s.CommitLatency == 0 {
			s.CommitLatency = Dur(lat)
		} else {
			s.CommitLatency = Dur((7*time.Duration(s.CommitLatency) + lat) / 8)
		}
		s.OutputHeld, s.Released = held, rel
	})
	p.observe(Observation{Kind: ObsRelease, Epoch: e})
	if lat > 0 {
		p.retune(e, lat)
	}
	return nil
}

// stage returns a staging buffer of n bytes, reusing one whose pages are
// already faulted in when it can: the copy in the pause must cost a
// memcpy, not page faults.
func (p *Primary) stage(n int) []byte {
	for {
		select {
		case b := <-p.stages:
			if cap(b) >= n {
				return b[:n]
			}
			continue // too small: drop it
		default:
		}
		return make([]byte, n)
	}
}

// unstage returns a buffer once its epoch is on the wire. Safe from the
// sender goroutine.
func (p *Primary) unstage(b []byte) {
	select {
	case p.stages <- b:
	default:
	}
}
