package libxcstream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/xl-kemari/xl-kemari/libxl"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// page returns a page filled with b.
func page(b byte) []byte { return bytes.Repeat([]byte{b}, PageSize) }

func pageData(t testing.TB, pages []Page, data ...[]byte) Record {
	t.Helper()
	body, err := AppendPageData(nil, pages, bytes.Join(data, nil))
	if err != nil {
		t.Fatal(err)
	}
	return Record{Type: RecPageData, Body: body}
}

func vcpu(id uint32, fill byte) Record {
	b := binary.LittleEndian.AppendUint32(nil, id)
	b = append(b, 0, 0, 0, 0)
	return Record{Type: RecX86PVVCPUBasic, Body: append(b, bytes.Repeat([]byte{fill}, 37)...)}
}

var testHeader = Header{Version: 3, Type: DomainX86PV, PageShift: 12, XenMajor: 4, XenMinor: 17}

// pvStream is a small stream laid out as xc_domain_save lays out a PV
// guest's REMUS stream: headers, static data, p2m frames, a live round, a
// suspended round that sends a page again, end-of-checkpoint records,
// CHECKPOINT; then a second checkpoint.
func pvStream(t testing.TB) ([]byte, [][]Record) {
	first := []Record{
		{Type: RecX86PVInfo, Body: []byte{8, 4, 0, 0, 0, 0, 0, 0}},
		{Type: RecX86CPUIDPolicy, Body: bytes.Repeat([]byte{0xc1}, 24)},
		{Type: RecStaticDataEnd},
		{Type: RecX86PVP2MFrames, Body: []byte{0, 0, 0, 0, 0xff, 1, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0}},
		pageData(t, []Page{{0, PageNormal}, {1, PageL4Pin}, {2, PageL1}, {3, PageInvalid}, {7, PageNormal}}, page(1), page(2), page(3), page(4)),
		pageData(t, []Page{{0, PageNormal}, {2, PageL1Pin}}, page(0x10), page(0x11)),
		{Type: RecX86TSCInfo, Body: make([]byte, 24)},
		{Type: RecSharedInfo, Body: page(0x5a)},
		vcpu(0, 0xa0),
		{Type: RecX86PVVCPUExtended, Body: []byte{0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3}},
		{Type: RecCheckpoint},
	}
	second := []Record{
		pageData(t, []Page{{7, PageNormal}, {2, PageNormal}}, page(0x70), page(0x22)),
		{Type: RecX86TSCInfo, Body: make([]byte, 24)},
		{Type: RecSharedInfo, Body: page(0x5b)},
		vcpu(0, 0xa1),
		{Type: RecCheckpoint},
	}
	b := testHeader.Append(nil)
	for _, r := range append(slices.Clone(first), second...) {
		b = AppendRecord(b, r)
	}
	return b, [][]Record{first, second}
}

// readCaptures splits a libxc stream into captures, as the primary does.
func readCaptures(t testing.TB, b []byte) []*Capture {
	t.Helper()
	r := NewReader(bytes.NewReader(b))
	h, err := r.ReadHeader()
	if err != nil {
		t.Fatal(err)
	}
	var out []*Capture
	c := NewCapture()
	c.SetHeader(h)
	for {
		rec, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		done, err := c.Add(rec)
		if err != nil {
			t.Fatal(err)
		}
		if done {
			out = append(out, c)
			c = NewCapture()
		}
	}
	return out
}

