package nfqueue

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	nfq "github.com/florianl/go-nfqueue/v2"
	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/packet"
	vnl "github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/xl-kemari/xl-kemari/netbuf"
	"github.com/xl-kemari/xl-kemari/netbuf/auto/host"
)

// Sentinel errors of this backend.
var (
	// ErrSetup: a rule, socket or device could not be set up; Open undid
	// whatever it had done.
	ErrSetup = errors.New("nfqueue: setup failed")
	// ErrDevice: the device is not a bridge port (physdev needs a bridge).
	ErrDevice = errors.New("nfqueue: device not usable")
	// ErrNoQueue: every queue number in the configured range is bound.
	ErrNoQueue = errors.New("nfqueue: no free queue number")
)

// Tag prefixes every rule comment this backend writes; table names start
// with TablePrefix and veth names with the prefixes below. CleanupStale
// keys on them.
const (
	Tag          = "xl-kemari:"
	injInPrefix  = "xlki"
	injOutPrefix = "xlko"
	// legacyChainPrefix named the ebtables chains of the builds that ran
	// iptables and ebtables; CleanupStale still removes them.
	legacyChainPrefix = "XLK-"
)

// Defaults for Config's zero fields.
const (
	DefaultFirstQueue = 27392    // 0x6b00
	DefaultQueueLen   = 65536    // frames the kernel may hold per queue
	DefaultRcvBuf     = 64 << 20 // netlink socket buffer (SO_RCVBUFFORCE)
	DefaultLimit      = 64 << 20 // bytes of side-path frames held per buffer
	queueRange        = 1024
)

// portMAC is the address of the re-injection veth (see setup).
const portMAC = "fe:ff:ff:ff:ff:ff"

// Config tunes the backend; the zero value is the production setting.
type Config struct {
	// NetNS is the path of the network namespace dom0's bridges live in
	// ("" = the namespace this process runs in). Tests use their own.
	NetNS string
	// FirstQueue is the lowest NFQUEUE number tried; each buffer takes
	// the first free number from there.
	FirstQueue uint16
	// QueueLen is the kernel queue length; frames beyond it are dropped
	// and counted as limit hits (never passed: no fail-open).
	QueueLen uint32
	// RcvBuf is the queue socket's receive buffer in bytes.
	RcvBuf int
	// Limit bounds the bytes of side-path frames (non-IP) held per buffer.
	Limit uint64
}

// Backend opens nfqueue buffers. It is safe for concurrent use.
type Backend struct {
	cfg Config

	mu   sync.Mutex
	used map[uint16]bool // queue numbers this process holds
}

var _ netbuf.Backend = (*Backend)(nil)

// New returns a backend with cfg, zero fields set to their defaults.
func New(cfg Config) *Backend {
	if cfg.FirstQueue == 0 {
		cfg.FirstQueue = DefaultFirstQueue
	}
	if cfg.QueueLen == 0 {
		cfg.QueueLen = DefaultQueueLen
	}
	if cfg.RcvBuf == 0 {
		cfg.RcvBuf = DefaultRcvBuf
	}
	if cfg.Limit == 0 {
		cfg.Limit = DefaultLimit
	}
	return &Backend{cfg: cfg, used: map[uint16]bool{}}
}

// Name implements netbuf.Backend.
func (b *Backend) Name() string { return "nfqueue" }

// KernelFeatures lists the kernel options this backend needs: nf_tables
// in the ip, ip6 and bridge families, with the x_tables physdev match and
// NFQUEUE target through nft_compat (see rules.go).
var KernelFeatures = []string{
	"CONFIG_NETFILTER_NETLINK_QUEUE", "CONFIG_NF_TABLES", "CONFIG_NF_TABLES_IPV4",
	"CONFIG_NF_TABLES_IPV6", "CONFIG_NF_TABLES_BRIDGE", "CONFIG_NFT_COMPAT",
	"CONFIG_NETFILTER_XT_TARGET_NFQUEUE", "CONFIG_NETFILTER_XT_MATCH_PHYSDEV",
	"CONFIG_BRIDGE_NETFILTER", "CONFIG_VETH", "CONFIG_PACKET",
}

