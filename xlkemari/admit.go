package main

import (
	"fmt"
	"time"

	"github.com/spf13/pflag"
)

func init() {
	register(&command{
		Name:    "admit",
		Summary: "let a new primary session replace the one the standby service serves for a domain",
		Usage:   "admit [--run-dir DIR] <Domain>",
		Run:     runAdmit,
	})
}

// runAdmit tells the listen services on this host that the next
// connection for a domain may start a new protection session, replacing
// (and rebuilding) the replica held for the current one: after the
// primary's protector was restarted, say. Without it, such a connection
// is refused, so that no other holder of a certificate can displace the
// real primary.
func runAdmit(e *env, args []string) int {
	fs := pflag.NewFlagSet("admit", pflag.ContinueOnError)
	fs.SetOutput(e.Stderr)
	runDir := fs.String("run-dir", "", "directory of the control sockets (default $KEMARI_RUN_DIR or "+defaultRunDir+")")
	fs.Usage = func() {
		fmt.Fprintf(e.Stderr, "Usage: xl kemari admit [options] <Domain>\n\nOn a standby host running xl kemari listen: let the next primary that\nconnects for <Domain> with a new protection session replace the current one\n(its replica is rebuilt). Until then such a connection is refused.\n\nOptions:\n%s", fs.FlagUsages())
	}
	if code, ok := parseArgs(e, fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		e.errorf("admit: want exactly one domain, got %d arguments", fs.NArg())
		fs.Usage()
		return exitUsage
	}
	dom := fs.Arg(0)
	all, err := survey(resolveRunDir(e, *runDir), 5*time.Second)
	if err != nil {
		e.errorf("admit: %v", err)
		return exitFailure
	}
	n := 0
	for _, p := range all {
		r, err := ask(p.Socket, ctlRequest{Op: opAdmit, Domain: dom}, 5*time.Second)
		if err != nil || !r.OK {
			continue // not a listen service
		}
		n++
		fmt.Fprintf(e.Stdout, "%s: the listen service (pid %d) admits the next new primary session\n", dom, r.PID)
	}
	if n == 0 {
		e.errorf("admit: no listen service runs on this host")
		return exitNotFound
	}
	return exitOK
}
