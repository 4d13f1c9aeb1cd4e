package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"github.com/xl-kemari/xl-kemari/arbiter"
	"github.com/xl-kemari/xl-kemari/checkpoint"
	"github.com/xl-kemari/xl-kemari/conf"
	"github.com/xl-kemari/xl-kemari/diskbuf"
	"github.com/xl-kemari/xl-kemari/diskbuf/nbd"
	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/sim"
	"github.com/xl-kemari/xl-kemari/netbuf"
	"github.com/xl-kemari/xl-kemari/netbuf/auto"
)

func init() {
	register(&command{
		Name:    "start",
		Summary: "protect a running domain with a hot standby",
		Usage:   "start [options] <Domain> [<host>]",
		Run:     runStart,
	})
}

// startFlags are start's command line.
type startFlags struct {
	engineFlags
	transportFlags
	nb         netbufFlags
	config     string
	toml       string
	sets       []string
	arbiter    string
	foreground bool
	background bool
	noWait     bool
	logFile    string
	runDir     string
	metrics    string
	connect    time.Duration
}

// engineToConf maps the engine flags that are also protection settings
// to their kemari keys: given on the command line, they override xl.cfg
// and kemari.toml like --set does.
var engineToConf = [][2]string{{"mode", "mode"}, {"interval", "interval"}, {"min-interval", "min-interval"},
	{"timeout", "timeout"}, {"inflight", "inflight"}, {"compress", "compress"}, {"reprotect", "reprotect"}, {"arbiter", "arbiter"}}

