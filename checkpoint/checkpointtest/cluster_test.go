package checkpointtest

import (
	"flag"
	"testing"
	"testing/synctest"
)

var (
	seeds = flag.Int("seeds", 200, "number of seeds to run")
	first = flag.Uint64("seed", 1, "first seed")
)

// TestCluster runs the seeded fault-injection harness. A failing seed is
// reproduced with: go test ./checkpoint/checkpointtest -run TestCluster -seed N -seeds 1 -v
func TestCluster(t *testing.T) {
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
			t.Errorf("%s\nreproduce: go test ./checkpoint/checkpointtest -run 'TestCluster$' -seed %d -seeds 1 -v", rep, seed)
			if failed >= 3 {
				t.Fatal("stopping after 3 failing seeds")
			}
		} else if testing.Verbose() && n == 1 {
			t.Log(rep)
		}
	}
}
