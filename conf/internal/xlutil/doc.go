// Package xlutil runs Xen's own xl.cfg parser, libxlutil's
// xlu_cfg_readdata, so that tests can hold package conf to the same
// verdicts and values as xl itself.
//
// It exists only for the conformance test: conf stays pure Go, and cgo
// cannot appear in _test.go files, so the binding lives here behind the
// build tag "xen" (which needs libxen-dev and pkg-config's "xlutil"). Without
// the tag the package is empty.
//
//	r := xlutil.ReadData("domU.cfg", src)
//	if r.Errno != 0 { /* xl rejects the file; r.Report has its messages */ }
//	for _, s := range r.Settings { /* s.Name, s.Value, in file order */ }
package xlutil