// Tools lists the programs Open runs (Debian: iproute2, util-linux). The
// netfilter rules are made over netlink, without iptables or nft.
var Tools = []string{"ip", "bridge", "nsenter"}

// Probe implements netbuf.Backend: it names every missing kernel option
// and tool.
func (b *Backend) Probe() error {
	var missing []string
	feats, err := host.KernelConfig()
	if err != nil {
		// Without a config we cannot tell; the live check below decides.
		if _, serr := os.Stat("/proc/net/netfilter/nfnetlink_queue"); serr != nil {
			missing = append(missing, "CONFIG_NETFILTER_NETLINK_QUEUE (no /proc/net/netfilter/nfnetlink_queue; "+err.Error()+")")
		}
	} else {
		missing = append(missing, feats.Missing(KernelFeatures...)...)
	}
	tools := Tools
	if b.cfg.NetNS == "" {
		tools = tools[:len(tools)-1]
	}
	for _, t := range host.MissingTools(tools...) {
		missing = append(missing, "tool "+t)
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: nfqueue needs %s", netbuf.ErrUnsupported, strings.Join(missing, ", "))
	}
	return nil
}

// Open implements netbuf.Backend: it starts holding every frame dev
// sends. dev.Bridge may be empty; the device's master is used then.
func (b *Backend) Open(dev netbuf.Device) (netbuf.Buffer, error) {
	if !validIfName(dev.Name) {
		return nil, fmt.Errorf("%w: bad interface name %q", ErrDevice, dev.Name)
	}
	if dev.Bridge != "" && !validIfName(dev.Bridge) {
		return nil, fmt.Errorf("%w: bad bridge name %q", ErrDevice, dev.Bridge)
	}
	buf := &Buffer{b: b, dev: dev, waiting: make(chan struct{}, 1)}
	if err := buf.setup(); err != nil {
		buf.undo()
		return nil, err
	}
	return buf, nil
}

func validIfName(s string) bool {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	for _, c := range s {
		if c <= ' ' || c == '/' || c == ':' || c > '~' {
			return false
		}
	}
	return true
}

type held struct {
	id   uint32
	size uint32
}

type side struct {
	seq  uint64
	data []byte
}

type barrier struct {
	epoch  uint64
	id     uint32 // last packet id seen at Barrier
	haveID bool
	side   uint64 // side frames with seq < side belong to this barrier
}

// Buffer is an nfqueue-backed netbuf.Buffer.
type Buffer struct {
	b       *Backend
	dev     netbuf.Device
	queue   uint16
	inj     string // veth end we write re-injected side frames into
	undos   []func() error
	waiting chan struct{}

	nf     *nfq.Nfqueue
	cancel context.CancelFunc
	cap    *packet.Conn // side-path capture on dev
	out    *packet.Conn // side-path injection
	proc   *os.File     // nfnetlink_queue statistics, in dom0's namespace
	sideWG sync.WaitGroup

	vMu   sync.Mutex // orders verdicts: a batch before newer single accepts
	injMu sync.Mutex // orders side-path injections

	mu sync.Mutex
	// Protected by mu.
	held        []held
	sides       []side
	sideBytes   uint64
	sideSeq     uint64
	barriers    []barrier
	lastID      uint32
	haveID      bool
	lastBarrier uint64
	unprotected bool
	closed      bool
	stats       netbuf.Stats
	kernelDrops uint64 // queue_dropped + user_dropped at the last Stats
}

var _ netbuf.Buffer = (*Buffer)(nil)

// Queue returns the NFQUEUE number this buffer holds its frames in.
func (q *Buffer) Queue() uint16 { return q.queue }

