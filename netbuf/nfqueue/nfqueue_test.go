package nfqueue

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"

	"github.com/xl-kemari/xl-kemari/netbuf"
	"github.com/xl-kemari/xl-kemari/netbuf/auto/host"
	"github.com/xl-kemari/xl-kemari/netbuf/netbuftest"
)

type harness struct{}

func (harness) Setup(t *testing.T, n int) []netbuftest.Port {
	topo := netbuftest.NewTopology(t, n)
	b := New(Config{NetNS: topo.Dom0Path()})
	if err := b.Probe(); err != nil {
		t.Skip(err)
	}
	var ports []netbuftest.Port
	for i := 0; i < n; i++ {
		buf, err := b.Open(netbuf.Device{Name: topo.Vifs[i], Bridge: topo.Bridge})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := buf.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		ports = append(ports, netbuftest.Port{Buffer: buf, Link: topo.Link(t, i)})
	}
	return ports
}

func TestContractNfqueue(t *testing.T) {
	netbuftest.RequireRoot(t)
	netbuftest.Run(t, harness{})
}

// TestCloseRemovesSetup checks that nothing of the setup is left.
func TestCloseRemovesSetup(t *testing.T) {
	topo := netbuftest.NewTopology(t, 1)
	ns := topo.Dom0Path()
	before := ruleDump(t, ns)
	b := New(Config{NetNS: ns})
	buf, err := b.Open(netbuf.Device{Name: topo.Vifs[0]})
	if err != nil {
		t.Fatal(err)
	}
	if d := ruleDump(t, ns); !strings.Contains(d, Tag) || !strings.Contains(d, TablePrefix) {
		t.Fatalf("rules not installed:\n%s", d)
	}
	if err := buf.Close(); err != nil {
		t.Fatal(err)
	}
	if after := ruleDump(t, ns); after != before {
		t.Fatalf("setup left behind:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// ruleDump lists the namespace's nftables ruleset and its link names.
func ruleDump(t *testing.T, ns string) string {
	t.Helper()
	var sb strings.Builder
	sb.WriteString(netbuftest.Ruleset(t, ns))
	out, err := host.Run(ns, "ip", "-o", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	// Names only: carrier flags change on their own.
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			sb.WriteString(f[1] + "\n")
		}
	}
	return sb.String()
}

func TestOpenBadDevice(t *testing.T) {
	b := New(Config{})
	for _, name := range []string{"", "a/b", "0123456789abcdefg", "x y"} {
		if _, err := b.Open(netbuf.Device{Name: name}); !errors.Is(err, ErrDevice) {
			t.Errorf("Open(%q): %v, want ErrDevice", name, err)
		}
	}
}

func TestParseQueueDrops(t *testing.T) {
	text := "    0  12345     3 1     0  0  0    10 1\n27392  999     0 1     0  7  4   200 1\n"
	if d, ok := parseQueueDrops(text, 27392); !ok || d != 11 {
		t.Fatalf("got %d, %v", d, ok)
	}
	if _, ok := parseQueueDrops(text, 5); ok {
		t.Fatal("absent queue found")
	}
}

func TestAfterWraps(t *testing.T) {
	if !after(1, 0xffffffff) || after(0xffffffff, 1) || after(5, 5) {
		t.Fatal("serial comparison wrong")
	}
}

// TestHolderDeathDropsHeld: a child process holds frames and is killed;
// none of them may reach the client, now or after its rules are cleaned.
func TestHolderDeathDropsHeld(t *testing.T) {
	if os.Getenv("XLK_HOLDER_CHILD") != "" {
		t.Skip("child")
	}
	topo := netbuftest.NewTopology(t, 1)
	link := topo.Link(t, 0)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHolder$", "-test.v")
	cmd.Env = append(os.Environ(), "XLK_HOLDER_CHILD=1", "XLK_NS="+topo.Dom0Path(), "XLK_DEV="+topo.Vifs[0])
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(stdout)
	expect := func(word string) {
		t.Helper()
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), word) {
				return
			}
		}
		t.Fatalf("child ended before %q: %v", word, sc.Err())
	}
	expect("ready")
	var tags []netbuftest.Tag
	for i, p := range netbuftest.AllProtos {
		for j := uint32(0); j < 3; j++ {
			n := uint32(i*10) + j
			if err := link.Send(p, n); err != nil {
				t.Fatal(err)
			}
			tags = append(tags, netbuftest.Tag{Proto: p, N: n})
		}
	}
	fmt.Fprintf(stdin, "%d\n", len(tags))
	expect("held")
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	link.Flush(t)
	if got := link.Captured(); len(got) != 0 {
		t.Fatalf("frames released by a dead holder: %v", got)
	}
	// The next run's cleanup removes the dead holder's rules; still
	// nothing of what it held may appear.
	if err := CleanupStale(topo.Dom0Path()); err != nil {
		t.Fatal(err)
	}
	if d := ruleDump(t, topo.Dom0Path()); strings.Contains(d, Tag) || strings.Contains(d, TablePrefix) || strings.Contains(d, injInPrefix) {
		t.Fatalf("stale setup survived CleanupStale:\n%s", d)
	}
	if err := link.Send(netbuftest.UDP4, 999); err != nil {
		t.Fatal(err)
	}
	link.WaitCaptured(t, func(g []netbuftest.Tag) bool {
		for _, x := range g {
			if x.N == 999 {
				return true
			}
		}
		return false
	})
	if got := link.Captured(); len(got) != 1 {
		t.Fatalf("after cleanup the client got %v, want only the new frame", got)
	}
}

