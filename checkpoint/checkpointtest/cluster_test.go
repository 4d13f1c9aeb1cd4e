package checkpointtest

import (
	"flag"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// oneP runs the test on one P: goroutines woken at one virtual instant then
// run in the scheduler's order, which is the same on every run, rather
// than in parallel. With the harness keeping its own events off each
// other's instants, a seed then reproduces its run exactly.
func oneP(t *testing.T) {
	prev := runtime.GOMAXPROCS(1)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
}

var (
	reproSeeds = flag.Int("repro-seeds", 12, "seeds TestReproducible runs twice")
	seeds      = flag.Int("seeds", 50, "number of seeds to run (make test runs $(SEEDS))")
	first      = flag.Uint64("seed", 1, "first seed")
	failFast   = flag.Bool("failfast-seed", false, "stop at the first failing seed and print it (the mutation check)")
)

// TestCluster runs the seeded fault-injection harness. A failing seed is
// reproduced with: go test ./checkpoint/checkpointtest -run TestCluster -seed N -seeds 1 -v
func TestCluster(t *testing.T) {
	oneP(t)
	n := *seeds
	if testing.Short() && n > 50 {
		n = 50
	}
	failed := 0
	for i := 0; i < n; i++ {
		seed := *first + uint64(i)
		var rep *Report
		synctest.Test(t, func(t *testing.T) { rep = Run(Options{Seed: seed}) })
		if !rep.OK() {
			failed++
			if *failFast {
				// Read by the mutation check (test/mutants).
				fmt.Printf("FIRST-FAILING-SEED %d (%d seeds run): %s\n", seed, i+1, rep.Violations[0])
				t.Fatalf("%s", rep)
			}
			t.Errorf("%s\nreproduce: go test ./checkpoint/checkpointtest -run 'TestCluster$' -seed %d -seeds 1 -v", rep, seed)
			if failed >= 3 {
				t.Fatal("stopping after 3 failing seeds")
			}
		} else if testing.Verbose() && n == 1 {
			t.Log(rep)
		}
	}
}

// TestReproducible: a seed is a run. The same seed twice gives the same
// event log of the whole cluster, entry for entry (virtual time, faults,
// checkpoints, acks, commits, releases, activations, grants, client
// answers). make test runs it without -race.
func TestReproducible(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector randomises scheduling; make test runs this test without -race")
	}
	oneP(t)
	for seed := *first; seed < *first+uint64(*reproSeeds); seed++ {
		var a, b *Report
		synctest.Test(t, func(t *testing.T) { a = Run(Options{Seed: seed}) })
		synctest.Test(t, func(t *testing.T) { b = Run(Options{Seed: seed}) })
		if !slices.Equal(a.Log, b.Log) || a.Acked != b.Acked {
			i := 0
			for i < min(len(a.Log), len(b.Log)) && a.Log[i] == b.Log[i] {
				i++
			}
			ea, eb := "(end)", "(end)"
			if i < len(a.Log) {
				ea = a.Log[i]
			}
			if i < len(b.Log) {
				eb = b.Log[i]
			}
			if testing.Verbose() {
				for j := max(0, i-8); j < min(i+3, len(a.Log), len(b.Log)); j++ {
					t.Logf("%d\n  a %s\n  b %s", j, a.Log[j], b.Log[j])
				}
			}
			t.Errorf("seed %d: runs differ at log entry %d of %d/%d:\n  %s\n  %s\nacked %d vs %d", seed, i, len(a.Log), len(b.Log), ea, eb, a.Acked, b.Acked)
		}
	}
}

// TestScenariosEach runs every scenario with and without the arbiter (the
// partitions only with), and every goodbye fault of the stop scenarios.
func TestScenariosEach(t *testing.T) {
	oneP(t)
	type run struct {
		name string
		o    Options
	}
	var runs []run
	for sc := NoKill; sc < nScenarios; sc++ {
		for _, a := range []Arbiter{ArbiterOn, ArbiterOff} {
			if a == ArbiterOff && sc.partitions() {
				continue
			}
			runs = append(runs, run{fmt.Sprintf("%s/arbiter=%v", sc, a == ArbiterOn), Options{Scenario: sc, ScenarioSet: true, Arbiter: a, Inflight: 2}})
		}
	}
	for _, f := range []Fault{Pass, Drop, Delay, DelayLong, Corrupt, Garble} {
		for _, side := range []string{"p", "s"} {
			for _, a := range []Arbiter{ArbiterOn, ArbiterOff} {
				for _, n := range []int{-1, 1} {
					if a == ArbiterOff && n < 0 {
						continue // every goodbye lost is a partition
					}
					runs = append(runs, run{fmt.Sprintf("stop/goodbye-%s-%s/n=%d/arbiter=%v", side, f, n, a == ArbiterOn),
						Options{Scenario: Stop, ScenarioSet: true, Arbiter: a, ByeFault: f, ByeSide: side, ByeN: n, FaultProb: -1}})
				}
			}
		}
	}
	for i, r := range runs {
		t.Run(r.name, func(t *testing.T) {
			for s := uint64(1); s <= 2; s++ {
				r.o.Seed = uint64(i)*100 + s
				var rep *Report
				synctest.Test(t, func(t *testing.T) { rep = Run(r.o) })
				if !rep.OK() {
					t.Errorf("%s", rep)
				}
			}
		})
	}
}

