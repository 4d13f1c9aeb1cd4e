package wire

import (
	"bytes"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// ErrShortBuffer means DecodePages was given an output buffer smaller than
// the batch.
var ErrShortBuffer = errors.New("wire: output buffer too small")

// DefaultChunkShift is the chunk size (256 KiB) a PageEncoder compresses a
// data area in.
const DefaultChunkShift = 18

// zeroPage is compared against, never written.
var zeroPage [PageSize]byte

// CodecStats counts what a PageEncoder produced since it was created.
type CodecStats struct {
	Pages     uint64 // pages encoded
	Zero      uint64 // pages sent ZERO
	Xor       uint64 // pages sent XOR
	Raw       uint64 // pages sent RAW
	RawBytes  uint64 // Pages × 4096
	WireBytes uint64 // PAGES body octets produced
}

// Ratio is RawBytes / WireBytes, or 0 before anything was encoded.
func (s CodecStats) Ratio() float64 {
	if s.WireBytes == 0 {
		return 0
	}
	return float64(s.RawBytes) / float64(s.WireBytes)
}

// PageEncoder turns batches of guest pages into PAGES records for one stream
// direction. It owns the cache of last sent copies that XOR encoding refers
// to, so exactly one PageEncoder serves a stream, and it must be Reset
// whenever the receiver's base copies may differ from it: on a new
// connection and after a NACK (docs/protocol.md §7.4).
//
// A PageEncoder is not safe for concurrent use.
type PageEncoder struct {
	codec Codec
	shift uint8
	cache *pageCache
	stats CodecStats

	pages  Pages
	pfns   []uint64
	enc    []PageEnc
	area   []byte // the data area when it is not the caller's data
	comp   []byte
	chunks []uint32
	xbuf   [PageSize]byte
	rle    [PageSize]byte
	set    pfnSet

	workers int
	lz4c    []*lz4.Compressor // one per worker
	zenc    *zstd.Encoder
	lens    []int
	errs    []error
}

// NewPageEncoder returns an encoder that compresses data areas with codec and
// keeps at most cacheBytes of last sent copies (64 MiB covers a hot working
// set of 16384 pages; 0 disables XOR). Pages not in the cache go RAW or ZERO.
func NewPageEncoder(codec Codec, cacheBytes int) *PageEncoder {
	return &PageEncoder{codec: codec, shift: DefaultChunkShift, cache: newPageCache(cacheBytes), workers: 1}
}

// SetWorkers sets how many goroutines compress the chunks of one batch
// (default 1). More than one only helps when cores are idle while the
// primary sends; Encode still returns only when the batch is done.
func (e *PageEncoder) SetWorkers(n int) { e.workers = max(n, 1) }

// Codec returns the codec the encoder compresses with.
func (e *PageEncoder) Codec() Codec { return e.codec }

// Reset forgets every cached copy: the next batch uses no XOR.
func (e *PageEncoder) Reset() { e.cache.reset() }

// Stats returns what the encoder produced so far.
func (e *PageEncoder) Stats() CodecStats { return e.stats }

// Encode encodes pages pfns[i] = data[i*4096:(i+1)*4096] into a PAGES record
// and records them as the last sent copies. The pfns must be distinct and at
// most MaxPagesPerRecord. The result (which may alias data) is valid until
// the next call of Encode or Reset, and until data changes.
//
// The caller must send the result: once Encode returns, the encoder assumes
// the receiver will hold these pages as base copies.
func (e *PageEncoder) Encode(pfns []uint64, data []byte) (*Pages, error) {
	n := len(pfns)
	if n == 0 || n > MaxPagesPerRecord {
		return nil, fmt.Errorf("%w: %d pages in one batch, want 1 to %d", ErrTooLarge, n, MaxPagesPerRecord)
	}
	if len(data) != n*PageSize {
		return nil, fmt.Errorf("%w: %d pfns but %d octets of page data", ErrMalformed, n, len(data))
	}
	if pfn, dup := e.set.dup(pfns); dup {
		return nil, fmt.Errorf("%w: pfn %#x twice in one batch", ErrMalformed, pfn)
	}
	e.pfns = append(e.pfns[:0], pfns...)
	e.enc = e.enc[:0]
	if cap(e.area) < len(data) {
		e.area = make([]byte, 0, MaxPagesPerRecord*PageSize)
	}
	// While every page so far is RAW the data area is a prefix of data, so
	// it is only copied once some page is encoded otherwise.
	direct := true
	area := e.area[:0]
	var st CodecStats
	for i, pfn := range pfns {
		pg := data[i*PageSize : (i+1)*PageSize : (i+1)*PageSize]
		if bytes.Equal(pg, zeroPage[:]) {
			e.cache.remove(pfn)
			if direct {
				area, direct = append(area, data[:i*PageSize]...), false
			}
			e.enc = append(e.enc, EncZero)
			st.Zero++
			continue
		}
		if old, ok := e.cache.get(pfn); ok {
			var m int
			if bytes.Equal(pg, old) {
				m = binary.PutUvarint(e.rle[:], PageSize)
			} else {
				subtle.XORBytes(e.xbuf[:], pg, old)
				m = xorRLE(e.rle[:PageSize-1], e.xbuf[:])
				copy(old, pg)
			}
			if m > 0 {
				if direct {
					area, direct = append(area, data[:i*PageSize]...), false
				}
				area = append(area, e.rle[:m]...)
				e.enc = append(e.enc, EncXOR)
				st.Xor++
				continue
			}
		} else if slot := e.cache.put(pfn); slot != nil {
			copy(slot, pg)
		}
		if !direct {
			area = append(area, pg...)
		}
		e.enc = append(e.enc, EncRaw)
		st.Raw++
	}
	if direct {
		area = data
	} else {
		e.area = area
	}
	p := &e.pages
	*p = Pages{PFNs: e.pfns, Enc: e.enc, Codec: CodecNone, RawLen: uint32(len(area)), Data: area}
	if e.codec != CodecNone && len(area) > 0 {
		if err := e.compress(p, area); err != nil {
			return nil, err
		}
	}
	st.Pages = uint64(n)
	st.RawBytes = uint64(n) * PageSize
	st.WireBytes = uint64(pagesPrefixLen(p) + len(p.Data))
	e.stats.Pages += st.Pages
	e.stats.Zero += st.Zero
	e.stats.Xor += st.Xor
	e.stats.Raw += st.Raw
	e.stats.RawBytes += st.RawBytes
	e.stats.WireBytes += st.WireBytes
	return p, nil
}

// compress replaces p's data area by its chunks compressed with the codec,
// or leaves it uncompressed if no chunk got smaller.
func (e *PageEncoder) compress(p *Pages, area []byte) error {
	if cap(e.comp) < len(area) {
		e.comp = make([]byte, MaxPagesPerRecord*PageSize)
	}
	comp := e.comp[:cap(e.comp)]
	csize := 1 << e.shift
	nch := (len(area) + csize - 1) / csize
	e.lens = resize(e.lens, nch)
	e.errs = resize(e.errs, nch)
	workers := min(e.workers, nch)
	for len(e.lz4c) < workers {
		e.lz4c = append(e.lz4c, new(lz4.Compressor))
	}
	if e.codec == CodecZstd && e.zenc == nil {
		// Sized for the most workers it may ever see, so that a later
		// SetWorkers does not leave workers waiting for an encoder.
		z, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(max(e.workers, 4)),
			zstd.WithEncoderCRC(false), zstd.WithWindowSize(1<<e.shift), zstd.WithZeroFrames(true))
		if err != nil {
			return fmt.Errorf("wire: zstd encoder: %w", err)
		}
		e.zenc = z
	}
	if workers <= 1 {
		// Compress straight into place.
		pos := 0
		for i := 0; i < nch; i++ {
			src := chunkOf(area, csize, i)
			// A destination one octet short of the source makes the codec
			// give up on data it cannot shrink instead of expanding it.
			e.lens[i], e.errs[i] = e.compressChunk(0, src, comp[pos:pos+len(src)-1])
			if e.lens[i] == 0 {
				pos += copy(comp[pos:], src)
			} else {
				pos += e.lens[i]
			}
		}
	} else {
		// Each chunk gets the region of its raw offset; they are packed
		// together afterwards, which moves only compressed octets.
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < nch; i += workers {
					src := chunkOf(area, csize, i)
					e.lens[i], e.errs[i] = e.compressChunk(w, src, comp[i*csize:i*csize+len(src)-1])
				}
			}()
		}
		wg.Wait()
		pos := 0
		for i := 0; i < nch; i++ {
			if e.lens[i] == 0 {
				pos += copy(comp[pos:], chunkOf(area, csize, i))
			} else {
				pos += copy(comp[pos:], comp[i*csize:i*csize+e.lens[i]])
			}
		}
	}
	e.chunks = e.chunks[:0]
	pos, saved := 0, false
	for i := 0; i < nch; i++ {
		if e.errs[i] != nil {
			return e.errs[i]
		}
		if e.lens[i] == 0 {
			n := len(chunkOf(area, csize, i))
			e.chunks = append(e.chunks, uint32(n)|ChunkStored)
			pos += n
			continue
		}
		saved = true
		e.chunks = append(e.chunks, uint32(e.lens[i]))
		pos += e.lens[i]
	}
	if !saved {
		return nil
	}
	p.Codec, p.ChunkShift, p.Chunks, p.Data = e.codec, e.shift, e.chunks, comp[:pos]
	return nil
}

