package conf

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The corpus tests render each input to text and compare it with a golden
// file beside it (NAME.golden). After a deliberate change, regenerate with
//
//	go test ./conf -run Corpus -update
//
// and read the diff: the goldens are the expected values and errors.
var update = flag.Bool("update", false, "rewrite the golden files of the corpus tests")

func golden(t *testing.T, path, got string) {
	t.Helper()
	gp := strings.TrimSuffix(path, filepath.Ext(path)) + ".golden"
	if *update {
		if err := os.WriteFile(gp, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(gp)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s differs from %s (-want +got):\n%s", path, gp, diff)
	}
}

func siteHost(t *testing.T) *Host {
	t.Helper()
	h, err := LoadHost("testdata/toml/good/site.toml")
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// renderDomain shows everything a corpus file parses to: the verdict of
// the xl.cfg syntax, every statement with its positions, and either the
// domain and its effective protections or every error of LoadDomain.
func renderDomain(t *testing.T, path string, host *Host) string {
	var b strings.Builder
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, perr := ParseXLCfg(path, src)
	if perr == nil {
		b.WriteString("syntax: accepted\n-- statements --\n")
		for _, s := range f.Statements {
			fmt.Fprintf(&b, "%d:%d %s %s @%d:%d %s", s.KeyPos.Line, s.KeyPos.Col, s.Key, s.Op, s.Value.Pos.Line, s.Value.Pos.Col, dump(s.Value))
			if s.Op == Append {
				fmt.Fprintf(&b, " => %s", dump(s.Effective()))
			}
			b.WriteString("\n")
		}
	} else {
		b.WriteString("syntax: rejected\n")
	}
	d, err := LoadDomain(path, host, Overrides{})
	if err != nil {
		b.WriteString("-- errors --\n")
		for _, pe := range Errors(err) {
			fmt.Fprintf(&b, "%s\n", pe)
		}
		return b.String()
	}
	fmt.Fprintf(&b, "-- domain --\nname %q, type %s, memory %d MiB, %d vcpus\n", d.Name, d.Type, d.MemoryMiB, d.VCPUs)
	for _, v := range d.VIFs {
		fmt.Fprintf(&b, "vif %q\n", v)
	}
	for _, v := range d.Disks {
		fmt.Fprintf(&b, "disk %q\n", v)
	}
	for i, p := range d.Kemari {
		fmt.Fprintf(&b, "-- protection %d: %s --\n", i+1, p.StandbyAddr())
		for _, s := range p.Settings() {
			fmt.Fprintf(&b, "%-13s %-50s %s\n", s.Name, s.Value, s.Origin)
		}
	}
	return b.String()
}

func corpus(t *testing.T, glob string) []string {
	t.Helper()
	files, err := filepath.Glob(glob)
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus at %s (%v)", glob, err)
	}
	return files
}

func TestXLCfgCorpusGood(t *testing.T) {
	host := siteHost(t)
	for _, path := range corpus(t, "testdata/xlcfg/good/*.cfg") {
		t.Run(filepath.Base(path), func(t *testing.T) {
			out := renderDomain(t, path, host)
			if !strings.HasPrefix(out, "syntax: accepted") || strings.Contains(out, "-- errors --") {
				t.Errorf("good file does not load:\n%s", out)
			}
			golden(t, path, out)
		})
	}
}

func TestXLCfgCorpusBad(t *testing.T) {
	host := siteHost(t)
	for _, path := range corpus(t, "testdata/xlcfg/bad/*.cfg") {
		t.Run(filepath.Base(path), func(t *testing.T) {
			out := renderDomain(t, path, host)
			if !strings.Contains(out, "-- errors --") {
				t.Errorf("bad file loads:\n%s", out)
			}
			for _, line := range strings.Split(strings.TrimSpace(out[strings.Index(out, "-- errors --")+13:]), "\n") {
				if !strings.HasPrefix(line, path+":") {
					t.Errorf("error line does not start with FILE:LINE:COLUMN: %q", line)
				}
			}
			golden(t, path, out)
		})
	}
}

func renderHost(h *Host, err error) string {
	var b strings.Builder
	if err != nil {
		b.WriteString("-- errors --\n")
		for _, pe := range Errors(err) {
			fmt.Fprintf(&b, "%s\n", pe)
		}
		return b.String()
	}
	b.WriteString("-- host --\n")
	for _, s := range h.Settings() {
		fmt.Fprintf(&b, "%-15s %-40q %s\n", s.Name, s.Value, s.Origin)
	}
	b.WriteString("-- defaults --\n")
	for _, s := range h.Defaults.Settings() {
		fmt.Fprintf(&b, "%-15s %-40q %s\n", s.Name, s.Value, s.Origin)
	}
	return b.String()
}

func TestHostCorpus(t *testing.T) {
	for _, dir := range []string{"good", "bad"} {
		for _, path := range corpus(t, "testdata/toml/"+dir+"/*.toml") {
			t.Run(dir+"/"+filepath.Base(path), func(t *testing.T) {
				h, err := LoadHost(path)
				if (err == nil) != (dir == "good") {
					t.Errorf("LoadHost(%s) error = %v", path, err)
				}
				golden(t, path, renderHost(h, err))
			})
		}
	}
}

// TestEdgeCaseVerdicts records ParseXLCfg's answer for each edge case;
// the conformance test proves that libxlutil gives the same.
func TestEdgeCaseVerdicts(t *testing.T) {
	var b strings.Builder
	for i, src := range edgeCases {
		f, err := ParseXLCfg("edge.cfg", []byte(src))
		fmt.Fprintf(&b, "== %03d %q\n", i, src)
		if err != nil {
			for _, pe := range Errors(err) {
				fmt.Fprintf(&b, "rejected: %s\n", pe)
			}
			continue
		}
		for _, k := range f.Keys() {
			fmt.Fprintf(&b, "%s = %s\n", k, dump(f.Get(k)))
		}
	}
	golden(t, "testdata/edgecases.txt", b.String())
}
