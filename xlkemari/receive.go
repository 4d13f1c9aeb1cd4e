package main

import (
	"context"
	"errors"
	"fmt"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	"github.com/xl-kemari/xl-kemari/arbiter"
	"github.com/xl-kemari/xl-kemari/checkpoint"
	"github.com/xl-kemari/xl-kemari/libxl"
)

func init() {
	register(&command{
		Name:    "receive",
		Summary: "the standby end: hold a replica and take over when the primary dies",
		Usage:   "receive [options] --listen ADDR",
		Run:     runReceive,
	})
}

func runReceive(e *env, args []string) int {
	fs := pflag.NewFlagSet("receive", pflag.ContinueOnError)
	fs.SetOutput(e.Stderr)
	var f engineFlags
	f.register(fs)
	listen := fs.String("listen", "127.0.0.1:8011", "address to accept the primary on (loopback only for the tcp transport)")
	arb := fs.String("arbiter", "none", "arbiter: none or file:PATH")
	verify := fs.Bool("verify", true, "recompute the replica's memory digest before activating it")
	fs.Usage = func() {
		fmt.Fprintf(e.Stderr, "Usage: xl kemari receive [options]\n\nHold the replica of a protected domain; activate it when the primary is\nsilent for --timeout.\n\nOptions:\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	ecfg, err := f.epochConfig()
	if err != nil {
		e.errorf("%v", err)
		return exitUsage
	}
	a, err := arbiter.Open(*arb)
	if err != nil {
		e.errorf("%v", err)
		return exitUsage
	}
	hv, err := libxl.Open(f.hv, nil)
	if err != nil {
		e.errorf("%v", err)
		return exitFailure
	}
	defer hv.Close()
	ev, err := openEventLog(f.events)
	if err != nil {
		e.errorf("%v", err)
		return exitFailure
	}
	ln, err := checkpoint.ListenTCP(*listen)
	if err != nil {
		e.errorf("listen: %v", err)
		return exitFailure
	}
	log := f.logger(e, "standby")
	s, err := checkpoint.NewStandby(checkpoint.StandbyConfig{Epoch: ecfg, Verify: *verify, Logger: log,
		Observer: ev.observe}, hv.Sink(), ln, a)
	if err != nil {
		e.errorf("%v", err)
		return exitUsage
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	if err := s.Run(ctx); err != nil {
		if errors.Is(err, context.Canceled) {
			return exitOK
		}
		e.errorf("%v", err)
		return exitFailure
	}
	if _, ok := s.Activated(); ok {
		// The guest runs here now; it lives as long as this process.
		log.Info("replica active; serving until signalled")
		<-ctx.Done()
	}
	return exitOK
}
