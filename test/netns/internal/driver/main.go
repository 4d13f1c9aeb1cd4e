// Command driver is the test helper of package netns: one end of a
// replicated simulator service domain whose output is held by a kernel
// netbuf backend. The test runs two of them as separate processes, so
// that it can SIGKILL the primary.
//
//	driver primary -dom0-ns P -guest-ns GP -vif vif1.0 -listen 192.0.2.10:7777 -peer 198.51.100.2:7001
//	ip netns exec GS driver standby -dom0-ns S -vif vif1.0 -guest-if eth0 -listen 198.51.100.2:7001
//
// The primary runs in any namespace: it creates the sim domain inside the
// guest namespace (so the service socket and the guest's frames live
// there), holds the guest's frames on the dom0-side vif with the chosen
// backend, and dials the standby from dom0's namespace over a dedicated
// replication link. The standby runs inside its guest namespace, where
// the replica's NIC binds the service address when it is activated; it
// listens for the primary from dom0's namespace, and on activation brings
// its dom0-side vif up and announces the guest (gratuitous ARP, unsolicited
// NA) from the guest's interface.
//
// Both print every observation as one JSON line on stdout
// ({"t":unix-ns,"kind":"commit","epoch":k}) plus "ready" (set up and
// listening or dialling) and "announced"; logs go to stderr.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/xl-kemari/xl-kemari/arbiter"
	_ "github.com/xl-kemari/xl-kemari/arbiter/etcd" // etcd:// arbiters
	"github.com/xl-kemari/xl-kemari/checkpoint"
	"github.com/xl-kemari/xl-kemari/checkpoint/epoch"
	"github.com/xl-kemari/xl-kemari/checkpoint/wire"
	"github.com/xl-kemari/xl-kemari/diskbuf"
	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/sim"
	"github.com/xl-kemari/xl-kemari/netbuf"
	"github.com/xl-kemari/xl-kemari/netbuf/announce"
	"github.com/xl-kemari/xl-kemari/netbuf/auto"
	"github.com/xl-kemari/xl-kemari/netbuf/auto/host"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: driver primary|standby [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "primary":
		err = primary(os.Args[2:])
	case "standby":
		err = standby(os.Args[2:])
	default:
		err = fmt.Errorf("unknown role %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "driver:", err)
		os.Exit(1)
	}
}

// out serialises the JSON lines on stdout.
var out struct {
	sync.Mutex
	enc *json.Encoder
}

type line struct {
	T     int64  `json:"t"`
	Kind  string `json:"kind"`
	Epoch uint64 `json:"epoch,omitempty"`
	Msg   string `json:"msg,omitempty"`
}

var kinds = map[checkpoint.ObsKind]string{checkpoint.ObsState: "state", checkpoint.ObsCheckpoint: "checkpoint",
	checkpoint.ObsRelease: "release", checkpoint.ObsCommit: "commit", checkpoint.ObsSync: "sync",
	checkpoint.ObsActivate: "activate", checkpoint.ObsError: "error"}

func emit(kind string, ep uint64, msg string, t time.Time) {
	out.Lock()
	defer out.Unlock()
	if out.enc == nil {
		out.enc = json.NewEncoder(os.Stdout)
	}
	_ = out.enc.Encode(line{T: t.UnixNano(), Kind: kind, Epoch: ep, Msg: msg})
}

func observe(o checkpoint.Observation) {
	msg := o.Msg
	if o.Kind == checkpoint.ObsState {
		msg = o.State
	}
	emit(kinds[o.Kind], o.Epoch, msg, o.Time)
}

