package netbuftest

import (
	"fmt"
	"testing"
	"time"

	"github.com/xl-kemari/xl-kemari/netbuf"
)

// ReleaseSizes are the epoch sizes, in frames, the release benchmarks run.
var ReleaseSizes = []int{10, 100, 10000}

// ReportRelease reports the mean ack-to-first and ack-to-last times in µs
// and the per-packet cost (ack-to-last divided by the packets) in ns.
func ReportRelease(b *testing.B, n int, sumFirst, sumLast time.Duration) {
	b.ReportMetric(float64(sumFirst.Nanoseconds())/float64(b.N)/1e3, "first-µs")
	b.ReportMetric(float64(sumLast.Nanoseconds())/float64(b.N)/1e3, "last-µs")
	b.ReportMetric(float64(sumLast.Nanoseconds())/float64(b.N)/float64(n), "ns/pkt")
}

// BenchRelease measures a kernel backend through a real bridge in
// namespaces: per epoch of n UDP frames (n in ReleaseSizes), the time
// from Release (the ack) to the first and the last released frame as the
// client's capture sees them, and the cost per frame. open returns the
// buffer holding topo.Vifs[0], or skips b.
func BenchRelease(b *testing.B, open func(b *testing.B, topo *Topology) netbuf.Buffer) {
	for _, n := range ReleaseSizes {
		b.Run(fmt.Sprintf("pkts=%d", n), func(b *testing.B) {
			topo := NewTopology(b, 1)
			buf := open(b, topo)
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
					if err := link.Send(UDP4, tag); err != nil {
						b.Fatal(err)
					}
				}
				WaitHeld(b, buf, uint64(n))
				if err := buf.Barrier(uint64(i + 1)); err != nil {
					b.Fatal(err)
				}
				start := capt.Len()
				b.StartTimer()
				t0 := time.Now()
				if err := buf.Release(uint64(i + 1)); err != nil {
					b.Fatal(err)
				}
				capt.WaitFor(b, func(all []Tag) bool { return len(all) >= start+n })
				b.StopTimer()
				_, times, _ := capt.Since(start)
				sumFirst += times[0].Sub(t0)
				sumLast += times[n-1].Sub(t0)
				b.StartTimer()
			}
			b.StopTimer()
			ReportRelease(b, n, sumFirst, sumLast)
		})
	}
}
