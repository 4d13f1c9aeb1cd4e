package main

import (
	"context"
	"errors"
	"log"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xl-kemari/xl-kemari/arbiter"
	"github.com/xl-kemari/xl-kemari/checkpoint"
	"github.com/xl-kemari/xl-kemari/checkpoint/epoch"
	"github.com/xl-kemari/xl-kemari/checkpoint/wire"
	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/sim"
	"github.com/xl-kemari/xl-kemari/netbuf"
	"github.com/xl-kemari/xl-kemari/netbuf/mem"
)

// noLease hides an arbiter's lease capability: the engine then arbitrates
// as it did before leases were bound (the standby waits out its timeout).
type noLease struct{ arbiter.Arbiter }

// leaseOnly hides Abandon: a dead host's lease is not abandoned, its
// renewals just stop (the holder lock stays with the frozen host).
type leaseOnly struct{ arbiter.Lease }

// hostArb is a primary's File that can die as its host: renewals hang
// from then on, and Hold's leases cannot be abandoned.
type hostArb struct {
	*arbiter.File
}

func (a hostArb) Hold(ctx context.Context, s [16]byte, r arbiter.Role, ttl time.Duration) (arbiter.Lease, error) {
	l, err := a.File.Hold(ctx, s, r, ttl)
	if err != nil {
		return nil, err
	}
	return leaseOnly{l}, nil
}

// deadConn is a primary's connection on a host that died: nothing more
// is sent, and it is not closed (no FIN) until the run's end.
type deadConn struct {
	checkpoint.Conn
	dead *atomic.Bool
	hung chan struct{} // closed at the run's end
}

func (c deadConn) Write(b []byte) (int, error) {
	if c.dead.Load() {
		<-c.hung // the host is gone: nothing leaves it
		return 0, errors.New("host gone")
	}
	return c.Conn.Write(b)
}

func (c deadConn) Close() error {
	if c.dead.Load() {
		return nil
	}
	return c.Conn.Close()
}

type deadDialer struct {
	checkpoint.Dialer
	dead  *atomic.Bool
	hung  chan struct{}
	mu    *sync.Mutex
	conns *[]checkpoint.Conn
}

