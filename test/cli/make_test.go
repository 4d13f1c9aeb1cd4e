package cli

import (
	"os/exec"
	"strings"
	"testing"
)

// make build uses -tags xen exactly when pkg-config finds Xen's libraries
// (or XEN=1 says so), and warns loudly when it builds without; make
// install checks the binary for the backend (the refusal itself is
// checked on the binary by xlkemari's TestNoXenBackend and by hand).
func TestMakeBuildXen(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	dry := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("make", append([]string{"-n", "-C", "../.."}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("make -n %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := dry("build", "XEN_PKGS=no-such-xen-library"); strings.Contains(out, "go build -tags xen") || !strings.Contains(out, "WARNING: building WITHOUT the Xen backend") {
		t.Errorf("build without Xen's libraries:\n%s", out)
	}
	if out := dry("build", "XEN=0"); strings.Contains(out, "go build -tags xen") || !strings.Contains(out, "WARNING") {
		t.Errorf("build XEN=0:\n%s", out)
	}
	if out := dry("build", "XEN=1"); !strings.Contains(out, "go build -tags xen") || strings.Contains(out, "WARNING") {
		t.Errorf("build XEN=1:\n%s", out)
	}
	if out := dry("install", "XEN=1"); !strings.Contains(out, "xen backend: not built in") {
		t.Errorf("install does not check the binary for the Xen backend:\n%s", out)
	}
	if out := dry("bench"); !strings.Contains(out, "-out bin/bench/results.json") || strings.Contains(out, " bench/results") {
		t.Errorf("bench writes into the tracked bench/:\n%s", out)
	}
}
