package wire

import (
	"bytes"
	"errors"
	"hash/crc32"
	"io"
	"reflect"
	"runtime"
	"testing"
)

// samplePages returns a small uncompressed PAGES record built by hand: a
// zero page, a raw page and an XOR page whose base is all zeros.
func samplePages() *Pages {
	raw := bytes.Repeat([]byte("kemari! "), PageSize/8)
	// XOR: 100 octets unchanged, 3 literal octets, the rest unchanged.
	xor := append([]byte{100, 3, 'a', 'b', 'c'}, uvarint(PageSize-103)...)
	data := append(append([]byte(nil), raw...), xor...)
	return &Pages{
		PFNs:   []uint64{0x10, 0x11, 0x12},
		Enc:    []PageEnc{EncZero, EncRaw, EncXOR},
		Codec:  CodecNone,
		RawLen: uint32(len(data)),
		Data:   data,
	}
}

func uvarint(v uint64) []byte {
	var b []byte
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// sampleStream is a small but complete primary stream: hello, an initial
// round, one steady epoch with every kind of epoch record (and a skippable
// one), control records and goodbye.
func sampleStream() []Record {
	return []Record{
		sampleHello(),
		&Heartbeat{Seq: 0, SentNanos: 1_700_000_000_000_000_000, Epoch: 0},
		&EpochBegin{Epoch: 0, Flags: EpochInitial},
		samplePages(),
		&EpochEnd{Epoch: 0},
		&EpochBegin{Epoch: 1},
		&Pages{PFNs: []uint64{0x20}, Enc: []PageEnc{EncZero}, RawLen: 0, Data: []byte{}},
		&State{Kind: 1, Index: 0, Data: []byte("vcpu0 registers")},
		&Heartbeat{Seq: 1, SentNanos: 1_700_000_000_100_000_000, Epoch: 0, Flushed: 0},
		&Opaque{T: TypeSkippable | 0x42, Body: []byte("future")},
		&Disk{Disk: 0, Sector: 2048, Data: bytes.Repeat([]byte{0xd5}, SectorSize)},
		&EpochEnd{Epoch: 1, MemDigest: 0x0123456789abcdef},
		&Ack{Epoch: 1, MemDigest: 0x0123456789abcdef},
		&Nack{Epoch: 2, Code: NackDigest, Message: "epoch 2 digest mismatch"},
		&Goodbye{Code: GoodbyeStop, Message: "bye"},
	}
}

func encodeStream(t testing.TB, recs []Record) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.WriteHeader(0); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := w.Write(r); err != nil {
			t.Fatalf("write %v: %v", r.Type(), err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// readAll reads records until an error, deep-copying each.
func readAll(b []byte, lim Limits) ([]Record, error) {
	r := NewReader(bytes.NewReader(b), lim)
	var out []Record
	for {
		rec, err := r.Next()
		if err != nil {
			return out, err
		}
		out = append(out, clone(rec))
	}
}

func clone(r Record) Record {
	cp := func(b []byte) []byte { return append([]byte{}, b...) }
	switch r := r.(type) {
	case *Hello:
		c := *r
		return &c
	case *EpochBegin:
		c := *r
		return &c
	case *Pages:
		return &Pages{PFNs: append([]uint64{}, r.PFNs...), Enc: append([]PageEnc{}, r.Enc...), Codec: r.Codec,
			ChunkShift: r.ChunkShift, RawLen: r.RawLen, Chunks: append([]uint32(nil), r.Chunks...), Data: cp(r.Data)}
	case *State:
		return &State{Kind: r.Kind, Index: r.Index, Data: cp(r.Data)}
	case *Disk:
		return &Disk{Disk: r.Disk, Sector: r.Sector, Data: cp(r.Data)}
	case *EpochEnd:
		c := *r
		return &c
	case *Ack:
		c := *r
		return &c
	case *Heartbeat:
		c := *r
		return &c
	case *Goodbye:
		c := *r
		return &c
	case *Nack:
		c := *r
		return &c
	case *Timeout:
		c := *r
		return &c
	}
	panic("unknown record")
}

// normalize makes empty and nil slices compare equal.
func normalize(r Record) Record {
	if p, ok := r.(*Pages); ok {
		c := *p
		if len(c.Chunks) == 0 {
			c.Chunks = nil
		}
		if len(c.Data) == 0 {
			c.Data = nil
		}
		return &c
	}
	return r
}

// TestRoundTrip writes every record type and reads it back unchanged.
// Reference: docs/protocol.md §5.
func TestRoundTrip(t *testing.T) {
	recs := sampleStream()
	b := encodeStream(t, recs)
	got, err := readAll(b, DefaultLimits())
	if err != io.EOF {
		t.Fatalf("read: %v", err)
	}
	var want []Record
	for _, r := range recs {
		if _, ok := r.(*Opaque); !ok {
			want = append(want, r)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("read %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(normalize(got[i]), normalize(want[i])) {
			t.Errorf("record %d:\n got %#v\nwant %#v", i, got[i], want[i])
		}
	}
}

// TestRoundTripCompressed sends PAGES of every codec through Writer and
// Reader and decodes them.
func TestRoundTripCompressed(t *testing.T) {
	pfns, vers := mixes[4].batches(3, 300, 2)
	for _, codec := range []Codec{CodecNone, CodecLZ4, CodecZstd} {
		t.Run(codec.String(), func(t *testing.T) {
			enc := NewPageEncoder(codec, 1<<20)
			var buf bytes.Buffer
			w := NewWriter(&buf)
			w.WriteHeader(0)
			w.Write(sampleHello())
			w.Write(&EpochBegin{Epoch: 1})
			for _, v := range vers {
				p, err := enc.Encode(pfns, v)
				if err != nil {
					t.Fatal(err)
				}
				if err := w.Write(p); err != nil {
					t.Fatal(err)
				}
			}
			w.Write(&EpochEnd{Epoch: 1})
			w.Flush()
			r := NewReader(&buf, DefaultLimits())
			mem := map[uint64][]byte{}
			out := make([]byte, len(pfns)*PageSize)
			v := 0
			for {
				rec, err := r.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				p, ok := rec.(*Pages)
				if !ok {
					continue
				}
				if v > 0 && codec != CodecNone && p.Codec != codec {
					t.Errorf("version %d sent with codec %v", v, p.Codec)
				}
				if _, err := DecodePages(p, mapBase(mem), out); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(out, vers[v]) {
					t.Fatalf("version %d decoded wrong", v)
				}
				applyMem(mem, pfns, out)
				v++
			}
			if v != len(vers) {
				t.Fatalf("decoded %d batches, want %d", v, len(vers))
			}
		})
	}
}

func mapBase(mem map[uint64][]byte) func(uint64, []byte) error {
	return func(pfn uint64, dst []byte) error {
		if pg, ok := mem[pfn]; ok {
			copy(dst, pg)
		} else {
			clear(dst)
		}
		return nil
	}
}

func applyMem(mem map[uint64][]byte, pfns []uint64, out []byte) {
	for i, pfn := range pfns {
		mem[pfn] = append(mem[pfn][:0], out[i*PageSize:(i+1)*PageSize]...)
	}
}

// frame builds one record by hand, independently of the Writer.
func frame(t Type, seq uint32, body []byte) []byte {
	h := make([]byte, 16, 16+len(body)+8)
	le.PutUint32(h[0:], uint32(t))
	le.PutUint32(h[4:], uint32(len(body)))
	le.PutUint32(h[8:], seq)
	crc := crc32.Update(0, crc32.MakeTable(crc32.Castagnoli), h[:12])
	crc = crc32.Update(crc, crc32.MakeTable(crc32.Castagnoli), body)
	le.PutUint32(h[12:], crc)
	h = append(h, body...)
	return append(h, make([]byte, pad8(len(body)))...)
}

// records splits an encoded stream (after its header) into its records.
func records(b []byte) [][]byte {
	var out [][]byte
	b = b[HeaderSize:]
	for len(b) > 0 {
		n := 16 + int(le.Uint32(b[4:]))
		n += pad8(n)
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

func join(header []byte, recs ...[]byte) []byte {
	out := append([]byte(nil), header...)
	for _, r := range recs {
		out = append(out, r...)
	}
	return out
}

// recrc recomputes the CRC of an edited record.
func recrc(rec []byte) []byte {
	rec = append([]byte(nil), rec...)
	n := min(int(le.Uint32(rec[4:])), len(rec)-16)
	tab := crc32.MakeTable(crc32.Castagnoli)
	crc := crc32.Update(crc32.Update(0, tab, rec[:12]), tab, rec[16:16+n])
	le.PutUint32(rec[12:], crc)
	return rec
}

// TestErrors checks that each kind of damage is reported as the right
// sentinel. Reference: docs/protocol.md §3, §4.2, §5.7, §5.12.
func TestErrors(t *testing.T) {
	good := encodeStream(t, sampleStream())
	hdr := good[:HeaderSize]
	rs := records(good)
	with := func(f func(b []byte)) []byte {
		b := append([]byte(nil), good...)
		f(b)
		return b
	}
	setSeq := func(rec []byte, seq uint32) []byte {
		rec = append([]byte(nil), rec...)
		le.PutUint32(rec[8:], seq)
		return recrc(rec)
	}
	// rs[0] hello, rs[1] heartbeat, rs[2] begin(0), rs[3] pages, rs[4] end(0), rs[5] begin(1), ...
	epochEnd1 := 11
	cases := []struct {
		name   string
		stream []byte
		want   error
		typ    Type
	}{
		{"bad magic", with(func(b []byte) { b[0] = 'Y' }), ErrBadMagic, 0},
		{"version 0", with(func(b []byte) { le.PutUint32(b[8:], 0) }), ErrVersion, 0},
		{"version 2", with(func(b []byte) { le.PutUint32(b[8:], 2) }), ErrVersion, 0},
		{"mandatory stream flag", with(func(b []byte) { le.PutUint32(b[12:], 1) }), ErrVersion, 0},
		{"crc flip in body", with(func(b []byte) { b[HeaderSize+16+3] ^= 1 }), ErrCRC, TypeHello},
		{"crc flip in type", with(func(b []byte) { b[HeaderSize] ^= 0x04 }), ErrCRC, TypeHello | 4},
		{"crc field flip", with(func(b []byte) { b[HeaderSize+12] ^= 0x80 }), ErrCRC, TypeHello},
		{"seq gap", join(hdr, rs[0], rs[2]), ErrSequence, TypeEpochBegin},
		{"duplicate record", join(hdr, rs[0], rs[1], rs[1]), ErrSequence, TypeHeartbeat},
		{"reordered records", join(hdr, rs[0], rs[2], rs[1]), ErrSequence, TypeEpochBegin},
		{"seq starts at 1", join(hdr, setSeq(rs[0], 1)), ErrSequence, TypeHello},
		{"oversize length", join(hdr, rs[0], recrc(func() []byte {
			r := append([]byte(nil), rs[1]...)
			le.PutUint32(r[4:], DefaultMaxRecord+1)
			return r
		}())), ErrTooLarge, TypeHeartbeat},
		{"unknown mandatory type", join(hdr, rs[0], frame(0x100, 1, []byte("x"))), ErrUnknownType, 0x100},
		{"type 0", join(hdr, rs[0], frame(0, 1, nil)), ErrMalformed, 0},
		{"non-zero padding", join(hdr, rs[0], func() []byte {
			r := frame(TypeGoodbye, 1, []byte{1, 0, 0, 0, 'x'})
			r[len(r)-1] = 1
			return r
		}()), ErrMalformed, TypeGoodbye},
		{"heartbeat body short", join(hdr, rs[0], frame(TypeHeartbeat, 1, make([]byte, 24))), ErrMalformed, TypeHeartbeat},
		{"pages outside epoch", join(hdr, rs[0], setSeq(rs[3], 1)), ErrOrder, TypePages},
		{"record before hello", join(hdr, setSeq(rs[1], 0)), ErrOrder, TypeHeartbeat},
		{"second hello", join(hdr, rs[0], setSeq(rs[0], 1)), ErrOrder, TypeHello},
		{"epoch begin inside epoch", join(hdr, rs[0], rs[1], rs[2], setSeq(rs[2], 3)), ErrOrder, TypeEpochBegin},
		{"record after goodbye", join(hdr, rs[0], frame(TypeGoodbye, 1, make([]byte, 4)), setSeq(rs[1], 2)), ErrOrder, TypeHeartbeat},
		{"ends inside epoch", join(hdr, rs[0], rs[1], rs[2]), ErrTruncated, 0},
		{"epoch count", join(hdr, append(rs[:epochEnd1:epochEnd1], recrc(func() []byte {
			r := append([]byte(nil), rs[epochEnd1]...)
			le.PutUint64(r[16+8:], 7)
			return r
		}()))...), ErrEpochCount, TypeEpochEnd},
		{"epoch digest", join(hdr, append(rs[:epochEnd1:epochEnd1], recrc(func() []byte {
			r := append([]byte(nil), rs[epochEnd1]...)
			r[16+32] ^= 1
			return r
		}()))...), ErrEpochDigest, TypeEpochEnd},
		{"epoch digest: state changed", join(hdr, func() [][]byte {
			out := append([][]byte(nil), rs...)
			r := append([]byte(nil), rs[7]...)
			r[16+8] ^= 0x20
			out[7] = recrc(r)
			return out
		}()...), ErrEpochDigest, TypeEpochEnd},
		{"too many pages", join(hdr, rs[0], rs[1], rs[2], func() []byte {
			body := make([]byte, 16+8*2000+2000)
			le.PutUint32(body, 2000)
			return frame(TypePages, 3, body)
		}()), ErrTooLarge, TypePages},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := readAll(c.stream, DefaultLimits())
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			var fe *FrameError
			if !errors.As(err, &fe) {
				t.Fatalf("%v is not a *FrameError", err)
			}
			if fe.Type != c.typ {
				t.Errorf("error names type %v, want %v: %v", fe.Type, c.typ, err)
			}
		})
	}
}

// TestEpochErrorContinues checks that after an epoch error the stream is
// still readable: the next records come through. Reference: §5.7.
func TestEpochErrorContinues(t *testing.T) {
	good := encodeStream(t, sampleStream())
	rs := records(good)
	bad := append([]byte(nil), rs[11]...)
	bad[16+32] ^= 1
	rs[11] = recrc(bad)
	r := NewReader(bytes.NewReader(join(good[:HeaderSize], rs...)), DefaultLimits())
	var sawDigest bool
	var after []Type
	for {
		rec, err := r.Next()
		if err == io.EOF {
			break
		}
		if errors.Is(err, ErrEpochDigest) {
			sawDigest = true
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if sawDigest {
			after = append(after, rec.Type())
		}
	}
	if want := []Type{TypeAck, TypeNack, TypeGoodbye}; !reflect.DeepEqual(after, want) {
		t.Fatalf("after the bad epoch read %v, want %v", after, want)
	}
}

// TestSkippable checks that an unknown skippable record is skipped and
// still counted in the epoch digest. Reference: §4.1.
func TestSkippable(t *testing.T) {
	b := encodeStream(t, sampleStream())
	r := NewReader(bytes.NewReader(b), DefaultLimits())
	for {
		_, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if r.Skipped() != 1 {
		t.Fatalf("skipped %d records, want 1", r.Skipped())
	}
	// Dropping the skippable record (and renumbering) must break the digest.
	rs := records(b)
	var out [][]byte
	for i, rec := range rs {
		if i == 9 {
			continue
		}
		if i > 9 {
			rec = append([]byte(nil), rec...)
			le.PutUint32(rec[8:], uint32(i-1))
			rec = recrc(rec)
		}
		out = append(out, rec)
	}
	if _, err := readAll(join(b[:HeaderSize], out...), DefaultLimits()); !errors.Is(err, ErrEpochDigest) {
		t.Fatalf("without the skippable record: %v, want ErrEpochDigest", err)
	}
}

// TestTruncation cuts the sample stream at every byte: a cut between
// records outside an epoch is a clean io.EOF, every other cut ErrTruncated.
// Reference: §4.2.
func TestTruncation(t *testing.T) {
	b := encodeStream(t, sampleStream())
	full, err := readAll(b, DefaultLimits())
	if err != io.EOF {
		t.Fatal(err)
	}
	for cut := 0; cut < len(b); cut++ {
		got, err := readAll(b[:cut], DefaultLimits())
		if err == io.EOF {
			// Only a boundary outside an epoch frame may end cleanly.
			if len(got) == 0 {
				if cut != HeaderSize {
					t.Fatalf("cut at %d: clean EOF before any record", cut)
				}
				continue
			}
			last := got[len(got)-1]
			if _, ok := last.(*Hello); !ok && !isOutside(got) {
				t.Fatalf("cut at %d: clean EOF inside an epoch after %v", cut, last.Type())
			}
			continue
		}
		if !errors.Is(err, ErrTruncated) {
			t.Fatalf("cut at %d: %v, want ErrTruncated", cut, err)
		}
		if len(got) >= len(full) {
			t.Fatalf("cut at %d: read all %d records", cut, len(got))
		}
	}
}

func isOutside(recs []Record) bool {
	open := false
	for _, r := range recs {
		switch r.(type) {
		case *EpochBegin:
			open = true
		case *EpochEnd, *Goodbye:
			open = false
		}
	}
	return !open
}

// TestHostileLength checks that announcing a huge record costs the reader
// little memory until the octets actually arrive. Reference: §9.
func TestHostileLength(t *testing.T) {
	b := encodeStream(t, sampleStream()[:1])
	h := make([]byte, 16)
	le.PutUint32(h[0:], uint32(TypeState))
	le.PutUint32(h[4:], DefaultMaxRecord)
	le.PutUint32(h[8:], 1)
	b = append(b, h...)
	b = append(b, make([]byte, 100)...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := readAll(b, DefaultLimits())
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("got %v, want ErrTruncated", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Fatalf("allocated %d octets for a record that sent 100", got)
	}
}

// TestWriterRefuses checks the Writer's own checks: order and limits.
func TestWriterRefuses(t *testing.T) {
	w := NewWriter(io.Discard)
	if err := w.Write(&Ack{}); !errors.Is(err, ErrOrder) {
		t.Errorf("before header: %v", err)
	}
	w.WriteHeader(0)
	if err := w.Write(&Ack{}); !errors.Is(err, ErrOrder) {
		t.Errorf("before hello: %v", err)
	}
	if err := w.Write(sampleHello()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		rec  Record
		want error
	}{
		{&Pages{PFNs: []uint64{1}, Enc: []PageEnc{EncZero}}, ErrOrder},
		{&EpochEnd{Epoch: 1}, ErrOrder},
		{&Goodbye{Message: string(make([]byte, MaxString+1))}, ErrTooLarge},
		{&EpochBegin{Epoch: 3, Flags: EpochInitial}, ErrMalformed},
		{&Opaque{T: TypeAck}, ErrMalformed},
		{nil, ErrMalformed},
	} {
		if err := w.Write(c.rec); !errors.Is(err, c.want) {
			t.Errorf("%T: %v, want %v", c.rec, err, c.want)
		}
	}
	w.Write(&EpochBegin{Epoch: 5})
	for _, c := range []Record{
		&Disk{Data: make([]byte, 100)},
		&Disk{Data: make([]byte, 2*MaxDiskWrite)},
		&State{Kind: 0},
		&Pages{PFNs: []uint64{1}, Enc: []PageEnc{9}},
		&EpochEnd{Epoch: 4},
	} {
		if err := w.Write(c); err == nil {
			t.Errorf("%#v accepted", c)
		}
	}
	if w.Seq() != 2 {
		t.Errorf("seq %d after two good records", w.Seq())
	}
}

// TestWriterNoAlloc checks that steady-state records allocate nothing.
func TestWriterNoAlloc(t *testing.T) {
	w := NewWriter(io.Discard)
	w.WriteHeader(0)
	w.Write(sampleHello())
	st := &State{Kind: 1, Data: make([]byte, 300)}
	hb := &Heartbeat{}
	pfns, vers := mixes[4].batches(1, MaxPagesPerRecord, 0)
	p, _ := NewPageEncoder(CodecNone, 0).Encode(pfns, vers[0])
	// The records themselves are the caller's; reuse them as a driver would.
	eb, ee := &EpochBegin{Epoch: 1}, &EpochEnd{Epoch: 1}
	n := testing.AllocsPerRun(50, func() {
		w.Write(eb)
		w.Write(st)
		w.Write(p)
		w.Write(hb)
		w.Write(ee)
		w.Flush()
	})
	if n != 0 {
		t.Fatalf("%v allocations per epoch", n)
	}
}