func runStart(e *env, args []string) int {
	fs := pflag.NewFlagSet("start", pflag.ContinueOnError)
	fs.SetOutput(e.Stderr)
	var f startFlags
	f.engineFlags.register(fs)
	f.transportFlags.register(fs, true)
	f.nb.register(fs)
	fs.StringVarP(&f.config, "config", "C", "", "the domain's xl.cfg `file`: its kemari entries give the settings and the standby")
	fs.StringVar(&f.toml, "toml", "", "host configuration `file` (default "+conf.DefaultHostPath+", which may be absent)")
	fs.StringArrayVar(&f.sets, "set", nil, "override a protection setting (`KEY=VALUE`, repeatable; see xl-kemari.cfg(5))")
	fs.StringVar(&f.arbiter, "arbiter", "none", "arbiter: none, file:PATH (a lease directory on storage both hosts share) or etcd://HOST:PORT/PREFIX")
	fs.BoolVarP(&f.foreground, "foreground", "F", false, "stay in the foreground, logging to standard error (default with --hypervisor=sim)")
	fs.BoolVar(&f.background, "background", false, "run in the background even with --hypervisor=sim")
	fs.BoolVar(&f.noWait, "no-wait", false, "in the background: return once the protector runs, without waiting for the initial sync")
	fs.StringVar(&f.logFile, "log-file", "", "log to this `file` (background default "+defaultLogDir+"/xl-kemari-DOMAIN.log)")
	fs.StringVar(&f.metrics, "metrics", "", "serve Prometheus metrics on this `address` (default: [metrics] listen of kemari.toml; off when empty)")
	fs.StringVar(&f.runDir, "run-dir", "", "directory of the control sockets (default $KEMARI_RUN_DIR or "+defaultRunDir+")")
	fs.DurationVar(&f.connect, "connect-timeout", 0, "how long one connection attempt may take, dial and hello (default: ssh max(--timeout, 10s), which starts receive on the peer each time; else --timeout/3)")
	fs.Usage = func() {
		fmt.Fprintf(e.Stderr, "Usage: xl kemari start [options] <Domain> [<host>]\n\nProtect a running domain: replicate it to the standby <host> epoch by epoch\nand release its output only after the standby acknowledges. Without <host>,\nthe standby named by the domain's kemari entry (-C) or kemari.toml is used.\nRuns in the background like xl's daemons unless -F.\n\nOptions:\n%s", fs.FlagUsages())
	}
	if code, ok := parseArgs(e, fs, args); !ok {
		return code
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		e.errorf("start: want <Domain> [<host>], got %d arguments", fs.NArg())
		fs.Usage()
		return exitUsage
	}
	if f.foreground && f.background {
		e.errorf("start: --foreground and --background exclude each other")
		return exitUsage
	}
	domName := fs.Arg(0)
	notify := childNotifier(e.Getenv)
	fail := func(code int, format string, a ...any) int {
		msg := fmt.Sprintf(format, a...)
		if notify != nil {
			notify.fail(code, msg)
		} else {
			e.errorf("%s", msg)
		}
		return code
	}

	// Configuration: command line > xl.cfg > kemari.toml > defaults.
	host, err := conf.LoadHost(f.toml)
	if err != nil {
		printConfigErrors(e.Stderr, err)
		return fail(exitConfig, "start: bad host configuration")
	}
	over := conf.Overrides{Args: f.sets}
	for _, m := range engineToConf {
		if fs.Changed(m[0]) {
			over.Set(m[1], fs.Lookup(m[0]).Value.String())
		}
	}
	// Host settings given on the command line win over kemari.toml's, and
	// count for its checks (transport=tls needs certificates).
	host.TLSCert, host.TLSKey, host.TLSCA = orDefault(f.tlsCert, host.TLSCert), orDefault(f.tlsKey, host.TLSKey), orDefault(f.tlsCA, host.TLSCA)
	host.SSHCommand = orDefault(f.sshCommand, host.SSHCommand)
	if f.kind == transportSSH || f.kind == transportTLS {
		over.Set("transport", f.kind)
	} else if f.kind != "" && f.kind != transportTCP && f.kind != transportUnix {
		return fail(exitUsage, "start: --transport %q: want ssh, tls, unix or tcp", f.kind)
	}
	var dom *conf.Domain
	if f.config != "" {
		dom, err = conf.LoadDomain(f.config, host, over)
	} else {
		// No xl.cfg: the host's defaults and the command line alone.
		dom, err = conf.ParseDomain(conf.CommandLineFile, []byte("name = "+conf.Quote(domName)+"\n"), host, over)
	}
	if err != nil {
		printConfigErrors(e.Stderr, err)
		return fail(exitConfig, "start: bad configuration")
	}
	if dom.Name != domName {
		return fail(exitConfig, "start: %s configures domain %q, not %q", f.config, dom.Name, domName)
	}
	prot, peer, err := pickProtection(dom, fs.Arg(1))
	if err != nil {
		return fail(exitUsage, "start: %v", err)
	}
	ecfg, err := epochFromProtection(prot)
	if err != nil {
		return fail(exitConfig, "start: %v", err)
	}
	codec, err := codecByName(prot.Compress)
	if err != nil {
		return fail(exitConfig, "start: %v", err)
	}
	kind := f.kind
	if kind == "" {
		kind = prot.Transport
		if f.hv == sim.BackendName && prot.Origin(conf.FieldTransport).Source == conf.SourceDefault {
			kind = localTransport(peer, f.insecureTCP)
		}
	}
	// No timeout given anywhere: derive one from what is measured, and
	// announce it to the standby, which is started without --timeout so
	// that it takes the announcement (docs/protocol.md §5.13).
	derive := prot.Origin(conf.FieldTimeout).Source == conf.SourceDefault
	remote := []string{"receive", "--stdio", "--hypervisor=" + f.hv, "--mode=" + prot.Mode,
		"--interval=" + prot.Interval.String(), "--min-interval=" + prot.MinInterval.String(),
		fmt.Sprintf("--inflight=%d", prot.Inflight), "--arbiter=" + prot.Arbiter, "--log-level=" + f.logLevel}
	if !derive {
		remote = append(remote, "--timeout="+prot.Timeout.String())
	}
	dialer, err := f.dialer(kind, peer, host, remote, e.Stderr)
	if err != nil {
		return fail(exitUsage, "start: %v", err)
	}
	a, err := arbiter.Open(prot.Arbiter)
	if err != nil {
		return fail(exitConfig, "start: %v", err)
	}

	// Everything that can be checked without the domain is: now go to the
	// background, unless told not to or on the simulator (whose domain
	// lives in this process; the demo and tests watch it).
	if notify == nil && !f.foreground && (f.background || f.hv != sim.BackendName) {
		logPath := f.logFile
		if logPath == "" {
			logPath = filepath.Join(defaultLogDir, "xl-kemari-"+escapeName(domName)+".log")
		}
		return daemonize(e, args, domName, logPath, !f.noWait)
	}
	stderr := e.Stderr
	if f.logFile != "" && notify == nil {
		lf, err := openAppend(f.logFile, 0o640)
		if err != nil {
			return fail(exitFailure, "start: log: %v", err)
		}
		defer lf.Close()
		stderr = lf
	}
	log := f.loggerTo(stderr, "primary").With("domain", domName)
	if !a.Configured() {
		log.Warn("no arbiter configured: a standby that loses contact takes over; this is safe only if a silent primary is a dead one (fail-stop). See xl-kemari(1), ARBITER.")
	}
	hv, err := libxl.Open(f.hv, nil)
	if err != nil {
		return fail(exitFailure, "start: %v", err)
	}
	defer hv.Close()
	ev, err := openEventLog(f.events)
	if err != nil {
		return fail(exitFailure, "start: %v", err)
	}
	// The output buffer: --netbuf, else the protection's setting on real
	// Xen (the simulator's default is its in-process buffer).
	if !fs.Changed("netbuf") && f.hv != sim.BackendName && prot.Origin(conf.FieldNetbuf).Source != conf.SourceDefault {
		f.nb.mode = prot.Netbuf
	}
	f.nb.unsafe = f.nb.unsafe || prot.Unsafe
	dom0, nets, disks, code, err := attachDomain(hv, domName, &f.engineFlags, &f.nb, dom, prot, resolveRunDir(e, f.runDir))
	defer f.nb.close()
	if err != nil {
		return fail(code, "start: %v", err)
	}
	// Give the disk fronts their devices back when protection ends (or
	// they take them back when this process dies).
	defer func() {
		if err := disks.end(); err != nil {
			log.Error("disk fronts", "err", err)
		}
	}()
	bar := newProgress(stderr)
	observe := func(o checkpoint.Observation) {
		ev.observe(o)
		switch o.Kind {
		case checkpoint.ObsSync:
			if notify != nil {
				notify.send("sync %.1f %d %s", o.Percent, o.Round, o.Msg)
			} else {
				bar.update(o.Percent, o.Round, o.Msg)
			}
		case checkpoint.ObsState:
			if notify != nil {
				notify.send("state %s %s", o.State, o.Msg)
				if o.State == "protected" {
					notify.close()
				}
			} else if o.State != "syncing" {
				bar.finish()
			}
		}
	}
	connectTimeout := f.connect
	if connectTimeout < 0 {
		return fail(exitUsage, "start: --connect-timeout %v: want a positive duration", f.connect)
	}
	if connectTimeout == 0 && kind == transportSSH {
		// ssh starts `xl-kemari receive` on the peer for every attempt.
		connectTimeout = max(prot.Timeout, 10*time.Second)
	}
	p, err := checkpoint.NewPrimary(checkpoint.PrimaryConfig{Epoch: ecfg, Domain: dom0, Codec: codec,
		SharedDisk: prot.Disk == "shared", DiskSectors: disks.sectors, ConnectTimeout: connectTimeout, Logger: log, Observer: observe, DeriveTimeout: derive},
		hv.Source(), dialer, nets, disks.prim, a)
	if err != nil {
		return fail(exitConfig, "start: %v", err)
	}

	finished := make(chan struct{})
	var runErr error
	status := func() []checkpoint.Status {
		st := p.Status()
		if st.Domain == "" {
			st.Domain = domName
		}
		return []checkpoint.Status{st}
	}
	srv, err := listenControl(resolveRunDir(e, f.runDir), socketName("primary", domName, 0), ctlHandlers{
		Status: status,
		Stop: func(ctx context.Context, d string) error {
			if d != "" && d != domName {
				return &ctlError{exitNotFound, fmt.Sprintf("this protector protects %s, not %s", domName, d)}
			}
			p.Stop()
			<-finished
			return runErr
		},
	})
	if err != nil {
		return fail(exitFailure, "start: %v", err)
	}
	defer srv.Close()
	_, stopMetrics, err := serveMetrics(orDefault(f.metrics, host.MetricsListen), func() []checkpoint.Status { return []checkpoint.Status{p.Status()} }, log)
	if err != nil {
		return fail(exitFailure, "start: %v", err)
	}
	defer stopMetrics()
	log.Info("protecting", "standby", dialer.String(), "mode", prot.Mode, "interval", prot.Interval, "timeout", prot.Timeout, "derive_timeout", derive, "control", srv.path)
	notify.send("ready")

	// SIGTERM and `stop`: a clean stop (goodbye, output released). SIGINT
	// models the death of the protector: held output is discarded.
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT)
	defer cancel()
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	defer signal.Stop(term)
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	go func() {
		select {
		case <-term:
			p.Stop()
		case <-finished:
		}
	}()
	err = p.Run(ctx)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	runErr = err
	srv.Shutdown()
	close(finished)
	srv.Wait()
	if err != nil {
		return fail(exitFailure, "start: %v", err)
	}
	notify.close()
	log.Info("protection ended")
	return exitOK
}