// TestHelperHolder is the child of TestHolderDeathDropsHeld.
func TestHelperHolder(t *testing.T) {
	if os.Getenv("XLK_HOLDER_CHILD") == "" {
		t.Skip("helper process for TestHolderDeathDropsHeld")
	}
	buf, err := New(Config{NetNS: os.Getenv("XLK_NS")}).Open(netbuf.Device{Name: os.Getenv("XLK_DEV")})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready")
	var n uint64
	if _, err := fmt.Scan(&n); err != nil {
		t.Fatal(err)
	}
	netbuftest.WaitHeld(t, buf, n)
	if err := buf.Barrier(1); err != nil {
		t.Fatal(err)
	}
	fmt.Println("held")
	select {} // killed here
}

// TestDom0DeliveryHeldAndFiltered: frames the guest sends to dom0 itself
// (not forwarded) are held like any other, each once, and once released
// they still meet the administrator's filter rules: an INPUT rule dropping
// one source port drops it after the release, as it would unprotected.
// Open leaves the bridge's own address alone.
func TestDom0DeliveryHeldAndFiltered(t *testing.T) {
	topo := netbuftest.NewTopology(t, 1)
	ns, guest := topo.Dom0Path(), netbuftest.NSPath(topo.Guests[0])
	const dom0IP, guestIP, port = "192.0.2.1", "192.0.2.10", 7001
	// The bridge's ports get high addresses (as Xen's vifs have), so the
	// bridge's own, the lowest of its ports', would change if Open added
	// a port with a random one; dom0's neighbours would lose it.
	for i, l := range []string{topo.Vifs[0], topo.Uplink} {
		if _, err := host.Run(ns, "ip", "link", "set", l, "address", fmt.Sprintf("fe:ff:ff:ff:ff:f%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	bridgeMAC := func() string {
		t.Helper()
		var mac string
		if err := host.InNetNS(ns, func() error {
			ifi, err := net.InterfaceByName(topo.Bridge)
			if err == nil {
				mac = ifi.HardwareAddr.String()
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return mac
	}
	brMAC := bridgeMAC()
	for _, c := range []struct {
		ns   string
		argv []string
	}{
		{ns, []string{"ip", "addr", "add", dom0IP + "/24", "dev", topo.Bridge}},
		{guest, []string{"ip", "addr", "add", guestIP + "/24", "dev", "geth0"}},
		// The guest's ARP would be held too; a static entry keeps this
		// test about the IP path.
		{guest, []string{"ip", "neigh", "replace", dom0IP, "lladdr", brMAC, "dev", "geth0", "nud", "permanent"}},
	} {
		if _, err := host.Run(c.ns, c.argv...); err != nil {
			t.Fatal(err)
		}
	}
	// The administrator's filter rule: udp sport 5555 drop, in input.
	netbuftest.Nft(t, ns, func(c *nftables.Conn) error {
		tb := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "admin"})
		ch := c.AddChain(&nftables.Chain{Table: tb, Name: "input", Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
		c.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, 5555)},
			&expr.Verdict{Kind: expr.VerdictDrop},
		}})
		return nil
	})
	var ln *net.UDPConn
	if err := host.InNetNS(ns, func() (err error) {
		ln, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(dom0IP), Port: port})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	buf, err := New(Config{NetNS: ns}).Open(netbuf.Device{Name: topo.Vifs[0], Bridge: topo.Bridge})
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	if got := bridgeMAC(); got != brMAC {
		t.Fatalf("Open changed the bridge's address from %s to %s", brMAC, got)
	}
	send := func(sport int, msg string) {
		t.Helper()
		if err := host.InNetNS(guest, func() error {
			c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(guestIP), Port: sport}, &net.UDPAddr{IP: net.ParseIP(dom0IP), Port: port})
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte(msg))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	send(5555, "filtered") // dropped by dom0's INPUT rule once released
	send(5556, "held")
	netbuftest.WaitHeld(t, buf, 2)
	if st := buf.Stats(); st.HeldFrames != 2 {
		t.Fatalf("held %d frames for 2 datagrams (each must be queued once)", st.HeldFrames)
	}
	// Both are in the kernel's queue (WaitHeld saw them there), so nothing
	// can be waiting on the socket.
	rb := make([]byte, 64)
	rc, err := ln.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var early int
	_ = rc.Read(func(fd uintptr) bool {
		early, _, _ = unix.Recvfrom(int(fd), rb, unix.MSG_DONTWAIT)
		return true
	})
	if early > 0 {
		t.Fatalf("dom0 received %q before the release", rb[:early])
	}
	if err := buf.Barrier(1); err != nil {
		t.Fatal(err)
	}
	if err := buf.Release(1); err != nil {
		t.Fatal(err)
	}
	// Released in queue order: had the filtered datagram escaped the
	// INPUT rule, it would be read first.
	_ = ln.SetReadDeadline(time.Now().Add(netbuftest.WaitLimit))
	n, from, err := ln.ReadFromUDP(rb)
	if err != nil {
		t.Fatalf("released datagram not delivered: %v", err)
	}
	if string(rb[:n]) != "held" || from.Port != 5556 {
		t.Fatalf("dom0 read %q from port %d first, want \"held\" from 5556 (the INPUT rule must still apply after release)", rb[:n], from.Port)
	}
}

