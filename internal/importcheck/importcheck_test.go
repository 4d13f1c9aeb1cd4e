// Package importcheck enforces the dependency rules of design.md §4: the
// engine sees only contracts, cgo stays in libxl/xen (and the xlutil
// conformance wrapper), the epoch machine does no I/O.
package importcheck

import (
	"go/build"
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/xl-kemari/xl-kemari/"

// rules: package (relative) → import prefixes it must not use.
var forbidden = map[string][]string{
	"checkpoint/epoch": {"net", "os", "time", "sync", "C", mod},
	"checkpoint/wire":  {"C", mod + "libxl", mod + "netbuf", mod + "checkpoint"},
	"libxl":            {"C", mod},
	"netbuf":           {"C", mod},
	"libxl/sim":        {"C", mod + "netbuf", mod + "checkpoint", mod + "libxl/xen"},
	"checkpoint":       {"C", mod + "libxl/xen", mod + "libxl/sim", mod + "netbuf/plug", mod + "netbuf/nfqueue", mod + "netbuf/auto"},
	"conf":             {"C", mod + "checkpoint"},
	"diskbuf":          {"C", mod + "checkpoint", mod + "netbuf"},
	"diskbuf/nbd":      {"C", mod + "checkpoint", mod + "netbuf", mod + "libxl/xen"},
	// The engine must not link the etcd client: only the command does
	// (arbiter/etcd registers itself with arbiter.Open).
	"arbiter":      {"C", mod, "go.etcd.io", "google.golang.org/grpc"},
	"arbiter/etcd": {"C", mod + "checkpoint", mod + "libxl", mod + "netbuf"},
}

func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.Dir}}", mod+"libxl").Output()
	if err != nil {
		t.Skipf("go list unavailable: %v", err)
	}
	root := strings.TrimSuffix(strings.TrimSpace(string(out)), "/libxl")
	for pkg, bad := range forbidden {
		p, err := build.ImportDir(root+"/"+pkg, 0)
		if err != nil {
			t.Errorf("%s: %v", pkg, err)
			continue
		}
		for _, imp := range p.Imports {
			for _, b := range bad {
				if matches(imp, b) {
					t.Errorf("%s imports %s (design.md §4 forbids %s)", pkg, imp, b)
				}
			}
		}
	}
}

// matches reports whether imp is b or inside it.
func matches(imp, b string) bool {
	b = strings.TrimSuffix(b, "/")
	return imp == b || strings.HasPrefix(imp, b+"/")
}

func TestMatches(t *testing.T) {
	for _, c := range []struct {
		imp, rule string
		want      bool
	}{{"net", "net", true}, {"net/netip", "net", true}, {"netbuf", "net", false},
		{mod + "libxl/xen", mod + "libxl/xen", true}, {mod + "libxl", mod, true}, {"os/exec", "os", true}} {
		if got := matches(c.imp, c.rule); got != c.want {
			t.Errorf("matches(%q, %q) = %v", c.imp, c.rule, got)
		}
	}
}
