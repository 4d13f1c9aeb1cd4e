package libxcstream

import (
	"encoding/binary"
	"fmt"
	"io"
	"slices"

	"github.com/xl-kemari/xl-kemari/libxl"
)

// Private record types, in the spec's optional range so that no restorer
// would choke on one; they only ever travel inside libxl.State blobs and
// are never written into a stream for libxc.
const (
	// RecKemariHeader carries the stream's image and domain headers
	// (ImageHeaderLen+DomainHeaderLen bytes, as in the stream) in the
	// first checkpoint of a stream.
	RecKemariHeader RecordType = 0x80004b01
	// RecKemariPagesHere marks where, among the other records, the
	// checkpoint's PAGE_DATA records go. Empty body.
	RecKemariPagesHere RecordType = 0x80004b02
	// RecKemariPageTypes lists the pages of the checkpoint whose type is
	// not PageNormal: a u64 entry (Page.Entry) each. Every page of the
	// checkpoint not listed is PageNormal.
	RecKemariPageTypes RecordType = 0x80004b03
	// RecKemariRoundEnd is written by the primary itself into the pipe
	// xc_domain_save writes to, between two records, when a live pre-copy
	// round has ended (libxc is then blocked in its precopy_policy
	// callback): the reader knows the round is whole once it reads it.
	// Empty body; a Capture refuses it.
	RecKemariRoundEnd RecordType = 0x80004b04
)

// Capture gathers what a libxc save stream carries up to a CHECKPOINT
// record: the latest copy and type of every page sent (a live pre-copy
// sends a page several times; only the last counts) and the other records
// in order, split by whether they came before or after the first page.
// It is the primary side's staging area between the pipe xc_domain_save
// writes and the engine's ReadAndClearDirty/ReadPages/CaptureState.
//
// A Capture is not safe for concurrent use.
type Capture struct {
	header *Header
	pre    []Record
	post   []Record
	index  map[uint64]int // pfn -> slot
	pages  []Page         // by slot
	// chunks hold PageSize bytes per slot (zeros for types without
	// data), MaxPagesPerRecord slots a chunk: a whole guest's first
	// capture grows without reallocating what it holds.
	chunks [][]byte
	done   bool // a CHECKPOINT closed it
}

// NewCapture returns an empty Capture.
func NewCapture() *Capture { return &Capture{index: map[uint64]int{}} }

// SetHeader records the stream's headers: the capture is the stream's
// first, so its states carry them for the restorer.
func (c *Capture) SetHeader(h Header) { c.header = &h }

// Add takes the next record of the stream. It returns true when rec is
// the CHECKPOINT that completes the capture; later records are refused
// with ErrOrder. An END record also completes it but is reported with
// ErrOrder: a checkpointed stream that ends has stopped.
func (c *Capture) Add(rec Record) (bool, error) {
	if c.done {
		return false, fmt.Errorf("%w: %v after CHECKPOINT", ErrOrder, rec.Type)
	}
	switch rec.Type {
	case RecCheckpoint:
		c.done = true
		return true, nil
	case RecEnd:
		c.done = true
		return false, fmt.Errorf("%w: END: the saver ended the stream", ErrOrder)
	case RecPageData:
		pd, err := ParsePageData(rec.Body)
		if err != nil {
			return false, err
		}
		c.addPages(pd)
		return false, nil
	case RecKemariHeader, RecKemariPagesHere, RecKemariPageTypes, RecKemariRoundEnd:
		return false, fmt.Errorf("%w: private record %v in a libxc stream", ErrFormat, rec.Type)
	case RecCheckpointDirtyPFNList:
		return false, fmt.Errorf("%w: %v (COLO back channel) in a save stream", ErrOrder, rec.Type)
	}
	r := Record{Type: rec.Type, Body: slices.Clone(rec.Body)}
	if len(c.pages) == 0 {
		c.pre = append(c.pre, r)
	} else {
		c.post = append(c.post, r)
	}
	return false, nil
}

