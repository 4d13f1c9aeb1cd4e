package netbuftest

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"

	"github.com/xl-kemari/xl-kemari/netbuf/auto/host"
)

// RequireRoot skips t, saying why, unless it may build namespaces: it must
// run as root and KEMARI_SKIP_ROOT_TESTS must be unset.
func RequireRoot(t testing.TB) {
	t.Helper()
	if v := os.Getenv("KEMARI_SKIP_ROOT_TESTS"); v != "" {
		t.Skipf("network-namespace test skipped: KEMARI_SKIP_ROOT_TESTS=%s", v)
	}
	if os.Geteuid() != 0 {
		t.Skip("network-namespace test skipped: needs root (CI runs as root) to create namespaces, bridges and netfilter rules")
	}
}

// Topology is a dom0 with a bridge, one guest namespace per buffered NIC
// and a client, all in namespaces this test created:
//
//	guest i: geth0 (GuestMAC(i)) ── vif<i+1>.0 ─┐
//	                                             br0 (dom0)
//	client:  ceth0 (ClientMAC, 192.0.2.20) ── up0 ┘
type Topology struct {
	Dom0, Client string   // namespace names
	Guests       []string // namespace of guest NIC i
	Bridge       string   // bridge in Dom0
	Vifs         []string // dom0 end of guest NIC i
	Uplink       string   // dom0 end of the client's link
	ClientMAC    net.HardwareAddr

	mu      sync.Mutex
	capture *Capture
	sentSeq uint32
}

// GuestMAC is the MAC of guest NIC i.
func GuestMAC(i int) net.HardwareAddr { return net.HardwareAddr{0x02, 0, 0, 0, byte(i + 1), 0x01} }

// dom0MAC is the source of sentinels.
var dom0MAC = net.HardwareAddr{0x02, 0, 0, 0, 0xfe, 0x01}

// NSPath is the path of the named network namespace's file.
func NSPath(name string) string { return "/run/netns/" + name }

// NewTopology builds the namespaces with n guest NICs. Names carry the
// process id and a counter, so parallel runs do not collide; t.Cleanup
// deletes them even when the test fails.
func NewTopology(t testing.TB, n int) *Topology {
	t.Helper()
	RequireRoot(t)
	topoMu.Lock()
	topoSeq++
	p := fmt.Sprintf("xlk%d-%d", os.Getpid(), topoSeq)
	topoMu.Unlock()
	tp := &Topology{Dom0: p + "d", Client: p + "c", Bridge: "br0", Uplink: "up0",
		ClientMAC: net.HardwareAddr{0x02, 0, 0, 0, 0xff, 0x02}}
	must := func(argv ...string) {
		t.Helper()
		if _, err := host.Run("", argv...); err != nil {
			t.Fatal(err)
		}
	}
	addNS := func(name string) {
		t.Helper()
		t.Cleanup(func() { _, _ = host.Run("", "ip", "netns", "del", name) })
		must("ip", "netns", "add", name)
		// Quiet namespaces: no IPv6 autoconfiguration frames that would
		// be held alongside the suite's.
		for _, k := range []string{"all", "default"} {
			if err := host.WriteSysctl(NSPath(name), "net/ipv6/conf/"+k+"/disable_ipv6", "1"); err != nil {
				t.Fatal(err)
			}
		}
		must("ip", "-n", name, "link", "set", "lo", "up")
	}
	addNS(tp.Dom0)
	addNS(tp.Client)
	must("ip", "-n", tp.Dom0, "link", "add", tp.Bridge, "type", "bridge")
	must("ip", "-n", tp.Dom0, "link", "set", tp.Bridge, "up")
	for i := 0; i < n; i++ {
		g := fmt.Sprintf("%sg%d", p, i)
		vif := fmt.Sprintf("vif%d.0", i+1)
		addNS(g)
		tp.Guests = append(tp.Guests, g)
		tp.Vifs = append(tp.Vifs, vif)
		must("ip", "-n", tp.Dom0, "link", "add", vif, "type", "veth", "peer", "name", "geth0", "netns", g)
		must("ip", "-n", g, "link", "set", "geth0", "address", GuestMAC(i).String(), "up")
		must("ip", "-n", tp.Dom0, "link", "set", vif, "master", tp.Bridge, "up")
	}
	must("ip", "-n", tp.Dom0, "link", "add", tp.Uplink, "type", "veth", "peer", "name", "ceth0", "netns", tp.Client)
	must("ip", "-n", tp.Client, "link", "set", "ceth0", "address", tp.ClientMAC.String(), "up")
	must("ip", "-n", tp.Client, "addr", "add", "192.0.2.20/24", "dev", "ceth0")
	must("ip", "-n", tp.Dom0, "link", "set", tp.Uplink, "master", tp.Bridge, "up")
	WaitOperUp(t, tp.Dom0, append([]string{tp.Bridge, tp.Uplink}, tp.Vifs...)...)
	WaitOperUp(t, tp.Client, "ceth0")
	for _, g := range tp.Guests {
		WaitOperUp(t, g, "geth0")
	}
	return tp
}

