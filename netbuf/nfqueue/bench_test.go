package nfqueue

import (
	"testing"

	"github.com/xl-kemari/xl-kemari/netbuf"
	"github.com/xl-kemari/xl-kemari/netbuf/netbuftest"
)

// BenchmarkRelease measures, through a real bridge in namespaces, the
// time from Release (the ack) to the first and the last released frame
// captured at the client, and the cost per frame, at 10, 100 and 10,000
// UDP frames per epoch.
func BenchmarkRelease(b *testing.B) {
	netbuftest.BenchRelease(b, func(b *testing.B, topo *netbuftest.Topology) netbuf.Buffer {
		buf, err := New(Config{NetNS: topo.Dom0Path()}).Open(netbuf.Device{Name: topo.Vifs[0], Bridge: topo.Bridge})
		if err != nil {
			b.Fatal(err)
		}
		return buf
	})
}