func (c *Capture) addPages(pd PageData) {
	off := 0
	for _, p := range pd.Pages {
		slot, ok := c.index[p.PFN]
		if !ok {
			slot = len(c.pages)
			c.index[p.PFN] = slot
			c.pages = append(c.pages, p)
			if slot%MaxPagesPerRecord == 0 {
				c.chunks = append(c.chunks, make([]byte, MaxPagesPerRecord*PageSize))
			}
		}
		c.pages[slot] = p
		dst := c.SlotData(slot)
		if p.Type.HasData() {
			copy(dst, pd.Data[off:off+PageSize])
			off += PageSize
		} else {
			clear(dst)
		}
	}
}

// Complete reports whether a CHECKPOINT (or END) closed the capture.
func (c *Capture) Complete() bool { return c.done }

// Len is the number of distinct pages captured.
func (c *Capture) Len() int { return len(c.pages) }

// Slots returns the captured PFNs in capture order (slot i holds
// Slots()[i]), the order SlotData serves them in without a copy.
func (c *Capture) Slots() []libxl.PFN {
	out := make([]libxl.PFN, len(c.pages))
	for i, p := range c.pages {
		out[i] = libxl.PFN(p.PFN)
	}
	return out
}

// SlotData returns the captured contents of slot i, aliased: valid until
// the capture is dropped.
func (c *Capture) SlotData(i int) []byte {
	off := (i % MaxPagesPerRecord) * PageSize
	return c.chunks[i/MaxPagesPerRecord][off : off+PageSize]
}

// AppendPFNs appends the captured PFNs, ascending, to dst.
func (c *Capture) AppendPFNs(dst []libxl.PFN) []libxl.PFN {
	n := len(dst)
	for _, p := range c.pages {
		dst = append(dst, libxl.PFN(p.PFN))
	}
	slices.Sort(dst[n:])
	return dst
}

// ReadPage copies the captured contents of pfn into dst (PageSize bytes;
// zeros for a page without data) and reports whether pfn was captured.
func (c *Capture) ReadPage(pfn uint64, dst []byte) bool {
	slot, ok := c.index[pfn]
	if !ok {
		return false
	}
	copy(dst[:PageSize], c.SlotData(slot))
	return true
}

// Type returns the captured type of pfn (PageNormal if not captured).
func (c *Capture) Type(pfn uint64) PageType {
	if slot, ok := c.index[pfn]; ok {
		return c.pages[slot].Type
	}
	return PageNormal
}

// Records returns the non-page records in stream order, and how many of
// them came before the first page.
func (c *Capture) Records() (recs []Record, pre int) {
	return append(slices.Clip(c.pre), c.post...), len(c.pre)
}

// AppendStates appends the capture's non-page content as opaque blobs for
// the engine to ship: each blob's Data is one framed record (AppendRecord),
// vCPU records as libxl.StateVCPU indexed by vCPU id, the rest as
// libxl.StatePlatform indexed by record type; then the RecKemariPagesHere
// marker at the first page's place and, last, RecKemariPageTypes.
func (c *Capture) AppendStates(dst []libxl.State) []libxl.State {
	if c.header != nil {
		dst = append(dst, recordState(Record{Type: RecKemariHeader, Body: c.header.Append(nil)}))
	}
	for _, r := range c.pre {
		dst = append(dst, recordState(r))
	}
	dst = append(dst, recordState(Record{Type: RecKemariPagesHere}))
	for _, r := range c.post {
		dst = append(dst, recordState(r))
	}
	var types []byte
	for _, p := range c.pages {
		if p.Type != PageNormal {
			types = binary.LittleEndian.AppendUint64(types, p.Entry())
		}
	}
	return append(dst, recordState(Record{Type: RecKemariPageTypes, Body: types}))
}

func recordState(r Record) libxl.State {
	st := libxl.State{Kind: libxl.StatePlatform, Index: uint32(r.Type), Data: AppendRecord(nil, r)}
	if r.Type.IsVCPU() && len(r.Body) >= 4 {
		st.Kind, st.Index = libxl.StateVCPU, binary.LittleEndian.Uint32(r.Body)
	}
	return st
}

