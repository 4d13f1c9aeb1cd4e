// Package checkpointtest is the in-process cluster harness (design §9,
// tier 3): a primary and a standby, each on its own simulated host, joined
// by an in-memory transport that injects faults into every record, a
// service guest with a client, and one verifier for the invariants:
//
//   - I1 output commit: no output of epoch k leaves the primary while it
//     is protected unless the standby has committed k;
//   - I2 atomic epochs: every epoch the standby commits equals the
//     primary's memory and disk at that checkpoint, byte for byte;
//   - I3 failover point: an activated replica is at or after every output
//     released while protected, and its client sees no acknowledged
//     request lost;
//   - I4: with the arbiter, never both sides active; without it, under the
//     fail-stop assumption the harness keeps (no partitions), the same,
//     and the warning is given.
//
// The verifier (verifier.go) checks them on an ordered log of the whole
// cluster's events as they happen. Everything random comes from one seed:
// each goroutine draws from its own generator derived from the seed and a
// name, so no two goroutines share one. Run is meant to be called inside a
// testing/synctest bubble, so time is virtual, and the link model
// (latency, bandwidth) is in virtual time too.
package checkpointtest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xl-kemari/xl-kemari/arbiter"
	"github.com/xl-kemari/xl-kemari/checkpoint"
	"github.com/xl-kemari/xl-kemari/checkpoint/epoch"
	"github.com/xl-kemari/xl-kemari/checkpoint/wire"
	"github.com/xl-kemari/xl-kemari/diskbuf"
	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/sim"
	"github.com/xl-kemari/xl-kemari/libxl/sim/svc"
	"github.com/xl-kemari/xl-kemari/netbuf"
	"github.com/xl-kemari/xl-kemari/netbuf/mem"
)

// Scenario is the failure a run exercises, picked from the seed.
type Scenario uint8

// Scenarios.
const (
	NoKill        Scenario = iota // faults on the link only
	KillPrimary                   // the primary host dies at a random moment
	KillStandby                   // the standby dies, later a new one comes
	Partition                     // the link goes down for longer than the timeout (arbiter on)
	Stop                          // the primary is stopped; its goodbye or the answer may be dropped, delayed, corrupted
	StopPartition                 // the link goes down, then the primary is stopped (arbiter on)
	nScenarios
	// LeaseStall: the primary's lease renewals hang for a while (a slow
	// arbiter): its lease lapses, it must hold output from the end of its
	// validity and go through the arbiter (arbiter on). Only when set in
	// Options.
	LeaseStall = nScenarios + 1
	// Promote: the standby is failed over by hand while the primary is
	// live and connected (without an arbiter, `xl kemari failover
	// --force`): the primary must fence its copy (protocol §7.7). Only
	// when set in Options: seeds do not draw it.
	Promote = nScenarios
)

var scenarioNames = [...]string{"no-kill", "kill-primary", "kill-standby", "partition", "stop", "stop-partition", "promote", "lease-stall"}

func (s Scenario) String() string { return scenarioNames[s] }

func (s Scenario) stops() bool { return s == Stop || s == StopPartition }

// partitions reports whether the scenario silences a live peer for longer
// than the timeout, which only an arbiter makes safe.
func (s Scenario) partitions() bool { return s == Partition || s == StopPartition }

// Arbiter says whether a run has an arbiter.
type Arbiter uint8

// Arbiter choices.
const (
	ArbiterFromSeed Arbiter = iota
	ArbiterOn
	ArbiterOff
)

// Options of one run.
type Options struct {
	Seed      uint64
	Pages     uint64        // guest size (default 256)
	Interval  time.Duration // default 20ms
	Timeout   time.Duration // default 100ms
	Inflight  int           // default 1 to 3, from the seed
	Length    time.Duration // virtual run time (default 1s)
	FaultProb float64       // per record (0: from the seed: 0, 0.2%, 1%; <0: none)
	DiskMode  diskbuf.Mode
	Mode      epoch.Mode
	// Scenario, if ScenarioSet, overrides the seed's pick.
	Scenario    Scenario
	ScenarioSet bool
	Arbiter     Arbiter
	// Latency and Bandwidth model the link (0: from the seed; Latency <0:
	// none).
	Latency   time.Duration
	Bandwidth float64
	// ByeFault is the fate of goodbyes in the stop scenarios (0: from
	// the seed), in direction ByeSide ("p": the primary's, "s": the
	// standby's answer), for the first ByeN of them (-1: all; 0: from the
	// seed).
	ByeFault Fault
	ByeSide  string
	ByeN     int
	// DeriveTimeout: the primary derives its timeout from what it
	// measures (Timeout is the value until then) and the standby adopts
	// the announced one, as with no timeout configured.
	DeriveTimeout bool

	arbDelay time.Duration // the arbiter's answer time, from the seed
	codec    wire.Codec
}

