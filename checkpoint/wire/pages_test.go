package wire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
)

// refDecodeXOR is the reference for applyXOR: a byte-at-a-time reading of
// docs/protocol.md §5.4.
func refDecodeXOR(base, src []byte) []byte {
	out := append([]byte(nil), base...)
	pos := 0
	read := func() int {
		v, shift := 0, 0
		for {
			c := src[0]
			src = src[1:]
			v |= int(c&0x7f) << shift
			if c < 0x80 {
				return v
			}
			shift += 7
		}
	}
	for pos < PageSize {
		pos += read()
		if pos == PageSize {
			break
		}
		l := read()
		for j := 0; j < l; j++ {
			out[pos] ^= src[0]
			src = src[1:]
			pos++
		}
	}
	return out
}

// TestXORRLE checks the word-wise encoder against the byte-wise reference
// decoder on pages with edits of every size and alignment.
func TestXORRLE(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	base := make([]byte, PageSize)
	var dst [PageSize]byte
	for i := 0; i < 3000; i++ {
		for j := range base {
			base[j] = byte(rng.Uint32())
		}
		pg := append([]byte(nil), base...)
		for e := rng.IntN(40); e > 0; e-- {
			o := rng.IntN(PageSize)
			l := 1 + rng.IntN(min(PageSize-o, 1+rng.IntN(64)))
			for j := o; j < o+l; j++ {
				pg[j] = byte(rng.Uint32())
			}
		}
		x := make([]byte, PageSize)
		for j := range x {
			x[j] = pg[j] ^ base[j]
		}
		n := xorRLE(dst[:PageSize-1], x)
		if n == 0 {
			continue
		}
		if got := refDecodeXOR(base, dst[:n]); !bytes.Equal(got, pg) {
			t.Fatalf("case %d: reference decodes the encoding wrong", i)
		}
		got := append([]byte(nil), base...)
		used, err := applyXOR(got, dst[:n])
		if err != nil || used != n || !bytes.Equal(got, pg) {
			t.Fatalf("case %d: applyXOR used %d of %d: %v", i, used, n, err)
		}
	}
}

// TestPagesDifferential runs many epochs of random page mixes through a
// PageEncoder, the Writer, the Reader and DecodePages, against a reference
// receiver that is a plain map of pages: every decoded page must equal the
// input byte for byte, with a cache small enough to evict, for every codec,
// across a reconnect (Reset). Reference: docs/protocol.md §5.4, §7.4.
func TestPagesDifferential(t *testing.T) {
	for _, codec := range []Codec{CodecNone, CodecLZ4, CodecZstd} {
		for _, workers := range []int{1, 2} {
			t.Run(fmt.Sprintf("%v-w%d", codec, workers), func(t *testing.T) {
				testDifferential(t, codec, workers, uint64(codec)*10+uint64(workers))
			})
		}
	}
}

