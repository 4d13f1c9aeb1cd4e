package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"slices"

	"github.com/spf13/pflag"

	"github.com/xl-kemari/xl-kemari/checkpoint/wire"
	"github.com/xl-kemari/xl-kemari/libxl"
)

// version is set at link time by `make build` (-X main.version=...).
var version = "dev"

func init() {
	register(&command{
		Name:    "version",
		Summary: "print the version, protocol version and available backends",
		Usage:   "version",
		Run:     runVersion,
	})
}

func runVersion(e *env, args []string) int {
	fs := pflag.NewFlagSet("version", pflag.ContinueOnError)
	fs.SetOutput(e.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.Stderr, "Usage: xl kemari version\n\nPrint the version of xl-kemari, the replication protocol versions it\nwrites and reads, and the hypervisor backends built in.\n")
	}
	if code, ok := parseArgs(e, fs, args); !ok {
		return code
	}
	if fs.NArg() != 0 {
		e.errorf("version: unexpected argument %q; see 'xl kemari help version'", fs.Arg(0))
		return exitUsage
	}
	rev := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				rev = " (" + s.Value[:12] + ")"
			}
		}
	}
	fmt.Fprintf(e.Stdout, "xl-kemari %s%s %s/%s\n", version, rev, runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(e.Stdout, "protocol version: %d (reads %d to %d)\n", wire.Version, wire.MinVersion, wire.Version)
	backends := libxl.Backends()
	if !xenBuiltIn {
		// The "xen" registered in such a build only explains its absence.
		backends = slices.DeleteFunc(backends, func(b string) bool { return b == xenBackendName })
	}
	fmt.Fprintf(e.Stdout, "hypervisor backends: %v\n", backends)
	if !xenBuiltIn {
		fmt.Fprintf(e.Stdout, "xen backend: not built in (simulator-only build; see 'make build' in README.md, or build with -tags xen)\n")
	}
	return exitOK
}