func (q *Buffer) run(argv ...string) error {
	_, err := host.Run(q.b.cfg.NetNS, argv...)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSetup, err)
	}
	return nil
}

// do runs argv and, on success, remembers undo to run at Close.
func (q *Buffer) do(undo []string, argv ...string) error {
	if err := q.run(argv...); err != nil {
		return err
	}
	if undo != nil {
		q.undos = append(q.undos, func() error { return q.run(undo...) })
	}
	return nil
}

func (q *Buffer) setup() error {
	cfg := q.b.cfg
	ns := cfg.NetNS
	// Resolve the bridge and check the device while in dom0's namespace.
	if err := host.InNetNS(ns, func() error {
		l, err := vnl.LinkByName(q.dev.Name)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrDevice, q.dev.Name, err)
		}
		if q.dev.Bridge == "" {
			m, err := vnl.LinkByIndex(l.Attrs().MasterIndex)
			if l.Attrs().MasterIndex == 0 || err != nil || m.Type() != "bridge" {
				return fmt.Errorf("%w: %s is not a bridge port", ErrDevice, q.dev.Name)
			}
			q.dev.Bridge = m.Attrs().Name
		}
		return nil
	}); err != nil {
		return err
	}
	if err := q.bindQueue(); err != nil {
		return err
	}
	n := strconv.Itoa(int(q.queue))
	in, out := injInPrefix+n, injOutPrefix+n
	q.inj = out

	// Side path first, so that nothing the bridge drops goes unseen.
	if err := host.InNetNS(ns, q.openCapture); err != nil {
		return err
	}
	if err := q.do([]string{"ip", "link", "del", out}, "ip", "link", "add", out, "type", "veth", "peer", "name", in); err != nil {
		return err
	}
	for _, l := range []string{in, out} {
		// Quiet ports: no IPv6 autoconfiguration chatter into the bridge.
		_ = host.WriteSysctl(ns, "net/ipv6/conf/"+l+"/disable_ipv6", "1")
	}
	steps := [][]string{
		// A bridge whose address was never set takes its lowest port's:
		// a random veth address could become dom0's on the bridge and
		// strand every neighbour's ARP entry. Xen's vifs use the highest
		// address for the same reason.
		{"ip", "link", "set", in, "address", portMAC},
		{"ip", "link", "set", out, "address", portMAC},
		{"ip", "link", "set", in, "master", q.dev.Bridge},
		{"bridge", "link", "set", "dev", in, "learning", "off", "flood", "off", "mcast_flood", "off", "bcast_flood", "off"},
		{"ip", "link", "set", in, "up"},
		{"ip", "link", "set", out, "up"},
	}
	for _, s := range steps {
		if err := q.do(nil, s...); err != nil {
			return err
		}
	}
	if err := waitOperUp(ns, in, portUpLimit); err != nil {
		return fmt.Errorf("%w: %w", ErrSetup, err)
	}
	if err := host.InNetNS(ns, q.openInject); err != nil {
		return err
	}
	// One batch: all of the rules or none.
	if err := withNft(ns, func(c *nftables.Conn) error {
		addRuleset(c, q.queue, q.dev.Name, in)
		return nil
	}); err != nil {
		return fmt.Errorf("%w: nftables rules for %s (queue %d): %w", ErrSetup, q.dev.Name, q.queue, err)
	}
	q.undos = append(q.undos, func() error {
		return withNft(ns, func(c *nftables.Conn) error {
			delRuleset(c, q.queue, q.dev.Name)
			return nil
		})
	})
	// The bridge passes IP frames through the ip and ip6 hooks only with
	// these set; br_netfilter exists by now (the physdev match loads it).
	for _, k := range []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables"} {
		if err := host.WriteSysctl(ns, "net/bridge/"+k, "1"); err != nil {
			return fmt.Errorf("%w: %w", ErrSetup, err)
		}
	}
	return nil
}

