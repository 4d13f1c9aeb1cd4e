package conf

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParseXLCfg checks that no input makes the xl.cfg reader panic, that
// every error it reports is a positioned *PosError, and that every file it
// accepts formats to text that parses back to the same statements.
// Run: go test ./conf -run NONE -fuzz FuzzParseXLCfg -fuzztime 10s
func FuzzParseXLCfg(f *testing.F) {
	for _, s := range edgeCases {
		f.Add([]byte(s))
	}
	paths, _ := filepath.Glob("testdata/xlcfg/*/*.cfg")
	for _, path := range paths {
		if b, err := os.ReadFile(path); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		file, err := ParseXLCfg("f.cfg", src)
		if file == nil {
			t.Fatal("nil File")
		}
		if err != nil {
			for _, pe := range Errors(err) {
				if !pe.Pos.IsValid() || pe.Pos.File != "f.cfg" || !errors.Is(pe, ErrSyntax) || strings.Contains(pe.Msg, "\n") {
					t.Fatalf("bad error %#v", pe)
				}
			}
			return
		}
		checkRoundTrip(t, "fuzz", file)
		// The domain layer must not panic on anything the parser accepts.
		_, _ = ParseDomain("f.cfg", src, nil, Overrides{})
	})
}

// FuzzParseKemariSpec checks that no kemari entry makes the spec parser
// panic, that errors are positioned inside the entry, and that an accepted
// entry survives Spec().
// Run: go test ./conf -run NONE -fuzz FuzzParseKemariSpec -fuzztime 10s
func FuzzParseKemariSpec(f *testing.F) {
	for _, s := range []string{
		"", "standby=h2", "standby=h2:8011,mode=event,interval=40ms,min-interval=2ms",
		"standby=[2001:db8::7]:9011, timeout=2s, compress=zstd, arbiter=etcd://e:2379/k, autostart=1",
		"netbuf=none,unsafe=1", "disk=shared,arbiter=file:/srv/lease", "inflight=4,transport=tls",
		"intervall=5", "a,b,,=", "standby=fe80::1%eth0", "interval=1e3ms",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		p, err := ParseKemariSpec(spec, Defaults())
		if err != nil {
			for _, pe := range Errors(err) {
				if pe.Pos.Line != 1 || pe.Pos.Col < 1 || pe.Pos.Col > len(spec)+1 || strings.Contains(pe.Msg, "\n") && !strings.Contains(spec, "\n") {
					t.Fatalf("bad error %#v for %q", pe, spec)
				}
			}
			return
		}
		_ = p.Validate()
		q, err := ParseKemariSpec(p.Spec(), Defaults())
		if err != nil {
			t.Fatalf("Spec() of %q = %q does not parse: %v", spec, p.Spec(), err)
		}
		p.Origins, q.Origins = Origins{}, Origins{}
		if p != q {
			t.Fatalf("round trip of %q through %q: %+v != %+v", spec, p.Spec(), p, q)
		}
	})
}