func testDifferential(t *testing.T, codec Codec, workers int, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	const universe = 1500
	guest := make([][]byte, universe) // the primary's memory
	for i := range guest {
		guest[i] = make([]byte, PageSize)
	}
	replica := map[uint64][]byte{} // the standby's memory
	enc := NewPageEncoder(codec, 200*PageSize)
	enc.SetWorkers(workers)
	var conn bytes.Buffer
	w := NewWriter(&conn)
	w.WriteHeader(0)
	w.Write(sampleHello())
	r := NewReader(&conn, DefaultLimits())
	out := make([]byte, MaxPagesPerRecord*PageSize)
	for epoch := uint64(1); epoch <= 40; epoch++ {
		if epoch == 20 {
			// A reconnect: new streams, the encoder forgets its cache.
			enc.Reset()
			conn.Reset()
			w = NewWriter(&conn)
			w.WriteHeader(0)
			w.Write(sampleHello())
			r = NewReader(&conn, DefaultLimits())
		}
		// Dirty a random set of pages, favouring a hot set.
		dirty := map[uint64]bool{}
		for n := rng.IntN(1500); n > 0; n-- {
			var pfn uint64
			if rng.IntN(3) > 0 {
				pfn = uint64(rng.IntN(300))
			} else {
				pfn = uint64(rng.IntN(universe))
			}
			dirty[pfn] = true
			pg := guest[pfn]
			switch rng.IntN(10) {
			case 0:
				clear(pg)
			case 1:
				for j := range pg {
					pg[j] = byte(rng.Uint32())
				}
			case 2:
				fillText(rng, pg)
			default:
				for e := 1 + rng.IntN(8); e > 0; e-- {
					pg[rng.IntN(PageSize)] = byte(rng.Uint32())
				}
			}
		}
		var pfns []uint64
		for pfn := range dirty {
			pfns = append(pfns, pfn)
		}
		if err := w.Write(&EpochBegin{Epoch: epoch}); err != nil {
			t.Fatal(err)
		}
		for len(pfns) > 0 {
			n := min(len(pfns), 1+rng.IntN(MaxPagesPerRecord))
			batch := pfns[:n]
			pfns = pfns[n:]
			data := make([]byte, 0, n*PageSize)
			for _, pfn := range batch {
				data = append(data, guest[pfn]...)
			}
			p, err := enc.Encode(batch, data)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Write(p); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Write(&EpochEnd{Epoch: epoch}); err != nil {
			t.Fatal(err)
		}
		w.Flush()
		for {
			rec, err := r.Next()
			if err != nil {
				t.Fatalf("epoch %d: %v", epoch, err)
			}
			if _, ok := rec.(*EpochEnd); ok {
				break
			}
			p, ok := rec.(*Pages)
			if !ok {
				continue
			}
			got, err := DecodePages(p, mapBase(replica), out)
			if err != nil {
				t.Fatalf("epoch %d: %v", epoch, err)
			}
			applyMem(replica, got, out)
		}
		for pfn := range dirty {
			if !bytes.Equal(replica[pfn], guest[pfn]) {
				t.Fatalf("epoch %d: pfn %d differs after decode", epoch, pfn)
			}
		}
	}
	s := enc.Stats()
	if s.Xor == 0 || s.Zero == 0 || s.Raw == 0 {
		t.Errorf("mix did not exercise every encoding: %+v", s)
	}
	t.Logf("%v: %+v ratio %.2f", codec, s, s.Ratio())
}

// TestDecodePagesErrors checks that damaged batches are refused.
func TestDecodePagesErrors(t *testing.T) {
	out := make([]byte, 4*PageSize)
	zeroBase := func(pfn uint64, dst []byte) error { clear(dst); return nil }
	good := samplePages()
	if _, err := DecodePages(good, zeroBase, out); err != nil {
		t.Fatal(err)
	}
	errBase := errors.New("no such page")
	cases := []struct {
		name string
		edit func(p *Pages)
		base func(uint64, []byte) error
		out  []byte
		want error
	}{
		{"duplicate pfn", func(p *Pages) { p.PFNs[2] = p.PFNs[0] }, zeroBase, out, ErrMalformed},
		{"area too long", func(p *Pages) { p.Data = append(p.Data, 0); p.RawLen++ }, zeroBase, out, ErrMalformed},
		{"area too short", func(p *Pages) { p.Data = p.Data[:100]; p.RawLen = 100 }, zeroBase, out, ErrMalformed},
		{"bad encoding", func(p *Pages) { p.Enc[0] = 0 }, zeroBase, out, ErrMalformed},
		{"zero literal run", func(p *Pages) { p.Data[PageSize+1] = 0 }, zeroBase, out, ErrMalformed},
		{"run past page", func(p *Pages) { p.Data[PageSize] = 0xff; p.Data[PageSize+1] = 0x7f }, zeroBase, out, ErrMalformed},
		{"short out", func(p *Pages) {}, zeroBase, out[:PageSize], ErrShortBuffer},
		{"base fails", func(p *Pages) {}, func(uint64, []byte) error { return errBase }, out, errBase},
		{"lz4 garbage", func(p *Pages) {
			p.Codec, p.ChunkShift, p.Chunks = CodecLZ4, 16, []uint32{uint32(len(p.Data))}
		}, zeroBase, out, ErrMalformed},
		{"zstd garbage", func(p *Pages) {
			p.Codec, p.ChunkShift, p.Chunks = CodecZstd, 16, []uint32{uint32(len(p.Data))}
		}, zeroBase, out, ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := clone(samplePages()).(*Pages)
			c.edit(p)
			if _, err := DecodePages(p, c.base, c.out); !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

// TestEncodeRefuses checks the encoder's argument checks.
func TestEncodeRefuses(t *testing.T) {
	e := NewPageEncoder(CodecLZ4, 1<<20)
	if _, err := e.Encode(nil, nil); !errors.Is(err, ErrTooLarge) {
		t.Errorf("empty batch: %v", err)
	}
	if _, err := e.Encode([]uint64{1, 2}, make([]byte, PageSize)); !errors.Is(err, ErrMalformed) {
		t.Errorf("short data: %v", err)
	}
	if _, err := e.Encode([]uint64{1, 1}, make([]byte, 2*PageSize)); !errors.Is(err, ErrMalformed) {
		t.Errorf("duplicate: %v", err)
	}
}

// TestEncodeZeroCopy checks that an all-RAW uncompressed batch goes out as
// the caller's own page data.
func TestEncodeZeroCopy(t *testing.T) {
	pfns, vers := mixes[2].batches(1, 16, 0)
	p, err := NewPageEncoder(CodecNone, 1<<20).Encode(pfns, vers[0])
	if err != nil {
		t.Fatal(err)
	}
	if &p.Data[0] != &vers[0][0] {
		t.Fatal("raw batch was copied")
	}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.WriteHeader(0)
	w.Write(sampleHello())
	w.Write(&EpochBegin{Epoch: 1})
	if err := w.Write(p); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, &buf); err != nil {
		t.Fatal(err)
	}
}