// TestVLANFramesKeepTheirTag: VLAN-tagged frames, which the bridge table
// drops (their ether type is 0x8100), are held by the side path and leave
// on release as they were sent, tag included, IP and ARP alike.
func TestVLANFramesKeepTheirTag(t *testing.T) {
	topo := netbuftest.NewTopology(t, 1)
	link := topo.Link(t, 0)
	buf, err := New(Config{NetNS: topo.Dom0Path()}).Open(netbuf.Device{Name: topo.Vifs[0], Bridge: topo.Bridge})
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	var cli *packet.Conn
	if err := host.InNetNS(netbuftest.NSPath(topo.Client), func() error {
		ifi, err := net.InterfaceByName("ceth0")
		if err != nil {
			return err
		}
		cli, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	rc, err := cli.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := setAuxdata(rc); err != nil {
		t.Fatal(err)
	}
	marker := []byte("xl-kemari vlan test")
	got := make(chan []byte, 16)
	go func() {
		b, oob := make([]byte, 1<<16), make([]byte, unix.CmsgSpace(auxLen))
		for {
			f, err := recvFrame(rc, b, oob)
			if err != nil {
				return // closed
			}
			if bytes.Contains(f, marker) {
				got <- f
			}
		}
	}()
	guest, err := netbuftest.OpenRaw(topo.Guests[0], "geth0")
	if err != nil {
		t.Fatal(err)
	}
	defer guest.Close()
	var sent [][]byte
	for i, inner := range []uint16{unix.ETH_P_IP, unix.ETH_P_ARP} {
		f := append([]byte(nil), topo.ClientMAC...)
		f = append(f, netbuftest.GuestMAC(0)...)
		f = binary.BigEndian.AppendUint16(f, unix.ETH_P_8021Q)
		f = binary.BigEndian.AppendUint16(f, 3<<13|42) // priority 3, VLAN 42
		f = binary.BigEndian.AppendUint16(f, inner)
		f = append(f, marker...)
		f = append(f, byte(i))
		f = append(f, make([]byte, 64-len(f))...)
		if _, err := guest.WriteTo(f, &packet.Addr{HardwareAddr: topo.ClientMAC}); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, f)
	}
	netbuftest.WaitHeld(t, buf, uint64(len(sent)))
	link.Flush(t) // a sentinel straight from dom0: what the bridge passed has arrived
	select {
	case f := <-got:
		t.Fatalf("client got a tagged frame before the release: %x", f)
	default:
	}
	if err := buf.Barrier(1); err != nil {
		t.Fatal(err)
	}
	if err := buf.Release(1); err != nil {
		t.Fatal(err)
	}
	timer := time.NewTimer(netbuftest.WaitLimit)
	defer timer.Stop()
	for _, want := range sent {
		select {
		case f := <-got:
			if !bytes.Equal(f, want) {
				t.Fatalf("released frame differs from the guest's:\n got %x\nwant %x", f, want)
			}
		case <-timer.C:
			t.Fatalf("released VLAN frame %x not seen within %v", want, netbuftest.WaitLimit)
		}
	}
}

func TestWithTag(t *testing.T) {
	f := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x08, 0x06, 0xaa}
	aux := make([]byte, auxLen)
	binary.NativeEndian.PutUint32(aux[0:], unix.TP_STATUS_VLAN_VALID|unix.TP_STATUS_VLAN_TPID_VALID)
	binary.NativeEndian.PutUint16(aux[16:], 0x602a)
	binary.NativeEndian.PutUint16(aux[18:], 0x88a8)
	oob := make([]byte, unix.CmsgSpace(auxLen))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.SOL_PACKET, unix.PACKET_AUXDATA
	h.SetLen(unix.CmsgLen(auxLen))
	copy(oob[unix.CmsgLen(0):], aux)
	want := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x88, 0xa8, 0x60, 0x2a, 0x08, 0x06, 0xaa}
	if got := withTag(f, oob); !bytes.Equal(got, want) {
		t.Fatalf("tagged: %x, want %x", got, want)
	}
	binary.NativeEndian.PutUint32(oob[unix.CmsgLen(0):], 0) // no tag
	if got := withTag(f, oob); !bytes.Equal(got, f) {
		t.Fatalf("untagged: %x, want %x", got, f)
	}
}

