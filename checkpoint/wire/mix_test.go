package wire

import (
	"math/rand/v2"
)

// pageMix generates deterministic batches of guest pages of one kind, and
// successive versions of them, so that XOR has something to refer to.
type pageMix struct {
	name string
	// zero, text, random and edit are the shares (out of 100) of pages of
	// each kind in a batch; edit pages are text pages that change by a few
	// words from one version to the next.
	zero, text, random, edit int
}

var mixes = []pageMix{
	{name: "zero", zero: 100},
	{name: "text", text: 100},
	{name: "random", random: 100},
	{name: "edit", edit: 100},
	// A checkpoint as a busy guest produces it: a hot set rewritten in
	// place, fresh heap and page-cache pages, some zeroed pages and some
	// high-entropy data (compressed or encrypted buffers).
	{name: "mixed", zero: 20, text: 25, random: 10, edit: 45},
}

var words = []string{"the", "kernel", "page", "of", "memory", "xen", "domain", "epoch", "int", "return",
	"struct", "0x0000", "NULL", "if", "for", "error", "static", "void", "char", "\n", "    ", "{", "}", ";"}

func fillText(rng *rand.Rand, pg []byte) {
	i := 0
	for i < len(pg) {
		w := words[rng.IntN(len(words))]
		i += copy(pg[i:], w)
		if i < len(pg) {
			pg[i] = ' '
			i++
		}
	}
}

// batches returns versions+1 versions of one batch of n pages: version 0 is
// fresh, each later version edits the edit pages of the one before.
func (m pageMix) batches(seed uint64, n, versions int) (pfns []uint64, data [][]byte) {
	rng := rand.New(rand.NewPCG(seed, 1))
	pfns = make([]uint64, n)
	for i := range pfns {
		pfns[i] = uint64(i)*3 + 7
	}
	kinds := make([]int, n)
	for i := range kinds {
		r := rng.IntN(100)
		switch {
		case r < m.zero:
			kinds[i] = 0
		case r < m.zero+m.text:
			kinds[i] = 1
		case r < m.zero+m.text+m.random:
			kinds[i] = 2
		default:
			kinds[i] = 3
		}
	}
	v0 := make([]byte, n*PageSize)
	for i, k := range kinds {
		pg := v0[i*PageSize : (i+1)*PageSize]
		switch k {
		case 1, 3:
			fillText(rng, pg)
		case 2:
			for j := range pg {
				pg[j] = byte(rng.Uint32())
			}
		}
	}
	data = append(data, v0)
	for v := 1; v <= versions; v++ {
		next := append([]byte(nil), data[v-1]...)
		for i, k := range kinds {
			pg := next[i*PageSize : (i+1)*PageSize]
			switch k {
			case 1, 2:
				// text and random pages are rewritten wholesale
				if k == 1 {
					fillText(rng, pg)
				} else {
					for j := range pg {
						pg[j] = byte(rng.Uint32())
					}
				}
			case 3:
				// a few counters and pointers change
				for e := 0; e < 1+rng.IntN(6); e++ {
					o := rng.IntN(PageSize/8) * 8
					le.PutUint64(pg[o:], rng.Uint64()>>uint(rng.IntN(48)))
				}
			}
		}
		data = append(data, next)
	}
	return pfns, data
}