func TestCaptureMergesPages(t *testing.T) {
	b, _ := pvStream(t)
	cs := readCaptures(t, b)
	if len(cs) != 2 {
		t.Fatalf("%d captures, want 2", len(cs))
	}
	c := cs[0]
	if got, want := c.AppendPFNs(nil), []libxl.PFN{0, 1, 2, 3, 7}; !slices.Equal(got, want) {
		t.Errorf("pfns = %v, want %v", got, want)
	}
	for _, tc := range []struct {
		pfn  uint64
		typ  PageType
		fill byte
	}{{0, PageNormal, 0x10}, {1, PageL4Pin, 2}, {2, PageL1Pin, 0x11}, {3, PageInvalid, 0}, {7, PageNormal, 4}} {
		dst := make([]byte, PageSize)
		if !c.ReadPage(tc.pfn, dst) || !bytes.Equal(dst, page(tc.fill)) || c.Type(tc.pfn) != tc.typ {
			t.Errorf("pfn %d: type %v first byte %#x, want type %v fill %#x", tc.pfn, c.Type(tc.pfn), dst[0], tc.typ, tc.fill)
		}
	}
	if c.ReadPage(4, make([]byte, PageSize)) {
		t.Error("ReadPage(4) found a page never sent")
	}
	recs, pre := c.Records()
	if pre != 4 || len(recs) != 8 {
		t.Errorf("records %d, %d before the pages; want 8, 4", len(recs), pre)
	}
	if _, err := c.Add(Record{Type: RecX86TSCInfo}); !errors.Is(err, ErrOrder) {
		t.Errorf("Add after CHECKPOINT = %v, want ErrOrder", err)
	}
	st := c.AppendStates(nil)
	var vcpus int
	for _, s := range st {
		if s.Kind == libxl.StateVCPU {
			vcpus++
			if s.Index != 0 {
				t.Errorf("vCPU blob index %d", s.Index)
			}
		}
	}
	if vcpus != 2 || len(st) != 1+8+2 {
		t.Errorf("%d blobs (%d vCPU), want 11 (2 vCPU)", len(st), vcpus)
	}
}

// decodeLibxl parses what an Encoder wrote: the libxl header, then
// records, with the libxc stream inline after LIBXC_CONTEXT. It returns the
// libxc records of each checkpoint (pages as PageData records, one page
// each, sorted) and checks the libxl framing around them.
func decodeLibxl(t testing.TB, b []byte) (Header, [][]Record) {
	t.Helper()
	if err := ParseLibxlHeader(b); err != nil {
		t.Fatal(err)
	}
	b = b[LibxlHeaderLen:]
	r, n, err := ParseRecord(b)
	if err != nil || r.Type != LibxlLibxcContext || len(r.Body) != 0 {
		t.Fatalf("after the libxl header: %v %v, want an empty LIBXC_CONTEXT", r.Type, err)
	}
	b = b[n:]
	h, err := ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	b = b[ImageHeaderLen+DomainHeaderLen:]
	var cps [][]Record
	var cur []Record
	for len(b) > 0 {
		r, n, err := ParseRecord(b)
		if err != nil {
			t.Fatal(err)
		}
		b = b[n:]
		cur = append(cur, r)
		if r.Type == RecCheckpoint {
			cps = append(cps, cur)
			cur = nil
			r, n, err := ParseRecord(b)
			if err != nil || r.Type != LibxlCheckpointEnd {
				t.Fatalf("after CHECKPOINT: %v %v, want libxl CHECKPOINT_END", r.Type, err)
			}
			b = b[n:]
		}
	}
	if cur != nil {
		t.Fatalf("stream ends inside a checkpoint: %v", cur)
	}
	return h, cps
}