// portUpLimit bounds the wait for the re-injection port to come up.
const portUpLimit = 10 * time.Second

// waitOperUp waits until link name in the namespace at nsPath is
// operationally up, at most limit. A carrier change reaches the bridge
// through the kernel's link watcher, up to a second after the link is set
// up, and until then the port is disabled and drops what is injected
// into it: a side frame released right after Open would be lost. The notification
// saying the link is up comes after the bridge has enabled the port. It
// listens to link notifications instead of polling.
func waitOperUp(nsPath, name string, limit time.Duration) error {
	var opts vnl.LinkSubscribeOptions
	if nsPath != "" {
		h, err := netns.GetFromPath(nsPath)
		if err != nil {
			return fmt.Errorf("%w: open %s: %v", host.ErrNetNS, nsPath, err)
		}
		defer h.Close()
		opts.Namespace = &h
	}
	ch := make(chan vnl.LinkUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	errc := make(chan error, 1)
	opts.ListExisting = true
	opts.ErrorCallback = func(err error) {
		select {
		case errc <- err:
		default:
		}
	}
	if err := vnl.LinkSubscribeWithOptions(ch, done, opts); err != nil {
		return fmt.Errorf("link notifications: %w", err)
	}
	timer := time.NewTimer(limit)
	defer timer.Stop()
	state := "no notification"
	for {
		select {
		case u, ok := <-ch:
			if !ok {
				return fmt.Errorf("link notifications ended while %s was %s", name, state)
			}
			if a := u.Attrs(); a != nil && a.Name == name {
				if a.OperState == vnl.OperUp {
					return nil
				}
				state = "operationally " + a.OperState.String()
			}
		case err := <-errc:
			return fmt.Errorf("link notifications: %w", err)
		case <-timer.C:
			return fmt.Errorf("%s not operationally up after %v (%s)", name, limit, state)
		}
	}
}

// undo tears down the setup in reverse; errors are joined.
func (q *Buffer) undo() error {
	var errs []error
	if q.cancel != nil {
		q.cancel()
	}
	if q.nf != nil {
		// Unbinding makes the kernel drop whatever is still queued.
		if err := q.nf.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	for i := len(q.undos) - 1; i >= 0; i-- {
		if err := q.undos[i](); err != nil {
			errs = append(errs, err)
		}
	}
	q.undos = nil
	if q.cap != nil {
		q.cap.Close()
	}
	if q.out != nil {
		q.out.Close()
	}
	q.sideWG.Wait()
	if q.proc != nil {
		q.proc.Close()
	}
	if q.queue != 0 {
		q.b.mu.Lock()
		delete(q.b.used, q.queue)
		q.b.mu.Unlock()
	}
	return errors.Join(errs...)
}

// bindQueue binds the first free queue number at or after FirstQueue.
func (q *Buffer) bindQueue() error {
	cfg := q.b.cfg
	var nsFd int
	if cfg.NetNS != "" {
		h, err := netns.GetFromPath(cfg.NetNS)
		if err != nil {
			return fmt.Errorf("%w: %w: %v", ErrSetup, host.ErrNetNS, err)
		}
		defer h.Close()
		nsFd = int(h)
	}
	var lastErr error
	for i := 0; i < queueRange; i++ {
		num := cfg.FirstQueue + uint16(i)
		if num == 0 {
			continue
		}
		q.b.mu.Lock()
		taken := q.b.used[num]
		if !taken {
			q.b.used[num] = true
		}
		q.b.mu.Unlock()
		if taken {
			continue
		}
		nf, err := q.tryQueue(num, nsFd)
		if err == nil {
			q.nf, q.queue = nf, num
			return host.InNetNS(cfg.NetNS, func() error {
				f, err := os.Open("/proc/thread-self/net/netfilter/nfnetlink_queue")
				if err == nil {
					q.proc = f
				}
				return nil // statistics are optional
			})
		}
		lastErr = err
		q.b.mu.Lock()
		delete(q.b.used, num)
		q.b.mu.Unlock()
		if !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("%w: queue %d: %w", ErrSetup, num, err)
		}
	}
	return fmt.Errorf("%w: %d..%d: %v", ErrNoQueue, cfg.FirstQueue, int(cfg.FirstQueue)+queueRange-1, lastErr)
}

func (q *Buffer) tryQueue(num uint16, nsFd int) (*nfq.Nfqueue, error) {
	cfg := q.b.cfg
	nf, err := nfq.Open(&nfq.Config{
		NetNS:       nsFd,
		NfQueue:     num,
		MaxQueueLen: cfg.QueueLen,
		Copymode:    nfq.NfQnlCopyMeta,
		// Flags stays 0: no NfQaCfgFlagFailOpen, which would pass frames
		// when the queue is full.
		AfFamily: unix.AF_UNSPEC,
	})
	if err != nil {
		return nil, err
	}
	if err := nf.SetOption(netlink.NoENOBUFS, true); err != nil {
		nf.Close()
		return nil, err
	}
	rc, err := nf.Con.SyscallConn()
	if err != nil {
		nf.Close()
		return nil, err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, cfg.RcvBuf)
	}); err != nil {
		serr = err
	}
	if serr != nil {
		nf.Close()
		return nil, fmt.Errorf("SO_RCVBUFFORCE: %w", serr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := nf.RegisterWithErrorFunc(ctx, q.hook, func(error) int {
		if ctx.Err() != nil {
			return 1
		}
		return 0
	}); err != nil {
		cancel()
		nf.Close()
		return nil, err
	}
	q.cancel = cancel
	return nf, nil
}

// hook runs on go-nfqueue's receive goroutine for every queued frame.
func (q *Buffer) hook(a nfq.Attribute) int {
	if a.PacketID == nil {
		return 0
	}
	id := *a.PacketID
	var size uint32
	if a.CapLen != nil {
		size = *a.CapLen
	} else if a.Payload != nil {
		size = uint32(len(*a.Payload))
	}
	q.mu.Lock()
	q.lastID, q.haveID = id, true
	if q.unprotected || q.closed {
		pass := q.unprotected && !q.closed
		if pass {
			q.stats.Released++
			q.stats.ReleasedBytes += uint64(size)
		}
		q.vMu.Lock()
		q.mu.Unlock()
		v := nfq.NfDrop
		if pass {
			v = nfq.NfAccept
		}
		_ = q.nf.SetVerdict(id, v)
		q.vMu.Unlock()
		return 0
	}
	q.held = append(q.held, held{id: id, size: size})
	q.stats.HeldFrames++
	q.stats.HeldBytes += uint64(size)
	q.mu.Unlock()
	q.notify()
	return 0
}

func (q *Buffer) notify() {
	select {
	case q.waiting <- struct{}{}:
	default:
	}
}

// sideFilter passes the frames the bridge table drops: those the guest
// sent (not PACKET_OUTGOING) that are neither untagged IPv4 nor untagged
// IPv6. A VLAN tag the kernel moved out of the frame still counts: the
// bridge's ether type match sees it (0x8100), so the tagged frame is
// dropped there and must be kept here.
var sideFilter = func() []bpf.RawInstruction {
	raw, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtType},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_OUTGOING, SkipTrue: 6},
		bpf.LoadExtension{Num: bpf.ExtVLANTagPresent},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0, SkipTrue: 3},
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.ETH_P_IP, SkipTrue: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.ETH_P_IPV6, SkipTrue: 1},
		bpf.RetConstant{Val: 1 << 18},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		panic("nfqueue: side filter does not assemble: " + err.Error()) // fixed program
	}
	return raw
}()

