package epoch

import (
	"math/rand"
	"testing"
)

// TestStalledNeverReleasesAlone drives a primary that stalled and lost its
// standby (no arbiter) with random events that do not include a standby
// answering with this session's replica: it must never release held output
// (ActUnprotect, ActTeardown, ActRelease) nor leave PStalled on its own.
func TestStalledNeverReleasesAlone(t *testing.T) {
	kinds := []EventKind{EvTick, EvConnected, EvConnectFailed, EvAck, EvNack, EvFrame,
		EvOutputWaiting, EvDisconnected, EvStop, EvStopConfirmed, EvSyncDone}
	for seed := int64(1); seed <= 200; seed++ {
		rng := rand.New(rand.NewSource(seed))
		p := NewPrimary(Config{Mode: ModeEpoch, Interval: 100 * Millisecond, Timeout: 500 * Millisecond})
		p.Step(Event{Kind: EvStart})
		p.Step(Event{Kind: EvConnected})
		p.Step(Event{Kind: EvSyncDone, Epoch: 1})
		p.Step(Event{Kind: EvAck, Now: Millisecond, Epoch: 1})
		p.Step(Event{Kind: EvTick, Now: 700 * Millisecond}) // ran 600 ms late
		if p.State() != PStalled {
			t.Fatalf("seed %d: after a stall and a loss: state %v, want stalled", seed, p.State())
		}
		now := 700 * Millisecond
		for i := 0; i < 200; i++ {
			now += Duration(rng.Intn(400)) * Millisecond
			ev := Event{Kind: kinds[rng.Intn(len(kinds))], Now: now, Epoch: uint64(rng.Intn(4))}
			if ev.Kind == EvConnected {
				ev.Epoch = 0 // the standby holds no replica of this session
			}
			for _, a := range p.Step(ev) {
				switch a.Kind {
				case ActUnprotect, ActTeardown, ActRelease:
					t.Fatalf("seed %d step %d: %v after %v while stalled", seed, i, a, ev.Kind)
				}
			}
			if p.State() != PStalled {
				t.Fatalf("seed %d step %d: left stalled for %v on %v", seed, i, p.State(), ev.Kind)
			}
		}
	}
}
