package epoch

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of scenario scripts")

// TestScenarios runs the scripts in testdata/*.txt. A script is a list of
// commands, each followed by the actions it produced ("> ..."), which the
// test compares (or, with -rewrite, rewrites). Commands:
//
//	config mode=epoch interval=100 min=10 timeout=500 inflight=1 arbiter=0 reprotect=1 lease=0
//	p|s EVENT @TIME [epoch=N] [replica=1] [fences=1] [verified=1] [initial=1] [retire=1] [resync=1] [lease=UNTIL]
//	p|s state            prints the machine's state
//	p|s deadline         prints the next deadline
//
// Times are in milliseconds. Lines starting with # are comments and name
// the section of docs/protocol.md the scenario checks.
func TestScenarios(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.txt")
	if len(files) == 0 {
		t.Fatal("no scenarios in testdata/")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) { runScenario(t, f) })
	}
}

func runScenario(t *testing.T, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var (
		out      strings.Builder
		p        *Primary
		s        *Standby
		got      []string
		expected []string
		mismatch bool
		lineNo   int
		cmdLine  int
	)
	flush := func() {
		if !slicesEqual(got, expected) {
			mismatch = true
			t.Errorf("%s:%d: got\n%s\nwant\n%s", path, cmdLine, strings.Join(got, "\n"), strings.Join(expected, "\n"))
		}
		for _, g := range got {
			out.WriteString(g + "\n")
		}
		got, expected = nil, nil
	}
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		if strings.HasPrefix(line, "> ") || line == ">" {
			expected = append(expected, line)
			continue
		}
		flush()
		out.WriteString(line + "\n")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cmdLine = lineNo
		f := strings.Fields(line)
		switch f[0] {
		case "config":
			cfg := parseConfig(t, f[1:])
			p, s = NewPrimary(cfg), NewStandby(cfg)
			continue
		case "p", "s":
		default:
			t.Fatalf("%s:%d: unknown command %q", path, lineNo, f[0])
		}
		if p == nil {
			t.Fatalf("%s:%d: config first", path, lineNo)
		}
		if len(f) < 2 {
			t.Fatalf("%s:%d: missing event", path, lineNo)
		}
		switch f[1] {
		case "state":
			if f[0] == "p" {
				got = append(got, fmt.Sprintf("> %s acked=%d inflight=%d", p.State(), p.Acked(), p.Inflight()))
			} else {
				st := fmt.Sprintf("> %s committed=%d", s.State(), s.Committed())
				if s.Fallback() != 0 {
					st += fmt.Sprintf(" fallback=%d", s.Fallback())
				}
				got = append(got, st)
			}
			continue
		case "deadline":
			d := p.Deadline()
			if f[0] == "s" {
				d = s.Deadline()
			}
			if d < 0 {
				got = append(got, "> none")
			} else {
				got = append(got, fmt.Sprintf("> %s", fmtMs(d)))
			}
			continue
		}
		ev := parseEvent(t, path, lineNo, f[1:])
		var acts []Action
		if f[0] == "p" {
			acts = p.Step(ev)
		} else {
			acts = s.Step(ev)
		}
		for _, a := range acts {
			got = append(got, "> "+a.String())
		}
	}
	flush()
	if *rewrite && mismatch {
		if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func fmtMs(d Duration) string {
	if d%Millisecond == 0 {
		return fmt.Sprintf("@%d", d/Millisecond)
	}
	return fmt.Sprintf("@%.3f", float64(d)/float64(Millisecond))
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func parseConfig(t *testing.T, args []string) Config {
	cfg := Config{Interval: 100 * Millisecond, Timeout: 500 * Millisecond}
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		n, _ := strconv.Atoi(v)
		switch k {
		case "mode":
			if v == "event" {
				cfg.Mode = ModeEvent
			}
		case "interval":
			cfg.Interval = Duration(n) * Millisecond
		case "min":
			cfg.MinInterval = Duration(n) * Millisecond
		case "timeout":
			cfg.Timeout = Duration(n) * Millisecond
		case "inflight":
			cfg.Inflight = n
		case "arbiter":
			cfg.Arbiter = n != 0
		case "lease":
			cfg.Lease = n != 0
		case "reprotect":
			cfg.Reprotect = n != 0
		default:
			t.Fatalf("unknown config key %q", k)
		}
	}
	return cfg
}

func parseEvent(t *testing.T, path string, line int, f []string) Event {
	kinds := map[string]EventKind{}
	for k := EvStart; k <= EvLapsed; k++ {
		kinds[k.String()] = k
	}
	ev := Event{}
	var ok bool
	if ev.Kind, ok = kinds[f[0]]; !ok {
		t.Fatalf("%s:%d: unknown event %q", path, line, f[0])
	}
	for _, a := range f[1:] {
		if strings.HasPrefix(a, "@") {
			ms, err := strconv.ParseFloat(a[1:], 64)
			if err != nil {
				t.Fatalf("%s:%d: bad time %q", path, line, a)
			}
			ev.Now = Duration(ms * float64(Millisecond))
			continue
		}
		k, v, _ := strings.Cut(a, "=")
		n, _ := strconv.ParseUint(v, 10, 64)
		switch k {
		case "epoch":
			ev.Epoch = n
		case "replica":
			ev.HasReplica = n != 0
		case "fences":
			ev.Fences = n != 0
		case "verified":
			ev.Verified = n != 0
		case "initial":
			ev.Initial = n != 0
		case "retire":
			ev.Retire = n != 0
		case "resync":
			ev.Resync = n != 0
		case "lease":
			ev.LeaseUntil = Duration(n) * Millisecond
		default:
			t.Fatalf("%s:%d: unknown argument %q", path, line, a)
		}
	}
	return ev
}