func (q *Buffer) openCapture() error {
	ifi, err := net.InterfaceByName(q.dev.Name)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrDevice, q.dev.Name, err)
	}
	c, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, &packet.Config{Filter: sideFilter})
	if err != nil {
		return fmt.Errorf("%w: AF_PACKET on %s: %v", ErrSetup, q.dev.Name, err)
	}
	rc, err := c.SyscallConn()
	if err == nil {
		err = setAuxdata(rc)
	}
	if err != nil {
		c.Close()
		return fmt.Errorf("%w: AF_PACKET on %s: %v", ErrSetup, q.dev.Name, err)
	}
	q.cap = c
	q.sideWG.Add(1)
	go q.readSide(rc)
	return nil
}

// setAuxdata asks for each frame's metadata (PACKET_AUXDATA), where the
// kernel keeps the VLAN tag it took out of the frame.
func setAuxdata(rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_AUXDATA, 1)
	}); err != nil {
		return err
	}
	return serr
}

// recvFrame reads one frame from an AF_PACKET socket with PACKET_AUXDATA
// set, VLAN tag included (see withTag).
func recvFrame(rc syscall.RawConn, buf, oob []byte) ([]byte, error) {
	var n, oobn int
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, 0)
		return rerr != unix.EAGAIN && rerr != unix.EINTR
	}); err != nil {
		return nil, err
	}
	if rerr != nil {
		return nil, rerr
	}
	return withTag(append([]byte(nil), buf[:n]...), oob[:oobn]), nil
}

