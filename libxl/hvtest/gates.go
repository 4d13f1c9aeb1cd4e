package hvtest

import (
	"os"
	"strings"
	"testing"
)

// xenBuild is true when the test binary was built with the xen tag, i.e.
// with the cgo Xen backend.
var xenBuild = false

// RequiresXen skips t unless it runs in a Xen dom0 in a binary built with
// the xen build tag.
func RequiresXen(t testing.TB) {
	t.Helper()
	if !xenBuild {
		t.Skip("hvtest: requires the Xen backend: build with -tags xen")
	}
	caps, err := os.ReadFile("/proc/xen/capabilities")
	if err != nil {
		t.Skipf("hvtest: requires a Xen dom0: %v", err)
	}
	if !strings.Contains(string(caps), "control_d") {
		t.Skip("hvtest: requires a Xen dom0: /proc/xen/capabilities lacks control_d (this is a domU)")
	}
}

// RequiresRoot skips t unless it runs as root; setting
// KEMARI_SKIP_ROOT_TESTS to anything but "" or "0" skips it even as root.
func RequiresRoot(t testing.TB) {
	t.Helper()
	if v := os.Getenv("KEMARI_SKIP_ROOT_TESTS"); v != "" && v != "0" {
		t.Skip("hvtest: KEMARI_SKIP_ROOT_TESTS is set")
	}
	if os.Geteuid() != 0 {
		t.Skipf("hvtest: requires root (uid 0), running as uid %d; run as root or set KEMARI_SKIP_ROOT_TESTS=1", os.Geteuid())
	}
}