// chunkOf returns chunk i of area.
func chunkOf(area []byte, csize, i int) []byte {
	return area[i*csize : min((i+1)*csize, len(area))]
}

// compressChunk compresses src into dst and returns the length, or 0 if the
// result would not fit in dst.
func (e *PageEncoder) compressChunk(worker int, src, dst []byte) (int, error) {
	if len(dst) == 0 {
		return 0, nil
	}
	switch e.codec {
	case CodecLZ4:
		m, err := e.lz4c[worker].CompressBlock(src, dst)
		if err != nil || m <= 0 {
			return 0, nil
		}
		return m, nil
	case CodecZstd:
		out := e.zenc.EncodeAll(src, dst[:0])
		if len(out) == 0 || len(out) > len(dst) || &out[0] != &dst[0] {
			return 0, nil
		}
		return len(out), nil
	}
	return 0, fmt.Errorf("%w: codec %d", ErrMalformed, e.codec)
}

// xorRLE zero-run-length encodes the XOR delta x (one page) into dst as
// docs/protocol.md §5.4 says. It returns 0 when the encoding does not fit in
// dst. Runs are found a word at a time and trimmed to octets at their edges.
func xorRLE(dst, x []byte) int {
	const words = PageSize / 8
	x = x[:PageSize]
	n, pos, w := 0, 0, 0
	for {
		for w < words && le.Uint64(x[8*w:]) == 0 {
			w++
		}
		if w == words {
			break
		}
		ls := w
		for w < words && le.Uint64(x[8*w:]) != 0 {
			w++
		}
		start := 8*ls + bits.TrailingZeros64(le.Uint64(x[8*ls:]))/8
		end := 8*w - bits.LeadingZeros64(le.Uint64(x[8*w-8:]))/8
		lr := end - start
		if n+2*binary.MaxVarintLen16+lr > len(dst) {
			return 0
		}
		n += binary.PutUvarint(dst[n:], uint64(start-pos))
		n += binary.PutUvarint(dst[n:], uint64(lr))
		n += copy(dst[n:], x[start:end])
		pos = end
	}
	if pos < PageSize {
		if n+binary.MaxVarintLen16 > len(dst) {
			return 0
		}
		n += binary.PutUvarint(dst[n:], uint64(PageSize-pos))
	}
	return n
}

