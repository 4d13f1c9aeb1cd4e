package sim

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Frames are what a sim NIC transmits: one UDP datagram with its
// destination, in this layout (big endian):
//
//	0  family  u8   4 or 6
//	1  zero    u8
//	2  port    u16  destination UDP port
//	4  addr    4 or 16 bytes, destination IP
//	.. payload      the datagram, at most MaxPayload bytes
//
// The source is implicit: the NIC's own socket (its Listen address).

// AppendFrame appends the frame carrying payload to to.
func AppendFrame(dst []byte, to netip.AddrPort, payload []byte) []byte {
	a := to.Addr().Unmap()
	switch {
	case a.Is4():
		dst = append(dst, 4, 0)
		dst = binary.BigEndian.AppendUint16(dst, to.Port())
		b := a.As4()
		dst = append(dst, b[:]...)
	default:
		dst = append(dst, 6, 0)
		dst = binary.BigEndian.AppendUint16(dst, to.Port())
		b := a.As16()
		dst = append(dst, b[:]...)
	}
	return append(dst, payload...)
}

// ParseFrame splits a frame into destination and payload (aliasing frame).
func ParseFrame(frame []byte) (netip.AddrPort, []byte, error) {
	if len(frame) < 4 || frame[1] != 0 {
		return netip.AddrPort{}, nil, fmt.Errorf("%w: %d-byte header", ErrFrame, len(frame))
	}
	port := binary.BigEndian.Uint16(frame[2:])
	var addr netip.Addr
	var rest []byte
	switch frame[0] {
	case 4:
		if len(frame) < 8 {
			return netip.AddrPort{}, nil, fmt.Errorf("%w: short IPv4 header", ErrFrame)
		}
		addr, rest = netip.AddrFrom4([4]byte(frame[4:8])), frame[8:]
	case 6:
		if len(frame) < 20 {
			return netip.AddrPort{}, nil, fmt.Errorf("%w: short IPv6 header", ErrFrame)
		}
		addr, rest = netip.AddrFrom16([16]byte(frame[4:20])), frame[20:]
	default:
		return netip.AddrPort{}, nil, fmt.Errorf("%w: family %d", ErrFrame, frame[0])
	}
	if len(rest) > MaxPayload {
		return netip.AddrPort{}, nil, fmt.Errorf("%w: payload %d > %d", ErrFrame, len(rest), MaxPayload)
	}
	return netip.AddrPortFrom(addr, port), rest, nil
}