// TestDerivedTimeoutNoFalseFailover: with no timeout configured the
// primary derives one from what it measures (the link's latency and
// bandwidth from the seed, the pauses, the standby's frames) and the
// standby adopts it; on a link without faults that timeout never fails
// over, nor leaves the primary unprotected, over runs of 3 s of virtual
// time, and it was derived (not the 1 s default) and announced (the
// standby uses the same). Seeds of the whole harness with derived
// timeouts keep every invariant too.
func TestDerivedTimeoutNoFalseFailover(t *testing.T) {
	oneP(t)
	n := 12
	if testing.Short() {
		n = 4
	}
	for i := 0; i < n; i++ {
		seed := *first + uint64(i)
		var rep *Report
		synctest.Test(t, func(t *testing.T) {
			rep = Run(Options{Seed: seed, Scenario: NoKill, ScenarioSet: true, FaultProb: -1, DeriveTimeout: true,
				Timeout: time.Second, Length: 3 * time.Second})
		})
		if !rep.OK() {
			t.Fatalf("%s", rep)
		}
		if rep.Activated {
			t.Fatalf("seed %d: false failover with the derived timeout %v (%s)", seed, rep.PTimeout, rep.TimeoutWhy)
		}
		for _, l := range rep.Log {
			if strings.Contains(l, "P state unprotected") || strings.Contains(l, "P state reconnecting") {
				t.Fatalf("seed %d: %s with the derived timeout %v (%s)", seed, l, rep.PTimeout, rep.TimeoutWhy)
			}
		}
		if rep.PTimeout == time.Second || rep.STimeout != rep.PTimeout || !strings.Contains(rep.TimeoutWhy, "derived: pause p99") {
			t.Fatalf("seed %d: primary's timeout %v (%s), standby's %v: want one derived and announced", seed, rep.PTimeout, rep.TimeoutWhy, rep.STimeout)
		}
		t.Logf("seed %d latency %v: %s", seed, rep.Latency, rep.TimeoutWhy)
	}
	for i := 0; i < n; i++ {
		seed := *first + 1000 + uint64(i)
		var rep *Report
		synctest.Test(t, func(t *testing.T) {
			rep = Run(Options{Seed: seed, DeriveTimeout: true, Timeout: time.Second, Length: 3 * time.Second})
		})
		if !rep.OK() {
			t.Errorf("%s\nreproduce: go test ./checkpoint/checkpointtest -run 'TestDerivedTimeoutNoFalseFailover$' (seed %d, DeriveTimeout)", rep, seed)
		}
	}
}

// TestPromoteFences: a failover by hand while the primary is live and
// connected (protocol §7.7). Without an arbiter the standby tells the
// primary before it activates, or answers its reconnect; the primary
// fences (its guest destroyed, held output discarded) and never runs on
// beside the replica. With one, the arbiter decides.
func TestPromoteFences(t *testing.T) {
	oneP(t)
	for _, a := range []Arbiter{ArbiterOff, ArbiterOn} {
		for s := uint64(1); s <= 12; s++ {
			var rep *Report
			synctest.Test(t, func(t *testing.T) {
				rep = Run(Options{Seed: 700 + s, Scenario: Promote, ScenarioSet: true, Arbiter: a})
			})
			// With an arbiter, the live primary's lease keeps the
			// domain where it runs: the standby's request waits, and is
			// refused once the primary, cut off, wins the session.
			if !rep.OK() || a == ArbiterOff && !rep.Activated {
				t.Errorf("activated=%v\n%s", rep.Activated, rep)
			}
		}
	}
}

// TestLeaseStall: the primary's lease renewals hang past its validity
// (protocol §7.8): no held output leaves without a valid lease (the
// verifier checks every release against it), and the primary goes through
// the arbiter as on a standby loss.
func TestLeaseStall(t *testing.T) {
	oneP(t)
	for s := uint64(1); s <= 16; s++ {
		var rep *Report
		synctest.Test(t, func(t *testing.T) {
			rep = Run(Options{Seed: 800 + s, Scenario: LeaseStall, ScenarioSet: true})
		})
		if !rep.OK() {
			t.Errorf("%s", rep)
		}
	}
}
