//go:build !xen

package main

import (
	"fmt"

	"github.com/xl-kemari/xl-kemari/libxl"
)

// xenBuiltIn says whether this binary has the real Xen backend.
const xenBuiltIn = false

// xenProtects is what the xen backend protects (libxl/xen Capabilities
// with its default pv=stream), for `config` in a build without it.
var xenProtects = []libxl.DomainType{libxl.TypePV}

// errNoXen is the answer of a simulator-only build to --hypervisor=xen:
// what it is and how to get the real thing.
var errNoXen = fmt.Errorf("%w %q: this xl-kemari was built without the Xen backend (simulator only). "+
	"To protect Xen domains, build it on a host with Xen's development files: apt-get install libxen-dev, then make build "+
	"(which uses -tags xen when pkg-config finds xenlight) or go build -tags xen ./xlkemari; or install the Debian package (make deb). "+
	"--hypervisor=sim runs the built-in simulator", libxl.ErrUnknownBackend, xenBackendName)

// The name "xen" answers with errNoXen rather than "unknown backend".
func init() {
	libxl.Register(xenBackendName, func(libxl.Options) (libxl.Hypervisor, error) { return nil, errNoXen })
}
