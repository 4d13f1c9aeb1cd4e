package checkpoint_test

import (
	"context"
	"strings"
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

// TestSyncNotYetProtected: while the initial sync runs, its output is not
// held, and the primary says so: every ObsSync and the status at that
// moment read "not yet protected (initial sync, round k, N% of memory
// sent)", rounds counted from 1; once the sync's checkpoint is taken the
// status says output is held from it, and once it is acknowledged
// (protected) the account is gone. Before, status said "syncing N%" and
// nothing said that the sync's output was unprotected.
// Reference: xl-kemari(1) status, INITIAL SYNCHRONISATION; issue 14.
func TestSyncNotYetProtected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hp, _ := sim.New(nil)
		hs, _ := sim.New(nil)
		defer func() { hp.DestroyAll(); hs.DestroyAll(); hp.Close(); hs.Close() }()
		dom, err := hp.CreateDomain(sim.DomainConfig{Name: "g", Pages: 8192, Workload: sim.WorkloadUniform,
			Rate: 20000, Seed: 1, Quantum: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ecfg := epoch.Config{Mode: epoch.ModeEpoch, Interval: epoch.Duration(20 * time.Millisecond),
			Timeout: epoch.Duration(200 * time.Millisecond)}
		net := checkpoint.NewPipeNetwork()
		// Reading guest memory takes time (a millisecond per batch on the
		// bubble's clock): the guest runs while a round is read, so the
		// next round has pages to send.
		hp.SetFaults(sim.Faults{ReadPages: func(libxl.DomID, []libxl.PFN) error {
			time.Sleep(time.Millisecond)
			return nil
		}})
		var (
			mu        sync.Mutex
			syncs     []checkpoint.Observation
			during    []checkpoint.Status
			held      checkpoint.Status
			p         *checkpoint.Primary
			protected = make(chan struct{})
		)
		p, err = checkpoint.NewPrimary(checkpoint.PrimaryConfig{Epoch: ecfg, Domain: dom, Codec: wire.CodecLZ4,
			SyncStopPages: 1, SyncMaxRounds: 3, Observer: func(o checkpoint.Observation) {
				mu.Lock()
				defer mu.Unlock()
				switch {
				case o.Kind == checkpoint.ObsSync:
					syncs = append(syncs, o)
					during = append(during, p.Status())
				case o.Kind == checkpoint.ObsCheckpoint && held.Role == "":
					held = p.Status()
				case o.Kind == checkpoint.ObsState && o.State == "protected":
					close(protected)
				}
			}}, hp, net, nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		s, err := checkpoint.NewStandby(checkpoint.StandbyConfig{Epoch: ecfg}, hs, net, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		pdone := make(chan error, 1)
		go func() { pdone <- p.Run(ctx) }()
		go s.Run(ctx)
		<-protected
		st := p.Status()
		p.Stop()
		if err := <-pdone; err != nil {
			t.Fatalf("primary: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(syncs) == 0 {
			t.Fatal("no sync progress observed")
		}
		rounds := map[int]bool{}
		for i, o := range syncs {
			rounds[o.Round] = true
			if !strings.HasPrefix(o.Msg, "not yet protected (initial sync, round ") || !strings.HasSuffix(o.Msg, "% of memory sent)") {
				t.Fatalf("sync observation %d: %q, want the not-yet-protected account", i, o.Msg)
			}
			d := during[i]
			if !d.NotYetProtected || d.Protection != o.Msg || d.SyncRound != o.Round || d.State != "syncing" {
				t.Fatalf("status during the sync: not_yet_protected=%v protection=%q round %d state %q; observed %q round %d",
					d.NotYetProtected, d.Protection, d.SyncRound, d.State, o.Msg, o.Round)
			}
		}
		if !rounds[1] || !rounds[2] {
			t.Fatalf("rounds observed %v: want 1 and 2 (a writer at 20000 pages/s does not converge in one)", rounds)
		}
		if !held.NotYetProtected || !strings.Contains(held.Protection, "output held from it") {
			t.Fatalf("at the sync's checkpoint: not_yet_protected=%v protection %q", held.NotYetProtected, held.Protection)
		}
		if st.NotYetProtected || st.Protection != "" || st.SyncRound != 0 {
			t.Fatalf("protected, yet: not_yet_protected=%v protection %q round %d", st.NotYetProtected, st.Protection, st.SyncRound)
		}
	})
}