// Encoder writes the standby's side of route (a): a libxl migration
// stream (checkpointed, REMUS) for libxl_domain_create_restore, one
// committed checkpoint at a time. The first checkpoint opens the stream
// (libxl header, LIBXC_CONTEXT, the libxc headers from RecKemariHeader);
// each ends with libxc's CHECKPOINT and libxl's CHECKPOINT_END, so that
// whatever the restorer has read when the stream stops is a whole
// checkpoint it can fail over to.
//
// An Encoder is not safe for concurrent use.
type Encoder struct {
	started bool
}

// Started reports whether the stream's headers have been written.
func (e *Encoder) Started() bool { return e.started }

// AppendCheckpoint appends one checkpoint: the pages pfns (PageSize bytes
// each from data, in order; their types from the RecKemariPageTypes blob)
// placed among the records of states as Capture.AppendStates laid them
// out. On error dst is returned unchanged in length and the Encoder state
// is unchanged.
func (e *Encoder) AppendCheckpoint(dst []byte, pfns []libxl.PFN, data []byte, states []libxl.State) ([]byte, error) {
	if len(data) < len(pfns)*PageSize {
		return dst, fmt.Errorf("%w: %d bytes of data for %d pages", ErrFormat, len(data), len(pfns))
	}
	n0 := len(dst)
	err := e.encode(pfns, func(i int) []byte { return data[i*PageSize : (i+1)*PageSize] }, states,
		func(b []byte) error { dst = append(dst, b...); return nil })
	if err != nil {
		return dst[:n0], err
	}
	return dst, nil
}

// WriteCheckpoint writes the same bytes as AppendCheckpoint to w, taking
// page i's contents from page(i), with a bounded buffer (a first
// checkpoint holds the whole guest). The checkpoint is validated before
// anything is written; a failed write leaves w holding part of it, and the
// stream must then be abandoned.
func (e *Encoder) WriteCheckpoint(w io.Writer, pfns []libxl.PFN, page func(i int) []byte, states []libxl.State) error {
	var buf []byte
	const flushAt = 4 << 20
	return e.encode(pfns, page, states, func(b []byte) error {
		buf = append(buf, b...)
		if len(b) == 0 || len(buf) >= flushAt {
			_, err := w.Write(buf)
			buf = buf[:0]
			return err
		}
		return nil
	})
}

// Check validates one checkpoint as WriteCheckpoint would, without
// writing anything: for the first checkpoint of a stream (started false)
// or a later one. A standby that writes checkpoints into the restore
// asynchronously checks each before it acknowledges it.
func Check(pfns []libxl.PFN, states []libxl.State, started bool) error {
	_, err := plan(pfns, states, started)
	return err
}

// checkpointPlan is a validated checkpoint: the stream headers (first
// checkpoint only), the records, where the pages go among them, and the
// pages' types.
type checkpointPlan struct {
	hdr   *Header
	recs  []Record
	at    int
	types map[uint64]PageType
}