// applyXOR applies one XOR-encoded page from src onto page (which holds the
// base copy) and returns how many octets of src it used.
func applyXOR(page, src []byte) (int, error) {
	pos, off := 0, 0
	for first := true; ; first = false {
		zr, k := binary.Uvarint(src[off:])
		if k <= 0 {
			return 0, fmt.Errorf("%w: xor page: bad zero run at %d", ErrMalformed, off)
		}
		off += k
		if zr == 0 && !first || zr > uint64(PageSize-pos) {
			return 0, fmt.Errorf("%w: xor page: zero run of %d at %d", ErrMalformed, zr, pos)
		}
		pos += int(zr)
		if pos == PageSize {
			return off, nil
		}
		lr, k := binary.Uvarint(src[off:])
		if k <= 0 {
			return 0, fmt.Errorf("%w: xor page: bad literal run at %d", ErrMalformed, off)
		}
		off += k
		if lr == 0 || lr > uint64(PageSize-pos) || lr > uint64(len(src)-off) {
			return 0, fmt.Errorf("%w: xor page: literal run of %d at %d", ErrMalformed, lr, pos)
		}
		l := int(lr)
		subtle.XORBytes(page[pos:pos+l], page[pos:pos+l], src[off:off+l])
		off += l
		pos += l
		if pos == PageSize {
			return off, nil
		}
	}
}

// pfnSet finds a repeated pfn in a batch without allocating per batch.
type pfnSet struct {
	keys []uint64
	gen  []uint32
	cur  uint32
}

func (s *pfnSet) dup(pfns []uint64) (uint64, bool) {
	size := 1 << bits.Len(uint(2*len(pfns)))
	if len(s.keys) < size {
		s.keys = make([]uint64, size)
		s.gen = make([]uint32, size)
		s.cur = 0
	}
	s.cur++
	if s.cur == 0 {
		clear(s.gen)
		s.cur = 1
	}
	mask := uint64(len(s.keys) - 1)
	for _, pfn := range pfns {
		h := (pfn * 0x9E3779B97F4A7C15) >> 32 & mask
		for s.gen[h] == s.cur {
			if s.keys[h] == pfn {
				return pfn, true
			}
			h = (h + 1) & mask
		}
		s.gen[h], s.keys[h] = s.cur, pfn
	}
	return 0, false
}

