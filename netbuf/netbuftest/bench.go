package netbuftest

import (
	"testing"
	"time"
)

// ReportRelease reports the mean ack-to-first and ack-to-last times in µs
// and the per-packet cost (ack-to-last divided by the packets) in ns.
func ReportRelease(b *testing.B, n int, sumFirst, sumLast time.Duration) {
	b.ReportMetric(float64(sumFirst.Nanoseconds())/float64(b.N)/1e3, "first-µs")
	b.ReportMetric(float64(sumLast.Nanoseconds())/float64(b.N)/1e3, "last-µs")
	b.ReportMetric(float64(sumLast.Nanoseconds())/float64(b.N)/float64(n), "ns/pkt")
}