type common struct {
	dom0NS, vif, listen string
	interval, timeout   time.Duration
	arbiter, cut        string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.dom0NS, "dom0-ns", "", "path of dom0's network namespace")
	fs.StringVar(&c.vif, "vif", "vif1.0", "dom0-side device of the guest NIC")
	fs.StringVar(&c.listen, "listen", "", "primary: the service address; standby: the replication address")
	fs.DurationVar(&c.interval, "interval", 100*time.Millisecond, "checkpoint interval")
	fs.DurationVar(&c.timeout, "timeout", 500*time.Millisecond, "peer declared lost after this long")
	fs.StringVar(&c.arbiter, "arbiter", "none", "arbiter: none, file:DIR or etcd://HOST:PORT/PREFIX (dialled from this process's namespace)")
	fs.StringVar(&c.cut, "arbiter-cut", "", "file: arbiters only: while this file exists every arbiter operation fails, as across a partition")
}

// errCut is what an arbiter operation meets across a simulated partition.
var errCut = errors.New("driver: arbiter unreachable (partitioned by the test)")

// openArbiter opens c.arbiter. A file: arbiter is on a directory this
// process shares with its peer, not on the network: the test cuts it off
// through the backend's fault hook, which fails every operation while the
// -arbiter-cut file exists.
func (c *common) openArbiter() (arbiter.Arbiter, error) {
	a, err := arbiter.Open(c.arbiter)
	if err != nil {
		return nil, err
	}
	if f, ok := a.(*arbiter.File); ok && c.cut != "" {
		cut := c.cut
		f.Fault = func(string) error {
			if _, err := os.Stat(cut); err == nil {
				return errCut
			}
			return nil
		}
	}
	return a, nil
}

func (c *common) epoch() epoch.Config {
	return epoch.Config{Interval: epoch.Duration(c.interval), MinInterval: epoch.Duration(5 * time.Millisecond),
		Timeout: epoch.Duration(c.timeout), Inflight: 1}
}

func logger(role string) *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("role", role)
}

// nsDialer dials TCP from inside a network namespace: the socket keeps
// the namespace it was created in.
type nsDialer struct{ ns, addr string }

