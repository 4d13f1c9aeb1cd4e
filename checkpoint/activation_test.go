package checkpoint_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/xl-kemari/xl-kemari/checkpoint"
	"github.com/xl-kemari/xl-kemari/checkpoint/wire"
	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/sim"
)

// readyStandby runs a standby on the simulator, feeds it one committed
// checkpoint of a 16-page idle guest (with the vCPU state a replica needs
// to run) and returns it with the primary's end, which then falls silent.
// hold, if set, is the sim's Activate hook.
func readyStandby(t *testing.T, hold func(libxl.DomID) error, obs func(checkpoint.Observation)) (*checkpoint.Standby, *rawPrimary, chan error) {
	t.Helper()
	hp, err := sim.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	dom, err := hp.CreateDomain(sim.DomainConfig{Name: "g", Pages: 16, Workload: sim.WorkloadIdle, Paused: true})
	if err != nil {
		t.Fatal(err)
	}
	states, err := hp.CaptureState(dom, nil)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := sim.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	hs.SetFaults(sim.Faults{Activate: hold})
	net := checkpoint.NewPipeNetwork()
	s, err := checkpoint.NewStandby(checkpoint.StandbyConfig{Epoch: fuzzEpoch, Observer: obs}, hs, net, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		hs.DestroyAll()
		hs.Close()
		hp.DestroyAll()
		hp.Close()
	})
	p := dialRaw(t, net)
	recs := []wire.Record{hello(smallDomain(16), 1), &wire.EpochBegin{Epoch: 1}}
	for _, st := range states {
		recs = append(recs, &wire.State{Kind: uint32(st.Kind), Index: st.Index, Data: st.Data})
	}
	if err := p.send(append(recs, &wire.EpochEnd{Epoch: 1})...); err != nil {
		t.Fatal(err)
	}
	return s, p, done
}

// TestActivatingVisible: from the standby's decision to activate (the
// primary silent for the timeout) until the replica runs, its status says
// "activating", with the reason and the epoch, and the observers have the
// decision (ObsActivating, naming how long the primary was silent) before
// the completion (ObsActivate, with the time from the decision). The
// replica's Activate is held open by the sim's hook, so the test looks
// while the activation is under way. Before, status said "ready" until
// the activation returned, and nothing stamped the decision.
// Reference: xl-kemari(1) status; issue 14.
func TestActivatingVisible(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		entered, release := make(chan struct{}), make(chan struct{})
		var once sync.Once
		free := func() { once.Do(func() { close(release) }) }
		defer free() // a failure below must not leave Run blocked in the hook
		var mu sync.Mutex
		var kinds []checkpoint.ObsKind
		var decided, completed checkpoint.Observation
		s, p, done := readyStandby(t, func(libxl.DomID) error {
			close(entered)
			<-release
			return nil
		}, func(o checkpoint.Observation) {
			mu.Lock()
			defer mu.Unlock()
			switch o.Kind {
			case checkpoint.ObsActivating:
				decided = o
			case checkpoint.ObsActivate:
				completed = o
			default:
				return
			}
			kinds = append(kinds, o.Kind)
		})
		synctest.Wait()
		if !p.has("ACK 1") {
			t.Fatalf("replies %q: want ACK 1", p.replies())
		}
		if st := s.Status().State; st != "ready" {
			t.Fatalf("after the checkpoint: state %q, want ready", st)
		}
		// The primary stays silent: the standby times it out.
		<-entered
		st := s.Status()
		if st.State != "activating" || st.Epoch != 1 || !strings.Contains(st.Reason, "primary silent for the timeout") {
			t.Fatalf("during the activation: state %q epoch %d reason %q; want activating at epoch 1 for the silent primary", st.State, st.Epoch, st.Reason)
		}
		if st.LastHeard < checkpoint.Dur(fuzzEpoch.Timeout) {
			t.Fatalf("last heard %v before the decision, below the timeout %v", st.LastHeard, fuzzEpoch.Timeout)
		}
		mu.Lock()
		if len(kinds) != 1 || kinds[0] != checkpoint.ObsActivating || decided.Epoch != 1 ||
			!strings.Contains(decided.Msg, "reason=primary silent for the timeout") || !strings.Contains(decided.Msg, "last heard") {
			t.Fatalf("observed %v, decision %+v: want the decision (epoch 1, reason, last heard) alone", kinds, decided)
		}
		mu.Unlock()
		free()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		done <- nil
		st = s.Status()
		if st.State != "active" || st.ActivatedEpoch != 1 {
			t.Fatalf("after: state %q activated epoch %d; want active at 1", st.State, st.ActivatedEpoch)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(kinds) != 2 || kinds[1] != checkpoint.ObsActivate || completed.Epoch != 1 ||
			completed.Time.Before(decided.Time) {
			t.Fatalf("observed %v, completion %+v: want the completion at epoch 1 after the decision", kinds, completed)
		}
	})
}

// TestActivatingOnPromote: a failover by hand is stamped with its reason
// too.
func TestActivatingOnPromote(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var decided checkpoint.Observation
		s, p, done := readyStandby(t, nil, func(o checkpoint.Observation) {
			if o.Kind == checkpoint.ObsActivating {
				mu.Lock()
				decided = o
				mu.Unlock()
			}
		})
		synctest.Wait()
		if !p.has("ACK 1") {
			t.Fatalf("replies %q: want ACK 1", p.replies())
		}
		s.Promote()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		done <- nil
		mu.Lock()
		defer mu.Unlock()
		if st := s.Status(); st.State != "active" || st.Reason != "failover requested by hand" {
			t.Fatalf("state %q reason %q; want active, by hand", st.State, st.Reason)
		}
		if !strings.Contains(decided.Msg, "reason=failover requested by hand") {
			t.Fatalf("decision %q: want the reason", decided.Msg)
		}
	})
}
