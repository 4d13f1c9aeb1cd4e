package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/spf13/pflag"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/sim"
	"github.com/xl-kemari/xl-kemari/netbuf"
	"github.com/xl-kemari/xl-kemari/netbuf/announce"
	"github.com/xl-kemari/xl-kemari/netbuf/auto"
	"github.com/xl-kemari/xl-kemari/netbuf/auto/host"
	"github.com/xl-kemari/xl-kemari/netbuf/mem"
)

// Output-buffer modes of --netbuf besides those of netbuf/auto.
const (
	netbufMem  = "mem"  // in process: the simulator's NIC egress, no kernel
	netbufNone = "none" // nothing held: needs --unsafe
)

// errNetbufFlags: the output-buffer options do not fit together.
var errNetbufFlags = errors.New("netbuf options")

// netbufFlags are the output-buffer options of start (which holds the
// guest's output) and receive (which, on failover, brings the replica's
// vifs up and announces its addresses).
type netbufFlags struct {
	mode       string
	dom0NS     string
	guestNS    string
	vifs       []string
	announceIf []string
	unsafe     bool

	closeNets func() // set by openSim; run by close
}

// close closes the buffers openSim opened (dropping what they hold: fail
// closed) and undoes their kernel setup. Safe to call more than once, or
// when openSim was never called.
func (f *netbufFlags) close() {
	if c := f.closeNets; c != nil {
		f.closeNets = nil
		c()
	}
}

func (f *netbufFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.mode, "netbuf", "", "output buffer: auto (plug, else nfqueue), plug, nfqueue, mem (simulator, in process) or none (needs --unsafe); default mem with --hypervisor=sim, else auto")
	fs.StringVar(&f.dom0NS, "netns", "", "network namespace (path) of dom0's bridges and vifs; default: this process's (tests)")
	fs.StringVar(&f.guestNS, "guest-netns", "", "simulator: network namespace (path) in which the domain's NIC sockets live, behind --vif")
	fs.StringArrayVar(&f.vifs, "vif", nil, "dom0-side device of NIC i, in NIC order (repeatable): held by a kernel --netbuf on start, brought up on failover by receive")
	fs.StringArrayVar(&f.announceIf, "announce-if", nil, "receive: interface (in --guest-netns if set, else in --netns) on which NIC i's MAC and addresses are announced at failover (repeatable)")
	fs.BoolVar(&f.unsafe, "unsafe", false, "allow --netbuf=none: output leaves before the standby has it (breaks output commit)")
}

// modeFor is the effective mode on a hypervisor named hv.
func (f *netbufFlags) modeFor(hv string) string {
	if f.mode != "" {
		return f.mode
	}
	if hv == sim.BackendName {
		return netbufMem
	}
	return "auto"
}

// inGuest runs fn on a thread in --guest-netns: sockets fn opens live
// there for good. Without --guest-netns it runs fn here.
func (f *netbufFlags) inGuest(fn func() error) error { return host.InNetNS(f.guestNS, fn) }

// inDom0 is inGuest for --netns (the replication listener of a test
// standby that runs inside its guest namespace, for one).
func (f *netbufFlags) inDom0(fn func() error) error { return host.InNetNS(f.dom0NS, fn) }

// createSim creates the simulator domain with its NIC sockets in
// --guest-netns, so that with a kernel backend the guest's frames leave
// through the held device (a socket in dom0's namespace would bypass it).
func (f *netbufFlags) createSim(h *sim.Hypervisor, cfg sim.DomainConfig) (libxl.DomID, error) {
	var id libxl.DomID
	err := f.inGuest(func() error {
		var err error
		id, err = h.CreateDomain(cfg)
		return err
	})
	return id, err
}

