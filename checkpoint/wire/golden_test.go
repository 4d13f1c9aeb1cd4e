package wire

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// goldenRecords are the per-type fixtures; each is one record with seq 0,
// as the first record a reader sees in the state the record needs.
func goldenRecords() []struct {
	name string
	rec  Record
} {
	return []struct {
		name string
		rec  Record
	}{
		{"hello", sampleHello()},
		{"epoch-begin", &EpochBegin{Epoch: 7, Flags: EpochResync}},
		{"pages", samplePages()},
		{"state", &State{Kind: 2, Index: 1, Data: []byte("hvm context blob")}},
		{"disk", &Disk{Disk: 1, Sector: 0x1000, Data: bytes.Repeat([]byte{0xab}, SectorSize)}},
		{"epoch-end", &EpochEnd{Epoch: 7, MemDigest: 0xfeedface}},
		{"ack", &Ack{Epoch: 7, MemDigest: 0xfeedface}},
		{"heartbeat", &Heartbeat{Seq: 3, SentNanos: 1_700_000_000_000_000_000, Epoch: 6, Flushed: 5}},
		{"goodbye", &Goodbye{Code: GoodbyeGuestGone, Message: "domain shut down"}},
		{"nack", &Nack{Epoch: 8, Code: NackCount, Message: "epoch 8: 3 pages missing"}},
		{"timeout", &Timeout{Nanos: 412_000_000}},
	}
}

// placeWriter and placeReader put a fresh Writer or Reader in the state in
// which rec may come first.
func placeWriter(w *Writer, rec Record) {
	w.header = true
	w.hello = rec.Type() != TypeHello
	switch rec.Type() {
	case TypePages, TypeState, TypeDisk, TypeEpochEnd:
		w.inEpoch, w.epoch = true, 7
	}
}

func placeReader(r *Reader, rec Record) {
	r.header = true
	r.hello = rec.Type() != TypeHello
	switch rec.Type() {
	case TypePages, TypeState, TypeDisk, TypeEpochEnd:
		r.inEpoch, r.epoch = true, 7
	}
}

// TestGolden pins the bytes of every record type and of a whole stream, and
// the annotated explanation beside each. Run with -update to rewrite them,
// then read the diff of the .txt files before committing.
// Reference: docs/protocol.md §3–§5.
func TestGolden(t *testing.T) {
	for _, g := range goldenRecords() {
		t.Run(g.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := NewWriter(&buf)
			placeWriter(w, g.rec)
			if err := w.Write(g.rec); err != nil {
				t.Fatal(err)
			}
			w.Flush()
			b := buf.Bytes()
			checkGolden(t, g.name, b, annotate(b, false))
			r := NewReader(bytes.NewReader(b), DefaultLimits())
			placeReader(r, g.rec)
			got, err := r.Next()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(normalize(clone(got)), normalize(g.rec)) {
				t.Fatalf("decoded\n%#v\nwant\n%#v", got, g.rec)
			}
		})
	}
	t.Run("stream", func(t *testing.T) {
		b := encodeStream(t, sampleStream())
		checkGolden(t, "stream", b, annotate(b, true))
		if _, err := readAll(b, DefaultLimits()); err != io.EOF {
			t.Fatal(err)
		}
	})
}