// pickProtection chooses the kemari entry toward arg (or the only entry,
// when arg is empty) and returns it with the standby to reach.
func pickProtection(dom *conf.Domain, arg string) (conf.Protection, string, error) {
	if arg != "" {
		for _, p := range dom.Kemari {
			if p.Standby != "" && (p.Standby == arg || sshHost(p.Standby) == sshHost(arg)) {
				return p, arg, nil
			}
		}
		p := dom.Kemari[0]
		if len(dom.Kemari) > 1 {
			return p, "", fmt.Errorf("%s has %d kemari entries and none names standby %s", dom.Name, len(dom.Kemari), arg)
		}
		return p, arg, nil
	}
	if len(dom.Kemari) > 1 {
		return dom.Kemari[0], "", fmt.Errorf("%s has %d kemari entries: name the standby (start %s HOST)", dom.Name, len(dom.Kemari), dom.Name)
	}
	p := dom.Kemari[0]
	if p.Standby == "" {
		return p, "", fmt.Errorf("no standby for %s: name it (start %s HOST) or set standby= in its kemari entry (-C) or in kemari.toml", dom.Name, dom.Name)
	}
	return p, p.Standby, nil
}

// attachDomain finds or (on the simulator) creates the domain and puts
// the output buffers between it and the world. code is the exit code of
// a failure.
func attachDomain(hv libxl.Hypervisor, name string, f *engineFlags, nb *netbufFlags, dom *conf.Domain, prot conf.Protection, runDir string) (libxl.DomID, []netbuf.Buffer, *leasedDisks, int, error) {
	h, ok := hv.(*sim.Hypervisor)
	if !ok {
		return attachRunning(hv, name, nb, prot, runDir, openNBD)
	}
	// The simulator's domain lives in this process: create it, and put
	// the in-process output buffer between its NICs and the wire.
	opts := f.simOptions()
	if _, set := opts["memory_mib"]; !set && dom.File != nil && dom.File.Get("memory") != nil {
		opts["memory_mib"] = fmt.Sprint(dom.MemoryMiB)
	}
	cfg, err := sim.DomainConfigFromOptions(opts)
	if err != nil {
		return 0, nil, nil, exitUsage, fmt.Errorf("--sim: %w", err)
	}
	if cfg.Name == "" {
		cfg.Name = name
	}
	id, err := nb.createSim(h, cfg)
	if err != nil {
		return 0, nil, nil, exitFailure, err
	}
	d, _ := h.Domain(id)
	var stores []diskbuf.Store
	for i := range cfg.Disks {
		stores = append(stores, diskbuf.NewMemStore(int64(cfg.Disks[i].Sectors)*diskbuf.SectorSize))
	}
	disk := diskbuf.NewPrimary(diskbuf.Replicate, stores)
	for i := range cfg.Disks {
		d.Disk(i).SetBackend(disk.Device(i))
	}
	nets, _, err := nb.openSim(d, len(cfg.NICs))
	if err != nil {
		code := exitFailure
		if errors.Is(err, errNetbufFlags) {
			code = exitUsage
		}
		return 0, nil, nil, code, fmt.Errorf("output buffer: %w", err)
	}
	return id, nets, &leasedDisks{prim: disk}, exitOK, nil
}