// Report is the outcome of one run.
type Report struct {
	Seed       uint64
	Scenario   Scenario
	Mode       epoch.Mode
	DiskMode   diskbuf.Mode
	Violations []string
	Faults     []string
	Log        []string
	Acked      int    // client requests acknowledged
	Commits    uint64 // epochs the standby committed
	Activated  bool
	Epoch      uint64 // the epoch activated at
	Arbiter    bool
	Inflight   int
	Latency    time.Duration
	Bye        string // the goodbye fault of a stop scenario
	// Timeouts in use at the end (DeriveTimeout), primary's and standby's.
	PTimeout, STimeout time.Duration
	TimeoutWhy         string
}

// OK reports whether no invariant was violated.
func (r *Report) OK() bool { return len(r.Violations) == 0 }

func (r *Report) String() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "seed %d scenario %s (%s mode, %s disk, arbiter=%v, inflight=%d, latency=%v%s): %d violations, %d faults, %d acked, %d commits, activated=%v@%d\n",
		r.Seed, r.Scenario, r.Mode, r.DiskMode, r.Arbiter, r.Inflight, r.Latency, r.Bye, len(r.Violations), len(r.Faults), r.Acked, r.Commits, r.Activated, r.Epoch)
	for _, v := range r.Violations {
		fmt.Fprintf(&b, "  VIOLATION: %s\n", v)
	}
	for _, l := range r.Log {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	return b.String()
}

// debug prints the log as it happens (KEMARI_HARNESS_DEBUG=1).
var debug = os.Getenv("KEMARI_HARNESS_DEBUG") != ""

type snapshot struct {
	mem  []byte
	disk []byte
}

// cluster is the state of one run; its checks may run on any goroutine.
type cluster struct {
	opts Options
	v    *verifier

	mu sync.Mutex
	// Protected by mu.
	rep     Report
	pending *snapshot
	snaps   map[uint64]*snapshot
	replies chan svc.Reply
	target  *sim.NIC

	committed atomic.Uint64
	simS      *sim.Hypervisor
	stores    []*diskbuf.MemStore // current standby's disk copies
}

// rngFor returns the generator of one goroutine or one connection: a
// stream of its own derived from the seed and its name, so that no two
// goroutines share a generator and each one's draws depend only on the
// seed and its own history.
func rngFor(seed uint64, name string) *rand.Rand {
	h := uint64(14695981039346656037)
	for i := 0; i < len(name); i++ {
		h = (h ^ uint64(name[i])) * 1099511628211
	}
	return rand.New(rand.NewPCG(seed, h))
}

func (c *cluster) violate(format string, args ...any) { c.v.violation(format, args...) }

func (c *cluster) logf(format string, args ...any) { c.v.logf(format, args...) }

// recBuffer is the primary's output buffer, instrumented for the verifier.
type recBuffer struct {
	*mem.Buffer
	v *verifier

	mu sync.Mutex
	// Protected by mu.
	unprotected bool
}

func (b *recBuffer) Unprotect() error {
	b.mu.Lock()
	b.unprotected = true
	b.mu.Unlock()
	b.v.unprotect()
	return b.Buffer.Unprotect()
}

func (b *recBuffer) Protect() error {
	b.mu.Lock()
	b.unprotected = false
	b.mu.Unlock()
	b.v.protect()
	return b.Buffer.Protect()
}

func (b *recBuffer) Barrier(e uint64) error {
	b.v.barrier(e)
	return b.Buffer.Barrier(e)
}

func (b *recBuffer) isUnprotected() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.unprotected
}

