package plug

import (
	"testing"

	"github.com/xl-kemari/xl-kemari/netbuf"
	"github.com/xl-kemari/xl-kemari/netbuf/netbuftest"
)

// BenchmarkRelease is nfqueue's BenchmarkRelease for plug: ack to first
// and last frame out of the IFB, and the cost per frame, at 10, 100 and
// 10,000 frames per epoch. It skips, naming what is missing, on kernels
// without sch_plug.
func BenchmarkRelease(b *testing.B) {
	netbuftest.RequireRoot(b)
	if err := New(Config{}).Probe(); err != nil {
		b.Skipf("plug release benchmark needs sch_plug: %v", err)
	}
	netbuftest.BenchRelease(b, func(b *testing.B, topo *netbuftest.Topology) netbuf.Buffer {
		buf, err := New(Config{NetNS: topo.Dom0Path()}).Open(netbuf.Device{Name: topo.Vifs[0], Bridge: topo.Bridge})
		if err != nil {
			b.Fatal(err)
		}
		return buf
	})
}