func (d nsDialer) Dial(ctx context.Context) (checkpoint.Conn, error) {
	var c net.Conn
	err := host.InNetNS(d.ns, func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, "tcp", d.addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	c.(*net.TCPConn).SetNoDelay(true)
	return c, nil
}

func (d nsDialer) String() string { return "tcp:" + d.addr }

type tcpListener struct{ ln net.Listener }

func (l tcpListener) Accept() (checkpoint.Conn, error) {
	c, err := l.ln.Accept()
	if err != nil {
		return nil, err
	}
	c.(*net.TCPConn).SetNoDelay(true)
	return c, nil
}
func (l tcpListener) Close() error   { return l.ln.Close() }
func (l tcpListener) String() string { return "tcp:" + l.ln.Addr().String() }

func primary(args []string) error {
	fs := flag.NewFlagSet("primary", flag.ContinueOnError)
	var c common
	c.register(fs)
	guestNS := fs.String("guest-ns", "", "path of the guest's network namespace (the sim NIC socket binds there)")
	bridge := fs.String("bridge", "", "bridge the vif is a port of")
	mac := fs.String("mac", "", "the guest NIC's MAC")
	peer := fs.String("peer", "", "the standby's replication address, dialled from dom0's namespace")
	mode := fs.String("netbuf", "nfqueue", "output buffer: auto, plug, nfqueue, or none (unsafe; the control that shows the test can see a leak)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := logger("primary")
	if err := auto.Cleanup(c.dom0NS); err != nil {
		log.Warn("stale setup not fully removed", "err", err)
	}
	be, err := auto.Select(auto.Options{Mode: *mode, Unsafe: *mode == "none", NetNS: c.dom0NS})
	if err != nil {
		return err
	}
	hv, err := sim.New(nil)
	if err != nil {
		return err
	}
	defer hv.DestroyAll()
	cfg := sim.DomainConfig{Name: "guest", Workload: sim.WorkloadService, Pages: 64 << 20 / libxl.PageSize,
		NICs: []sim.NICConfig{{MAC: *mac, Listen: c.listen}}, Disks: []sim.DiskConfig{{Sectors: 4096}}}
	var dom libxl.DomID
	if err := host.InNetNS(*guestNS, func() error {
		var err error
		dom, err = hv.CreateDomain(cfg)
		return err
	}); err != nil {
		return err
	}
	d, _ := hv.Domain(dom)
	ap := netip.MustParseAddrPort(c.listen)
	buf, err := be.Open(netbuf.Device{Name: c.vif, Bridge: *bridge, MAC: d.NIC(0).MAC(), Addrs: []netip.Addr{ap.Addr()}})
	if err != nil {
		return err
	}
	defer buf.Close()
	st := diskbuf.NewMemStore(4096 * diskbuf.SectorSize)
	disk := diskbuf.NewPrimary(diskbuf.Replicate, []diskbuf.Store{st})
	d.Disk(0).SetBackend(disk.Device(0))
	arb, err := c.openArbiter()
	if err != nil {
		return err
	}
	p, err := checkpoint.NewPrimary(checkpoint.PrimaryConfig{Epoch: c.epoch(), Domain: dom, Codec: wire.CodecLZ4,
		Logger: log, Observer: observe}, hv.Source(), nsDialer{ns: c.dom0NS, addr: *peer},
		[]netbuf.Buffer{buf}, disk, arb)
	if err != nil {
		return err
	}
	emit("ready", 0, be.Name(), time.Now())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); p.Stop() }()
	err = p.Run(ctx)
	// The guest dies with this process (deferred DestroyAll), and as a
	// destroyed Xen domain's vif goes with it, so does its dom0-side
	// device here, before the buffer is closed: what it still holds, and
	// whatever the guest namespace's kernel would answer later (a fenced
	// guest's closed service port), never reaches the wire.
	if derr := host.SetLink(c.dom0NS, c.vif, false); derr != nil {
		log.Error("vif not taken down", "err", derr)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

func standby(args []string) error {
	fs := flag.NewFlagSet("standby", flag.ContinueOnError)
	var c common
	c.register(fs)
	guestIf := fs.String("guest-if", "eth0", "the guest's interface in this (the guest's) namespace, announced on activation")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := logger("standby")
	hv, err := sim.New(nil)
	if err != nil {
		return err
	}
	defer hv.DestroyAll()
	var ln net.Listener
	if err := host.InNetNS(c.dom0NS, func() error {
		var err error
		ln, err = net.Listen("tcp", c.listen)
		return err
	}); err != nil {
		return err
	}
	arb, err := c.openArbiter()
	if err != nil {
		return err
	}
	activated := make(chan struct{})
	onActivate := func(libxl.DomID, libxl.DomainInfo) {
		// The replica's vif joins the bridge only now, as a restored
		// Xen domain's would: before, the standby's copy of the guest
		// stack must not answer for the primary's.
		if err := host.LinkUp(c.dom0NS, c.vif, 5*time.Second); err != nil {
			emit("error", 0, err.Error(), time.Now())
		} else if err := announceIf(*guestIf); err != nil {
			emit("error", 0, err.Error(), time.Now())
		} else {
			emit("announced", 0, *guestIf, time.Now())
		}
		close(activated)
	}
	s, err := checkpoint.NewStandby(checkpoint.StandbyConfig{Epoch: c.epoch(), Verify: true, Once: true, AnswerTakenOver: true, Logger: log,
		Observer: observe, OnActivate: onActivate}, hv.Sink(), tcpListener{ln}, arb)
	if err != nil {
		return err
	}
	emit("ready", 0, ln.Addr().String(), time.Now())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := s.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	if _, ok := s.Activated(); ok {
		<-ctx.Done() // the guest lives as long as this process
	}
	return nil
}

// announceIf announces ifname's MAC and global addresses from ifname.
func announceIf(ifname string) error {
	mac, ips, err := host.LinkAddrs("", ifname)
	if err != nil {
		return err
	}
	return announce.Send(ifname, mac, ips, 3)
}
