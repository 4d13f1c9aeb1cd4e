package libxcstream

import (
	"bytes"
	"testing"

	"github.com/xl-kemari/xl-kemari/libxl"
)

// FuzzCapture feeds arbitrary bytes to the primary's path (Reader, then
// Capture): no panic, and every capture that completes must encode for
// the standby and carry the same pages back.
func FuzzCapture(f *testing.F) {
	b, _ := pvStream(f)
	f.Add(b)
	f.Add(b[:100])
	f.Add(testHeader.Append(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(bytes.NewReader(b))
		h, err := r.ReadHeader()
		if err != nil {
			return
		}
		c := NewCapture()
		c.SetHeader(h)
		var enc Encoder
		for {
			rec, err := r.Next()
			if err != nil {
				return
			}
			done, err := c.Add(rec)
			if err != nil {
				return
			}
			if !done {
				continue
			}
			pfns := c.AppendPFNs(nil)
			data := make([]byte, len(pfns)*PageSize)
			for i, p := range pfns {
				if !c.ReadPage(uint64(p), data[i*PageSize:]) {
					t.Fatalf("captured pfn %d unreadable", p)
				}
			}
			out, err := enc.AppendCheckpoint(nil, pfns, data, c.AppendStates(nil))
			if err != nil {
				t.Fatalf("a complete capture does not encode: %v", err)
			}
			checkPages(t, out, pfns, data)
			c = NewCapture()
		}
	})
}

// checkPages re-reads an encoded checkpoint and compares its pages.
func checkPages(t *testing.T, out []byte, pfns []libxl.PFN, data []byte) {
	if err := ParseLibxlHeader(out); err == nil {
		out = out[LibxlHeaderLen:]
		_, n, err := ParseRecord(out)
		if err != nil {
			t.Fatal(err)
		}
		out = out[n+ImageHeaderLen+DomainHeaderLen:]
	}
	got := map[libxl.PFN][]byte{}
	for len(out) > 0 {
		r, n, err := ParseRecord(out)
		if err != nil {
			t.Fatal(err)
		}
		out = out[n:]
		if r.Type != RecPageData {
			continue
		}
		pd, err := ParsePageData(r.Body)
		if err != nil {
			t.Fatal(err)
		}
		off := 0
		for _, p := range pd.Pages {
			pg := make([]byte, PageSize)
			if p.Type.HasData() {
				copy(pg, pd.Data[off:])
				off += PageSize
			}
			got[libxl.PFN(p.PFN)] = pg
		}
	}
	if len(got) != len(pfns) {
		t.Fatalf("%d pages back, want %d", len(got), len(pfns))
	}
	for i, p := range pfns {
		if !bytes.Equal(got[p], data[i*PageSize:(i+1)*PageSize]) {
			t.Fatalf("pfn %d differs", p)
		}
	}
}

// FuzzPageData: any body ParsePageData accepts re-encodes to itself.
func FuzzPageData(f *testing.F) {
	body, _ := AppendPageData(nil, []Page{{1, PageNormal}, {2, PageInvalid}, {3, PageL2Pin}}, make([]byte, 2*PageSize))
	f.Add(body)
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0xf0})
	f.Fuzz(func(t *testing.T, b []byte) {
		pd, err := ParsePageData(b)
		if err != nil {
			return
		}
		again, err := AppendPageData(nil, pd.Pages, pd.Data)
		if err != nil {
			if len(pd.Pages) > MaxPagesPerRecord {
				return
			}
			t.Fatalf("accepted body does not re-encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatal("re-encoded body differs")
		}
	})
}