// recArbiter reports every answer to the verifier. It answers after a
// delay (a lease on shared storage takes a while), so that events can land
// while a side waits for it.
type recArbiter struct {
	*arbiter.Mem
	v     *verifier
	delay time.Duration
}

// Hold implements arbiter.Leaser, after the arbiter's delay. The
// primary's lease is the verifier's to check releases against.
func (a recArbiter) Hold(ctx context.Context, s [16]byte, r arbiter.Role, ttl time.Duration) (arbiter.Lease, error) {
	time.Sleep(a.delay)
	l, err := a.Mem.Hold(ctx, s, r, ttl)
	if err == nil {
		a.v.logf("arbiter: %s holds a lease", r)
		if r == arbiter.Primary {
			a.v.primaryLease(l)
		}
	}
	return l, err
}

func (a recArbiter) Acquire(ctx context.Context, s [16]byte, r arbiter.Role) (bool, error) {
	time.Sleep(a.delay)
	ok, err := a.Mem.Acquire(ctx, s, r)
	if err == nil {
		a.v.grant(string(r), ok)
	}
	return ok, err
}

// recSource is the primary's hypervisor; it reports the guest's end.
type recSource struct {
	*sim.Hypervisor
	v *verifier
}

func (h recSource) Destroy(d libxl.DomID) error {
	h.v.primaryGone("destroyed by the engine (fenced)")
	return h.Hypervisor.Destroy(d)
}

// switchNet lets the standby be replaced: the primary dials whichever
// network the current standby listens on.
type switchNet struct {
	cur atomic.Pointer[checkpoint.PipeNetwork]
}

func (s *switchNet) Dial(ctx context.Context) (checkpoint.Conn, error) { return s.cur.Load().Dial(ctx) }
func (s *switchNet) String() string                                    { return "pipe" }

// Run runs one seeded scenario and returns its report. Call it inside a
// synctest bubble.
func Run(opts Options) *Report {
	rng := rngFor(opts.Seed, "plan")
	if opts.Pages == 0 {
		opts.Pages = 256
	}
	if opts.Interval == 0 {
		opts.Interval = 20 * time.Millisecond
	}
	if opts.Timeout == 0 {
		opts.Timeout = 100 * time.Millisecond
	}
	if opts.Length == 0 {
		opts.Length = time.Second
	}
	// Every draw is made whether or not the option is set, so that
	// setting one option does not change the others' picks.
	inflight := 1 + rng.IntN(3)
	prob := [...]float64{0, 0.002, 0.01}[rng.IntN(3)]
	sc := Scenario(rng.IntN(int(nScenarios)))
	mode := epoch.Mode(rng.IntN(2))
	disk := diskbuf.Mode(rng.IntN(2))
	arb := rng.IntN(2) == 0
	lat := [...]time.Duration{113 * time.Microsecond, 1037 * time.Microsecond, 4051 * time.Microsecond}[rng.IntN(3)]
	bw := [...]float64{1e9, 200e6, 50e6}[rng.IntN(3)]
	bye := [...]Fault{Pass, Drop, Delay, DelayLong, Corrupt, Garble}[rng.IntN(6)]
	byeSide := [...]string{"p", "s"}[rng.IntN(2)]
	byeN := [...]int{-1, 1}[rng.IntN(2)] // every goodbye, or the first
	arbDelay := [...]time.Duration{313 * time.Microsecond, 20*time.Millisecond + 311*time.Microsecond, 60*time.Millisecond + 307*time.Microsecond}[rng.IntN(3)]
	if opts.Inflight == 0 {
		opts.Inflight = inflight
	}
	switch {
	case opts.FaultProb == 0:
		opts.FaultProb = prob
	case opts.FaultProb < 0:
		opts.FaultProb = 0
	}
	if !opts.ScenarioSet {
		opts.Scenario, opts.Mode, opts.DiskMode = sc, mode, disk
	}
	switch opts.Arbiter {
	case ArbiterOn:
		arb = true
	case ArbiterOff:
		arb = false
	}
	if opts.Scenario.partitions() || opts.Scenario == LeaseStall {
		arb = true
	}
	if opts.Latency == 0 {
		opts.Latency = lat
	} else if opts.Latency < 0 {
		opts.Latency = 0
	}
	if opts.Bandwidth == 0 {
		opts.Bandwidth = bw
	}
	if opts.ByeFault == 0 {
		opts.ByeFault = bye
	}
	if opts.ByeSide == "" {
		opts.ByeSide = byeSide
	}
	if opts.ByeN == 0 {
		opts.ByeN = byeN
	}
	opts.arbDelay = arbDelay
	// Not zstd: checkpoint/wire's zstd decoder is a package global whose
	// channels belong to the first synctest bubble that used it.
	opts.codec = [...]wire.Codec{wire.CodecLZ4, wire.CodecNone}[rng.IntN(2)]
	if !arb {
		// Every goodbye lost while all else passes is a partition.
		opts.ByeN = 1
	}
	if arb {
		opts.Arbiter = ArbiterOn
	} else {
		opts.Arbiter = ArbiterOff
	}
	c := &cluster{opts: opts, v: newVerifier(arb, opts.Timeout), snaps: map[uint64]*snapshot{}, replies: make(chan svc.Reply, 64)}
	c.rep.Seed, c.rep.Scenario, c.rep.Mode, c.rep.DiskMode = opts.Seed, opts.Scenario, opts.Mode, opts.DiskMode
	c.rep.Arbiter, c.rep.Inflight, c.rep.Latency = arb, opts.Inflight, opts.Latency
	if opts.Scenario.stops() {
		c.rep.Bye = fmt.Sprintf(", goodbye %s: %s", opts.ByeSide, opts.ByeFault)
		if opts.ByeN > 0 {
			c.rep.Bye += fmt.Sprintf(" (first %d)", opts.ByeN)
		}
	}
	c.run(rngFor(opts.Seed, "scenario"))
	c.v.mu.Lock()
	c.rep.Violations = append(c.rep.Violations, c.v.violations...)
	c.rep.Faults = append([]string(nil), c.v.faults...)
	c.rep.Log = append([]string(nil), c.v.log...)
	c.v.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	return &c.rep
}

