package netbuftest

import (
	"net"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	src := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	dst := net.HardwareAddr{2, 0, 0, 0, 0, 2}
	for _, p := range AllProtos {
		f := Frame(p, src, dst, 0xdeadbeef)
		if len(f) < 60 {
			t.Errorf("%v: frame of %d bytes is below the Ethernet minimum", p, len(f))
		}
		got, ok := ParseFrame(f)
		if !ok || got != (Tag{p, 0xdeadbeef}) {
			t.Errorf("%v: ParseFrame = %v, %v", p, got, ok)
		}
	}
	if _, ok := ParseFrame([]byte{1, 2, 3}); ok {
		t.Error("short frame parsed")
	}
}

func TestChecksum(t *testing.T) {
	// RFC 1071's example.
	if got := checksum([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, 0); got != ^uint16(0xddf2) {
		t.Fatalf("checksum = %#x", got)
	}
}
