package netbuftest

import (
	"fmt"
	"testing"
	"time"

	"github.com/xl-kemari/xl-kemari/netbuf/mem"
)

// BenchmarkReleaseMem measures, for the mem backend, the time from the
// call to Release (the ack) to the first and the last frame delivered,
// and the cost per frame.
func BenchmarkReleaseMem(b *testing.B) {
	for _, n := range ReleaseSizes {
		b.Run(fmt.Sprintf("pkts=%d", n), func(b *testing.B) {
			var first, last time.Time
			count := 0
			buf := mem.New(func([]byte) {
				now := time.Now()
				if count == 0 {
					first = now
				}
				count++
				last = now
			})
			f := Frame(UDP4, GuestMAC(0), GuestMAC(1), 1)
			var sumFirst, sumLast time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				for j := 0; j < n; j++ {
					buf.Send(f)
				}
				if err := buf.Barrier(uint64(i + 1)); err != nil {
					b.Fatal(err)
				}
				count = 0
				b.StartTimer()
				t0 := time.Now()
				if err := buf.Release(uint64(i + 1)); err != nil {
					b.Fatal(err)
				}
				if count != n {
					b.Fatalf("released %d of %d", count, n)
				}
				sumFirst += first.Sub(t0)
				sumLast += last.Sub(t0)
			}
			ReportRelease(b, n, sumFirst, sumLast)
		})
	}
}
