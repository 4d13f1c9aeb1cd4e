package announce

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/mdlayher/packet"
)

// Sentinel errors.
var (
	// ErrInput: the MAC, an address or the count is unusable.
	ErrInput = errors.New("announce: bad input")
	// ErrSend: the interface could not be opened or written.
	ErrSend = errors.New("announce: send failed")
)

var (
	broadcast   = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	allNodesMAC = net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}
	allNodesIP  = netip.MustParseAddr("ff02::1")
)

// Frames returns the frames that announce addrs at mac: two gratuitous
// ARP frames (request, reply) per IPv4 address and one unsolicited
// neighbour advertisement per IPv6 address, in addrs order.
func Frames(mac net.HardwareAddr, addrs []netip.Addr) ([][]byte, error) {
	if len(mac) != 6 || mac[0]&1 != 0 {
		return nil, fmt.Errorf("%w: MAC %q is not a unicast Ethernet address", ErrInput, mac)
	}
	var out [][]byte
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case a.Is4() && !a.IsUnspecified() && !a.IsMulticast():
			out = append(out, GARP(mac, a, 1), GARP(mac, a, 2))
		case a.Is6() && !a.IsUnspecified() && !a.IsMulticast():
			out = append(out, UnsolicitedNA(mac, a))
		default:
			return nil, fmt.Errorf("%w: address %v cannot be announced", ErrInput, a)
		}
	}
	return out, nil
}

// GARP builds a broadcast gratuitous ARP frame for ip at mac; op is 1
// (request) or 2 (reply). Sender and target protocol address are both ip.
func GARP(mac net.HardwareAddr, ip netip.Addr, op uint16) []byte {
	f := make([]byte, 60) // 42 bytes of ARP, padded to the Ethernet minimum
	copy(f[0:], broadcast)
	copy(f[6:], mac)
	binary.BigEndian.PutUint16(f[12:], 0x0806)
	a := f[14:]
	binary.BigEndian.PutUint16(a[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(a[2:], 0x0800) // IPv4
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], op)
	ip4 := ip.As4()
	copy(a[8:], mac)
	copy(a[14:], ip4[:])
	if op == 2 {
		copy(a[18:], mac)
	} // a request leaves the target MAC zero (RFC 5227 §3)
	copy(a[24:], ip4[:])
	return f
}

// UnsolicitedNA builds a neighbour advertisement for ip at mac to
// all-nodes, with the override flag and a target link-layer address
// option (RFC 4861 §7.2.6).
func UnsolicitedNA(mac net.HardwareAddr, ip netip.Addr) []byte {
	const icmpLen = 32 // header 4 + flags 4 + target 16 + option 8
	f := make([]byte, 14+40+icmpLen)
	copy(f[0:], allNodesMAC)
	copy(f[6:], mac)
	binary.BigEndian.PutUint16(f[12:], 0x86dd)
	h := f[14:54]
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], icmpLen)
	h[6] = 58  // ICMPv6
	h[7] = 255 // hop limit required by RFC 4861
	src, dst := ip.As16(), allNodesIP.As16()
	copy(h[8:], src[:])
	copy(h[24:], dst[:])
	m := f[54:]
	m[0] = 136                               // neighbour advertisement
	binary.BigEndian.PutUint32(m[4:], 1<<29) // override, not solicited
	copy(m[8:], src[:])
	m[24], m[25] = 2, 1 // target link-layer address, 1×8 bytes
	copy(m[26:], mac)
	var sum uint32
	for i := 8; i < 40; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	sum += icmpLen + 58
	for i := 0; i < len(m); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(m[i:]))
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(m[2:], ^uint16(sum))
	return f
}

// Send writes the announcement frames for mac and addrs on ifname, count
// rounds of them (count >= 1), in the calling thread's network namespace.
func Send(ifname string, mac net.HardwareAddr, addrs []netip.Addr, count int) error {
	if count < 1 {
		return fmt.Errorf("%w: count %d", ErrInput, count)
	}
	frames, err := Frames(mac, addrs)
	if err != nil {
		return err
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrSend, ifname, err)
	}
	c, err := packet.Listen(ifi, packet.Raw, 0, nil)
	if err != nil {
		return fmt.Errorf("%w: AF_PACKET on %s: %v", ErrSend, ifname, err)
	}
	defer c.Close()
	for r := 0; r < count; r++ {
		for _, f := range frames {
			if _, err := c.WriteTo(f, &packet.Addr{HardwareAddr: net.HardwareAddr(f[:6])}); err != nil {
				return fmt.Errorf("%w: %s: %v", ErrSend, ifname, err)
			}
		}
	}
	return nil
}
