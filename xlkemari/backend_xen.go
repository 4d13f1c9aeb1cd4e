//go:build xen

package main

// The real Xen backend registers itself as "xen" when the command is built
// with -tags xen (cgo, libxen-dev).
import _ "github.com/xl-kemari/xl-kemari/libxl/xen"