// ship runs captures through what the engine does to them: pages out by
// pfn, blobs as they are.
func ship(t testing.TB, cs []*Capture) []byte {
	t.Helper()
	var enc Encoder
	var out []byte
	for i, c := range cs {
		pfns := c.AppendPFNs(nil)
		data := make([]byte, len(pfns)*PageSize)
		for j, p := range pfns {
			c.ReadPage(uint64(p), data[j*PageSize:])
		}
		var err error
		if out, err = enc.AppendCheckpoint(out, pfns, data, c.AppendStates(nil)); err != nil {
			t.Fatalf("checkpoint %d: %v", i, err)
		}
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	b, want := pvStream(t)
	h, got := decodeLibxl(t, ship(t, readCaptures(t, b)))
	if h != testHeader {
		t.Errorf("header %+v, want %+v", h, testHeader)
	}
	if len(got) != len(want) {
		t.Fatalf("%d checkpoints, want %d", len(got), len(want))
	}
	for k := range want {
		// Non-page records come out in their order, around the pages.
		nonPage := func(rs []Record) (out []Record) {
			for _, r := range rs {
				if r.Type != RecPageData {
					out = append(out, r)
				}
			}
			return out
		}
		w, g := nonPage(want[k]), nonPage(got[k])
		if len(w) != len(g) {
			t.Fatalf("checkpoint %d: %d records, want %d", k, len(g), len(w))
		}
		for i := range w {
			if w[i].Type != g[i].Type || !bytes.Equal(w[i].Body, g[i].Body) {
				t.Errorf("checkpoint %d record %d: %v, want %v", k, i, g[i].Type, w[i].Type)
			}
		}
		// The pages are the last copy of each, with its last type.
		last := map[uint64]Page{}
		lastData := map[uint64][]byte{}
		merge := func(rs []Record, into map[uint64]Page, data map[uint64][]byte) {
			for _, r := range rs {
				if r.Type != RecPageData {
					continue
				}
				pd, err := ParsePageData(r.Body)
				if err != nil {
					t.Fatal(err)
				}
				off := 0
				for _, p := range pd.Pages {
					into[p.PFN] = p
					if p.Type.HasData() {
						data[p.PFN] = pd.Data[off : off+PageSize]
						off += PageSize
					} else {
						data[p.PFN] = nil
					}
				}
			}
		}
		merge(want[k], last, lastData)
		gotPages, gotData := map[uint64]Page{}, map[uint64][]byte{}
		merge(got[k], gotPages, gotData)
		if len(gotPages) != len(last) {
			t.Errorf("checkpoint %d: %d pages, want %d", k, len(gotPages), len(last))
		}
		for pfn, p := range last {
			if gotPages[pfn] != p || !bytes.Equal(gotData[pfn], lastData[pfn]) {
				t.Errorf("checkpoint %d pfn %d: %+v, want %+v", k, pfn, gotPages[pfn], p)
			}
		}
		// Pages sit between the static/p2m records and the end-of-checkpoint ones.
		firstPage := slices.IndexFunc(got[k], func(r Record) bool { return r.Type == RecPageData })
		if k == 0 && firstPage != 4 {
			t.Errorf("first PAGE_DATA at record %d, want 4 (after P2M_FRAMES)", firstPage)
		}
	}
}

// TestGolden pins the bytes the Encoder writes for the test stream, so a
// change to the layout libxl reads is a visible diff.
func TestGolden(t *testing.T) {
	b, _ := pvStream(t)
	got := ship(t, readCaptures(t, b))
	path := filepath.Join("testdata", "pv-two-checkpoints.libxl")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update once)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("encoder output (%d bytes) differs from %s (%d bytes)", len(got), path, len(want))
	}
	// The fixed prefix, spelled out: libxl header, LIBXC_CONTEXT, libxc headers.
	prefix := []byte("LibxlFmt\x00\x00\x00\x02\x00\x00\x00\x00" +
		"\x01\x00\x00\x00\x00\x00\x00\x00" +
		"\xff\xff\xff\xff\xff\xff\xff\xffXENF\x00\x00\x00\x03\x00\x00\x00\x00\x00\x00\x00\x00" +
		"\x01\x00\x00\x00\x0c\x00\x00\x00\x04\x00\x00\x00\x11\x00\x00\x00")
	if !bytes.HasPrefix(got, prefix) {
		t.Errorf("stream starts % x\nwant            % x", got[:len(prefix)], prefix)
	}
}

