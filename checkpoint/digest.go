package checkpoint

import (
	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/zeebo/xxh3"
)

// memDigest is a running digest of a whole guest memory: the sum, modulo
// 2^64, of one contribution per non-zero page. A page's contribution mixes
// its content hash with its PFN, so the digest can be updated per page in
// O(1) and both sides can compare whole replicas at every epoch without
// hashing all of memory (the EPOCH_END MemDigest of docs/protocol.md).
// Zero pages contribute nothing, so a fresh (zeroed) replica has digest 0.
type memDigest struct {
	sum    uint64
	hashes []uint64 // contribution of each page as last recorded
}

func newMemDigest(pages uint64) *memDigest { return &memDigest{hashes: make([]uint64, pages)} }

// contribution of one page.
func pageContribution(pfn libxl.PFN, page []byte) uint64 {
	if isZeroPage(page) {
		return 0
	}
	return splitmix(xxh3.Hash(page) ^ splitmix(uint64(pfn)+0x9e3779b97f4a7c15))
}

func splitmix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

func isZeroPage(b []byte) bool {
	for len(b) >= 64 {
		if (b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7]) != 0 ||
			string(b[:64]) != zero64 {
			return false
		}
		b = b[64:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

var zero64 = string(make([]byte, 64))

// update records pages (PageSize bytes each) at pfns.
func (d *memDigest) update(pfns []libxl.PFN, pages []byte) {
	for i, p := range pfns {
		if uint64(p) >= uint64(len(d.hashes)) {
			continue // the backend rejected it already
		}
		h := pageContribution(p, pages[i*libxl.PageSize:(i+1)*libxl.PageSize])
		d.sum += h - d.hashes[p]
		d.hashes[p] = h
	}
}

// reset forgets everything (a fresh, zeroed replica).
func (d *memDigest) reset() {
	clear(d.hashes)
	d.sum = 0
}

// stagedDigest tracks the changes an epoch under reception would make,
// applied to the committed digest only when the epoch commits.
type stagedDigest struct {
	base  *memDigest
	delta uint64
	news  map[libxl.PFN]uint64
}

func (s *stagedDigest) reset(base *memDigest) {
	s.base = base
	s.delta = 0
	if s.news == nil {
		s.news = map[libxl.PFN]uint64{}
	}
	clear(s.news)
}

func (s *stagedDigest) put(p libxl.PFN, page []byte) {
	if uint64(p) >= uint64(len(s.base.hashes)) {
		return
	}
	h := pageContribution(p, page)
	old, ok := s.news[p]
	if !ok {
		old = s.base.hashes[p]
	}
	s.delta += h - old
	s.news[p] = h
}

// sum is the digest the replica would have after commit.
func (s *stagedDigest) sum() uint64 { return s.base.sum + s.delta }

// commit applies the staged changes to the base digest.
func (s *stagedDigest) commit() {
	for p, h := range s.news {
		s.base.hashes[p] = h
	}
	s.base.sum += s.delta
	s.reset(s.base)
}