// openSim wires the output buffers of a simulator domain's nnics NICs.
// With mem, each NIC's egress goes into an in-process buffer that
// transmits on release. With a kernel backend the NIC keeps transmitting
// from its socket (created by createSim in --guest-netns) and the backend
// holds the frames on --vif i in dom0's namespace; stale setup of a
// crashed run is removed first. cleanup closes every buffer (dropping
// what is held, fail closed) and undoes the kernel setup; f.close runs
// it too, for callers that do not keep it.
func (f *netbufFlags) openSim(d *sim.Domain, nnics int) (bufs []netbuf.Buffer, cleanup func(), err error) {
	var opened []netbuf.Buffer
	closeAll := func() {
		for _, b := range opened {
			_ = b.Close()
		}
	}
	defer func() {
		if err != nil {
			closeAll()
			bufs, cleanup = nil, func() {}
		}
		f.closeNets = cleanup
	}()
	mode := f.modeFor(sim.BackendName)
	switch mode {
	case netbufMem:
		for i := range nnics {
			nic := d.NIC(i)
			b := mem.New(func(fr []byte) { _ = nic.Transmit(fr) })
			nic.SetEgress(b.Send)
			opened = append(opened, b)
		}
		return opened, closeAll, nil
	case netbufNone:
		if !f.unsafe {
			return nil, nil, auto.ErrUnsafe
		}
		for range nnics {
			b, _ := auto.None{}.Open(netbuf.Device{})
			opened = append(opened, b)
		}
		return opened, closeAll, nil
	}
	if f.guestNS == "" {
		return nil, nil, fmt.Errorf("%w: --netbuf=%s on the simulator needs --guest-netns: its NIC sockets must send through the held --vif", errNetbufFlags, mode)
	}
	if len(f.vifs) != nnics {
		return nil, nil, fmt.Errorf("%w: --netbuf=%s needs one --vif per NIC: %d NICs, %d --vif", errNetbufFlags, mode, nnics, len(f.vifs))
	}
	cfg := d.Config()
	devs := make([]netbuf.Device, nnics)
	for i := range nnics {
		devs[i] = netbuf.Device{Name: f.vifs[i], MAC: d.NIC(i).MAC()}
		if i < len(cfg.NICs) {
			if ap, err := netip.ParseAddrPort(cfg.NICs[i].Listen); err == nil {
				devs[i].Addrs = []netip.Addr{ap.Addr().Unmap()}
			}
		}
	}
	opened, err = f.openKernel(devs, sim.BackendName)
	return opened, closeAll, err
}

// openKernel holds the output of each of devs (dom0-side devices in
// --netns) with the kernel backend --netbuf names (auto: plug, else
// nfqueue), after removing what a crashed earlier run left behind. mem
// is refused (it needs a simulator domain); none opens pass-through
// buffers, with --unsafe only. f.close closes what it opened.
func (f *netbufFlags) openKernel(devs []netbuf.Device, hv string) (opened []netbuf.Buffer, err error) {
	defer func() {
		if err != nil {
			for _, b := range opened {
				_ = b.Close()
			}
			opened = nil
		}
		bufs := opened
		f.closeNets = func() {
			for _, b := range bufs {
				_ = b.Close()
			}
		}
	}()
	mode := f.modeFor(hv)
	switch mode {
	case netbufMem:
		return nil, fmt.Errorf("%w: --netbuf=mem holds a simulator domain's output in process; a %s domain needs a kernel buffer (auto, plug or nfqueue)", errNetbufFlags, hv)
	case netbufNone:
		if !f.unsafe {
			return nil, auto.ErrUnsafe
		}
		for range devs {
			b, _ := auto.None{}.Open(netbuf.Device{})
			opened = append(opened, b)
		}
		return opened, nil
	}
	if err := auto.Cleanup(f.dom0NS); err != nil {
		return nil, fmt.Errorf("removing a previous run's output-buffer setup: %w", err)
	}
	be, err := auto.Select(auto.Options{Mode: mode, Unsafe: f.unsafe, NetNS: f.dom0NS})
	if err != nil {
		return nil, err
	}
	for i, dev := range devs {
		b, err := be.Open(dev)
		if err != nil {
			return opened, fmt.Errorf("nic %d (%s): %w", i, dev.Name, err)
		}
		opened = append(opened, b)
	}
	return opened, nil
}

// checkStandbyNS refuses a simulator standby with --guest-netns that does
// not run inside that namespace: the replica's NICs bind when it is
// activated, in the namespace of the process (run it under
// "ip netns exec NAME"; its replication listener goes into --netns
// through inDom0).
func (f *netbufFlags) checkStandbyNS() error {
	if f.guestNS == "" {
		return nil
	}
	want, err := netns.GetFromPath(f.guestNS)
	if err != nil {
		return fmt.Errorf("%w: --guest-netns %s: %v", errNetbufFlags, f.guestNS, err)
	}
	defer want.Close()
	var cur, target unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &cur); err != nil {
		return fmt.Errorf("%w: %v", errNetbufFlags, err)
	}
	if err := unix.Fstat(int(want), &target); err != nil {
		return fmt.Errorf("%w: %v", errNetbufFlags, err)
	}
	if cur.Dev != target.Dev || cur.Ino != target.Ino {
		return fmt.Errorf("%w: receive --guest-netns %s must run inside that namespace (ip netns exec): the replica's NICs bind in this process's namespace when it is activated", errNetbufFlags, f.guestNS)
	}
	return nil
}

