package main

import (
	"fmt"
	"time"

	"github.com/spf13/pflag"
)

func init() {
	register(&command{
		Name:    "failover",
		Summary: "activate the replica of a domain on this standby host now",
		Usage:   "failover [--force] [--wait DURATION] [--run-dir DIR] <Domain>",
		Run:     runFailover,
	})
}

func runFailover(e *env, args []string) int {
	fs := pflag.NewFlagSet("failover", pflag.ContinueOnError)
	fs.SetOutput(e.Stderr)
	runDir := fs.String("run-dir", "", "directory of the control sockets (default $KEMARI_RUN_DIR or "+defaultRunDir+")")
	wait := fs.Duration("wait", 30*time.Second, "how long to wait for the replica to run")
	force := fs.Bool("force", false, "promote even though the primary still checkpoints and no arbiter guards the domain")
	fs.Usage = func() {
		fmt.Fprintf(e.Stderr, "Usage: xl kemari failover [options] <Domain>\n\nActivate the replica of <Domain> held on this host at its last acknowledged\ncheckpoint. With an arbiter, the arbiter must grant it. Without one, a\nprimary that is still checkpointing would keep running too: failover refuses\nunless --force.\n\nOptions:\n%s", fs.FlagUsages())
	}
	if code, ok := parseArgs(e, fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		e.errorf("failover: want exactly one domain, got %d arguments", fs.NArg())
		fs.Usage()
		return exitUsage
	}
	dom := fs.Arg(0)
	dir := resolveRunDir(e, *runDir)
	ps, err := find(dir, "standby", dom, 5*time.Second)
	if err != nil {
		e.errorf("failover: %v", err)
		return exitFailure
	}
	if len(ps) != 1 {
		if len(ps) == 0 {
			e.errorf("failover: this host holds no replica of %s", dom)
			return exitNotFound
		}
		e.errorf("failover: %d standbys hold a replica of %s; stop all but one", len(ps), dom)
		return exitFailure
	}
	r, err := ask(ps[0].Socket, ctlRequest{Op: opFailover, Domain: dom, Force: *force, WaitMs: wait.Milliseconds()}, *wait+5*time.Second)
	if err != nil {
		e.errorf("failover: %v", err)
		return exitFailure
	}
	if !r.OK {
		e.errorf("failover %s: %s", dom, r.Error)
		return max(r.Code, exitFailure)
	}
	for _, st := range r.Protectors {
		if st.Domain == dom {
			fmt.Fprintf(e.Stdout, "%s: active on this host from epoch %d (activation took %v)\n", dom, st.ActivatedEpoch, time.Duration(st.Activation).Round(time.Microsecond))
		}
	}
	return exitOK
}
