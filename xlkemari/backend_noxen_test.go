//go:build !xen

package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/xl-kemari/xl-kemari/libxl"
)

// A simulator-only build says, for --hypervisor=xen, how to get the real
// backend; version does not list it among the backends.
func TestNoXenBackend(t *testing.T) {
	_, err := libxl.Open("xen", nil)
	if !errors.Is(err, libxl.ErrUnknownBackend) {
		t.Fatalf("Open(xen) = %v, want ErrUnknownBackend", err)
	}
	for _, want := range []string{"built without the Xen backend", "apt-get install libxen-dev", "make build", "-tags xen", "make deb"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Open(xen): %q lacks %q", err, want)
		}
	}
	code, out, _ := runArgs(t, "version")
	if code != exitOK || !strings.Contains(out, "hypervisor backends: [sim]\n") || !strings.Contains(out, "xen backend: not built in") {
		t.Errorf("version: exit %d\n%s", code, out)
	}
	code, _, stderr := runArgs(t, "receive", "--hypervisor=xen", "--insecure-tcp", "--listen=127.0.0.1:0")
	if code != exitFailure || !strings.Contains(stderr, "-tags xen") {
		t.Errorf("receive --hypervisor=xen: exit %d, %q", code, stderr)
	}
}
