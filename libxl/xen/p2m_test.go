package xen

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/xl-kemari/xl-kemari/libxl"
)

// fakeMachine is machine memory: frames by MFN.
type fakeMachine map[uint64][]byte

func (m fakeMachine) readFrames(mfns []uint64, dst []byte) error {
	for i, f := range mfns {
		p, ok := m[f]
		if !ok {
			return fmt.Errorf("no frame %#x", f)
		}
		copy(dst[i*libxl.PageSize:], p)
	}
	return nil
}

func (m fakeMachine) put(mfn uint64, words map[int]uint64) {
	p := make([]byte, libxl.PageSize)
	for i, w := range words {
		binary.LittleEndian.PutUint64(p[i*8:], w)
	}
	m[mfn] = p
}

// guestP2M is the p2m the tests publish: PFN i lives at MFN 0x10000+3i, one
// hole, one identity entry.
func guestP2M(n int) []uint64 {
	p := make([]uint64, n)
	for i := range p {
		p[i] = 0x10000 + 3*uint64(i)
	}
	p[5] = invalidMFN
	p[6] = 1<<62 | 0xa0
	return p
}

// putP2MPages stores p2m as pages at MFNs base, base+1, ... and returns them.
func putP2MPages(m fakeMachine, p2m []uint64, base uint64) []uint64 {
	var frames []uint64
	for i := 0; i < len(p2m); i += entriesPerPage {
		w := map[int]uint64{}
		for j := 0; j < entriesPerPage && i+j < len(p2m); j++ {
			w[j] = p2m[i+j]
		}
		f := base + uint64(len(frames))
		m.put(f, w)
		frames = append(frames, f)
	}
	return frames
}

func checkP2M(t *testing.T, got, want []uint64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("p2m has %d entries, want %d", len(got), len(want))
	}
	for i := range want {
		w := want[i]
		if w&p2mFlagBits != 0 {
			w = invalidMFN
		}
		if got[i] != w {
			t.Fatalf("p2m[%d] = %#x, want %#x", i, got[i], w)
		}
	}
}

func TestP2MTree(t *testing.T) {
	m := fakeMachine{}
	want := guestP2M(1500) // 3 p2m pages, one frame list
	frames := putP2MPages(m, want, 0x500)
	fl := map[int]uint64{}
	for i, f := range frames {
		fl[i] = f
	}
	m.put(0x400, fl)
	m.put(0x300, map[int]uint64{0: 0x400})
	got, err := readP2M(m, p2mAnchor{MaxPFN: 1500, FrameListList: 0x300})
	if err != nil {
		t.Fatal(err)
	}
	checkP2M(t, got, want)
}

func TestP2MLinear(t *testing.T) {
	m := fakeMachine{}
	want := guestP2M(1100)
	frames := putP2MPages(m, want, 0x900)
	// vaddr in the kernel half; the list crosses an L1 table boundary so the
	// walk must use two L1 tables.
	const va = 0xffffc90000000000 + 510*libxl.PageSize
	idx := func(v uint64, level uint) int { return int((v >> (12 + 9*(level-1))) & 511) }
	l1a, l1b := map[int]uint64{}, map[int]uint64{}
	for i, f := range frames {
		v := uint64(va) + uint64(i)*libxl.PageSize
		if idx(v, 2) == idx(va, 2) {
			l1a[idx(v, 1)] = f<<12 | ptePresent
		} else {
			l1b[idx(v, 1)] = f<<12 | ptePresent
		}
	}
	m.put(0x21, l1a)
	m.put(0x22, l1b)
	m.put(0x31, map[int]uint64{idx(va, 2): 0x21<<12 | ptePresent, idx(va, 2) + 1: 0x22<<12 | ptePresent})
	m.put(0x41, map[int]uint64{idx(va, 3): 0x31<<12 | ptePresent})
	m.put(0x51, map[int]uint64{idx(va, 4): 0x41<<12 | ptePresent})
	got, err := readP2M(m, p2mAnchor{MaxPFN: 1100, FrameListList: invalidMFN, CR3: 0x51 << 12, VAddr: va})
	if err != nil {
		t.Fatal(err)
	}
	checkP2M(t, got, want)
}

func TestP2MLinearSuperpage(t *testing.T) {
	m := fakeMachine{}
	want := guestP2M(700)
	// A 2 MiB superpage at MFN 0x200000 covers the list at va.
	const va = 0xffff888000000000 + 3*libxl.PageSize
	for i := range 2 {
		w := map[int]uint64{}
		for j := 0; j < entriesPerPage && i*entriesPerPage+j < len(want); j++ {
			w[j] = want[i*entriesPerPage+j]
		}
		m.put(0x200000+3+uint64(i), w)
	}
	idx := func(v uint64, level uint) int { return int((v >> (12 + 9*(level-1))) & 511) }
	m.put(0x31, map[int]uint64{idx(va, 2): 0x200000<<12 | ptePresent | ptePSE})
	m.put(0x41, map[int]uint64{idx(va, 3): 0x31<<12 | ptePresent})
	m.put(0x51, map[int]uint64{idx(va, 4): 0x41<<12 | ptePresent})
	got, err := readP2M(m, p2mAnchor{MaxPFN: 700, CR3: 0x51 << 12, VAddr: va})
	if err != nil {
		t.Fatal(err)
	}
	checkP2M(t, got, want)
}

func TestP2MErrors(t *testing.T) {
	m := fakeMachine{}
	m.put(0x51, nil) // an empty L4: nothing mapped
	for name, a := range map[string]p2mAnchor{
		"no max_pfn":          {FrameListList: 1},
		"update in progress":  {MaxPFN: 10, FrameListList: 1, Generation: 3},
		"nothing published":   {MaxPFN: 10},
		"missing frame":       {MaxPFN: 10, FrameListList: 0x999},
		"unmapped linear p2m": {MaxPFN: 10, CR3: 0x51 << 12, VAddr: 0xffffc90000000000},
		"tree too large":      {MaxPFN: entriesPerPage*entriesPerPage*entriesPerPage + 1, FrameListList: 0x51},
	} {
		if _, err := readP2M(m, a); !errors.Is(err, ErrP2M) {
			t.Errorf("%s: err = %v, want ErrP2M", name, err)
		}
	}
}
