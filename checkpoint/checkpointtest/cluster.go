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
//   - I4 (with the arbiter): never both sides active.
//
// Everything random comes from one seed; Run is meant to be called inside
// a testing/synctest bubble, so time is virtual and a seed's schedule of
// faults reproduces.
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
	NoKill      Scenario = iota // faults on the link only
	KillPrimary                 // the primary host dies at a random moment
	KillStandby                 // the standby dies, later a new one comes
	Partition                   // the link goes down for longer than the timeout (arbiter on)
)

var scenarioNames = [...]string{"no-kill", "kill-primary", "kill-standby", "partition"}

func (s Scenario) String() string { return scenarioNames[s] }

// Options of one run.
type Options struct {
	Seed      uint64
	Pages     uint64        // guest size (default 256)
	Interval  time.Duration // default 20ms
	Timeout   time.Duration // default 100ms
	Inflight  int           // default 1 or 2, from the seed
	Length    time.Duration // virtual run time (default 1s)
	FaultProb float64       // per record (0: from the seed: 0, 0.2%, 1%; <0: none)
	DiskMode  diskbuf.Mode
	Mode      epoch.Mode
	// Scenario, if ScenarioSet, overrides the seed's pick.
	Scenario    Scenario
	ScenarioSet bool
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
}

// OK reports whether no invariant was violated.
func (r *Report) OK() bool { return len(r.Violations) == 0 }

func (r *Report) String() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "seed %d scenario %s (%s mode, %s disk): %d violations, %d faults, %d acked, %d commits, activated=%v@%d\n",
		r.Seed, r.Scenario, r.Mode, r.DiskMode, len(r.Violations), len(r.Faults), r.Acked, r.Commits, r.Activated, r.Epoch)
	for _, v := range r.Violations {
		fmt.Fprintf(&b, "  VIOLATION: %s\n", v)
	}
	for _, f := range r.Faults {
		fmt.Fprintf(&b, "  fault: %s\n", f)
	}
	for _, l := range r.Log {
		fmt.Fprintf(&b, "  log: %s\n", l)
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
	rng  *rand.Rand

	mu sync.Mutex
	// Protected by mu.
	rep         Report
	pending     *snapshot
	snaps       map[uint64]*snapshot
	unprotected bool // the primary's buffer passes output through
	maxLabel    uint64
	replies     chan svc.Reply
	target      *sim.NIC

	committed atomic.Uint64
	simS      *sim.Hypervisor
	stores    []*diskbuf.MemStore // current standby's disk copies
}

func (c *cluster) violate(format string, args ...any) {
	c.mu.Lock()
	c.rep.Violations = append(c.rep.Violations, fmt.Sprintf(format, args...))
	c.mu.Unlock()
}

func (c *cluster) logf(format string, args ...any) {
	if debug {
		fmt.Fprintf(os.Stderr, "%v "+format+"\n", append([]any{time.Now().Format("05.000")}, args...)...)
	}
	c.mu.Lock()
	c.rep.Log = append(c.rep.Log, fmt.Sprintf(format, args...))
	c.mu.Unlock()
}

// recBuffer is the primary's output buffer, instrumented for I1.
type recBuffer struct {
	*mem.Buffer
	c *cluster
}

func (b *recBuffer) Unprotect() error {
	b.c.mu.Lock()
	b.c.unprotected = true
	b.c.mu.Unlock()
	return b.Buffer.Unprotect()
}

func (b *recBuffer) Protect() error {
	b.c.mu.Lock()
	b.c.unprotected = false
	b.c.mu.Unlock()
	return b.Buffer.Protect()
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
	rng := rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x5eed))
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
	if opts.Inflight == 0 {
		opts.Inflight = 1 + rng.IntN(2)
	}
	switch {
	case opts.FaultProb == 0:
		opts.FaultProb = [...]float64{0, 0.002, 0.01}[rng.IntN(3)]
	case opts.FaultProb < 0:
		opts.FaultProb = 0
	}
	if !opts.ScenarioSet {
		opts.Scenario = Scenario(rng.IntN(4))
		// The seed also picks the trigger and the disk mode.
		opts.Mode = epoch.Mode(rng.IntN(2))
		opts.DiskMode = diskbuf.Mode(rng.IntN(2))
	}
	c := &cluster{opts: opts, rng: rng, snaps: map[uint64]*snapshot{}, replies: make(chan svc.Reply, 64)}
	c.rep.Seed, c.rep.Scenario, c.rep.Mode, c.rep.DiskMode = opts.Seed, opts.Scenario, opts.Mode, opts.DiskMode
	c.run()
	c.mu.Lock()
	defer c.mu.Unlock()
	return &c.rep
}

var clientAddr = netip.MustParseAddrPort("192.0.2.20:40000")

