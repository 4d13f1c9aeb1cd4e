package announce

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"

	"github.com/xl-kemari/xl-kemari/netbuf/auto/host"
	"github.com/xl-kemari/xl-kemari/netbuf/netbuftest"
)

var mac = net.HardwareAddr{0x02, 0, 0, 0, 1, 1}

func TestGARPGolden(t *testing.T) {
	got := GARP(mac, netip.MustParseAddr("192.0.2.10"), 1)
	want, _ := hex.DecodeString("ffffffffffff020000000101080600010800060400010200000001" + "01c000020a000000000000c000020a" + "000000000000000000000000000000000000")
	if !bytes.Equal(got, want) {
		t.Fatalf("GARP request\n got %x\nwant %x", got, want)
	}
	reply := GARP(mac, netip.MustParseAddr("192.0.2.10"), 2)
	if !bytes.Equal(reply[32:38], mac) || reply[21] != 2 {
		t.Fatalf("GARP reply target MAC/op wrong: %x", reply)
	}
}

func TestNAGolden(t *testing.T) {
	got := UnsolicitedNA(mac, netip.MustParseAddr("2001:db8::10"))
	want, _ := hex.DecodeString(
		"33330000000102000000010186dd" + // Ethernet
			"6000000000203aff20010db8000000000000000000000010ff020000000000000000000000000001" + // IPv6
			"8800f80c2000000020010db800000000000000000000001002010200000001" + "01") // ICMPv6 NA
	if !bytes.Equal(got, want) {
		t.Fatalf("NA\n got %x\nwant %x", got, want)
	}
	// The checksum over pseudo-header and message must verify to zero.
	var sum uint32
	for i := 22; i < 54; i += 2 {
		sum += uint32(got[i])<<8 | uint32(got[i+1])
	}
	sum += 32 + 58
	for i := 54; i < len(got); i += 2 {
		sum += uint32(got[i])<<8 | uint32(got[i+1])
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	if sum != 0xffff {
		t.Fatalf("checksum does not verify: %#x", sum)
	}
}

func TestFramesBadInput(t *testing.T) {
	for _, c := range []struct {
		mac   net.HardwareAddr
		addrs []netip.Addr
	}{
		{net.HardwareAddr{1, 2, 3}, nil},
		{net.HardwareAddr{0x01, 0, 0, 0, 0, 1}, nil}, // multicast
		{mac, []netip.Addr{{}}},
		{mac, []netip.Addr{netip.MustParseAddr("ff02::1")}},
		{mac, []netip.Addr{netip.MustParseAddr("0.0.0.0")}},
	} {
		if _, err := Frames(c.mac, c.addrs); !errors.Is(err, ErrInput) {
			t.Errorf("Frames(%v, %v) = %v, want ErrInput", c.mac, c.addrs, err)
		}
	}
	if err := Send("lo", mac, nil, 0); !errors.Is(err, ErrInput) {
		t.Errorf("count 0: %v", err)
	}
}

// TestSendOnWire sends from a guest namespace and reads the frames at the
// client end of the bridge.
func TestSendOnWire(t *testing.T) {
	topo := netbuftest.NewTopology(t, 1)
	addrs := []netip.Addr{netbuftest.GuestIP4, netbuftest.GuestIP6}
	want, err := Frames(netbuftest.GuestMAC(0), addrs)
	if err != nil {
		t.Fatal(err)
	}
	var c *packet.Conn
	if err := host.InNetNS(netbuftest.NSPath(topo.Client), func() error {
		ifi, err := net.InterfaceByName("ceth0")
		if err != nil {
			return err
		}
		c, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := host.InNetNS(netbuftest.NSPath(topo.Guests[0]), func() error {
		return Send("geth0", netbuftest.GuestMAC(0), addrs, 2)
	}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	for i := 0; i < 2*len(want); {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf[6:12], netbuftest.GuestMAC(0)) {
			continue // the client's own traffic
		}
		if w := want[i%len(want)]; !bytes.Equal(buf[:n], w) {
			t.Fatalf("frame %d\n got %x\nwant %x", i, buf[:n], w)
		}
		i++
	}
}
