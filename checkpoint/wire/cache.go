package wire

// pageCache keeps the last copy of each page the sender sent, up to a fixed
// number of pages, evicting the least recently sent. Slots live in arena
// blocks allocated as the cache fills, so a small guest never pays for the
// whole bound.
type pageCache struct {
	max    int
	idx    map[uint64]int32
	pfn    []uint64
	prev   []int32
	next   []int32
	head   int32 // most recently used, -1 when empty
	tail   int32 // least recently used
	blocks [][]byte
	free   []int32
}

const cacheBlockPages = 256

func newPageCache(cacheBytes int) *pageCache {
	n := cacheBytes / PageSize
	return &pageCache{max: n, idx: make(map[uint64]int32, min(n, 1<<16)), head: -1, tail: -1}
}

// page returns the bytes of slot s.
func (c *pageCache) page(s int32) []byte {
	b := c.blocks[s/cacheBlockPages]
	o := int(s%cacheBlockPages) * PageSize
	return b[o : o+PageSize : o+PageSize]
}

// get returns the cached copy of pfn and marks it most recently used.
func (c *pageCache) get(pfn uint64) ([]byte, bool) {
	s, ok := c.idx[pfn]
	if !ok {
		return nil, false
	}
	c.touch(s)
	return c.page(s), true
}

// put returns the slot for pfn to copy its new contents into, evicting the
// least recently used page if the cache is full; nil if the cache is off.
func (c *pageCache) put(pfn uint64) []byte {
	if s, ok := c.idx[pfn]; ok {
		c.touch(s)
		return c.page(s)
	}
	if c.max == 0 {
		return nil
	}
	var s int32
	switch {
	case len(c.free) > 0:
		s = c.free[len(c.free)-1]
		c.free = c.free[:len(c.free)-1]
	case len(c.pfn) < c.max:
		s = int32(len(c.pfn))
		if int(s)%cacheBlockPages == 0 {
			c.blocks = append(c.blocks, make([]byte, min(cacheBlockPages, c.max-int(s))*PageSize))
		}
		c.pfn = append(c.pfn, 0)
		c.prev = append(c.prev, -1)
		c.next = append(c.next, -1)
	default:
		s = c.tail
		c.unlink(s)
		delete(c.idx, c.pfn[s])
	}
	c.pfn[s] = pfn
	c.idx[pfn] = s
	c.pushFront(s)
	return c.page(s)
}

// remove forgets pfn.
func (c *pageCache) remove(pfn uint64) {
	s, ok := c.idx[pfn]
	if !ok {
		return
	}
	delete(c.idx, pfn)
	c.unlink(s)
	c.free = append(c.free, s)
}

func (c *pageCache) reset() {
	clear(c.idx)
	c.head, c.tail = -1, -1
	c.free = c.free[:0]
	for s := range c.pfn {
		c.free = append(c.free, int32(len(c.pfn)-1-s))
	}
}

func (c *pageCache) touch(s int32) {
	if c.head == s {
		return
	}
	c.unlink(s)
	c.pushFront(s)
}

func (c *pageCache) unlink(s int32) {
	p, n := c.prev[s], c.next[s]
	if p >= 0 {
		c.next[p] = n
	} else {
		c.head = n
	}
	if n >= 0 {
		c.prev[n] = p
	} else {
		c.tail = p
	}
	c.prev[s], c.next[s] = -1, -1
}

func (c *pageCache) pushFront(s int32) {
	c.prev[s] = -1
	c.next[s] = c.head
	if c.head >= 0 {
		c.prev[c.head] = s
	}
	c.head = s
	if c.tail < 0 {
		c.tail = s
	}
}