func TestEncoderErrors(t *testing.T) {
	b, _ := pvStream(t)
	cs := readCaptures(t, b)
	st0, st1 := cs[0].AppendStates(nil), cs[1].AppendStates(nil)
	pfns0 := cs[0].AppendPFNs(nil)
	data0 := make([]byte, len(pfns0)*PageSize)
	withoutKind := func(st []libxl.State, t RecordType) []libxl.State {
		return slices.DeleteFunc(slices.Clone(st), func(s libxl.State) bool {
			r, _, _ := ParseRecord(s.Data)
			return r.Type == t
		})
	}
	for _, tc := range []struct {
		name   string
		first  bool // the encoder has written a checkpoint already
		pfns   []libxl.PFN
		data   []byte
		states []libxl.State
		want   error
	}{
		{"first without headers", false, nil, nil, st1, ErrOrder},
		{"headers again", true, pfns0, data0, st0, ErrOrder},
		{"short data", false, pfns0, data0[:PageSize], st0, ErrFormat},
		{"no page marker", false, pfns0, data0, withoutKind(st0, RecKemariPagesHere), ErrFormat},
		{"no page types", false, pfns0, data0, withoutKind(st0, RecKemariPageTypes), ErrFormat},
		{"typed page missing", false, pfns0[:1], data0[:PageSize], st0, ErrFormat},
		{"duplicate pfn", true, []libxl.PFN{5, 5}, make([]byte, 2*PageSize), st1, ErrFormat},
		{"garbage blob", true, nil, nil, append(slices.Clone(st1), libxl.State{Data: []byte{1, 2, 3}}), ErrFormat},
		{"trailing bytes in blob", true, nil, nil, append(slices.Clone(st1), libxl.State{Data: make([]byte, 16)}), ErrFormat},
		{"page data as blob", true, nil, nil, append(slices.Clone(st1), libxl.State{Data: AppendRecord(nil, Record{Type: RecPageData})}), ErrFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var enc Encoder
			enc.started = tc.first
			pre := []byte("kept")
			out, err := enc.AppendCheckpoint(pre, tc.pfns, tc.data, tc.states)
			if !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
			if string(out) != "kept" || enc.started != tc.first {
				t.Errorf("failed call changed the output (%d bytes) or the state", len(out))
			}
			// Check, which a standby calls before it acknowledges an
			// epoch, refuses the same checkpoints (all but the data's
			// length, which it does not see).
			if tc.name != "short data" {
				if err := Check(tc.pfns, tc.states, tc.first); !errors.Is(err, tc.want) {
					t.Errorf("Check = %v, want %v", err, tc.want)
				}
			}
		})
	}
	if err := Check(pfns0, st0, false); err != nil {
		t.Errorf("Check of a good first checkpoint: %v", err)
	}
	if err := Check(cs[1].AppendPFNs(nil), st1, true); err != nil {
		t.Errorf("Check of a good later checkpoint: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	good := testHeader.Append(nil)
	mut := func(i int, v byte) []byte { b := slices.Clone(good); b[i] = v; return b }
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"short", good[:30]},
		{"legacy marker", mut(0, 0)},
		{"id", mut(8, 'Y')},
		{"version 4", mut(15, 4)},
		{"big endian", mut(17, 1)},
		{"domain type", mut(24, 9)},
		{"page shift", mut(28, 13)},
	} {
		if _, err := ParseHeader(tc.b); !errors.Is(err, ErrFormat) {
			t.Errorf("ParseHeader(%s) = %v, want ErrFormat", tc.name, err)
		}
	}
	if h, err := ParseHeader(mut(15, 2)); err != nil || h.Version != 2 {
		t.Errorf("version 2 stream: %v", err)
	}

	pd := func(count uint32, entries []uint64, data int) []byte {
		b := binary.LittleEndian.AppendUint32(nil, count)
		b = append(b, 0, 0, 0, 0)
		for _, e := range entries {
			b = binary.LittleEndian.AppendUint64(b, e)
		}
		return append(b, make([]byte, data)...)
	}
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"count 0", pd(0, nil, 0)},
		{"count beyond body", pd(3, []uint64{1}, 0)},
		{"reserved type 5", pd(1, []uint64{5 << 60}, PageSize)},
		{"reserved bits", pd(1, []uint64{1 << 55}, PageSize)},
		{"missing data", pd(2, []uint64{1, 2}, PageSize)},
		{"data for XTAB", pd(1, []uint64{0xf<<60 | 1}, PageSize)},
		{"reserved field", append(pd(1, []uint64{1}, PageSize)[:4], append([]byte{1, 0, 0, 0}, pd(1, []uint64{1}, PageSize)[8:]...)...)},
	} {
		if _, err := ParsePageData(tc.b); !errors.Is(err, ErrFormat) {
			t.Errorf("ParsePageData(%s) = %v, want ErrFormat", tc.name, err)
		}
	}
	if p, err := ParsePageData(pd(2, []uint64{0xf<<60 | 9, 0x9<<60 | 3}, PageSize)); err != nil || len(p.Pages) != 2 || p.Pages[1] != (Page{3, PageL1Pin}) {
		t.Errorf("XTAB + L1PIN: %+v %v", p, err)
	}

	rec := AppendRecord(nil, Record{Type: RecX86TSCInfo, Body: []byte{1, 2, 3}})
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"short header", rec[:5], ErrFormat},
		{"truncated body", rec[:10], ErrFormat},
		{"dirty padding", append(rec[:len(rec)-1:len(rec)-1], 9), ErrFormat},
		{"too long", binary.LittleEndian.AppendUint32([]byte{1, 0, 0, 0}, MaxRecordLength+1), ErrTooLong},
	} {
		if _, _, err := ParseRecord(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("ParseRecord(%s) = %v, want %v", tc.name, err, tc.want)
		}
	}

	// The Reader: clean EOF between records, unexpected EOF inside one.
	r := NewReader(bytes.NewReader(append(slices.Clone(good), rec...)))
	if _, err := r.ReadHeader(); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Next(); err != nil || got.Type != RecX86TSCInfo || !bytes.Equal(got.Body, []byte{1, 2, 3}) {
		t.Fatalf("Next = %v %v", got, err)
	}
	if _, err := r.Next(); err != io.EOF {
		t.Errorf("Next at the end = %v, want io.EOF", err)
	}
	r = NewReader(bytes.NewReader(rec[:12]))
	if _, err := r.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("Next in a cut body = %v, want io.ErrUnexpectedEOF", err)
	}

	if err := ParseLibxlHeader(AppendLibxlHeader(nil)); err != nil {
		t.Error(err)
	}
	if err := ParseLibxlHeader([]byte("LibxlFmt\x00\x00\x00\x01\x00\x00\x00\x00")); !errors.Is(err, ErrFormat) {
		t.Errorf("libxl v1 header = %v, want ErrFormat", err)
	}
}