var clientAddr = netip.MustParseAddrPort("192.0.2.20:40000")

func (c *cluster) run(rng *rand.Rand) {
	o := c.opts
	arb := o.Arbiter == ArbiterOn
	ecfg := epoch.Config{Mode: o.Mode, Interval: epoch.Duration(o.Interval), MinInterval: epoch.Duration(o.Interval / 4),
		Timeout: epoch.Duration(o.Timeout), Inflight: o.Inflight, Reprotect: true}
	simP, _ := sim.New(nil)
	c.simS, _ = sim.New(nil)
	const sectors = 256
	dom, err := simP.CreateDomain(sim.DomainConfig{Name: "guest", Pages: o.Pages, Workload: "service",
		Seed: o.Seed, NICs: []sim.NICConfig{{}}, Disks: []sim.DiskConfig{{Sectors: sectors}}, Quantum: time.Millisecond})
	if err != nil {
		c.violate("setup: %v", err)
		return
	}
	pd, _ := simP.Domain(dom)
	pstore := diskbuf.NewMemStore(sectors * diskbuf.SectorSize)
	dp := diskbuf.NewPrimary(o.DiskMode, []diskbuf.Store{pstore})
	pd.Disk(0).SetBackend(dp.Device(0))
	deliver := func(frame []byte) {
		_, payload, err := sim.ParseFrame(frame)
		if err != nil {
			return
		}
		if r, err := svc.DecodeReply(payload); err == nil {
			select {
			case c.replies <- r:
			default:
			}
		}
	}
	buf := mem.New(deliver)
	rb := &recBuffer{Buffer: buf, v: c.v}
	buf.OnRelease = func(label uint64, _ []byte) { c.v.out(label, rb.isUnprotected()) }
	pd.NIC(0).SetEgress(buf.Send)
	c.target = pd.NIC(0)

	// Snapshots of the primary at each checkpoint (taken at Resume, while
	// the guest is still suspended).
	simP.SetFaults(sim.Faults{Resume: func(libxl.DomID) error {
		m, err := pd.Snapshot()
		if err != nil {
			return nil
		}
		d := make([]byte, sectors*diskbuf.SectorSize)
		pstore.ReadAt(d, 0)
		c.mu.Lock()
		c.pending = &snapshot{mem: m, disk: d}
		c.mu.Unlock()
		return nil
	}})

	// The faults a run injects: everything on every record, and the two
	// corruptions the record CRC cannot see.
	menu := []Fault{Drop, Duplicate, Corrupt, Truncate, Cut, Delay, Garble, Forge}
	// Every fault conn, in creation order, for partitions and the end (a
	// map's order would change the run).
	var (
		connMu sync.Mutex
		conns  []*faultConn
	)
	killAll := func() {
		connMu.Lock()
		all := append([]*faultConn(nil), conns...)
		connMu.Unlock()
		for _, fc := range all {
			fc.kill()
		}
	}
	var connN atomic.Uint64
	var byes atomic.Int64
	l := link{Latency: o.Latency, Bandwidth: o.Bandwidth}
	wrap := func(side, name string) func(checkpoint.Conn) checkpoint.Conn {
		return func(cn checkpoint.Conn) checkpoint.Conn {
			// Both ends of a connection are wrapped inside one Dial, so
			// the numbering follows the primary's dials.
			n := (connN.Add(1) + 1) / 2
			id := name + "#" + itoa(int(n))
			if side == "s" {
				// Connection set-up takes the link's latency: the
				// standby sees the new connection after the primary
				// dialled, not at the same instant.
				time.Sleep(l.Latency + 7*time.Microsecond)
			}
			fc := newFaultConn(cn, id, side, rngFor(o.Seed, id), o.FaultProb, menu, l, c.v)
			if o.Scenario.stops() && side == o.ByeSide {
				fc.bye, fc.byeN, fc.byes = o.ByeFault, o.ByeN, &byes
			}
			connMu.Lock()
			conns = append(conns, fc)
			connMu.Unlock()
			return fc
		}
	}
	newNet := func() *checkpoint.PipeNetwork {
		n := checkpoint.NewPipeNetwork()
		n.Wrap, n.WrapStandby = wrap("p", "p→s"), wrap("s", "s→p")
		return n
	}
	sw := &switchNet{}
	sw.cur.Store(newNet())

	var arbi arbiter.Arbiter = arbiter.None{}
	// While set, the primary's renewals hang until it is closed.
	var renewStall atomic.Pointer[chan struct{}]
	defer func() {
		if ch := renewStall.Swap(nil); ch != nil {
			close(*ch)
		}
	}()
	if arb {
		m := &arbiter.Mem{Fault: func(op string) error {
			if ch := renewStall.Load(); op == "renew" && ch != nil {
				<-*ch
			}
			return nil
		}}
		arbi = recArbiter{Mem: m, v: c.v, delay: o.arbDelay}
	}

	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	pcfg := checkpoint.PrimaryConfig{Epoch: ecfg, Domain: dom, Codec: o.codec, CacheBytes: 1 << 20,
		SyncStopPages: 16, DeriveTimeout: o.DeriveTimeout, Observer: func(ob checkpoint.Observation) {
			switch ob.Kind {
			case checkpoint.ObsCheckpoint:
				c.mu.Lock()
				c.snaps[ob.Epoch] = c.pending
				c.mu.Unlock()
				c.logf("P checkpoint %d", ob.Epoch)
			case checkpoint.ObsRelease:
				c.logf("P release %d", ob.Epoch)
			case checkpoint.ObsState:
				c.logf("P state %s (%s)", ob.State, ob.Msg)
			case checkpoint.ObsWarning:
				c.v.warning(ob.Msg)
			}
		}}
	if debug {
		pcfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("side", "primary")
	}
	primary, err := checkpoint.NewPrimary(pcfg, recSource{Hypervisor: simP, v: c.v}, sw, []netbuf.Buffer{rb}, dp, arbi)
	if err != nil {
		c.violate("setup: %v", err)
		return
	}
	pctx, pkill := context.WithCancel(ctx)
	defer pkill()
	var pdone atomic.Bool
	var perr atomic.Pointer[error]
	// The primary's epoch grid starts off the guest's quantum grid.
	time.Sleep(331 * time.Microsecond)
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := primary.Run(pctx)
		perr.Store(&err)
		pdone.Store(true)
		c.logf("P returned: %v", err)
	}()

	var sstop func()
	var curStandby atomic.Pointer[checkpoint.Standby]
	startStandby := func(n *checkpoint.PipeNetwork) {
		scfg := checkpoint.StandbyConfig{Epoch: ecfg, DiskMode: o.DiskMode, AdoptTimeout: o.DeriveTimeout, AnswerTakenOver: true,
			Disks: func(info libxl.DomainInfo) ([]diskbuf.Store, error) {
				st := diskbuf.NewMemStore(sectors * diskbuf.SectorSize)
				c.mu.Lock()
				c.stores = []*diskbuf.MemStore{st}
				c.mu.Unlock()
				if o.DiskMode == diskbuf.Shared {
					return []diskbuf.Store{pstore}, nil
				}
				return []diskbuf.Store{st}, nil
			}}
		if debug {
			scfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("side", "standby")
		}
		var standby *checkpoint.Standby
		scfg.Observer = func(ob checkpoint.Observation) {
			switch ob.Kind {
			case checkpoint.ObsCommit:
				c.v.commit(ob.Epoch)
				c.checkCommit(standby, ob.Epoch, o.DiskMode)
				c.committed.Store(ob.Epoch)
				c.mu.Lock()
				c.rep.Commits++
				c.mu.Unlock()
			case checkpoint.ObsState:
				c.v.standbyState(ob.State)
				c.logf("S state %s (%s)", ob.State, ob.Msg)
			}
		}
		scfg.OnActivate = func(d libxl.DomID, info libxl.DomainInfo) {
			rd, err := c.simS.Domain(d)
			if err != nil {
				c.violate("activate: %v", err)
				return
			}
			e := c.committed.Load()
			c.v.activate(e)
			rd.NIC(0).SetEgress(deliver)
			c.mu.Lock()
			c.target = rd.NIC(0)
			c.rep.Activated = true
			c.rep.Epoch = e
			c.mu.Unlock()
		}
		var sarb arbiter.Arbiter = arbiter.None{}
		if arb {
			sarb = arbi
		}
		standby, err = checkpoint.NewStandby(scfg, c.simS, n, sarb)
		if err != nil {
			c.violate("setup: %v", err)
			return
		}
		curStandby.Store(standby)
		sctx, skill := context.WithCancel(ctx)
		sstop = skill
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := standby.Run(sctx)
			c.logf("S returned: %v", err)
		}()
	}
	startStandby(sw.cur.Load())

	// The client: INCR requests, retried with the same seq until answered.
	var recs []svc.Record
	clientDone := make(chan struct{})
	crng := rngFor(o.Seed, "client")
	go func() {
		defer close(clientDone)
		var seq uint64
		deadline := time.Now().Add(o.Length)
		for time.Now().Before(deadline) {
			seq++
			req := svc.Request{Client: 7, Seq: seq, Op: svc.OpIncr}
			rec := svc.Record{Req: req, Sent: time.Now()}
			p, _ := svc.EncodeRequest(req)
		retry:
			for time.Now().Before(deadline) {
				c.mu.Lock()
				nic := c.target
				c.mu.Unlock()
				nic.Inject(clientAddr, p)
				rec.Tries++
				t := time.NewTimer(3 * o.Interval)
				for {
					select {
					case r := <-c.replies:
						if r.Seq != seq {
							continue
						}
						t.Stop()
						rec.Reply, rec.Acked, rec.Done = r, true, time.Now()
						c.logf("client: seq %d answered %d (try %d)", seq, r.Value, rec.Tries)
						break retry
					case <-t.C:
						continue retry
					}
				}
			}
			recs = append(recs, rec)
			// Off the guest's 1 ms quantum and the epoch grid: events of
			// two goroutines at one virtual instant run in either order.
			time.Sleep(time.Duration(1+crng.IntN(5))*time.Millisecond + time.Duration(1+crng.IntN(997))*time.Microsecond)
		}
	}()

	// The scenario.
	at := time.Duration(float64(o.Length)*(0.2+0.6*rng.Float64())) + 17*time.Microsecond
	partition := func() {
		c.logf("partition")
		cur := sw.cur.Load()
		cur.SetDown(true)
		killAll()
	}
	switch o.Scenario {
	case KillPrimary:
		time.Sleep(at)
		c.logf("killing the primary")
		pkill()
		for !pdone.Load() {
			time.Sleep(time.Millisecond)
		}
		c.v.primaryGone("host killed")
		simP.Destroy(dom)
	case KillStandby:
		time.Sleep(at)
		c.logf("killing the standby")
		sstop()
		time.Sleep(2 * o.Timeout)
		n := newNet()
		sw.cur.Store(n)
		c.committed.Store(0)
		c.v.newStandby()
		startStandby(n)
	case Partition:
		time.Sleep(at)
		partition()
		time.Sleep(3 * o.Timeout)
		sw.cur.Load().SetDown(false)
	case LeaseStall:
		time.Sleep(at)
		c.logf("the primary's lease renewals hang")
		ch := make(chan struct{})
		renewStall.Store(&ch)
		time.Sleep(3 * o.Timeout)
		close(*renewStall.Swap(nil))
		c.logf("renewals answer again")
	case Promote:
		time.Sleep(at)
		cut := rng.IntN(2) == 0
		if cut {
			// The stream breaks first and stays down: the primary
			// learns of the takeover from the answer to its
			// reconnect's HELLO.
			partition()
			time.Sleep(o.Timeout / 4)
		}
		c.logf("failing over by hand")
		curStandby.Load().Promote()
		if cut {
			time.Sleep(o.Timeout / 4)
			sw.cur.Load().SetDown(false)
			c.logf("stream can be reconnected")
		}
	case Stop:
		time.Sleep(at)
		c.logf("stopping the primary")
		primary.Stop()
		primary.Stop() // idempotent
	case StopPartition:
		time.Sleep(at)
		partition()
		// Before, at or after the primary declares the standby lost.
		time.Sleep(time.Duration(float64(o.Timeout) * 2 * rng.Float64()))
		c.logf("stopping the primary")
		primary.Stop()
		time.Sleep(3 * o.Timeout)
		sw.cur.Load().SetDown(false)
	}
	<-clientDone
	if o.Scenario.stops() {
		// Stop returns within a few timeouts.
		for i := 0; i < 10 && !pdone.Load(); i++ {
			time.Sleep(o.Timeout)
		}
	}
	var pe error
	e := perr.Load()
	if e != nil {
		pe = *e
	}
	c.v.end(o.Scenario, e != nil, pe)
	c.v.close() // what follows is the harness tearing down
	sum, err := svc.Check(recs)
	if err != nil {
		c.violate("client: %v", err)
	}
	c.mu.Lock()
	c.rep.Acked = sum.Acked
	ps := primary.Status()
	c.rep.PTimeout, c.rep.TimeoutWhy = time.Duration(ps.Timeout), ps.TimeoutWhy
	if sb := curStandby.Load(); sb != nil {
		c.rep.STimeout = time.Duration(sb.Status().Timeout)
	}
	c.mu.Unlock()
	cancel()
	wg.Wait()
	// Connections nobody accepted or closed.
	killAll()
	simP.DestroyAll()
	c.simS.DestroyAll()
	simP.Close()
	c.simS.Close()
}

