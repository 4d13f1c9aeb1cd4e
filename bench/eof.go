package main

import (
	"context"
	"log"
	"os"
	"path/filepath"
	"sync"
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
		}}, simP, checkpoint.TCPDialer{Addr: ln.Addr()}, []netbuf.Buffer{buf}, nil, pa)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pctx, pkill := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.Run(ctx) }()
	go func() { defer wg.Done(); p.Run(pctx) }()
	defer func() { cancel(); wg.Wait() }()
	select {
	case <-released:
	case <-time.After(time.Minute):
		log.Fatal("clean EOF: no protection after a minute")
	}
	time.Sleep(100 * time.Millisecond) // protected for a while
	t := time.Now()
	pkill()
	select {
	case at := <-activated:
		return at.Sub(t), true
	case <-time.After(10 * time.Second):
		return 0, false
	}
}
