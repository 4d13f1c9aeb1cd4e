package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
)

func init() {
	register(&command{
		Name:    "stop",
		Summary: "end the protection of a domain cleanly; the domain keeps running",
		Usage:   "stop [--wait DURATION] [--run-dir DIR] (<Domain> | --all)",
		Run:     runStop,
	})
}

func runStop(e *env, args []string) int {
	fs := pflag.NewFlagSet("stop", pflag.ContinueOnError)
	fs.SetOutput(e.Stderr)
	runDir := fs.String("run-dir", "", "directory of the control sockets (default $KEMARI_RUN_DIR or "+defaultRunDir+")")
	wait := fs.Duration("wait", time.Minute, "how long to wait for the protector to finish")
	all := fs.Bool("all", false, "stop every protection whose primary is this host (at shutdown)")
	fs.Usage = func() {
		fmt.Fprintf(e.Stderr, "Usage: xl kemari stop [options] <Domain>\n\nEnd the protection of <Domain> on this host, its primary: the standby is told\nand discards its replica, held output is released, the protector exits. The\ndomain keeps running, unprotected.\n\nOptions:\n%s", fs.FlagUsages())
	}
	if code, ok := parseArgs(e, fs, args); !ok {
		return code
	}
	dir := resolveRunDir(e, *runDir)
	if *all {
		if fs.NArg() != 0 {
			e.errorf("stop: --all takes no domain")
			return exitUsage
		}
		return stopAll(e, dir, *wait)
	}
	if fs.NArg() != 1 {
		e.errorf("stop: want exactly one domain, got %d arguments", fs.NArg())
		fs.Usage()
		return exitUsage
	}
	dom := fs.Arg(0)
	ps, err := find(dir, "primary", dom, 5*time.Second)
	if err != nil {
		e.errorf("stop: %v", err)
		return exitFailure
	}
	if len(ps) == 0 {
		if sb, _ := find(dir, "standby", dom, 5*time.Second); len(sb) > 0 {
			e.errorf("stop: this host holds only the standby of %s; run stop on its primary host", dom)
		} else {
			e.errorf("stop: %s is not protected from this host", dom)
		}
		return exitNotFound
	}
	return stopEach(e, ps, dom, *wait)
}

// stopAll stops every primary in dir, concurrently: at shutdown the
// domains wait for all of them.
func stopAll(e *env, dir string, wait time.Duration) int {
	ps, err := survey(dir, 5*time.Second)
	if err != nil {
		e.errorf("stop: %v", err)
		return exitFailure
	}
	codes := make(chan int, len(ps))
	n := 0
	for _, p := range ps {
		for _, st := range p.Status {
			if st.Role == "primary" {
				n++
				go func() { codes <- stopEach(e, []protector{p}, st.Domain, wait) }()
			}
		}
	}
	code := exitOK
	for range n {
		code = max(code, <-codes)
	}
	return code
}

// stopEach asks each of ps to stop protecting dom and waits for it to exit.
func stopEach(e *env, ps []protector, dom string, wait time.Duration) int {
	code := exitOK
	for _, p := range ps {
		r, err := ask(p.Socket, ctlRequest{Op: opStop, Domain: dom}, wait)
		if err != nil {
			e.errorf("stop: %v", err)
			code = exitFailure
			continue
		}
		if !r.OK {
			e.errorf("stop %s: %s", dom, r.Error)
			code = max(code, r.Code)
			continue
		}
		if !waitExit(r.PID, 5*time.Second) {
			e.errorf("stop: protector %d of %s still runs after stopping", r.PID, dom)
			code = exitFailure
			continue
		}
		fmt.Fprintf(e.Stdout, "%s: protection stopped; the standby discarded its replica, output flows unbuffered\n", dom)
	}
	return code
}

// waitExit waits until process pid is gone (or a zombie, which has
// finished) for at most d.
func waitExit(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if !alive(pid) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	// The state follows the parenthesised command name.
	if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] != 'Z' && b[i+2] != 'X'
	}
	return true
}