var (
	topoMu  sync.Mutex
	topoSeq int
)

// Dom0Path is NSPath(Dom0).
func (tp *Topology) Dom0Path() string { return NSPath(tp.Dom0) }

// Capture returns the client-side capture, started on first use.
func (tp *Topology) Capture(t testing.TB) *Capture {
	t.Helper()
	tp.mu.Lock()
	defer tp.mu.Unlock()
	if tp.capture == nil {
		c, err := ListenCapture(NSPath(tp.Client), "ceth0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		tp.capture = c
	}
	return tp.capture
}

// OpenRaw opens an AF_PACKET socket on ifname inside namespace ns, for
// sending whole frames.
func OpenRaw(ns, ifname string) (*packet.Conn, error) {
	var c *packet.Conn
	err := host.InNetNS(NSPath(ns), func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		c, err = packet.Listen(ifi, packet.Raw, 0, nil)
		return err
	})
	return c, err
}

// Link returns the suite's view of guest NIC i: sending from the guest,
// capturing at the client, and flushing with a sentinel that dom0 sends
// straight out of the uplink (not through any buffer).
func (tp *Topology) Link(t testing.TB, i int) Link {
	t.Helper()
	g, err := OpenRaw(tp.Guests[i], "geth0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	s, err := OpenRaw(tp.Dom0, tp.Uplink)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &nsLink{tp: tp, cap: tp.Capture(t), guest: g, sentinel: s, mac: GuestMAC(i)}
}

type nsLink struct {
	tp       *Topology
	cap      *Capture
	guest    *packet.Conn
	sentinel *packet.Conn
	mac      net.HardwareAddr
}

func (l *nsLink) Send(p Proto, n uint32) error {
	f := Frame(p, l.mac, l.tp.ClientMAC, n)
	_, err := l.guest.WriteTo(f, &packet.Addr{HardwareAddr: net.HardwareAddr(f[:6])})
	return err
}

func (l *nsLink) Captured() []Tag { return l.cap.Tags() }

func (l *nsLink) WaitCaptured(t testing.TB, pred func([]Tag) bool) []Tag {
	t.Helper()
	return l.cap.WaitFor(t, pred)
}

func (l *nsLink) Flush(t testing.TB) {
	t.Helper()
	l.tp.mu.Lock()
	l.tp.sentSeq++
	n := SentinelBase + l.tp.sentSeq
	l.tp.mu.Unlock()
	f := Frame(UDP4, dom0MAC, l.tp.ClientMAC, n)
	if _, err := l.sentinel.WriteTo(f, &packet.Addr{HardwareAddr: l.tp.ClientMAC}); err != nil {
		t.Fatal(err)
	}
	l.cap.WaitFor(t, func(tags []Tag) bool {
		for _, g := range tags {
			if g == (Tag{UDP4, n}) {
				return true
			}
		}
		return false
	})
}

// SentinelBase: tags from here on are sentinels, not suite frames.
const SentinelBase = 0xf0000000

// Capture records, in arrival order, the tags of suite frames received on
// one interface (frames it sent itself are ignored).
type Capture struct {
	conn *packet.Conn
	wg   sync.WaitGroup

	mu     sync.Mutex
	tags   []Tag
	times  []time.Time   // arrival time of tags[i] (kernel timestamp)
	change chan struct{} // closed and replaced on every new tag
}

// ListenCapture starts capturing on ifname inside the namespace at path.
func ListenCapture(nsPath, ifname string) (*Capture, error) {
	c := &Capture{change: make(chan struct{})}
	err := host.InNetNS(nsPath, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		c.conn, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, nil)
		return err
	})
	if err != nil {
		return nil, err
	}
	// Epochs of thousands of frames arrive in one burst.
	if rc, err := c.conn.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20)
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
		})
	}
	c.wg.Add(1)
	go c.read()
	return c, nil
}

