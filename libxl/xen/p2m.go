package xen

import (
	"encoding/binary"
	"fmt"

	"github.com/xl-kemari/xl-kemari/libxl"
)

// A PV guest is not translated: Xen's foreign-mapping interface takes
// machine frame numbers (MFNs) for it, while the dirty log and the contract
// speak guest PFNs. The guest itself keeps the pfn->mfn table (its p2m) and
// publishes where it is in shared_info.arch; this file reads it the two ways
// the public header (xen/arch-x86/xen.h) allows, as libxenguest's PV save
// code does: the three-level frame-list tree, or the linear list at
// p2m_vaddr in the address space rooted at p2m_cr3 (Linux uses the latter
// once it sets SIF_VIRT_P2M_4TOOLS).

// frameReader copies whole machine frames of one PV domain into dst, one
// libxl.PageSize slot per frame, in order. The cgo backend implements it with
// xenforeignmemory_map; tests implement it with a map.
type frameReader interface {
	readFrames(mfns []uint64, dst []byte) error
}

// p2mAnchor is the part of shared_info.arch (struct arch_shared_info) that
// locates a PV guest's p2m.
type p2mAnchor struct {
	MaxPFN        uint64 // number of valid p2m entries
	FrameListList uint64 // MFN of the frame-list list; 0 unset, ^0 invalid
	CR3           uint64 // cr3 of the address space holding the linear list
	VAddr         uint64 // virtual address of the linear list
	Generation    uint64 // odd while the guest changes the list's mappings
}

const (
	entriesPerPage = libxl.PageSize / 8
	// invalidMFN marks a PFN with no frame behind it (a balloon hole), as
	// Linux's INVALID_P2M_ENTRY does.
	invalidMFN = ^uint64(0)
	// p2mFlagBits are Linux's IDENTITY_FRAME_BIT and FOREIGN_FRAME_BIT: an
	// entry with either set is not a frame the guest owns.
	p2mFlagBits = 3 << 62
	ptePresent  = 1
	ptePSE      = 1 << 7
	pteMFNMask  = 0x000ffffffffff000
)

// readP2M returns the guest's p2m: entry i is the MFN of PFN i, or
// invalidMFN.
func readP2M(r frameReader, a p2mAnchor) ([]uint64, error) {
	if a.MaxPFN == 0 {
		return nil, fmt.Errorf("%w: shared_info.arch.max_pfn is 0 (guest has not published its p2m yet)", ErrP2M)
	}
	if a.Generation&1 != 0 {
		return nil, fmt.Errorf("%w: p2m update in progress (generation %d)", ErrP2M, a.Generation)
	}
	nPages := (a.MaxPFN + entriesPerPage - 1) / entriesPerPage
	var frames []uint64
	var err error
	switch {
	case a.FrameListList != 0 && a.FrameListList != invalidMFN:
		frames, err = p2mFramesFromTree(r, a.FrameListList, nPages)
	case a.CR3 != 0:
		frames, err = p2mFramesFromLinear(r, a.CR3, a.VAddr, nPages)
	default:
		return nil, fmt.Errorf("%w: neither a frame-list tree nor a linear p2m is published", ErrP2M)
	}
	if err != nil {
		return nil, err
	}
	buf := make([]byte, len(frames)*libxl.PageSize)
	if err := r.readFrames(frames, buf); err != nil {
		return nil, fmt.Errorf("%w: p2m pages: %w", ErrP2M, err)
	}
	p2m := make([]uint64, a.MaxPFN)
	for i := range p2m {
		m := binary.LittleEndian.Uint64(buf[i*8:])
		if m&p2mFlagBits != 0 {
			m = invalidMFN
		}
		p2m[i] = m
	}
	return p2m, nil
}

// p2mFramesFromTree walks frame-list list -> frame lists -> p2m frames.
func p2mFramesFromTree(r frameReader, fll uint64, nPages uint64) ([]uint64, error) {
	nLists := (nPages + entriesPerPage - 1) / entriesPerPage
	if nLists > entriesPerPage {
		return nil, fmt.Errorf("%w: %d p2m pages exceed the 3-level tree", ErrP2M, nPages)
	}
	page := make([]byte, libxl.PageSize)
	if err := r.readFrames([]uint64{fll}, page); err != nil {
		return nil, fmt.Errorf("%w: frame-list list mfn %#x: %w", ErrP2M, fll, err)
	}
	lists := make([]uint64, nLists)
	for i := range lists {
		lists[i] = binary.LittleEndian.Uint64(page[i*8:])
	}
	buf := make([]byte, len(lists)*libxl.PageSize)
	if err := r.readFrames(lists, buf); err != nil {
		return nil, fmt.Errorf("%w: frame lists: %w", ErrP2M, err)
	}
	frames := make([]uint64, nPages)
	for i := range frames {
		frames[i] = binary.LittleEndian.Uint64(buf[i*8:])
	}
	return frames, nil
}

// p2mFramesFromLinear translates the virtual addresses of the linear list
// through the guest's 4-level page tables (64-bit PV: cr3 holds the L4 MFN
// shifted by the page size).
func p2mFramesFromLinear(r frameReader, cr3, vaddr, nPages uint64) ([]uint64, error) {
	tables := map[uint64][]byte{}
	table := func(mfn uint64) ([]byte, error) {
		if t, ok := tables[mfn]; ok {
			return t, nil
		}
		t := make([]byte, libxl.PageSize)
		if err := r.readFrames([]uint64{mfn}, t); err != nil {
			return nil, fmt.Errorf("%w: page table mfn %#x: %w", ErrP2M, mfn, err)
		}
		tables[mfn] = t
		return t, nil
	}
	frames := make([]uint64, nPages)
	for i := range frames {
		va := vaddr + uint64(i)*libxl.PageSize
		mfn := cr3 >> 12
		for level := 4; level >= 1; level-- {
			t, err := table(mfn)
			if err != nil {
				return nil, err
			}
			shift := 12 + 9*uint(level-1)
			pte := binary.LittleEndian.Uint64(t[((va>>shift)&511)*8:])
			if pte&ptePresent == 0 {
				return nil, fmt.Errorf("%w: p2m page %d (va %#x) not mapped at level %d", ErrP2M, i, va, level)
			}
			mfn = (pte & pteMFNMask) >> 12
			if level > 1 && level < 4 && pte&ptePSE != 0 {
				// A superpage: the frame is an offset into it.
				mfn += (va >> 12) & (1<<(shift-12) - 1)
				break
			}
		}
		frames[i] = mfn
	}
	return frames, nil
}
