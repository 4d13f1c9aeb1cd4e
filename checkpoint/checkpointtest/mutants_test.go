//go:build mutants

package checkpointtest

// The mutation check (make mutants): each mutant is a deliberate bug,
// written as an exact source edit applied to a temporary copy of the
// module (never to this tree, never to a shipped binary); the harness must
// catch every one within the CI seed budget. A mutant whose text no longer
// matches the source fails the check, so the list cannot rot silently.

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	mutantSeeds = flag.Int("mutant-seeds", 2000, "seeds each mutant may take to be caught (the CI budget)")
	mutantOnly  = flag.String("mutant", "", "run only the mutants whose name matches this regexp")
)

type mutant struct {
	name, why string
	file      string // relative to the module root
	old, new  string // exact text, replaced once
}

var mutants = []mutant{
	{"release-early", "the primary releases epoch k+1's output at ack k (pipelining)",
		"checkpoint/epoch/primary.go",
		"return append(out, Action{Kind: ActRelease, Epoch: k})",
		"return append(out, Action{Kind: ActRelease, Epoch: k + 1})"},
	{"skip-mem-digest", "the standby does not compare the memory digest",
		"checkpoint/standby.go",
		"ok := r.MemDigest == want",
		"ok := r.MemDigest == want || r.Epoch > 0"},
	{"skip-frame-digest", "the wire reader does not check an epoch frame's digest",
		"checkpoint/wire/reader.go",
		"if d := r.digest.Sum64(); d != e.Digest {",
		"if d := r.digest.Sum64(); d != e.Digest && e.Epoch == ^uint64(0) {"},
	{"skip-verify", "the standby machine commits epochs that failed verification",
		"checkpoint/epoch/standby.go",
		"case !ev.Verified:\n\t\t\tout = s.reject(ev.Epoch, \"epoch failed verification\", out)",
		"case !ev.Verified && ev.Epoch == 0:\n\t\t\tout = s.reject(ev.Epoch, \"epoch failed verification\", out)"},
	{"ack-before-commit", "the standby acknowledges an epoch before applying it",
		"checkpoint/epoch/standby.go",
		"out = append(out, Action{Kind: ActCommit, Epoch: ev.Epoch})\n\t\t\tif s.fallback != 0 {",
		"out = append(out, Action{Kind: ActAck, Epoch: ev.Epoch}, Action{Kind: ActCommit, Epoch: ev.Epoch})\n\t\t\tif s.fallback != 0 {"},
	{"ack-ahead", "the standby acknowledges epoch k+1 when it commits k",
		"checkpoint/epoch/standby.go",
		"out = append(out, Action{Kind: ActAck, Epoch: ev.Epoch})\n\t\t\tif s.state == SSyncing {",
		"out = append(out, Action{Kind: ActAck, Epoch: ev.Epoch + 1})\n\t\t\tif s.state == SSyncing {"},
	{"ack-without-commit", "the standby acknowledges odd epochs without applying them: its replica, and a failover, are at an older epoch",
		"checkpoint/standby.go",
		"case epoch.ActCommit:\n\t\t\tif err := s.commit(a.Epoch); err != nil {",
		"case epoch.ActCommit:\n\t\t\tif a.Epoch%2 == 1 {\n\t\t\t\tcontinue\n\t\t\t}\n\t\t\tif err := s.commit(a.Epoch); err != nil {"},
	{"release-without-grant", "the primary releases held output after losing the standby without the arbiter",
		"checkpoint/epoch/primary.go",
		"if p.cfg.Arbiter {\n\t\tp.state = PArbitrating",
		"if p.cfg.Arbiter && p.stopping {\n\t\tp.state = PArbitrating"},
	{"activate-without-grant", "the standby activates without the arbiter",
		"checkpoint/epoch/standby.go",
		"if s.cfg.Arbiter {\n\t\ts.state = SArbitrating",
		"if false {\n\t\ts.state = SArbitrating"},
	{"standby-impatient", "the standby declares the primary dead after a quarter of the timeout",
		"checkpoint/epoch/standby.go",
		"if s.now-s.lastHeard > s.cfg.Timeout {",
		"if s.now-s.lastHeard > s.cfg.Timeout/4 {"},
	{"stop-timeout-teardown", "an unanswered goodbye tears down (releases all) without the loss path (issue 11's bug)",
		"checkpoint/epoch/primary.go",
		"return p.lost(\"goodbye not confirmed within the timeout\", out)",
		"return p.stopped(out)"},
	{"stop-arbitrating-teardown", "stop while arbitrating tears down without the grant (issue 11's bug)",
		"checkpoint/epoch/primary.go",
		"p.stopping = true\n\t\treturn append(out, notify(\"stop requested; waiting for the arbiter\"))",
		"p.stopping = true\n\t\treturn p.stopped(out)"},
	{"stop-forgotten", "a stop pending arbitration is forgotten on the grant (issue 11's bug)",
		"checkpoint/epoch/primary.go",
		"if p.state == PArbitrating && p.stopping {",
		"if p.state == PArbitrating && p.stopping && p.next == 0 {"},
	{"fence-leaks", "fencing releases the held output before destroying the guest",
		"checkpoint/primary.go",
		"case epoch.ActFence:\n\t\t\tfor _, n := range p.nets {",
		"case epoch.ActFence:\n\t\t\tp.unprotect()\n\t\t\tfor _, n := range p.nets {"},
	{"no-protect", "the primary does not hold output from the first checkpoint of a sync",
		"checkpoint/primary.go",
		"\tif protect {\n\t\tfor _, n := range p.nets {\n\t\t\tn.Protect()",
		"\tif protect && p.gen == 0 {\n\t\tfor _, n := range p.nets {\n\t\t\tn.Protect()"},
}