// checkCommit compares the replica at committed epoch e with the primary's
// snapshot of checkpoint e. (I2)
func (c *cluster) checkCommit(s *checkpoint.Standby, e uint64, mode diskbuf.Mode) {
	c.mu.Lock()
	snap := c.snaps[e]
	stores := c.stores
	c.mu.Unlock()
	if snap == nil {
		c.violate("I2: standby committed epoch %d that the primary never captured", e)
		return
	}
	_ = s
	doms := c.simS.Domains()
	var rep []byte
	for _, d := range doms {
		dd, err := c.simS.Domain(d)
		if err != nil || dd.Running() {
			continue
		}
		rep, _ = dd.Snapshot()
	}
	if rep == nil {
		c.violate("I2: no replica to compare at epoch %d", e)
		return
	}
	if !bytes.Equal(rep, snap.mem) {
		c.violate("I2: replica memory differs from the primary's at epoch %d (first diff at byte %d)", e, firstDiff(rep, snap.mem))
	}
	if mode == diskbuf.Replicate && len(stores) == 1 {
		d := make([]byte, len(snap.disk))
		stores[0].ReadAt(d, 0)
		if !bytes.Equal(d, snap.disk) {
			c.violate("I2: replica disk differs from the primary's at epoch %d (first diff at byte %d)", e, firstDiff(d, snap.disk))
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