// TestForwardedHeldAndFiltered: frames the bridge forwards are held, and
// once released they still meet the administrator's forward filter
// rules (in the ip family, through br_netfilter, where vif-bridge's
// anti-spoofing rules live): a rule dropping ICMP drops it after the
// release, as it would unprotected, and lets UDP through.
func TestForwardedHeldAndFiltered(t *testing.T) {
	topo := netbuftest.NewTopology(t, 1)
	ns := topo.Dom0Path()
	link := topo.Link(t, 0)
	netbuftest.Nft(t, ns, func(c *nftables.Conn) error {
		tb := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "admin"})
		ch := c.AddChain(&nftables.Chain{Table: tb, Name: "forward", Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter})
		c.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMP}},
			&expr.Verdict{Kind: expr.VerdictDrop},
		}})
		return nil
	})
	buf, err := New(Config{NetNS: ns}).Open(netbuf.Device{Name: topo.Vifs[0], Bridge: topo.Bridge})
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	sent := []netbuftest.Tag{{Proto: netbuftest.UDP4, N: 1}, {Proto: netbuftest.ICMP4, N: 2}, {Proto: netbuftest.UDP4, N: 3}}
	for _, x := range sent {
		if err := link.Send(x.Proto, x.N); err != nil {
			t.Fatal(err)
		}
	}
	netbuftest.WaitHeld(t, buf, uint64(len(sent)))
	link.Flush(t)
	if got := link.Captured(); len(got) != 0 {
		t.Fatalf("client got %v before the release", got)
	}
	if err := buf.Barrier(1); err != nil {
		t.Fatal(err)
	}
	if err := buf.Release(1); err != nil {
		t.Fatal(err)
	}
	link.WaitCaptured(t, func(g []netbuftest.Tag) bool { return len(suiteOnly(g)) >= 2 })
	link.Flush(t)
	if got := link.Captured(); len(got) != 2 || got[0] != sent[0] || got[1] != sent[2] {
		t.Fatalf("client got %v after the release, want %v and %v (the forward rule drops ICMP)", got, sent[0], sent[2])
	}
}

// suiteOnly leaves the sentinels out of tags (WaitCaptured's predicate
// sees them).
func suiteOnly(tags []netbuftest.Tag) []netbuftest.Tag {
	var out []netbuftest.Tag
	for _, x := range tags {
		if x.N < netbuftest.SentinelBase {
			out = append(out, x)
		}
	}
	return out
}
