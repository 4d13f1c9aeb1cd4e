package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/xl-kemari/xl-kemari/libxl"
)

// version is set at link time by `make build` (-X main.version=...).
var version = "dev"

func init() {
	register(&command{
		Name:    "version",
		Summary: "print the version, protocol version and available backends",
		Usage:   "version",
		Run: func(e *env, args []string) int {
			rev := ""
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, s := range bi.Settings {
					if s.Key == "vcs.revision" && len(s.Value) >= 12 {
						rev = " (" + s.Value[:12] + ")"
					}
				}
			}
			fmt.Fprintf(e.Stdout, "xl-kemari %s%s %s/%s\n", version, rev, runtime.GOOS, runtime.GOARCH)
			fmt.Fprintf(e.Stdout, "hypervisor backends: %v\n", libxl.Backends())
			return exitOK
		},
	})
}
