//go:build xen

package main

import (
	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/xen"
)

// xenBuiltIn says whether this binary has the real Xen backend.
const xenBuiltIn = true

// xenProtects is what the xen backend protects with its default options
// (pv=stream), for `config`. Capabilities reads only the options.
var xenProtects = (&xen.Hypervisor{}).Capabilities().Types

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
}