// attachRunning finds a running domain of a real hypervisor, refuses what
// cannot be protected there yet, holds the output of each of its vifs
// with a kernel output buffer (--netbuf, default auto: plug, else
// nfqueue), and leases the device of each disk front (block-kemari
// disks, served by `disk serve` in RUN_DIR/disk) to serve it from the
// engine's disk Primary; dev opens the kernel's nbd for that.
func attachRunning(hv libxl.Hypervisor, name string, nb *netbufFlags, prot conf.Protection, runDir string, dev func() (nbd.Device, func(), error)) (libxl.DomID, []netbuf.Buffer, *leasedDisks, int, error) {
	id, err := hv.Lookup(name)
	if err != nil {
		return 0, nil, nil, exitNotFound, err
	}
	info, err := hv.Source().Describe(id)
	if err != nil {
		return 0, nil, nil, exitFailure, err
	}
	// The same refusals as `config` reports (checkProtectable).
	if err := checkProtectable(protectTarget{Name: name, Type: info.Type, Disks: info.Disks}, hv.Name(), hv.Capabilities().Types, prot); err != nil {
		code := exitConfig
		if errors.Is(err, errDomainType) {
			code = exitFailure
		}
		return 0, nil, nil, code, err
	}
	reserveGuestMemory(name, info.Pages)
	if len(nb.vifs) > 0 {
		return 0, nil, nil, exitUsage, fmt.Errorf("%w: --vif is for the simulator: a %s domain's vifs are its own (%s)", errNetbufFlags, hv.Name(), vifNames(info.NICs))
	}
	devs := make([]netbuf.Device, len(info.NICs))
	for i, n := range info.NICs {
		devs[i] = netbuf.Device{Name: n.Backend, MAC: n.MAC, Addrs: n.Addrs, Bridge: n.Bridge}
	}
	nets, err := nb.openKernel(devs, hv.Name())
	if err != nil {
		code := exitFailure
		if errors.Is(err, errNetbufFlags) || errors.Is(err, auto.ErrUnsafe) {
			code = exitUsage
		}
		return 0, nil, nil, code, fmt.Errorf("output buffer: %w", err)
	}
	ld := &leasedDisks{}
	if prot.Disk != "none" && slices.ContainsFunc(info.Disks, func(d libxl.Disk) bool { return d.Writable && frontDisk(d) }) {
		ld, err = leaseDisks(runDir, info.Disks, dev, nbd.AttachConfig{})
		if err != nil {
			for _, n := range nets {
				n.Close()
			}
			return 0, nil, nil, exitFailure, err
		}
	}
	return id, nets, ld, exitOK, nil
}

// openNBD opens the kernel's nbd driver (generic netlink).
func openNBD() (nbd.Device, func(), error) {
	k, err := nbd.OpenKernel()
	if err != nil {
		if errors.Is(err, nbd.ErrNoModule) {
			return nil, nil, fmt.Errorf("%w (modprobe nbd)", err)
		}
		return nil, nil, err
	}
	return k, func() { k.Close() }, nil
}

func vifNames(nics []libxl.NIC) string {
	if len(nics) == 0 {
		return "none"
	}
	s := make([]string, len(nics))
	for i, n := range nics {
		s[i] = n.Backend
	}
	return strings.Join(s, ", ")
}

// loggerTo is logger with its output on w.
func (f *engineFlags) loggerTo(w io.Writer, role string) *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.logLevel)); err != nil {
		lvl = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl})).With("role", role)
}