func TestCaptureRefuses(t *testing.T) {
	for _, rec := range []Record{
		{Type: RecEnd},
		{Type: RecKemariPageTypes},
		{Type: RecCheckpointDirtyPFNList},
		{Type: RecPageData, Body: []byte{0, 0, 0, 0, 0, 0, 0, 0}},
	} {
		if _, err := NewCapture().Add(rec); err == nil {
			t.Errorf("Add(%v) accepted", rec.Type)
		}
	}
}

func TestRecordTypeString(t *testing.T) {
	if RecX86PVP2MFrames.String() != "X86_PV_P2M_FRAMES" || RecordType(0x99).String() != "record-0x99" {
		t.Error(RecX86PVP2MFrames, RecordType(0x99))
	}
}

// TestWriteCheckpoint: the streaming writer, fed from a capture's slots
// without a copy, writes what AppendCheckpoint appends.
func TestWriteCheckpoint(t *testing.T) {
	b, _ := pvStream(t)
	want := ship(t, readCaptures(t, b))
	var enc Encoder
	var got bytes.Buffer
	for _, c := range readCaptures(t, b) {
		if err := enc.WriteCheckpoint(&got, c.Slots(), c.SlotData, c.AppendStates(nil)); err != nil {
			t.Fatal(err)
		}
	}
	_, wantCPs := decodeLibxl(t, want)
	_, gotCPs := decodeLibxl(t, got.Bytes())
	if len(gotCPs) != len(wantCPs) || got.Len() != len(want) {
		t.Errorf("WriteCheckpoint wrote %d bytes in %d checkpoints; AppendCheckpoint %d in %d", got.Len(), len(gotCPs), len(want), len(wantCPs))
	}
	if err := enc.WriteCheckpoint(&got, nil, nil, nil); !errors.Is(err, ErrFormat) {
		t.Errorf("WriteCheckpoint without states = %v, want ErrFormat", err)
	}
}