// onActivate returns the standby's failover hook (StandbyConfig.OnActivate):
// each --vif is set up in dom0's namespace and waited for (a Xen replica's
// vif joins its bridge only now, and an announcement sent before its
// bridge port forwards is lost), then each --announce-if interface
// announces its MAC and addresses: gratuitous ARP for IPv4, unsolicited
// neighbour advertisement for IPv6, three rounds. Failures are logged:
// the replica runs either way, and peers still find it when their caches
// expire.
func (f *netbufFlags) onActivate(log *slog.Logger, hv libxl.Hypervisor) func(libxl.DomID, libxl.DomainInfo) {
	return func(dom libxl.DomID, info libxl.DomainInfo) {
		if len(f.vifs) == 0 && replicaDomID != nil {
			if id, ok := replicaDomID(hv, dom); ok {
				f.announceXen(log, id, info.NICs)
				return
			}
		}
		for _, v := range f.vifs {
			if err := host.LinkUp(f.dom0NS, v, 5*time.Second); err != nil {
				log.Warn("failover: replica vif not up", "vif", v, "err", err)
			}
		}
		ns := f.dom0NS
		if f.guestNS != "" {
			ns = f.guestNS
		}
		for _, ifname := range f.announceIf {
			var addrs []netip.Addr
			err := host.InNetNS(ns, func() error {
				mac, a, err := host.LinkAddrs("", ifname)
				if err != nil {
					return err
				}
				addrs = a
				return announce.Send(ifname, mac, a, 3)
			})
			if err != nil {
				log.Warn("failover: announcement failed", "if", ifname, "err", err)
				continue
			}
			log.Info("failover: announced", "dom", dom, "if", ifname, "addrs", addrs)
		}
	}
}

// replicaDomID, set by the Xen backend's glue (backend_xen.go), maps an
// activated replica's Sink id to the domain id libxl gave it, whose vifs
// are vif<id>.<devid>.
var replicaDomID func(hv libxl.Hypervisor, dom libxl.DomID) (libxl.DomID, bool)

// backendLogger, set by the Xen backend's glue, gives the backend the
// command's logger (where a replica's activation spent its time); nil in
// a build without it.
var backendLogger func(hv libxl.Hypervisor, log *slog.Logger)

// setBackendLogger hands log to the backend, when it takes one.
func setBackendLogger(hv libxl.Hypervisor, log *slog.Logger) {
	if backendLogger != nil {
		backendLogger(hv, log)
	}
}

// announceXen waits for the vifs of the activated Xen domain id (libxl's
// hotplug script puts them on their bridges) and announces each NIC's
// configured addresses (xl.cfg vif ip=) at its MAC on its bridge, so
// that the LAN's switches and neighbours move to this host. Frames sent
// by the bridge device itself do not teach this bridge the guest's MAC
// (it learns only from frames arriving on ports), so its forwarding to
// the vif is unaffected. A NIC without configured addresses is announced
// by the guest itself: its netfront sends gratuitous ARP and unsolicited
// neighbour advertisements when it reconnects after the restore.
func (f *netbufFlags) announceXen(log *slog.Logger, id libxl.DomID, nics []libxl.NIC) {
	for _, n := range nics {
		vif := fmt.Sprintf("vif%d.%d", id, n.Index)
		if err := host.LinkUp(f.dom0NS, vif, 10*time.Second); err != nil {
			log.Warn("failover: replica vif not up", "vif", vif, "err", err)
			continue
		}
		if n.Bridge == "" || len(n.Addrs) == 0 || n.MAC == nil {
			log.Info("failover: vif up; the guest announces its own addresses", "vif", vif, "bridge", n.Bridge)
			continue
		}
		err := host.InNetNS(f.dom0NS, func() error { return announce.Send(n.Bridge, n.MAC, n.Addrs, 3) })
		if err != nil {
			log.Warn("failover: announcement failed", "vif", vif, "bridge", n.Bridge, "err", err)
			continue
		}
		log.Info("failover: announced", "dom", id, "vif", vif, "bridge", n.Bridge, "mac", n.MAC, "addrs", n.Addrs)
	}
}