func (d deadDialer) Dial(ctx context.Context) (checkpoint.Conn, error) {
	if d.dead.Load() {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	c, err := d.Dialer.Dial(ctx)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	*d.conns = append(*d.conns, c)
	d.mu.Unlock()
	return deadConn{c, d.dead, d.hung}, nil
}

// benchHostDeath: the primary's host goes silent (no end of stream: the
// standby's timeout detects it; its lease's renewals hang) with
// arbiter=file:; silence → replica active, with the lease binding (the
// standby must also see the lease lapse) and without. In process the
// holder's own clock still runs and ends its lease (dropping the holder
// lock) a tenth of the ttl before the ttl, as a live primary cut off from
// its storage does; a dead host's lock on NFS stays until the server's
// lock lease ends, and then the ttl rule and watchLease bound it.
func benchHostDeath() {
	timeout := 200 * time.Millisecond
	reps := 10
	if *quick {
		reps = 3
	}
	dir, err := os.MkdirTemp("", "bench-death-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	for _, leases := range []bool{false, true} {
		var xs []float64
		for i := range reps {
			d := filepath.Join(dir, string(rune('a'+i)), map[bool]string{false: "timeout", true: "lease"}[leases])
			if t, ok := deathOnce(timeout, d, leases); ok {
				xs = append(xs, ms(t))
			} else {
				log.Print("host death: no failover")
			}
		}
		name := map[bool]string{false: "no lease", true: "lease"}[leases]
		add("silent primary → active, file: "+name+" p50", percentile(xs, 0.5), "ms", "timeout", ms(timeout))
		if leases {
			add("silent primary → active, file: lease p99", percentile(xs, 0.99), "ms", "timeout", ms(timeout))
		}
	}
}

func deathOnce(timeout time.Duration, dir string, leases bool) (time.Duration, bool) {
	var dead atomic.Bool
	hung := make(chan struct{})
	pf := &arbiter.File{Dir: dir, Fault: func(op string) error {
		if dead.Load() {
			<-hung
			return errors.New("host gone")
		}
		return nil
	}}
	var pa, sa arbiter.Arbiter = hostArb{pf}, &arbiter.File{Dir: dir}
	if !leases {
		pa, sa = noLease{pf}, noLease{sa}
	}
	var mu sync.Mutex
	var conns []checkpoint.Conn
	end := func() {
		close(hung)
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}
	return runKill(timeout, pa, sa, func(dl checkpoint.Dialer) checkpoint.Dialer {
		return deadDialer{Dialer: dl, dead: &dead, hung: hung, mu: &mu, conns: &conns}
	}, func() { dead.Store(true) }, end)
}

// benchCleanEOF: the primary is killed (its process's death, in process:
// the stream ends cleanly, the lease is abandoned as the kernel drops a
// dead holder's lock) with an arbiter=file: on a directory both sides
// share; the time from the kill to the replica running. With the lease
// (issue 14 point 3) the standby takes over once the lease is gone;
// without it, after its timeout.
func benchCleanEOF() {
	timeout := 200 * time.Millisecond
	reps := 10
	if *quick {
		reps = 3
	}
	dir, err := os.MkdirTemp("", "bench-eof-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	for _, leases := range []bool{false, true} {
		var xs []float64
		for i := range reps {
			d := filepath.Join(dir, "arb", string(rune('a'+i)), map[bool]string{false: "timeout", true: "lease"}[leases])
			var pa, sa arbiter.Arbiter = &arbiter.File{Dir: d}, &arbiter.File{Dir: d}
			if !leases {
				pa, sa = noLease{pa}, noLease{sa}
			}
			if t, ok := eofOnce(timeout, pa, sa); ok {
				xs = append(xs, ms(t))
			} else {
				log.Print("clean EOF: no failover")
			}
		}
		if leases {
			add("clean EOF → active, file: lease p50", percentile(xs, 0.5), "ms", "issue 14 target", 50)
			add("clean EOF → active, file: lease p99", percentile(xs, 0.99), "ms", "timeout", ms(timeout))
		} else {
			add("clean EOF → active, file: no lease p50", percentile(xs, 0.5), "ms", "timeout", ms(timeout))
		}
	}
}

// eofOnce protects a guest, kills the primary, and returns how long the
// replica took to run.
func eofOnce(timeout time.Duration, pa, sa arbiter.Arbiter) (time.Duration, bool) {
	return runKill(timeout, pa, sa, nil, nil, nil)
}

// runKill protects a guest, kills the primary (die, if set, first: the
// host's death as the dialer wrap models it; end lets its hung calls
// return at the end), and returns how long the replica took to run.
func runKill(timeout time.Duration, pa, sa arbiter.Arbiter, wrap func(checkpoint.Dialer) checkpoint.Dialer, die, end func()) (time.Duration, bool) {
	simP, _ := sim.New(nil)
	simS, _ := sim.New(nil)
	defer simP.DestroyAll()
	defer simS.DestroyAll()
	dom, err := simP.CreateDomain(sim.DomainConfig{Name: "eof", Pages: 4096, Workload: "hotset", Rate: 2000, NICs: []sim.NICConfig{{}}})
	if err != nil {
		log.Fatal(err)
	}
	d, _ := simP.Domain(dom)
	nic := d.NIC(0)
	buf := mem.New(func(f []byte) { nic.Transmit(f) })
	nic.SetEgress(buf.Send)
	ln, err := checkpoint.ListenTCP("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	ecfg := epoch.Config{Interval: epoch.Duration(20 * time.Millisecond), Timeout: epoch.Duration(timeout)}
	activated := make(chan time.Time, 1)
	released := make(chan struct{}, 1)
	var dialer checkpoint.Dialer = checkpoint.TCPDialer{Addr: ln.Addr()}
	if wrap != nil {
		dialer = wrap(dialer)
	}
	s, err := checkpoint.NewStandby(checkpoint.StandbyConfig{Epoch: ecfg, Logger: dbgLog("standby"),
		OnActivate: func(libxl.DomID, libxl.DomainInfo) { activated <- time.Now() }}, simS, ln, sa)
	if err != nil {
		log.Fatal(err)
	}
	p, err := checkpoint.NewPrimary(checkpoint.PrimaryConfig{Epoch: ecfg, Domain: dom, Codec: wire.CodecLZ4, Logger: dbgLog("primary"),
		Observer: func(o checkpoint.Observation) {
			if o.Kind == checkpoint.ObsRelease {
				select {
				case released <- struct{}{}:
				default:
				}
			}
		}}, simP, dialer, []netbuf.Buffer{buf}, nil, pa)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pctx, pkill := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.Run(ctx) }()
	go func() { defer wg.Done(); p.Run(pctx) }()
	defer func() {
		if end != nil {
			end() // the dead host's hung calls return
		}
		cancel()
		wg.Wait()
	}()
	select {
	case <-released:
	case <-time.After(time.Minute):
		log.Fatal("clean EOF: no protection after a minute")
	}
	time.Sleep(100 * time.Millisecond) // protected for a while
	t := time.Now()
	if die != nil {
		die()
	}
	pkill()
	select {
	case at := <-activated:
		return at.Sub(t), true
	case <-time.After(10 * time.Second):
		return 0, false
	}
}