// auxLen is the size of struct tpacket_auxdata: status, len, snaplen (u32),
// mac, net, vlan_tci, vlan_tpid (u16).
const auxLen = 20

// withTag puts back into frame f the VLAN tag that the kernel moved into
// the frame's metadata on receive (oob: the PACKET_AUXDATA control
// message). Without it a re-injected frame would leave untagged, in
// another VLAN than the guest sent it to.
func withTag(f, oob []byte) []byte {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil || len(f) < 12 {
		return f
	}
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_PACKET || m.Header.Type != unix.PACKET_AUXDATA || len(m.Data) < auxLen {
			continue
		}
		ne := binary.NativeEndian
		status, tci, tpid := ne.Uint32(m.Data[0:]), ne.Uint16(m.Data[16:]), ne.Uint16(m.Data[18:])
		if status&unix.TP_STATUS_VLAN_VALID == 0 {
			return f
		}
		if status&unix.TP_STATUS_VLAN_TPID_VALID == 0 {
			tpid = unix.ETH_P_8021Q
		}
		out := make([]byte, 0, len(f)+4)
		out = append(out, f[:12]...)
		out = binary.BigEndian.AppendUint16(out, tpid)
		out = binary.BigEndian.AppendUint16(out, tci)
		return append(out, f[12:]...)
	}
	return f
}

func (q *Buffer) openInject() error {
	ifi, err := net.InterfaceByName(q.inj)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrSetup, q.inj, err)
	}
	c, err := packet.Listen(ifi, packet.Raw, 0, nil)
	if err != nil {
		return fmt.Errorf("%w: AF_PACKET on %s: %v", ErrSetup, q.inj, err)
	}
	q.out = c
	return nil
}

// readSide holds every frame the bridge table drops (non-IP, VLAN-tagged),
// with its VLAN tag; the bridge has already dropped the original.
func (q *Buffer) readSide(rc syscall.RawConn) {
	defer q.sideWG.Done()
	buf := make([]byte, 1<<16)
	oob := make([]byte, unix.CmsgSpace(auxLen))
	for {
		f, err := recvFrame(rc, buf, oob)
		if err != nil {
			return // closed
		}
		n := len(f)
		q.mu.Lock()
		switch {
		case q.closed:
			q.mu.Unlock()
		case q.unprotected:
			q.stats.Released++
			q.stats.ReleasedBytes += uint64(n)
			q.injMu.Lock()
			q.mu.Unlock()
			q.inject([]side{{data: f}})
			q.injMu.Unlock()
		case q.sideBytes+uint64(n) > q.b.cfg.Limit:
			q.stats.Dropped++
			q.stats.LimitHits++
			q.mu.Unlock()
		default:
			q.sides = append(q.sides, side{seq: q.sideSeq, data: f})
			q.sideSeq++
			q.sideBytes += uint64(n)
			q.stats.HeldFrames++
			q.stats.HeldBytes += uint64(n)
			q.mu.Unlock()
			q.notify()
		}
	}
}