// decodeScratch is what DecodePages needs besides its arguments.
type decodeScratch struct {
	area []byte
	set  pfnSet
}

var decodePool = sync.Pool{New: func() any { return new(decodeScratch) }}

// zstdDecoder is shared by all DecodePages calls: it holds no stream state
// and DecodeAll is safe for concurrent use.
var zstdDecoder = sync.OnceValues(func() (*zstd.Decoder, error) {
	return zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderMaxMemory(MaxPagesPerRecord*PageSize), zstd.WithDecoderMaxWindow(1<<22))
})

// DecodePages decodes p into out, page i at out[i*4096:(i+1)*4096], and
// returns the pfns (p.PFNs). For an XOR page it first calls base(pfn, dst),
// which must fill dst with the receiver's latest copy of pfn — the committed
// replica overlaid with the epochs staged since — which is the copy the
// sender encoded against. A malformed batch gives an error wrapping
// ErrMalformed; an error from base is returned wrapped. On error out holds
// garbage.
//
// DecodePages may be called from several goroutines at once.
func DecodePages(p *Pages, base func(pfn uint64, dst []byte) error, out []byte) (pfns []uint64, err error) {
	lim := DefaultLimits()
	lim.MaxPages = max(lim.MaxPages, len(p.PFNs))
	if err := checkPages(p, &lim); err != nil {
		return nil, err
	}
	n := len(p.PFNs)
	if len(out) < n*PageSize {
		return nil, fmt.Errorf("%w: %d octets for %d pages", ErrShortBuffer, len(out), n)
	}
	s := decodePool.Get().(*decodeScratch)
	defer decodePool.Put(s)
	if pfn, dup := s.set.dup(p.PFNs); dup {
		return nil, fmt.Errorf("%w: pages: pfn %#x twice", ErrMalformed, pfn)
	}
	area := p.Data
	if p.Codec != CodecNone {
		if area, err = decompress(p, s); err != nil {
			return nil, err
		}
	}
	off := 0
	for i, pfn := range p.PFNs {
		pg := out[i*PageSize : (i+1)*PageSize : (i+1)*PageSize]
		switch p.Enc[i] {
		case EncZero:
			clear(pg)
		case EncRaw:
			if len(area)-off < PageSize {
				return nil, fmt.Errorf("%w: pages: data area ends inside raw page %d", ErrMalformed, i)
			}
			copy(pg, area[off:])
			off += PageSize
		case EncXOR:
			if base == nil {
				return nil, fmt.Errorf("%w: pages: xor page %d without a base", ErrMalformed, i)
			}
			if err := base(pfn, pg); err != nil {
				return nil, fmt.Errorf("wire: base copy of pfn %#x: %w", pfn, err)
			}
			used, err := applyXOR(pg, area[off:])
			if err != nil {
				return nil, fmt.Errorf("page %d (pfn %#x): %w", i, pfn, err)
			}
			off += used
		}
	}
	if off != len(area) {
		return nil, fmt.Errorf("%w: pages: %d octets of data area left over", ErrMalformed, len(area)-off)
	}
	return p.PFNs, nil
}

// decompress expands p's chunks into s.area.
func decompress(p *Pages, s *decodeScratch) ([]byte, error) {
	if cap(s.area) < int(p.RawLen) {
		s.area = make([]byte, 0, max(int(p.RawLen), 1<<20))
	}
	area := s.area[:p.RawLen]
	src := p.Data
	for i, cl := range p.Chunks {
		raw := chunkRaw(p, i)
		m := int(cl &^ ChunkStored)
		dst := area[i<<p.ChunkShift : i<<p.ChunkShift+raw : i<<p.ChunkShift+raw]
		in := src[:m]
		src = src[m:]
		if cl&ChunkStored != 0 {
			copy(dst, in)
			continue
		}
		var err error
		got := 0
		switch p.Codec {
		case CodecLZ4:
			got, err = lz4.UncompressBlock(in, dst)
		case CodecZstd:
			var d *zstd.Decoder
			if d, err = zstdDecoder(); err == nil {
				var o []byte
				o, err = d.DecodeAll(in, dst[:0])
				if err == nil && len(o) > 0 && &o[0] != &dst[0] {
					err = errors.New("decoded out of place")
				}
				got = len(o)
			}
		}
		if err != nil || got != raw {
			return nil, fmt.Errorf("%w: pages: chunk %d of %v decodes to %d of %d octets: %v", ErrMalformed, i, p.Codec, got, raw, err)
		}
	}
	return area, nil
}

// resize returns s with length n and zero elements, reusing its array.
func resize[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	s = s[:n]
	clear(s)
	return s
}
