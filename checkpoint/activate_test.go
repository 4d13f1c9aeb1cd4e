package checkpoint_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/xl-kemari/xl-kemari/checkpoint"
	"github.com/xl-kemari/xl-kemari/checkpoint/wire"
	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/sim"
)

// prepSink is a Sink with libxl.ActivationPreparer whose PrepareActivate
// ends only once the replica's pages were read (the standby's digest
// check): it records the order of the calls.
type prepSink struct {
	libxl.Sink
	mu    sync.Mutex
	calls []string
	read  chan struct{}
	once  sync.Once
	done  chan struct{} // closed by Activate
}

func (p *prepSink) note(s string) {
	p.mu.Lock()
	p.calls = append(p.calls, s)
	p.mu.Unlock()
}

func (p *prepSink) ReadPages(dom libxl.DomID, pfns []libxl.PFN, dst []byte) error {
	p.once.Do(func() { p.note("read"); close(p.read) })
	return p.Sink.ReadPages(dom, pfns, dst)
}

func (p *prepSink) PrepareActivate(dom libxl.DomID) error {
	p.note("prepare")
	<-p.read
	p.note("prepared")
	return nil
}

func (p *prepSink) Activate(dom libxl.DomID) error {
	p.note("activate")
	defer close(p.done)
	return p.Sink.Activate(dom)
}

// TestStandbyPreparesWhileVerifying: at the failover decision a Sink that
// builds its replica only then (Xen's stream-fed PV replicas) is asked to
// PrepareActivate while the standby checks the replica's digest, not after
// it, and Activate comes last. The sink's prepare waits for the digest's
// first read, so a standby that verified after preparing (or prepared
// inside Activate) never activates.
func TestStandbyPreparesWhileVerifying(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hv, err := sim.New(nil)
		if err != nil {
			t.Fatal(err)
		}
		defer hv.Close()
		ps := &prepSink{Sink: hv.Sink(), read: make(chan struct{}), done: make(chan struct{})}
		net := checkpoint.NewPipeNetwork()
		s, err := checkpoint.NewStandby(checkpoint.StandbyConfig{Epoch: fuzzEpoch, Once: true, Verify: true}, ps, net, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		// The vCPU state of a sim guest of the same shape, for the epoch.
		src, err := sim.New(nil)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		g, err := src.CreateDomain(sim.DomainConfig{Name: "g", Pages: 16, VCPUs: 1, Workload: sim.WorkloadIdle, Paused: true})
		if err != nil {
			t.Fatal(err)
		}
		blobs, err := src.CaptureState(g, nil)
		if err != nil {
			t.Fatal(err)
		}
		recs := []wire.Record{hello(smallDomain(16), 1), &wire.EpochBegin{Epoch: 1}}
		for _, b := range blobs {
			recs = append(recs, &wire.State{Kind: uint32(b.Kind), Index: b.Index, Data: b.Data})
		}
		p := dialRaw(t, net)
		p.send(append(recs, &wire.EpochEnd{Epoch: 1})...)
		synctest.Wait()
		if !p.has("ACK 1") {
			t.Fatalf("replies %q: want ACK 1", p.replies())
		}
		p.c.Close() // the primary is gone; the standby activates after its timeout
		// Activate, or a deadline on the bubble's clock: a standby that
		// prepared after verifying never gets there.
		select {
		case <-ps.done:
		case <-time.After(5 * time.Duration(fuzzEpoch.Timeout)):
		}
		synctest.Wait()
		ps.mu.Lock()
		calls := slices.Clone(ps.calls)
		ps.mu.Unlock()
		// prepare and the digest's first read run at once, in either order.
		a := []string{"prepare", "read", "prepared", "activate"}
		b := []string{"read", "prepare", "prepared", "activate"}
		if !slices.Equal(calls, a) && !slices.Equal(calls, b) {
			cancel()
			t.Fatalf("calls %q, want %q or %q", calls, a, b)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
		default:
			t.Fatal("the standby did not end after activating (Once)")
		}
		if _, active := s.Activated(); !active {
			t.Fatal("the replica was not activated")
		}
		hv.DestroyAll()
		src.DestroyAll()
	})
}
