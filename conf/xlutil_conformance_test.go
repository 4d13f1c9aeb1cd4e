//go:build xen

package conf

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xl-kemari/xl-kemari/conf/internal/xlutil"
)

// This test holds ParseXLCfg to xl's own parser: every input of the corpus
// (the good and broken xl.cfg files, the edge cases below and the fuzz seeds)
// goes through both libxlutil's xlu_cfg_readdata and ParseXLCfg, which must
// agree on accept/reject and, when accepting, on every key's value, its
// operator and the line of its value. Run with: go test -tags xen ./conf/...

func conformanceInputs(t *testing.T) map[string][]byte {
	t.Helper()
	in := map[string][]byte{}
	for _, glob := range []string{"testdata/xlcfg/good/*.cfg", "testdata/xlcfg/bad/*.cfg", "testdata/fuzz/FuzzParseXLCfg/*"} {
		files, err := filepath.Glob(glob)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(f, "testdata/fuzz/") {
				b = fuzzInput(t, b)
			}
			in[f] = b
		}
	}
	for i, s := range edgeCases {
		in[fmt.Sprintf("edge-%03d", i)] = []byte(s)
	}
	return in
}

func TestXLUtilConformance(t *testing.T) {
	for name, src := range conformanceInputs(t) {
		if bytes.IndexByte(src, 0) >= 0 {
			continue // libxlutil aborts on NUL inside a string; we reject NUL
		}
		t.Run(name, func(t *testing.T) {
			xl := xlutil.ReadData("test.cfg", src)
			f, err := ParseXLCfg("test.cfg", src)
			if (xl.Errno == 0) != (err == nil) {
				t.Fatalf("verdicts differ on %q:\nxl: errno %d, report %q\nconf: %v", src, xl.Errno, xl.Report, err)
			}
			if err != nil {
				return
			}
			if len(xl.Settings) != len(f.Statements) {
				t.Fatalf("xl stored %d settings, conf %d", len(xl.Settings), len(f.Statements))
			}
			last := map[string]xlutil.Setting{}
			for i, xs := range xl.Settings {
				s := f.Statements[i]
				if xs.Name != s.Key || xs.Append != (s.Op == Append) || xs.Line != s.Value.Pos.Line {
					t.Errorf("setting %d: xl %s (append %v, line %d), conf %s %s (line %d)",
						i, xs.Name, xs.Append, xs.Line, s.Key, s.Op, s.Value.Pos.Line)
				}
				last[xs.Name] = xs
			}
			for name, xs := range last {
				if got, want := dump(f.Get(name)), dumpXL(xs.Value); got != want {
					t.Errorf("%s: conf %s, xl %s", name, got, want)
				}
			}
		})
	}
}

func dumpXL(v xlutil.Value) string {
	if !v.List {
		return fmt.Sprintf("%q", v.Str)
	}
	parts := make([]string, len(v.Items))
	for i, e := range v.Items {
		parts[i] = dumpXL(e)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// FuzzXLUtilConformance searches for inputs on which ParseXLCfg and
// libxlutil disagree: go test -tags xen -fuzz FuzzXLUtilConformance ./conf/
func FuzzXLUtilConformance(f *testing.F) {
	for _, s := range edgeCases {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		if bytes.IndexByte(src, 0) >= 0 {
			return
		}
		xl := xlutil.ReadData("test.cfg", src)
		file, err := ParseXLCfg("test.cfg", src)
		if (xl.Errno == 0) != (err == nil) {
			t.Fatalf("verdicts differ on %q:\nxl: errno %d, report %q\nconf: %v", src, xl.Errno, xl.Report, err)
		}
		if err != nil {
			return
		}
		for i, xs := range xl.Settings {
			s := file.Statements[i]
			if xs.Name != s.Key || xs.Line != s.Value.Pos.Line {
				t.Fatalf("setting %d differs on %q", i, src)
			}
		}
		for _, xs := range xl.Settings {
			if got, want := dump(file.Get(xs.Name)), dumpXL(lastXL(xl.Settings, xs.Name)); got != want {
				t.Fatalf("%s on %q: conf %s, xl %s", xs.Name, src, got, want)
			}
		}
	})
}

func lastXL(ss []xlutil.Setting, name string) xlutil.Value {
	var v xlutil.Value
	for _, s := range ss {
		if s.Name == name {
			v = s.Value
		}
	}
	return v
}
