package nfqueue

import (
	"fmt"
	"testing"
	"time"

	"github.com/xl-kemari/xl-kemari/netbuf"
	"github.com/xl-kemari/xl-kemari/netbuf/netbuftest"
)

// BenchmarkRelease measures, through a real bridge in namespaces, the
// time from Release (the ack) to the first and the last released frame
// captured at the client, and the cost per frame, at 10, 100 and 10,000
// UDP frames per epoch.
func BenchmarkRelease(b *testing.B) {
	for _, n := range []int{10, 100, 10000} {
		b.Run(fmt.Sprintf("pkts=%d", n), func(b *testing.B) {
			topo := netbuftest.NewTopology(b, 1)
			buf, err := New(Config{NetNS: topo.Dom0Path()}).Open(netbuf.Device{Name: topo.Vifs[0], Bridge: topo.Bridge})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { buf.Close() })
			link := topo.Link(b, 0)
			capt := topo.Capture(b)
			var sumFirst, sumLast time.Duration
			tag := uint32(0)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				for j := 0; j < n; j++ {
					tag++
					if err := link.Send(netbuftest.UDP4, tag); err != nil {
						b.Fatal(err)
					}
				}
				netbuftest.WaitHeld(b, buf, uint64(n))
				if err := buf.Barrier(uint64(i + 1)); err != nil {
					b.Fatal(err)
				}
				start := capt.Len()
				b.StartTimer()
				t0 := time.Now()
				if err := buf.Release(uint64(i + 1)); err != nil {
					b.Fatal(err)
				}
				capt.WaitFor(b, func(all []netbuftest.Tag) bool { return len(all) >= start+n })
				b.StopTimer()
				_, times, _ := capt.Since(start)
				sumFirst += times[0].Sub(t0)
				sumLast += times[n-1].Sub(t0)
				b.StartTimer()
			}
			b.StopTimer()
			netbuftest.ReportRelease(b, n, sumFirst, sumLast)
		})
	}
}
