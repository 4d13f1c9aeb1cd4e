// Package e2e holds the multi-process end-to-end tests (design §9 tier 4):
// real xl-kemari processes on loopback, the primary SIGKILLed at random
// moments, a real UDP client checking every acknowledged reply.
package e2e

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

var kills = flag.Int("kills", 20, "number of primary SIGKILLs (one demo run each)")

type report struct {
	FailoverMs   float64  `json:"failover_ms"`
	Acked        int      `json:"acked"`
	Lost         int      `json:"lost"`
	Violations   int      `json:"violations"`
	ReplicaMatch bool     `json:"replica_match"`
	Errors       []string `json:"errors"`
}

// TestKillPrimary SIGKILLs the primary at a random moment, -kills times,
// and requires after each: the service answered again, no acknowledged
// request lost, no output released before its epoch was committed, and the
// replica equal to the primary's last acknowledged checkpoint.
func TestKillPrimary(t *testing.T) {
	n := *kills
	if testing.Short() {
		n = 3
	}
	bin := filepath.Join(t.TempDir(), "xl-kemari")
	build := exec.Command("go", "build", "-o", bin, "../../xlkemari")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("KEMARI_E2E_SEED"); s != "" {
		fmt.Sscan(s, &seed)
	}
	t.Logf("seed %d (KEMARI_E2E_SEED=%d reproduces the kill times)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	var worst float64
	for i := 0; i < n; i++ {
		killAfter := time.Duration(200+rng.IntN(1300)) * time.Millisecond
		// With the file: arbiter: under make test's -race load on two
		// cores a live primary can stall past the timeout, and without an
		// arbiter that breaks the fail-stop assumption the demo makes
		// (the replica activates beside it; seen once). The arbiter fences
		// such a primary, as xl-kemari(1) says; a SIGKILLed one is what
		// this test is about either way.
		cmd := exec.Command(bin, "demo", "--json", "--arbiter", "--run", (killAfter + 1500*time.Millisecond).String(),
			"--kill-after", killAfter.String(), "--interval", "20ms", "--timeout", "200ms")
		out, err := cmd.Output()
		var r report
		if jerr := json.Unmarshal(out, &r); jerr != nil {
			t.Fatalf("run %d (kill after %v): %v; output %q", i, killAfter, err, out)
		}
		if r.Lost != 0 || r.Violations != 0 || !r.ReplicaMatch || r.FailoverMs == 0 {
			t.Errorf("run %d (kill after %v): %+v", i, killAfter, r)
		}
		worst = max(worst, r.FailoverMs)
	}
	t.Logf("%d kills, worst client-visible failover %.0f ms", n, worst)
}