func checkGolden(t *testing.T, name string, b []byte, txt string) {
	t.Helper()
	bin := filepath.Join("testdata", name+".bin")
	ann := filepath.Join("testdata", name+".txt")
	if *update {
		if err := os.WriteFile(bin, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(ann, []byte(txt), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(bin)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(b, want) {
		t.Errorf("%s: encoding changed; if that is intended, bump the version or run with -update", bin)
	}
	wantTxt, err := os.ReadFile(ann)
	if err != nil {
		t.Fatal(err)
	}
	if string(wantTxt) != txt {
		t.Errorf("%s: annotation changed; run with -update", ann)
	}
	// The annotation is produced by a walker written from the spec, not
	// by the package's decoder: it must account for every octet.
	if !strings.Contains(txt, fmt.Sprintf("end at offset %d", len(b))) {
		t.Errorf("%s: annotation does not cover all %d octets", ann, len(b))
	}
}

// annotator walks encoded bytes field by field as docs/protocol.md lays
// them out and writes one line per field: offset, octets, name, value.
type annotator struct {
	b   []byte
	off int
	sb  strings.Builder
}

func (a *annotator) line(n int, name, value string) []byte {
	f := a.b[a.off : a.off+n]
	hex := fmt.Sprintf("% x", f)
	if n > 16 {
		hex = fmt.Sprintf("% x ... (%d octets)", f[:8], n)
	}
	fmt.Fprintf(&a.sb, "%06x  %-48s  %-18s %s\n", a.off, hex, name, value)
	a.off += n
	return f
}

func (a *annotator) u8(name string) uint8 {
	v := a.b[a.off]
	a.line(1, name, fmt.Sprint(v))
	return v
}

func (a *annotator) u32(name string, names ...string) uint32 {
	v := le.Uint32(a.b[a.off:])
	s := fmt.Sprint(v)
	if len(names) > 0 && int(v) < len(names) && names[v] != "" {
		s += " (" + names[v] + ")"
	}
	a.line(4, name, s)
	return v
}

func (a *annotator) u64(name string) uint64 {
	v := le.Uint64(a.b[a.off:])
	a.line(8, name, fmt.Sprintf("%d (%#x)", v, v))
	return v
}

func (a *annotator) raw(n int, name string) []byte {
	if n == 0 {
		return nil
	}
	return a.line(n, name, "")
}

func (a *annotator) text(n int, name string) {
	if n == 0 {
		return
	}
	s := string(a.b[a.off : a.off+n])
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	a.line(n, name, fmt.Sprintf("%q", s))
}

func (a *annotator) str(name string) {
	n := int(a.u32(name + ".len"))
	a.text(n, name)
}

var typeComments = []string{"", "HELLO", "EPOCH_BEGIN", "PAGES", "STATE", "DISK", "EPOCH_END", "ACK", "HEARTBEAT", "GOODBYE", "NACK"}

func annotate(b []byte, header bool) string {
	a := &annotator{b: b}
	if header {
		a.sb.WriteString("# stream header (§3)\n")
		a.text(8, "magic")
		a.u32("version")
		a.u32("flags")
	}
	for a.off < len(b) {
		t := Type(le.Uint32(b[a.off:]))
		name := "skippable, unknown"
		if int(t) < len(typeComments) {
			name = typeComments[t]
		} else if t == TypeTimeout {
			name = "TIMEOUT, skippable"
		}
		fmt.Fprintf(&a.sb, "# record %s (§4.1)\n", name)
		a.line(4, "type", fmt.Sprintf("%#x", uint32(t)))
		n := int(a.u32("length"))
		a.u32("seq")
		a.line(4, "crc", fmt.Sprintf("%#08x (CRC-32C)", le.Uint32(b[a.off:])))
		end := a.off + n
		a.body(t, n)
		if a.off != end {
			panic(fmt.Sprintf("annotator: body of %v ends at %d, want %d", t, a.off, end))
		}
		a.raw(pad8(n), "padding")
	}
	fmt.Fprintf(&a.sb, "# end at offset %d\n", a.off)
	return a.sb.String()
}

func (a *annotator) body(t Type, n int) {
	switch t {
	case TypeHello:
		a.u32("version")
		a.u8("role")
		a.u8("codec")
		a.raw(2, "reserved")
		a.u32("inflight")
		a.u32("flags")
		a.raw(16, "session")
		a.u64("committed")
		a.u64("mem_digest")
		a.raw(16, "domain.uuid")
		a.u64("domain.pages")
		a.u32("domain.vcpus")
		a.raw(4, "reserved")
		a.str("domain.name")
		a.str("domain.type")
		a.str("domain.workload")
		a.str("domain.config")
		nics := int(a.u32("nics.count"))
		for i := 0; i < nics; i++ {
			p := fmt.Sprintf("nic[%d].", i)
			a.raw(6, p+"mac")
			a.raw(2, "reserved")
			addrs := int(a.u32(p + "addrs.count"))
			for j := 0; j < addrs; j++ {
				l := int(a.u8(fmt.Sprintf("%saddr[%d].len", p, j)))
				var ip netip.Addr
				ip.UnmarshalBinary(a.b[a.off : a.off+l])
				a.line(l, fmt.Sprintf("%saddr[%d]", p, j), ip.String())
			}
			a.str(p + "bridge")
			a.str(p + "backend")
		}
		disks := int(a.u32("disks.count"))
		for i := 0; i < disks; i++ {
			p := fmt.Sprintf("disk[%d].", i)
			a.u64(p + "sectors")
			a.u8(p + "writable")
			a.raw(3, "reserved")
			a.str(p + "target")
		}
	case TypeTimeout:
		a.u64("timeout_nanos")
	case TypeEpochBegin:
		a.u64("epoch")
		a.u32("flags", "", "INITIAL", "RESYNC")
		a.raw(4, "reserved")
	case TypePages:
		c := int(a.u32("count"))
		codec := a.u8("codec")
		shift := a.u8("shift")
		a.raw(2, "reserved")
		rawLen := int(a.u32("raw_len"))
		areaLen := int(a.u32("area_len"))
		for i := 0; i < c; i++ {
			a.u64(fmt.Sprintf("pfn[%d]", i))
		}
		encs := a.b[a.off : a.off+c]
		for i := 0; i < c; i++ {
			a.line(1, fmt.Sprintf("enc[%d]", i), []string{"?", "ZERO", "RAW", "XOR"}[min(int(encs[i]), 3)])
		}
		a.raw(pad8(c), "padding")
		if codec != 0 {
			nch := (rawLen + 1<<shift - 1) >> shift
			for i := 0; i < nch; i++ {
				a.u32(fmt.Sprintf("chunk_len[%d]", i))
			}
			a.raw(pad8(4*nch), "padding")
			a.raw(areaLen, "area (compressed)")
			return
		}
		for _, e := range encs {
			switch e {
			case 2:
				a.text(PageSize, "RAW page")
			case 3:
				pos := 0
				for pos < PageSize {
					z := a.varint("XOR zero run")
					pos += z
					if pos == PageSize {
						break
					}
					l := a.varint("XOR literal run")
					a.raw(l, "XOR literal")
					pos += l
				}
			}
		}
	case TypeState:
		a.u32("kind")
		a.u32("index")
		a.text(n-8, "data")
	case TypeDisk:
		a.u32("disk")
		a.raw(4, "reserved")
		a.u64("sector")
		a.raw(n-16, "data")
	case TypeEpochEnd:
		a.u64("epoch")
		a.u64("pages")
		a.u64("states")
		a.u64("disk_writes")
		a.u64("digest (xxh3-64)")
		a.u64("mem_digest")
	case TypeAck:
		a.u64("epoch")
		a.u64("mem_digest")
	case TypeHeartbeat:
		a.u64("seq")
		a.u64("sent_nanos")
		a.u64("epoch")
		a.u64("flushed")
	case TypeGoodbye:
		a.u32("code", "unspecified", "stop", "guest gone", "protocol error", "incompatible", "replaced")
		a.text(n-4, "message")
	case TypeNack:
		a.u64("epoch")
		a.u32("code", "unspecified", "digest", "count", "order", "apply", "base")
		a.text(n-12, "message")
	default:
		a.text(n, "body (skipped by readers)")
	}
}

func (a *annotator) varint(name string) int {
	v, k := 0, 0
	for shift := 0; ; shift += 7 {
		c := a.b[a.off+k]
		v |= int(c&0x7f) << shift
		k++
		if c < 0x80 {
			break
		}
	}
	a.line(k, name, fmt.Sprint(v))
	return v
}
