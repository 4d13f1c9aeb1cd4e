//go:build xen

package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/xen"
)

// xenBuiltIn says whether this binary has the real Xen backend.
const xenBuiltIn = true

// xenProtects is what the xen backend protects with its default options
// (pv=stream), for `config`. Capabilities reads only the options.
var xenProtects = (&xen.Hypervisor{}).Capabilities().Types

// xenLogEnv names the environment variable that sets the level of the
// Xen libraries' own log (libxl, libxc).
const xenLogEnv = "XL_KEMARI_XEN_LOG"

// The real Xen backend registers itself as "xen" when the command is built
// with -tags xen (cgo, libxen-dev).
func init() {
	replicaDomID = func(hv libxl.Hypervisor, dom libxl.DomID) (libxl.DomID, bool) {
		h, ok := hv.(*xen.Hypervisor)
		if !ok {
			return 0, false
		}
		id, ok := h.ReplicaDomid(dom)
		return libxl.DomID(id), ok
	}
	backendLogger = func(hv libxl.Hypervisor, log *slog.Logger) {
		if h, ok := hv.(*xen.Hypervisor); ok {
			h.SetLogger(log)
		}
	}
	// XL_KEMARI_XEN_LOG=debug logs what `xl -vvv` logs from libxl and
	// libxc (to standard error; a diagnostic, see xl-kemari(1) ENVIRONMENT).
	if v := os.Getenv(xenLogEnv); v != "" {
		if n, err := xen.ParseLogLevel(v); err == nil {
			xen.LogLevel = n
		} else {
			fmt.Fprintf(os.Stderr, "xl-kemari: %s: %v\n", xenLogEnv, err)
		}
	}
}
