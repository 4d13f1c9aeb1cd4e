package libxcstream

import (
	"encoding/binary"
	"fmt"
)

// PageShift and PageSize are the x86 page geometry every stream this
// package accepts has.
const (
	PageShift = 12
	PageSize  = 1 << PageShift
)

// PageType is a PAGE_DATA entry's XEN_DOMCTL_PFINFO_* type (bits 63-60 of
// the entry). For a PV guest it tells the restorer which pages are page
// tables to pin; the page contents of those are canonical (PFNs, not this
// host's MFNs), which is what makes them portable.
type PageType uint8

// Page types (XEN_DOMCTL_PFINFO_* >> 28).
const (
	PageNormal  PageType = 0x0 // NOTAB
	PageL1      PageType = 0x1
	PageL2      PageType = 0x2
	PageL3      PageType = 0x3
	PageL4      PageType = 0x4
	PageL1Pin   PageType = 0x9
	PageL2Pin   PageType = 0xa
	PageL3Pin   PageType = 0xb
	PageL4Pin   PageType = 0xc
	PageBroken  PageType = 0xd
	PageXAlloc  PageType = 0xe // allocate only, no data
	PageInvalid PageType = 0xf // XTAB: no frame behind the pfn
)

// Valid reports whether t is a type the spec defines (5-8 are reserved,
// and a restorer must refuse them).
func (t PageType) Valid() bool { return t <= PageL4 || (t >= PageL1Pin && t <= PageInvalid) }

// HasData reports whether entries of this type carry page contents.
func (t PageType) HasData() bool { return t != PageBroken && t != PageXAlloc && t != PageInvalid }

const (
	pfnMask      = (1 << 52) - 1
	reservedMask = 0xff << 52
	typeShift    = 60
	// MaxPFN is the largest PFN an entry can hold.
	MaxPFN = pfnMask
)

// Page is one entry of a PAGE_DATA record.
type Page struct {
	PFN  uint64
	Type PageType
}

// Entry packs p as the stream's 64-bit pfn word.
func (p Page) Entry() uint64 { return p.PFN | uint64(p.Type)<<typeShift }

// PageData is a decoded PAGE_DATA record: the entries in order, and the
// contents of those whose type has data, concatenated in the same order.
type PageData struct {
	Pages []Page
	Data  []byte // PageSize bytes per entry with HasData, in order
}

// ParsePageData decodes a PAGE_DATA body. Data aliases body.
func ParsePageData(body []byte) (PageData, error) {
	if len(body) < 8 {
		return PageData{}, fmt.Errorf("%w: PAGE_DATA of %d bytes", ErrFormat, len(body))
	}
	count := binary.LittleEndian.Uint32(body)
	if count == 0 {
		return PageData{}, fmt.Errorf("%w: PAGE_DATA with count 0", ErrFormat)
	}
	if binary.LittleEndian.Uint32(body[4:]) != 0 {
		return PageData{}, fmt.Errorf("%w: PAGE_DATA reserved field set", ErrFormat)
	}
	if uint64(count) > uint64(len(body)-8)/8 {
		return PageData{}, fmt.Errorf("%w: PAGE_DATA count %d does not fit %d bytes", ErrFormat, count, len(body))
	}
	pd := PageData{Pages: make([]Page, count)}
	withData := 0
	for i := range pd.Pages {
		e := binary.LittleEndian.Uint64(body[8+8*i:])
		if e&reservedMask != 0 {
			return PageData{}, fmt.Errorf("%w: PAGE_DATA entry %d (%#x) has reserved bits set", ErrFormat, i, e)
		}
		p := Page{PFN: e & pfnMask, Type: PageType(e >> typeShift)}
		if !p.Type.Valid() {
			return PageData{}, fmt.Errorf("%w: PAGE_DATA entry %d: pfn %#x has reserved type %#x", ErrFormat, i, p.PFN, p.Type)
		}
		if p.Type.HasData() {
			withData++
		}
		pd.Pages[i] = p
	}
	data := body[8+8*int(count):]
	if len(data) != withData*PageSize {
		return PageData{}, fmt.Errorf("%w: PAGE_DATA with %d pages of data has %d data bytes, want %d", ErrFormat, withData, len(data), withData*PageSize)
	}
	pd.Data = data
	return pd, nil
}

// AppendPageData appends a PAGE_DATA body for pages, taking PageSize bytes
// from data for each page whose type has data, in order.
func AppendPageData(dst []byte, pages []Page, data []byte) ([]byte, error) {
	if len(pages) == 0 {
		return dst, fmt.Errorf("%w: PAGE_DATA needs at least one page", ErrFormat)
	}
	if uint64(len(pages)) > MaxPagesPerRecord {
		return dst, fmt.Errorf("%w: %d pages in one PAGE_DATA, at most %d", ErrFormat, len(pages), MaxPagesPerRecord)
	}
	need := 0
	for _, p := range pages {
		if p.PFN > MaxPFN || !p.Type.Valid() {
			return dst, fmt.Errorf("%w: page entry pfn %#x type %#x", ErrFormat, p.PFN, p.Type)
		}
		if p.Type.HasData() {
			need += PageSize
		}
	}
	if len(data) != need {
		return dst, fmt.Errorf("%w: %d bytes of data for %d bytes of pages", ErrFormat, len(data), need)
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(pages)))
	dst = binary.LittleEndian.AppendUint32(dst, 0)
	for _, p := range pages {
		dst = binary.LittleEndian.AppendUint64(dst, p.Entry())
	}
	return append(dst, data...), nil
}

// MaxPagesPerRecord bounds the pages a PAGE_DATA record this package
// writes holds: libxc's MAX_BATCH_SIZE, which keeps a record well under
// MaxRecordLength and the restorer's batch mapping small.
const MaxPagesPerRecord = 1024