func (c *cluster) run() {
	o := c.opts
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
	buf.OnRelease = func(label uint64, _ []byte) {
		c.mu.Lock()
		unprot := c.unprotected
		if label > c.maxLabel && !unprot {
			c.maxLabel = label
		}
		c.mu.Unlock()
		if !unprot && label > c.committed.Load() {
			c.violate("I1: output of epoch %d released while the standby has committed only %d", label, c.committed.Load())
		}
	}
	rb := &recBuffer{Buffer: buf, c: c}
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

	faults := &FaultLog{}
	var conns sync.Map // live fault conns, for partitions
	var connN atomic.Uint64
	wrap := func(name string) func(checkpoint.Conn) checkpoint.Conn {
		return func(cn checkpoint.Conn) checkpoint.Conn {
			n := connN.Add(1)
			fc := &faultConn{Conn: cn, name: name + "#" + itoa(int(n)), prob: o.FaultProb, log: faults,
				rng: rand.New(rand.NewPCG(o.Seed+n, n))}
			conns.Store(fc, true)
			return fc
		}
	}
	newNet := func() *checkpoint.PipeNetwork {
		n := checkpoint.NewPipeNetwork()
		n.Wrap, n.WrapStandby = wrap("p→s"), wrap("s→p")
		return n
	}
	sw := &switchNet{}
	sw.cur.Store(newNet())

	// Injected link faults can silence the link for longer than the
	// timeout, which the fail-stop assumption excludes: the harness runs
	// with the arbiter (I4) in every scenario.
	memArb := &arbiter.Mem{}
	var arb arbiter.Arbiter = memArb

	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	pcfg := checkpoint.PrimaryConfig{Epoch: ecfg, Domain: dom, Codec: wire.CodecLZ4, CacheBytes: 1 << 20,
		SyncStopPages: 16, Observer: func(ob checkpoint.Observation) {
			if ob.Kind == checkpoint.ObsCheckpoint {
				c.mu.Lock()
				c.snaps[ob.Epoch] = c.pending
				c.mu.Unlock()
			}
			if ob.Kind == checkpoint.ObsState {
				c.logf("primary: %s (%s)", ob.State, ob.Msg)
			}
			if debug && ob.Kind != checkpoint.ObsState {
				c.logf("primary obs %d epoch %d %s", ob.Kind, ob.Epoch, ob.Msg)
			}
		}}
	if debug {
		pcfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("side", "primary")
	}
	primary, err := checkpoint.NewPrimary(pcfg, simP, sw, []netbuf.Buffer{rb}, dp, arb)
	if err != nil {
		c.violate("setup: %v", err)
		return
	}
	pctx, pkill := context.WithCancel(ctx)
	defer pkill()
	var pdone atomic.Bool
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := primary.Run(pctx)
		pdone.Store(true)
		c.logf("primary returned: %v", err)
	}()

	activated := make(chan struct{})
	var sstop func()
	startStandby := func(n *checkpoint.PipeNetwork) {
		scfg := checkpoint.StandbyConfig{Epoch: ecfg, DiskMode: o.DiskMode,
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
				c.checkCommit(standby, ob.Epoch, o.DiskMode)
				c.committed.Store(ob.Epoch)
				c.mu.Lock()
				c.rep.Commits++
				c.mu.Unlock()
			case checkpoint.ObsState:
				c.logf("standby: %s (%s)", ob.State, ob.Msg)
			}
		}
		scfg.OnActivate = func(d libxl.DomID, info libxl.DomainInfo) {
			rd, err := c.simS.Domain(d)
			if err != nil {
				c.violate("activate: %v", err)
				return
			}
			rd.NIC(0).SetEgress(deliver)
			c.mu.Lock()
			c.target = rd.NIC(0)
			c.rep.Activated = true
			c.rep.Epoch = c.committed.Load()
			c.mu.Unlock()
			close(activated)
		}
		standby, err = checkpoint.NewStandby(scfg, c.simS, n, arb)
		if err != nil {
			c.violate("setup: %v", err)
			return
		}
		sctx, skill := context.WithCancel(ctx)
		sstop = skill
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := standby.Run(sctx)
			c.logf("standby returned: %v", err)
		}()
	}
	startStandby(sw.cur.Load())

	// The client: INCR requests, retried with the same seq until answered.
	var recs []svc.Record
	clientDone := make(chan struct{})
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
						break retry
					case <-t.C:
						continue retry
					}
				}
			}
			recs = append(recs, rec)
			time.Sleep(time.Duration(1+c.rng.IntN(5)) * time.Millisecond)
		}
	}()

	// The scenario.
	at := time.Duration(float64(o.Length) * (0.2 + 0.6*c.rng.Float64()))
	switch o.Scenario {
	case KillPrimary:
		time.Sleep(at)
		c.logf("killing the primary at %v", at)
		pkill()
		for !pdone.Load() {
			time.Sleep(time.Millisecond)
		}
		simP.Destroy(dom)
	case KillStandby:
		time.Sleep(at)
		c.logf("killing the standby at %v", at)
		sstop()
		time.Sleep(2 * o.Timeout)
		n := newNet()
		sw.cur.Store(n)
		c.committed.Store(0)
		startStandby(n)
	case Partition:
		time.Sleep(at)
		c.logf("partition at %v", at)
		cur := sw.cur.Load()
		cur.SetDown(true)
		conns.Range(func(k, _ any) bool { k.(*faultConn).kill(); return true })
		time.Sleep(3 * o.Timeout)
		cur.SetDown(false)
	}
	<-clientDone

	// Checks at the end.
	select {
	case <-activated:
		c.mu.Lock()
		if c.maxLabel > c.rep.Epoch {
			c.rep.Violations = append(c.rep.Violations, fmt.Sprintf("I3: replica activated at epoch %d but output of epoch %d was released", c.rep.Epoch, c.maxLabel))
		}
		c.mu.Unlock()
		if o.Scenario == Partition {
			if !pdone.Load() {
				c.violate("I4: primary still running after the standby took over")
			}
		}
	default:
	}
	sum, err := svc.Check(recs)
	if err != nil {
		c.violate("client: %v", err)
	}
	c.mu.Lock()
	c.rep.Acked = sum.Acked
	c.mu.Unlock()
	cancel()
	wg.Wait()
	simP.DestroyAll()
	c.simS.DestroyAll()
	simP.Close()
	c.simS.Close()
	c.rep.Faults = faults.Entries()
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
