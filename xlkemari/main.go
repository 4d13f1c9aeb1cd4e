// Command xl-kemari keeps a Xen domain running through the failure of its
// host by replicating it, epoch by epoch, to a standby host. It is invoked
// as `xl kemari SUBCOMMAND ...` through the xl dispatch shim, or directly.
//
// Each subcommand lives in a file of its own and registers itself from
// init; this file holds the table, the exit codes and the dispatch.
package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// Exit codes, documented in xl-kemari(1).
const (
	exitOK       = 0 // success
	exitFailure  = 1 // the operation failed (details on stderr)
	exitUsage    = 2 // bad command line
	exitConfig   = 3 // bad configuration file(s); every problem printed
	exitNotFound = 4 // no such domain, or nothing protected by that name
	exitLost     = 5 // demo/test verdict: an invariant was violated
)

// env is what a subcommand gets from the dispatcher.
type env struct {
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
}

// errorf prints "xl-kemari: <msg>" on stderr.
func (e *env) errorf(format string, args ...any) {
	fmt.Fprintf(e.Stderr, "xl-kemari: "+format+"\n", args...)
}

// command is one subcommand.
type command struct {
	Name    string
	Summary string // one line, for `xl-kemari help`
	Usage   string // e.g. "start [options] <Domain> [<host>]"
	Hidden  bool   // internal helpers (e.g. the demo's child processes)
	// Run parses args (without the subcommand name) and returns an exit code.
	Run func(e *env, args []string) int
}

var commands []*command

// register adds a subcommand; called from init in each subcommand's file.
func register(c *command) {
	commands = append(commands, c)
	slices.SortFunc(commands, func(a, b *command) int { return strings.Compare(a.Name, b.Name) })
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func main() {
	e := &env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
	os.Exit(run(e, os.Args[1:]))
}

// run dispatches args[0] to its subcommand.
func run(e *env, args []string) int {
	if len(args) == 0 {
		usage(e.Stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "-h", "--help", "help":
		if len(args) > 1 && name == "help" {
			if c := lookup(args[1]); c != nil {
				return c.Run(e, []string{"--help"})
			}
			e.errorf("unknown command %q", args[1])
			return exitUsage
		}
		usage(e.Stdout)
		return exitOK
	case "-V", "--version":
		name = "version"
	}
	c := lookup(name)
	if c == nil {
		e.errorf("unknown command %q; see 'xl-kemari help'", name)
		return exitUsage
	}
	return c.Run(e, args[1:])
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: xl kemari <subcommand> [args]\n\n")
	fmt.Fprintf(w, "Kemari-style fault tolerance for Xen domains.\n\n")
	for _, c := range commands {
		if c.Hidden {
			continue
		}
		fmt.Fprintf(w, "  %-12s %s\n", c.Name, c.Summary)
	}
	fmt.Fprintf(w, "\nRun 'xl kemari help <subcommand>' for its options. See xl-kemari(1).\n")
}
