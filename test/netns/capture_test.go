package netns

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xl-kemari/xl-kemari/internal/wirecap"
	"github.com/xl-kemari/xl-kemari/libxl/sim/svc"
)

// frame is one captured frame (wirecap.Frame).
type frame = wirecap.Frame

// capture records every frame on one interface.
type capture struct{ *wirecap.Capture }

func openCapture(t *testing.T, nsPath, ifname string) *capture {
	t.Helper()
	c, err := wirecap.Open(nsPath, ifname)
	if err != nil {
		t.Fatalf("capture: %v", err)
	}
	t.Cleanup(c.Close)
	return &capture{c}
}

func (c *capture) snapshot() ([]frame, <-chan struct{}) { return c.Snapshot() }

func (c *capture) waitFor(d time.Duration, pred func([]frame) bool) bool { return c.WaitFor(d, pred) }

// Addresses and tags of the probes.
var (
	guestMAC  = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x01, 0x01}
	clientMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0xff, 0x01}
	guest4    = netip.MustParseAddr("192.0.2.10")
	guest6    = netip.MustParseAddr("2001:db8::10")
	client4   = netip.MustParseAddr("192.0.2.100")
	client6   = netip.MustParseAddr("2001:db8::100")
)

const (
	svcPort  = 7777
	tcpPort  = 9 // closed in the guest: its kernel answers RST
	icmpID   = 0x4b4d
	arpFirst = 128 // ARP probes use sender 192.0.2.128+n as their tag
)

// classify names the probe or reply a frame is, as "proto/tag", and
// whether it is a reply from the guest; "" for anything else.
func classify(f []byte) (key string, reply bool) {
	if len(f) < 14 {
		return "", false
	}
	src := net.HardwareAddr(f[6:12])
	fromGuest := src.String() == guestMAC.String()
	fromClient := src.String() == clientMAC.String()
	p := f[14:]
	switch binary.BigEndian.Uint16(f[12:]) {
	case unix.ETH_P_ARP:
		if len(p) < 28 {
			return "", false
		}
		op := binary.BigEndian.Uint16(p[6:])
		spa, tpa := netip.AddrFrom4([4]byte(p[14:18])), netip.AddrFrom4([4]byte(p[24:28]))
		switch {
		case op == 1 && fromClient && tpa == guest4 && spa.As4()[3] >= arpFirst:
			return fmt.Sprintf("arp/%d", spa.As4()[3]-arpFirst), false
		case op == 2 && fromGuest && spa == guest4 && tpa.As4()[3] >= arpFirst:
			return fmt.Sprintf("arp/%d", tpa.As4()[3]-arpFirst), true
		}
	case unix.ETH_P_IP:
		if len(p) < 20 || p[0]>>4 != 4 {
			return "", false
		}
		hl := int(p[0]&15) * 4
		if len(p) < hl+8 {
			return "", false
		}
		srcIP, dstIP := netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20]))
		l4 := p[hl:]
		return classifyL4(p[9], srcIP, dstIP, l4, fromGuest, fromClient)
	case unix.ETH_P_IPV6:
		if len(p) < 48 {
			return "", false
		}
		srcIP, dstIP := netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40]))
		return classifyL4(p[6], srcIP, dstIP, p[40:], fromGuest, fromClient)
	}
	return "", false
}

func classifyL4(proto byte, src, dst netip.Addr, l4 []byte, fromGuest, fromClient bool) (string, bool) {
	if len(l4) < 8 {
		return "", false
	}
	toGuest := fromClient && (dst == guest4 || dst == guest6)
	fromG := fromGuest && (src == guest4 || src == guest6)
	switch proto {
	case unix.IPPROTO_ICMP, unix.IPPROTO_ICMPV6:
		name := "icmp"
		req, rep := byte(8), byte(0)
		if proto == unix.IPPROTO_ICMPV6 {
			name, req, rep = "icmp6", 128, 129
		}
		if binary.BigEndian.Uint16(l4[4:]) != icmpID {
			return "", false
		}
		seq := binary.BigEndian.Uint16(l4[6:])
		switch {
		case toGuest && l4[0] == req:
			return fmt.Sprintf("%s/%d", name, seq), false
		case fromG && l4[0] == rep:
			return fmt.Sprintf("%s/%d", name, seq), true
		}
	case unix.IPPROTO_TCP:
		if len(l4) < 14 {
			return "", false
		}
		sp, dp, flags := binary.BigEndian.Uint16(l4[0:]), binary.BigEndian.Uint16(l4[2:]), l4[13]
		switch {
		case toGuest && dp == tcpPort && flags&0x02 != 0:
			return fmt.Sprintf("tcp/%d", sp), false
		case fromG && sp == tcpPort && flags&0x04 != 0:
			return fmt.Sprintf("tcp/%d", dp), true
		}
	case unix.IPPROTO_UDP:
		sp, dp := binary.BigEndian.Uint16(l4[0:]), binary.BigEndian.Uint16(l4[2:])
		payload := l4[8:]
		switch {
		case toGuest && dp == svcPort:
			if r, err := svc.DecodeRequest(payload); err == nil {
				return fmt.Sprintf("udp/%d/%d", r.Client, r.Seq), false
			}
		case fromG && sp == svcPort:
			if r, err := svc.DecodeReply(payload); err == nil {
				return fmt.Sprintf("udp/%d/%d", r.Client, r.Seq), true
			}
		}
	}
	return "", false
}

// exchanges pairs the first request and the first reply of each key in
// fs, for the keys in want, in want's order.
func exchanges(fs []frame, want []string) []Exchange {
	sent, got := map[string]time.Time{}, map[string]time.Time{}
	for _, f := range fs {
		k, rep := classify(f.Data)
		if k == "" {
			continue
		}
		m := sent
		if rep {
			if f.Out {
				continue
			}
			m = got
		} else if !f.Out {
			continue
		}
		if _, seen := m[k]; !seen {
			m[k] = f.Time
		}
	}
	xs := make([]Exchange, 0, len(want))
	for _, k := range want {
		xs = append(xs, Exchange{Key: k, Sent: sent[k], Arrived: got[k]})
	}
	return xs
}

// answered reports whether every key in want has a reply in fs.
func answered(fs []frame, want []string) bool {
	for _, x := range exchanges(fs, want) {
		if x.Arrived.IsZero() || x.Sent.IsZero() {
			return false
		}
	}
	return true
}