func (q *Buffer) inject(fs []side) {
	for _, f := range fs {
		if len(f.data) < 14 {
			continue
		}
		// A failed write loses one frame (never releases it early).
		_, _ = q.out.WriteTo(f.data, &packet.Addr{HardwareAddr: net.HardwareAddr(f.data[:6])})
	}
}

// after reports whether packet id a is later than b, as the kernel
// compares them (ids wrap).
func after(a, b uint32) bool { return int32(a-b) > 0 }

// Barrier implements netbuf.Buffer.Barrier.
func (q *Buffer) Barrier(epoch uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return netbuf.ErrClosed
	}
	if epoch <= q.lastBarrier {
		return fmt.Errorf("%w: barrier %d after %d", netbuf.ErrOrder, epoch, q.lastBarrier)
	}
	q.lastBarrier = epoch
	q.barriers = append(q.barriers, barrier{epoch: epoch, id: q.lastID, haveID: q.haveID, side: q.sideSeq})
	return nil
}

// Release implements netbuf.Buffer.Release: side frames of the released
// epochs first (ARP usually precedes the IP it resolves), then one batch
// verdict through the last packet id seen at the barrier.
func (q *Buffer) Release(epoch uint64) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return netbuf.ErrClosed
	}
	i := 0
	for i < len(q.barriers) && q.barriers[i].epoch <= epoch {
		i++
	}
	if epoch > q.stats.LastRelease && epoch <= q.lastBarrier {
		q.stats.LastRelease = epoch
	}
	if i == 0 {
		q.mu.Unlock()
		return nil
	}
	bar := q.barriers[i-1]
	q.barriers = append(q.barriers[:0], q.barriers[i:]...)
	sides := q.takeSides(func(s side) bool { return s.seq < bar.side })
	n := 0
	if bar.haveID {
		for n < len(q.held) && !after(q.held[n].id, bar.id) {
			n++
		}
	}
	q.takeHeld(n, true)
	q.vMu.Lock()
	q.injMu.Lock()
	q.mu.Unlock()
	q.inject(sides)
	q.injMu.Unlock()
	var err error
	if n > 0 {
		err = q.nf.SetVerdictBatch(bar.id, nfq.NfAccept)
	}
	q.vMu.Unlock()
	if err != nil {
		return fmt.Errorf("nfqueue: release %d: %w", epoch, err)
	}
	return nil
}

// takeSides removes the leading side frames for which keep holds.
// Preconditions: mu held.
func (q *Buffer) takeSides(take func(side) bool) []side {
	n := 0
	for n < len(q.sides) && take(q.sides[n]) {
		n++
	}
	out := append([]side(nil), q.sides[:n]...)
	q.sides = append(q.sides[:0], q.sides[n:]...)
	for _, s := range out {
		q.sideBytes -= uint64(len(s.data))
		q.account(uint64(len(s.data)), true)
	}
	return out
}

// takeHeld removes the first n queued packets. Preconditions: mu held.
func (q *Buffer) takeHeld(n int, released bool) {
	for _, h := range q.held[:n] {
		q.account(uint64(h.size), released)
	}
	q.held = append(q.held[:0], q.held[n:]...)
}

func (q *Buffer) account(size uint64, released bool) {
	q.stats.HeldFrames--
	q.stats.HeldBytes -= size
	if released {
		q.stats.Released++
		q.stats.ReleasedBytes += size
	} else {
		q.stats.Dropped++
	}
}

