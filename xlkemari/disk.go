package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/xl-kemari/xl-kemari/diskbuf/nbd"
)

func init() {
	register(&command{
		Name:    "disk",
		Summary: "serve a guest disk through the NBD front (run by block-kemari)",
		Usage:   "disk serve|stop|status [options] <Name>",
		Run:     runDisk,
	})
}

func runDisk(e *env, args []string) int {
	usage := func() {
		fmt.Fprintf(e.Stderr, "Usage: xl kemari disk serve [options] <Name>\n       xl kemari disk stop|status [--run-dir DIR] <Name>\n\n"+
			"serve: serve disk <Name>'s store (default %s/<Name>, a file or a symlink to a\n"+
			"block device) on a /dev/nbdN of this host and publish the device in\n"+
			"RUN_DIR/disk/<Name> for block-kemari; while 'start' protects the domain it\n"+
			"leases the device. stop: disconnect the device and end the front\n"+
			"(block-kemari remove). status: the front's device, store and lease.\n", defaultDiskDir)
	}
	if len(args) == 0 {
		usage()
		return exitUsage
	}
	switch args[0] {
	case "serve":
		return runDiskServe(e, args[1:])
	case "stop", "status":
		return runDiskCall(e, args[0], args[1:])
	case "-h", "--help":
		usage()
		return exitOK
	}
	e.errorf("disk: unknown subcommand %q (want serve, stop or status)", args[0])
	return exitUsage
}

func runDiskServe(e *env, args []string) int {
	fs := pflag.NewFlagSet("disk serve", pflag.ContinueOnError)
	fs.SetOutput(e.Stderr)
	runDir := fs.String("run-dir", "", "directory of the control sockets (default $KEMARI_RUN_DIR or "+defaultRunDir+")")
	store := fs.String("store", "", "the disk's store (default DISK_DIR/<Name>)")
	diskDir := fs.String("disk-dir", "", "directory of the disk stores (default $KEMARI_DISK_DIR or "+defaultDiskDir+")")
	timeout := fs.Duration("timeout", 30*time.Second, "kernel request timeout (NBD_ATTR_TIMEOUT)")
	dead := fs.Duration("dead-timeout", 120*time.Second, "how long the kernel holds the guest's I/O for a front that died (NBD_ATTR_DEAD_CONN_TIMEOUT)")
	fresh := fs.Bool("fresh", false, "attach a new device even if one is published for <Name> (default: reattach it, as after a restart)")
	if code, ok := parseArgs(e, fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		e.errorf("disk serve: want exactly one disk name, got %d arguments", fs.NArg())
		return exitUsage
	}
	name, err := frontName(fs.Arg(0))
	if err != nil {
		e.errorf("disk serve: %v", err)
		return exitUsage
	}
	if *store == "" {
		*store = filepath.Join(resolveDiskDir(e, *diskDir), name)
	}
	if *timeout < time.Second || *dead < time.Second {
		e.errorf("disk serve: --timeout and --dead-timeout must be at least 1s")
		return exitUsage
	}
	log := slog.New(slog.NewTextHandler(e.Stderr, nil)).With("role", "disk")
	k, err := nbd.OpenKernel()
	if err != nil {
		if errors.Is(err, nbd.ErrNoModule) {
			e.errorf("disk serve: %v (modprobe nbd)", err)
		} else {
			e.errorf("disk serve: %v", err)
		}
		return exitFailure
	}
	defer k.Close()
	deadC := make(chan uint32, 16)
	if w, err := nbd.OpenKernel(); err == nil {
		if err := w.WatchLinkDead(); err == nil {
			go func() {
				for {
					idx, err := w.NextLinkDead(time.Time{})
					if err != nil {
						return
					}
					select {
					case deadC <- idx:
					default:
					}
				}
			}()
		} else {
			log.Warn("no NBD_CMD_LINK_DEAD watch; reattaching without waiting for it", "err", err)
		}
	}
	cfg := frontConfig{Name: name, Store: *store, RunDir: resolveRunDir(e, *runDir), Dev: k, Log: log,
		Reuse:  !*fresh,
		Attach: nbd.AttachConfig{Timeout: *timeout, DeadConnTimeout: *dead, BackendID: frontBackendID(name)},
		LinkDead: func(index uint32, deadline time.Time) {
			t := time.NewTimer(time.Until(deadline))
			defer t.Stop()
			for {
				select {
				case i := <-deadC:
					if i == index {
						return
					}
				case <-t.C:
					return
				}
			}
		}}
	f, err := newFront(cfg)
	if err != nil && cfg.Reuse {
		// The published device is gone (its dead-connection timeout
		// passed, or the host rebooted): a new one.
		log.Warn("cannot reattach the published device; attaching a new one", "disk", name, "err", err)
		cfg.Reuse = false
		f, err = newFront(cfg)
	}
	if err != nil {
		e.errorf("disk serve: %v", err)
		return exitFailure
	}
	if ferr := f.srv.IOFlusherError(); ferr != nil {
		log.Warn("serving without PR_SET_IO_FLUSHER", "err", ferr)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go f.serve()
	select {
	case <-f.done:
		log.Info("disk detached", "disk", name)
		return exitOK
	case s := <-sig:
		// Leave the device attached: a restarted front reattaches it
		// and the guest's I/O waits meanwhile.
		log.Info("front ends; the device stays attached for a restarted front", "disk", name, "signal", s.String(),
			"device", fmt.Sprintf("/dev/nbd%d", f.index), "dead_timeout", *dead)
		f.close()
		return exitOK
	}
}

func runDiskCall(e *env, op string, args []string) int {
	fs := pflag.NewFlagSet("disk "+op, pflag.ContinueOnError)
	fs.SetOutput(e.Stderr)
	runDir := fs.String("run-dir", "", "directory of the control sockets (default $KEMARI_RUN_DIR or "+defaultRunDir+")")
	if code, ok := parseArgs(e, fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		e.errorf("disk %s: want exactly one disk name, got %d arguments", op, fs.NArg())
		return exitUsage
	}
	name, err := frontName(fs.Arg(0))
	if err != nil {
		e.errorf("disk %s: %v", op, err)
		return exitUsage
	}
	wire := op
	if op == "stop" {
		wire = "detach"
	}
	r, err := frontCall(resolveRunDir(e, *runDir), name, wire, 30*time.Second)
	if err != nil {
		e.errorf("disk %s: %v", op, err)
		return exitFailure
	}
	state := "served"
	if r.Leased {
		state = "leased to start"
	}
	if op == "stop" {
		state = "detached"
	}
	fmt.Fprintf(e.Stdout, "%s /dev/nbd%d store=%s size=%d %s heals=%d pid=%d\n", name, r.Index, r.Store, r.Size, state, r.Heals, r.PID)
	return exitOK
}
