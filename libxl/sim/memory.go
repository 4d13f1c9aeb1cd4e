package sim

import (
	"bytes"
	"encoding/binary"

	"github.com/xl-kemari/xl-kemari/libxl"
)

// Guest memory is a two-level sparse table: chunks of 512 page pointers
// (one chunk per 2 MiB of guest memory), each page allocated on its first
// write. An untouched 4 GiB guest costs its 2048 chunk slots and a 128 KiB
// dirty bitmap, nothing more; reading a page that was never written yields
// zeros without allocating it.
const (
	chunkShift = 9
	chunkPages = 1 << chunkShift
	chunkMask  = chunkPages - 1
)

type page = [libxl.PageSize]byte

type chunk [chunkPages]*page

// zeroPage is compared against to keep all-zero writes from allocating.
var zeroPage page

// memory is guest memory with its dirty log.
//
// Concurrency: none of its own; the owning Domain's mu guards it.
type memory struct {
	pages     uint64
	chunks    []*chunk
	dirty     []uint64 // bit per page; set by every write, always tracked
	populated uint64   // pages allocated
}

func newMemory(pages uint64) memory {
	return memory{
		pages:  pages,
		chunks: make([]*chunk, (pages+chunkPages-1)/chunkPages),
		dirty:  make([]uint64, (pages+63)/64),
	}
}

// get returns page p, or nil if it was never written.
// Preconditions: p < m.pages.
func (m *memory) get(p libxl.PFN) *page {
	c := m.chunks[p>>chunkShift]
	if c == nil {
		return nil
	}
	return c[p&chunkMask]
}

// writable returns page p for writing, allocating it, and logs it dirty.
// Preconditions: p < m.pages.
func (m *memory) writable(p libxl.PFN) *page {
	m.dirty[p/64] |= 1 << (p % 64)
	c := m.chunks[p>>chunkShift]
	if c == nil {
		c = new(chunk)
		m.chunks[p>>chunkShift] = c
	}
	pg := c[p&chunkMask]
	if pg == nil {
		pg = new(page)
		c[p&chunkMask] = pg
		m.populated++
	}
	return pg
}

// zero clears page p as a guest write would, without allocating it if it
// is absent. Preconditions: p < m.pages.
func (m *memory) zero(p libxl.PFN) {
	m.dirty[p/64] |= 1 << (p % 64)
	if pg := m.get(p); pg != nil {
		clear(pg[:])
	}
}

// store writes one whole page. All-zero data into an absent page stays
// absent, so a replica of a sparse guest stays sparse through initial sync.
// Preconditions: p < m.pages, len(data) == PageSize.
func (m *memory) store(p libxl.PFN, data []byte) {
	if m.get(p) == nil && bytes.Equal(data, zeroPage[:]) {
		m.dirty[p/64] |= 1 << (p % 64)
		return
	}
	copy(m.writable(p)[:], data)
}

// load copies page p into dst. Preconditions: p < m.pages,
// len(dst) == PageSize.
func (m *memory) load(p libxl.PFN, dst []byte) {
	if pg := m.get(p); pg != nil {
		copy(dst, pg[:])
	} else {
		clear(dst)
	}
}

// u64 reads the little-endian word at byte offset off of page p.
func (m *memory) u64(p libxl.PFN, off int) uint64 {
	pg := m.get(p)
	if pg == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(pg[off:])
}

// putU64 writes a little-endian word at byte offset off of page p.
func (m *memory) putU64(p libxl.PFN, off int, v uint64) {
	binary.LittleEndian.PutUint64(m.writable(p)[off:], v)
}

// markAll logs every page dirty (log-dirty switched on).
func (m *memory) markAll() {
	for i := range m.dirty {
		m.dirty[i] = ^uint64(0)
	}
	if r := m.pages % 64; r != 0 {
		m.dirty[len(m.dirty)-1] = 1<<r - 1
	}
}

// clearLog discards the dirty log.
func (m *memory) clearLog() { clear(m.dirty) }

// readAndClear ORs the dirty log into dst and clears it.
// Preconditions: len(dst) >= len(m.dirty).
func (m *memory) readAndClear(dst []uint64) {
	for i, w := range m.dirty {
		if w != 0 {
			dst[i] |= w
			m.dirty[i] = 0
		}
	}
}
