package sim_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/sim"
)

// dirtyGuest returns a suspended guest of 2n pages with n of them, spread
// at random, written, and those pfns in ascending order (as a dirty
// bitmap yields them).
func dirtyGuest(tb testing.TB, n int) (*sim.Hypervisor, libxl.DomID, []libxl.PFN) {
	tb.Helper()
	h, err := sim.New(nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(h.DestroyAll)
	dom, err := h.CreateDomain(sim.DomainConfig{Pages: uint64(2 * n), Paused: true})
	if err != nil {
		tb.Fatal(err)
	}
	d, _ := h.Domain(dom)
	r := rand.New(rand.NewPCG(1, uint64(n)))
	pfns := make([]libxl.PFN, 0, n)
	for _, i := range r.Perm(2 * n)[:n] {
		pfns = append(pfns, libxl.PFN(i))
	}
	slices.Sort(pfns)
	if err := d.Touch(pfns); err != nil {
		tb.Fatal(err)
	}
	return h, dom, pfns
}

// BenchmarkReadPages compares ReadPages of n dirty pages with a plain copy
// of the same number of bytes (the pause-time target is 1.5 × memcpy +
// 200 µs).
func BenchmarkReadPages(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprintf("readpages/n=%d", n), func(b *testing.B) {
			h, dom, pfns := dirtyGuest(b, n)
			dst := make([]byte, n*libxl.PageSize)
			// Fault dst in first: the reference copy's target is warm too.
			if err := h.ReadPages(dom, pfns, dst); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(dst)))
			b.ReportAllocs()
			for b.Loop() {
				if err := h.ReadPages(dom, pfns, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("memcpy/n=%d", n), func(b *testing.B) {
			src := make([]byte, n*libxl.PageSize)
			for i := range src {
				src[i] = byte(i)
			}
			dst := make([]byte, len(src))
			copy(dst, src)
			b.SetBytes(int64(len(dst)))
			for b.Loop() {
				copy(dst, src)
			}
		})
	}
}

// BenchmarkReadAndClearDirty reads the log of a 4 GiB guest with 10k
// dirty pages.
func BenchmarkReadAndClearDirty(b *testing.B) {
	h, err := sim.New(nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(h.DestroyAll)
	dom, err := h.CreateDomain(sim.DomainConfig{Pages: 1 << 20, Paused: true})
	if err != nil {
		b.Fatal(err)
	}
	d, _ := h.Domain(dom)
	if err := h.SetLogDirty(dom, true); err != nil {
		b.Fatal(err)
	}
	bm := libxl.NewBitmap(1 << 20)
	pfns := make([]libxl.PFN, 10000)
	for i := range pfns {
		pfns[i] = libxl.PFN(i * 97)
	}
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		if err := d.Touch(pfns); err != nil {
			b.Fatal(err)
		}
		bm.Reset()
		b.StartTimer()
		if err := h.ReadAndClearDirty(dom, bm); err != nil {
			b.Fatal(err)
		}
	}
}

// TestHotPathsDoNotAllocate: ReadPages and ReadAndClearDirty allocate
// nothing, whatever the batch size.
func TestHotPathsDoNotAllocate(t *testing.T) {
	h, dom, pfns := dirtyGuest(t, 2000)
	if err := h.SetLogDirty(dom, true); err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, len(pfns)*libxl.PageSize)
	bm := libxl.NewBitmap(4000)
	if a := testing.AllocsPerRun(20, func() {
		if err := h.ReadPages(dom, pfns, dst); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Errorf("ReadPages of %d pages: %v allocations", len(pfns), a)
	}
	if a := testing.AllocsPerRun(20, func() {
		if err := h.ReadAndClearDirty(dom, bm); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Errorf("ReadAndClearDirty: %v allocations", a)
	}
}
