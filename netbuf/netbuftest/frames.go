package netbuftest

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// Proto is a kind of frame the suite sends.
type Proto int

// The protocols a buffer must hold.
const (
	UDP4  Proto = iota // IPv4 UDP datagram
	ICMP4              // IPv4 ICMP echo request
	UDP6               // IPv6 UDP datagram
	ARP                // ARP request (broadcast)
)

// AllProtos lists every Proto.
var AllProtos = []Proto{UDP4, ICMP4, UDP6, ARP}

func (p Proto) String() string {
	switch p {
	case UDP4:
		return "udp4"
	case ICMP4:
		return "icmp4"
	case UDP6:
		return "udp6"
	case ARP:
		return "arp"
	}
	return "proto?"
}

// Addresses of the test topology (TEST-NET only).
var (
	GuestIP4  = netip.MustParseAddr("192.0.2.10")
	ClientIP4 = netip.MustParseAddr("192.0.2.20")
	GuestIP6  = netip.MustParseAddr("2001:db8::10")
	ClientIP6 = netip.MustParseAddr("2001:db8::20")
)

var magic = [4]byte{'X', 'L', 'K', 'T'}

// Tag identifies one test frame: which protocol and a number unique in
// the test.
type Tag struct {
	Proto Proto
	N     uint32
}

// Frame builds an Ethernet frame of protocol p from src to dst carrying
// tag n, padded to the 60-byte minimum. ARP frames carry the tag in the
// target hardware address, which a request leaves unused.
func Frame(p Proto, src, dst net.HardwareAddr, n uint32) []byte {
	f := frame(p, src, dst, n)
	if len(f) < 60 {
		f = append(f, make([]byte, 60-len(f))...)
	}
	return f
}

func frame(p Proto, src, dst net.HardwareAddr, n uint32) []byte {
	eth := make([]byte, 14, 128)
	copy(eth[0:6], dst)
	copy(eth[6:12], src)
	payload := make([]byte, 8)
	copy(payload, magic[:])
	binary.BigEndian.PutUint32(payload[4:], n)
	switch p {
	case UDP4, ICMP4:
		binary.BigEndian.PutUint16(eth[12:], 0x0800)
		var l4 []byte
		proto := byte(17)
		if p == UDP4 {
			l4 = udp(payload)
		} else {
			proto = 1
			l4 = make([]byte, 8, 8+len(payload))
			l4[0] = 8 // echo request
			binary.BigEndian.PutUint16(l4[4:], 0x4b4d)
			binary.BigEndian.PutUint16(l4[6:], uint16(n))
			l4 = append(l4, payload...)
			binary.BigEndian.PutUint16(l4[2:], checksum(l4, 0))
		}
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
		ip[8] = 64
		ip[9] = proto
		s, d := GuestIP4.As4(), ClientIP4.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], checksum(ip, 0))
		return append(append(eth, ip...), l4...)
	case UDP6:
		binary.BigEndian.PutUint16(eth[12:], 0x86dd)
		u := udp(payload)
		ip := make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(u)))
		ip[6] = 17
		ip[7] = 64
		s, d := GuestIP6.As16(), ClientIP6.As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		// Pseudo-header sum: addresses, length, next header.
		var ph uint32
		for i := 8; i < 40; i += 2 {
			ph += uint32(binary.BigEndian.Uint16(ip[i:]))
		}
		ph += uint32(len(u)) + 17
		binary.BigEndian.PutUint16(u[6:], checksum(u, ph))
		return append(append(eth, ip...), u...)
	case ARP:
		copy(eth[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		binary.BigEndian.PutUint16(eth[12:], 0x0806)
		a := make([]byte, 28)
		binary.BigEndian.PutUint16(a[0:], 1)
		binary.BigEndian.PutUint16(a[2:], 0x0800)
		a[4], a[5] = 6, 4
		binary.BigEndian.PutUint16(a[6:], 1)
		copy(a[8:], src)
		s, d := GuestIP4.As4(), ClientIP4.As4()
		copy(a[14:], s[:])
		a[18] = 0xfe
		binary.BigEndian.PutUint32(a[19:], n)
		a[23] = 'X'
		copy(a[24:], d[:])
		return append(eth, a...)
	}
	return nil
}

func udp(payload []byte) []byte {
	u := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(u[0:], 40000)
	binary.BigEndian.PutUint16(u[2:], 40001)
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
	return append(u, payload...)
}

func checksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	c := ^uint16(sum)
	if c == 0 {
		c = 0xffff
	}
	return c
}

// ParseFrame returns the tag of a frame built by Frame; ok is false for
// any other frame.
func ParseFrame(f []byte) (Tag, bool) {
	if len(f) < 14 {
		return Tag{}, false
	}
	et := binary.BigEndian.Uint16(f[12:])
	b := f[14:]
	tagAt := func(b []byte, p Proto) (Tag, bool) {
		if len(b) < 8 || [4]byte(b[:4]) != magic {
			return Tag{}, false
		}
		return Tag{p, binary.BigEndian.Uint32(b[4:])}, true
	}
	switch et {
	case 0x0800:
		if len(b) < 20 {
			return Tag{}, false
		}
		hl := int(b[0]&0xf) * 4
		if len(b) < hl+8 {
			return Tag{}, false
		}
		switch b[9] {
		case 17:
			return tagAt(b[hl+8:], UDP4)
		case 1:
			if b[hl] != 8 {
				return Tag{}, false
			}
			return tagAt(b[hl+8:], ICMP4)
		}
	case 0x86dd:
		if len(b) < 48 || b[6] != 17 {
			return Tag{}, false
		}
		return tagAt(b[48:], UDP6)
	case 0x0806:
		if len(b) < 28 || b[18] != 0xfe || b[23] != 'X' {
			return Tag{}, false
		}
		return Tag{ARP, binary.BigEndian.Uint32(b[19:])}, true
	}
	return Tag{}, false
}