func (c *Capture) read() {
	defer c.wg.Done()
	rc, err := c.conn.SyscallConn()
	if err != nil {
		return
	}
	buf := make([]byte, 1<<16)
	oob := make([]byte, 128)
	for {
		var n, oobn int
		var rerr error
		// recvmsg through the runtime poller, for the kernel's receive
		// timestamp: the time a goroutine gets to a frame says more about
		// the scheduler than about the release.
		err := rc.Read(func(fd uintptr) bool {
			n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_DONTWAIT)
			return rerr != unix.EAGAIN
		})
		if err != nil || (rerr != nil && rerr != unix.EINTR) {
			return // closed
		}
		if rerr != nil {
			continue
		}
		tag, ok := ParseFrame(buf[:n])
		if !ok {
			continue
		}
		now := rxTime(oob[:oobn])
		c.mu.Lock()
		c.tags = append(c.tags, tag)
		c.times = append(c.times, now)
		close(c.change)
		c.change = make(chan struct{})
		c.mu.Unlock()
	}
}

// rxTime returns the SO_TIMESTAMPNS time in oob, or now if there is none.
func rxTime(oob []byte) time.Time {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Now()
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
			sec := int64(binary.NativeEndian.Uint64(m.Data[0:8]))
			nsec := int64(binary.NativeEndian.Uint64(m.Data[8:16]))
			return time.Unix(sec, nsec)
		}
	}
	return time.Now()
}

// Close stops the capture.
func (c *Capture) Close() error {
	err := c.conn.Close()
	c.wg.Wait()
	return err
}

// Since returns the tags captured from index i on (sentinels included)
// with their arrival times, and the index to pass next time.
func (c *Capture) Since(i int) ([]Tag, []time.Time, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i > len(c.tags) {
		i = len(c.tags)
	}
	return append([]Tag(nil), c.tags[i:]...), append([]time.Time(nil), c.times[i:]...), len(c.tags)
}

// Len returns how many tags were captured (sentinels included).
func (c *Capture) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.tags)
}

// Tags returns the suite tags captured so far (sentinels excluded).
func (c *Capture) Tags() []Tag {
	c.mu.Lock()
	defer c.mu.Unlock()
	return suiteTags(c.tags)
}

func suiteTags(all []Tag) []Tag {
	var out []Tag
	for _, g := range all {
		if g.N < SentinelBase {
			out = append(out, g)
		}
	}
	return out
}

// WaitFor blocks until pred holds for all captured tags (sentinels
// included) and returns the suite tags; the test fails if it ends first.
func (c *Capture) WaitFor(t testing.TB, pred func([]Tag) bool) []Tag {
	t.Helper()
	deadline := time.NewTimer(WaitLimit)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		all := append([]Tag(nil), c.tags...)
		ch := c.change
		c.mu.Unlock()
		if pred(all) {
			return suiteTags(all)
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("capture: condition not met within %v; captured %v", WaitLimit, suiteTags(all))
		case <-t.Context().Done():
			t.Fatalf("capture: condition not met before the test ended; captured %v", suiteTags(all))
		}
	}
}
