package wire

import (
	"bytes"
	"testing"
)

// fuzzLimits are smaller than the defaults so that the fuzzer reaches the
// limit checks quickly.
var fuzzLimits = Limits{MaxRecord: 1 << 20, MaxPages: 64, MaxString: 256, MaxNICs: 4, MaxAddrs: 4, MaxDisks: 4, MaxConfig: 1024, MaxDiskWrite: 64 << 10}

// FuzzReader feeds arbitrary bytes to a Reader: it must never panic, never
// hold a body buffer over the limit, and every PAGES record it accepts must
// be safe to DecodePages.
func FuzzReader(f *testing.F) {
	good := encodeStream(f, sampleStream())
	f.Add(good)
	f.Add(good[:HeaderSize+40])
	f.Add([]byte(Magic))
	pfns, vers := mixes[4].batches(5, 8, 1)
	for _, codec := range []Codec{CodecLZ4, CodecZstd} {
		e := NewPageEncoder(codec, 1<<20)
		p0, _ := e.Encode(pfns, vers[0])
		r0 := clone(p0)
		p1, _ := e.Encode(pfns, vers[1])
		f.Add(encodeStream(f, []Record{sampleHello(), &EpochBegin{Epoch: 1}, r0, p1, &EpochEnd{Epoch: 1}}))
	}
	out := make([]byte, fuzzLimits.MaxPages*PageSize)
	base := func(pfn uint64, dst []byte) error {
		for i := range dst {
			dst[i] = byte(pfn) + byte(i)
		}
		return nil
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data), fuzzLimits)
		for i := 0; i < 1000; i++ {
			rec, err := r.Next()
			if cap(r.body) > int(fuzzLimits.MaxRecord)+8 {
				t.Fatalf("body buffer of %d octets", cap(r.body))
			}
			if err != nil {
				if !EpochError(err) {
					return
				}
				continue
			}
			if p, ok := rec.(*Pages); ok {
				DecodePages(p, base, out)
			}
		}
	})
}

// FuzzPages has two halves. Arbitrary bytes as a PAGES body must parse or
// fail cleanly and decode or fail cleanly. And pages made from the bytes
// must survive Encode and DecodePages unchanged, twice (the second time
// against the first as base).
func FuzzPages(f *testing.F) {
	f.Add(byte(0), []byte{})
	f.Add(byte(1), bytes.Repeat([]byte("kemari"), 1000))
	f.Add(byte(2), []byte{1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9})
	p := samplePages()
	var body []byte
	body, tail, _ := appendBody(nil, p, &fuzzLimits)
	f.Add(byte(3), append(body, tail...))
	out := make([]byte, fuzzLimits.MaxPages*PageSize)
	zeroBase := func(pfn uint64, dst []byte) error { clear(dst); return nil }
	// Encoders are costly to build (zstd's especially); reuse them.
	encoders := []*PageEncoder{NewPageEncoder(CodecNone, 4*PageSize), NewPageEncoder(CodecLZ4, 4*PageSize), NewPageEncoder(CodecZstd, 4*PageSize)}
	f.Fuzz(func(t *testing.T, mode byte, data []byte) {
		var p Pages
		lim := fuzzLimits.withDefaults()
		if err := decodePages(data, &p, &lim); err == nil {
			DecodePages(&p, zeroBase, out)
		}
		// Round trip: pages are slices of data, repeated and edited.
		n := 1 + int(mode%8)
		pages := make([]byte, n*PageSize)
		for i := range n {
			pg := pages[i*PageSize : (i+1)*PageSize]
			if len(data) > 0 && (i+int(mode))%3 != 0 {
				for j := 0; j < PageSize; j += len(data) {
					copy(pg[j:], data)
				}
			}
		}
		pfns := make([]uint64, n)
		for i := range pfns {
			pfns[i] = uint64(i * 7)
		}
		e := encoders[mode%3]
		e.Reset()
		mem := map[uint64][]byte{}
		for round := 0; round < 2; round++ {
			enc, err := e.Encode(pfns, pages)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodePages(enc, mapBase(mem), out)
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			if !bytes.Equal(out[:len(pages)], pages) {
				t.Fatalf("round %d: decoded pages differ", round)
			}
			applyMem(mem, got, out[:len(pages)])
			for i := range pages {
				if i%97 == int(mode)%97 {
					pages[i] ^= mode | 1
				}
			}
		}
	})
}
