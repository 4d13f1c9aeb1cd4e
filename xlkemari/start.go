package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	"github.com/xl-kemari/xl-kemari/arbiter"
	"github.com/xl-kemari/xl-kemari/checkpoint"
	"github.com/xl-kemari/xl-kemari/diskbuf"
	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/sim"
	"github.com/xl-kemari/xl-kemari/netbuf"
	"github.com/xl-kemari/xl-kemari/netbuf/mem"
)

func init() {
	register(&command{
		Name:    "start",
		Summary: "protect a running domain with a hot standby",
		Usage:   "start [options] <Domain> <host:port>",
		Run:     runStart,
	})
}

func runStart(e *env, args []string) int {
	fs := pflag.NewFlagSet("start", pflag.ContinueOnError)
	fs.SetOutput(e.Stderr)
	var f engineFlags
	f.register(fs)
	arb := fs.String("arbiter", "none", "arbiter: none or file:PATH (a lease directory on storage both hosts share)")
	fs.Usage = func() {
		fmt.Fprintf(e.Stderr, "Usage: xl kemari start [options] <Domain> <host:port>\n\nProtect a running domain: replicate it to the standby epoch by epoch\nand release its output only after the standby acknowledges.\n\nOptions:\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return exitUsage
	}
	domName, standby := fs.Arg(0), fs.Arg(1)
	ecfg, err := f.epochConfig()
	if err != nil {
		e.errorf("%v", err)
		return exitUsage
	}
	codec, err := f.codec()
	if err != nil {
		e.errorf("%v", err)
		return exitUsage
	}
	a, err := arbiter.Open(*arb)
	if err != nil {
		e.errorf("%v", err)
		return exitUsage
	}
	log := f.logger(e, "primary")
	if !a.Configured() {
		log.Warn("no arbiter configured: a standby that loses contact takes over; this is safe only if a silent primary is a dead one (fail-stop). See xl-kemari(1), ARBITER.")
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
	var nets []netbuf.Buffer
	var disk *diskbuf.Primary
	var dom libxl.DomID
	switch h := hv.(type) {
	case *sim.Hypervisor:
		// The simulator's domain lives in this process: create it, and
		// put the in-process output buffer between its NICs and the wire.
		cfg, err := sim.DomainConfigFromOptions(f.simOptions())
		if err != nil {
			e.errorf("--sim: %v", err)
			return exitUsage
		}
		if cfg.Name == "" {
			cfg.Name = domName
		}
		if dom, err = h.CreateDomain(cfg); err != nil {
			e.errorf("%v", err)
			return exitFailure
		}
		d, _ := h.Domain(dom)
		var stores []diskbuf.Store
		for i := range cfg.Disks {
			stores = append(stores, diskbuf.NewMemStore(int64(cfg.Disks[i].Sectors)*diskbuf.SectorSize))
		}
		disk = diskbuf.NewPrimary(diskbuf.Replicate, stores)
		for i := range cfg.Disks {
			d.Disk(i).SetBackend(disk.Device(i))
		}
		for i := range cfg.NICs {
			nic := d.NIC(i)
			b := mem.New(func(fr []byte) { nic.Transmit(fr) })
			nic.SetEgress(b.Send)
			nets = append(nets, b)
		}
	default:
		if dom, err = hv.Lookup(domName); err != nil {
			e.errorf("%v", err)
			return exitNotFound
		}
		e.errorf("protecting %s domains needs the output-buffer wiring of a later release", hv.Name())
		return exitFailure
	}
	p, err := checkpoint.NewPrimary(checkpoint.PrimaryConfig{Epoch: ecfg, Domain: dom, Codec: codec,
		Logger: log, Observer: ev.observe}, hv.Source(), checkpoint.TCPDialer{Addr: standby}, nets, disk, a)
	if err != nil {
		e.errorf("%v", err)
		return exitUsage
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT)
	defer cancel()
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	go func() { <-term; p.Stop() }()
	if err := p.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		e.errorf("%v", err)
		return exitFailure
	}
	return exitOK
}