var firstFail = regexp.MustCompile(`FIRST-FAILING-SEED (\d+) \((\d+) seeds run\): (.*)`)

// TestMutants applies each mutant to a copy of the module and runs the
// harness on it until a seed fails.
func TestMutants(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	files, err := exec.Command("git", "-C", root, "ls-files", "-co", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("listing the module's files: %v", err)
	}
	var only *regexp.Regexp
	if *mutantOnly != "" {
		only = regexp.MustCompile(*mutantOnly)
	}
	var table []string
	for _, m := range mutants {
		if only != nil && !only.MatchString(m.name) {
			continue
		}
		t.Run(m.name, func(t *testing.T) {
			dir := t.TempDir()
			sc := bufio.NewScanner(strings.NewReader(string(files)))
			for sc.Scan() {
				f := sc.Text()
				b, err := os.ReadFile(filepath.Join(root, f))
				if err != nil {
					continue // deleted in the work tree
				}
				if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755); err != nil {
					t.Fatal(err)
				}
				if f == m.file {
					if strings.Count(string(b), m.old) != 1 {
						t.Fatalf("mutant %s: the text to mutate is not (exactly once) in %s; update the mutant", m.name, m.file)
					}
					b = []byte(strings.Replace(string(b), m.old, m.new, 1))
				}
				if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			cmd := exec.Command("go", "test", "-count=1", "-timeout", "60m", "./checkpoint/checkpointtest",
				"-run", "^TestCluster$", "-seeds", fmt.Sprint(*mutantSeeds), "-failfast-seed")
			cmd.Dir = dir
			out, _ := cmd.CombinedOutput()
			mm := firstFail.FindStringSubmatch(string(out))
			if mm == nil {
				if strings.Contains(string(out), "ok ") {
					t.Errorf("mutant %s (%s) SURVIVED %d seeds", m.name, m.why, *mutantSeeds)
					table = append(table, fmt.Sprintf("%-26s SURVIVED %d seeds", m.name, *mutantSeeds))
					return
				}
				t.Errorf("mutant %s: the harness did not run:\n%s", m.name, out)
				table = append(table, fmt.Sprintf("%-26s BUILD/RUN FAILED", m.name))
				return
			}
			table = append(table, fmt.Sprintf("%-26s caught at seed %s (%s seeds): %s", m.name, mm[1], mm[2], mm[3]))
			t.Logf("caught at seed %s after %s seeds: %s", mm[1], mm[2], mm[3])
		})
	}
	t.Logf("mutant table (budget %d seeds):\n%s", *mutantSeeds, strings.Join(table, "\n"))
}
