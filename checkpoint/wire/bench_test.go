package wire

import (
	"fmt"
	"io"
	"testing"
)

// BenchmarkEncode measures PageEncoder.Encode per codec on 1024-page batches
// of each mix. MB/s is over raw page octets; ratio is raw octets per PAGES
// body octet.
func BenchmarkEncode(b *testing.B) {
	for _, m := range mixes {
		pfns, vers := m.batches(1, MaxPagesPerRecord, 4)
		for _, cw := range []struct {
			codec   Codec
			workers int
		}{{CodecNone, 1}, {CodecLZ4, 1}, {CodecZstd, 1}, {CodecLZ4, 2}, {CodecZstd, 2}} {
			codec := cw.codec
			name := fmt.Sprintf("%s/%s", m.name, codec)
			if cw.workers > 1 {
				name += fmt.Sprintf("-w%d", cw.workers)
			}
			b.Run(name, func(b *testing.B) {
				e := NewPageEncoder(codec, 64<<20)
				e.SetWorkers(cw.workers)
				// Prime the cache so that edit pages have base copies, as
				// in steady state.
				if _, err := e.Encode(pfns, vers[0]); err != nil {
					b.Fatal(err)
				}
				before := e.Stats()
				b.SetBytes(int64(len(vers[0])))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					if _, err := e.Encode(pfns, vers[1+i%(len(vers)-1)]); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				s := e.Stats()
				b.ReportMetric(float64(s.RawBytes-before.RawBytes)/float64(s.WireBytes-before.WireBytes), "ratio")
			})
		}
	}
}

// BenchmarkDecode measures DecodePages on the mixed batch.
func BenchmarkDecode(b *testing.B) {
	m := mixes[len(mixes)-1]
	pfns, vers := m.batches(1, MaxPagesPerRecord, 1)
	for _, codec := range []Codec{CodecNone, CodecLZ4, CodecZstd} {
		b.Run(codec.String(), func(b *testing.B) {
			e := NewPageEncoder(codec, 64<<20)
			e.Encode(pfns, vers[0])
			p, err := e.Encode(pfns, vers[1])
			if err != nil {
				b.Fatal(err)
			}
			index := map[uint64]int{}
			for i, pfn := range pfns {
				index[pfn] = i
			}
			base := func(pfn uint64, dst []byte) error {
				i := index[pfn]
				copy(dst, vers[0][i*PageSize:])
				return nil
			}
			out := make([]byte, len(vers[1]))
			b.SetBytes(int64(len(out)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodePages(p, base, out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkWriter measures writing a PAGES record of 1024 RAW pages, against
// a plain copy of the same 4 MiB as the baseline.
func BenchmarkWriter(b *testing.B) {
	pfns, vers := mixes[2].batches(1, MaxPagesPerRecord, 0)
	e := NewPageEncoder(CodecNone, 0)
	p, err := e.Encode(pfns, vers[0])
	if err != nil {
		b.Fatal(err)
	}
	b.Run("pages-raw", func(b *testing.B) {
		w := NewWriter(io.Discard)
		w.WriteHeader(0)
		w.Write(sampleHello())
		w.Write(&EpochBegin{Epoch: 1})
		b.SetBytes(int64(len(vers[0])))
		b.ReportAllocs()
		for b.Loop() {
			if err := w.Write(p); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("memcpy", func(b *testing.B) {
		dst := make([]byte, len(vers[0]))
		b.SetBytes(int64(len(vers[0])))
		b.ReportAllocs()
		for b.Loop() {
			copy(dst, vers[0])
		}
	})
}