// plan validates states and pfns for a stream whose headers were
// (started) or were not written yet.
func plan(pfns []libxl.PFN, states []libxl.State, started bool) (*checkpointPlan, error) {
	var (
		hdr    *Header
		recs   []Record
		at     = -1
		types  = map[uint64]PageType{}
		sawTyp bool
	)
	for i, st := range states {
		r, n, err := ParseRecord(st.Data)
		if err != nil {
			return nil, fmt.Errorf("state blob %d: %w", i, err)
		}
		if n != len(st.Data) {
			return nil, fmt.Errorf("%w: state blob %d has %d bytes after its record", ErrFormat, i, len(st.Data)-n)
		}
		switch r.Type {
		case RecKemariHeader:
			h, err := ParseHeader(r.Body)
			if err != nil {
				return nil, fmt.Errorf("state blob %d: %w", i, err)
			}
			hdr = &h
		case RecKemariPagesHere:
			if at >= 0 {
				return nil, fmt.Errorf("%w: two page markers", ErrFormat)
			}
			at = len(recs)
		case RecKemariPageTypes:
			if len(r.Body)%8 != 0 {
				return nil, fmt.Errorf("%w: page types of %d bytes", ErrFormat, len(r.Body))
			}
			for j := 0; j < len(r.Body); j += 8 {
				ent := binary.LittleEndian.Uint64(r.Body[j:])
				p := Page{PFN: ent & pfnMask, Type: PageType(ent >> typeShift)}
				if ent&reservedMask != 0 || !p.Type.Valid() {
					return nil, fmt.Errorf("%w: page type entry %#x", ErrFormat, ent)
				}
				types[p.PFN] = p.Type
			}
			sawTyp = true
		case RecPageData, RecCheckpoint, RecEnd:
			return nil, fmt.Errorf("%w: %v as a state blob", ErrFormat, r.Type)
		default:
			recs = append(recs, r)
		}
	}
	if at < 0 || !sawTyp {
		return nil, fmt.Errorf("%w: states lack the page marker or the page types (not from this backend?)", ErrFormat)
	}
	if hdr == nil && !started {
		return nil, fmt.Errorf("%w: the first checkpoint of a stream lacks its headers", ErrOrder)
	}
	if hdr != nil && started {
		return nil, fmt.Errorf("%w: stream headers in a later checkpoint (the primary restarted its stream)", ErrOrder)
	}
	seen := make(map[uint64]bool, len(pfns))
	for _, pfn := range pfns {
		if uint64(pfn) > MaxPFN {
			return nil, fmt.Errorf("%w: pfn %#x", ErrFormat, uint64(pfn))
		}
		if seen[uint64(pfn)] {
			return nil, fmt.Errorf("%w: pfn %#x twice in one checkpoint", ErrFormat, uint64(pfn))
		}
		seen[uint64(pfn)] = true
	}
	for pfn := range types {
		if !seen[pfn] {
			return nil, fmt.Errorf("%w: page type for pfn %#x, which the checkpoint does not carry", ErrFormat, pfn)
		}
	}

	return &checkpointPlan{hdr: hdr, recs: recs, at: at, types: types}, nil
}

// encode validates states and pfns, then emits the checkpoint in pieces,
// and a final empty piece.
func (e *Encoder) encode(pfns []libxl.PFN, page func(i int) []byte, states []libxl.State, emit func([]byte) error) error {
	pl, err := plan(pfns, states, e.started)
	if err != nil {
		return err
	}
	hdr, recs, at, types := pl.hdr, pl.recs, pl.at, pl.types
	var out []byte
	if hdr != nil {
		out = AppendLibxlHeader(out)
		out = AppendRecord(out, Record{Type: LibxlLibxcContext})
		out = hdr.Append(out)
	}
	for _, r := range recs[:at] {
		out = AppendRecord(out, r)
	}
	if err := emit(out); err != nil {
		return err
	}
	var (
		batch []Page
		bdata []byte
		body  []byte
	)
	for i, pfn := range pfns {
		p := Page{PFN: uint64(pfn), Type: types[uint64(pfn)]}
		batch = append(batch, p)
		if p.Type.HasData() {
			bdata = append(bdata, page(i)[:PageSize]...)
		}
		if len(batch) == MaxPagesPerRecord || i == len(pfns)-1 {
			var err error
			if body, err = AppendPageData(body[:0], batch, bdata); err != nil {
				return err
			}
			out = AppendRecord(out[:0], Record{Type: RecPageData, Body: body})
			if err := emit(out); err != nil {
				return err
			}
			batch, bdata = batch[:0], bdata[:0]
		}
	}
	out = out[:0]
	for _, r := range recs[at:] {
		out = AppendRecord(out, r)
	}
	out = AppendRecord(out, Record{Type: RecCheckpoint})
	out = AppendRecord(out, Record{Type: LibxlCheckpointEnd})
	if err := emit(out); err != nil {
		return err
	}
	e.started = true
	return emit(nil)
}