// Unprotect implements netbuf.Buffer.Unprotect. The rules stay: each new
// frame is accepted as soon as it is seen, so a holder that dies while
// unprotected still fails closed.
func (q *Buffer) Unprotect() error {
	return q.flush(true)
}

// Discard implements netbuf.Buffer.Discard.
func (q *Buffer) Discard() error {
	return q.flush(false)
}

func (q *Buffer) flush(release bool) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		if release {
			return netbuf.ErrClosed
		}
		return nil
	}
	if release {
		q.unprotected = true
	}
	q.barriers = nil
	sides := q.takeSides(func(side) bool { return true })
	if !release {
		q.sideBytes = 0
	}
	n := len(q.held)
	id := q.lastID
	q.takeHeld(n, release)
	q.vMu.Lock()
	q.injMu.Lock()
	q.mu.Unlock()
	if release {
		q.inject(sides)
	} else {
		// takeSides counted them released; correct the books.
		q.mu.Lock()
		for _, s := range sides {
			q.stats.Released--
			q.stats.ReleasedBytes -= uint64(len(s.data))
			q.stats.Dropped++
		}
		q.mu.Unlock()
	}
	q.injMu.Unlock()
	var err error
	if n > 0 {
		v := nfq.NfDrop
		if release {
			v = nfq.NfAccept
		}
		err = q.nf.SetVerdictBatch(id, v)
	}
	q.vMu.Unlock()
	if err != nil {
		return fmt.Errorf("nfqueue: verdict: %w", err)
	}
	return nil
}

// Protect implements netbuf.Buffer.Protect.
func (q *Buffer) Protect() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return netbuf.ErrClosed
	}
	q.unprotected = false
	return nil
}

// Close implements netbuf.Buffer.Close: held frames are dropped, the queue
// unbound (the kernel drops what it still holds) and the rules removed.
// Between unbinding and rule removal the kernel drops new frames.
func (q *Buffer) Close() error {
	if err := q.Discard(); err != nil {
		return err
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	q.mu.Unlock()
	return q.undo()
}

// Waiting implements netbuf.Buffer.Waiting.
func (q *Buffer) Waiting() <-chan struct{} { return q.waiting }

// Capabilities implements netbuf.Buffer.Capabilities.
func (q *Buffer) Capabilities() netbuf.Capabilities { return netbuf.Capabilities{Notifies: true} }

// Stats implements netbuf.Buffer.Stats. Frames the kernel dropped because
// the queue was full or the socket overflowed count as Dropped and
// LimitHits.
func (q *Buffer) Stats() netbuf.Stats {
	kd := q.kernelDropped()
	q.mu.Lock()
	defer q.mu.Unlock()
	if kd > q.kernelDrops {
		d := kd - q.kernelDrops
		q.kernelDrops = kd
		q.stats.Dropped += d
		q.stats.LimitHits += d
	}
	return q.stats
}

func (q *Buffer) kernelDropped() uint64 {
	if q.proc == nil {
		return 0
	}
	b := make([]byte, 8192)
	n, _ := q.proc.ReadAt(b, 0)
	d, _ := parseQueueDrops(string(b[:n]), q.queue)
	return d
}

// parseQueueDrops returns queue_dropped+user_dropped of queue num from
// /proc/net/netfilter/nfnetlink_queue, whose columns are: queue number,
// peer portid, queue total, copy mode, copy range, queue dropped, user
// dropped, id sequence, 1.
func parseQueueDrops(text string, num uint16) (uint64, bool) {
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 7 || f[0] != strconv.Itoa(int(num)) {
			continue
		}
		qd, err1 := strconv.ParseUint(f[5], 10, 64)
		ud, err2 := strconv.ParseUint(f[6], 10, 64)
		if err1 != nil || err2 != nil {
			return 0, false
		}
		return qd + ud, true
	}
	return 0, false
}
