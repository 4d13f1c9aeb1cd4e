package nbd

import (
	"bytes"
	"context"
	"io"
	"testing"
)

// streamConn feeds a fixed client stream to the server and discards what
// it answers.
type streamConn struct {
	r *bytes.Reader
}

func (s *streamConn) Read(p []byte) (int, error)  { return s.r.Read(p) }
func (s *streamConn) Write(p []byte) (int, error) { return len(p), nil }
func (s *streamConn) Close() error                { return nil }

// FuzzServeConn feeds arbitrary client bytes to the handshake and
// transmission phases. The server must end (the stream is finite),
// never panic, and never allocate what the peer declares beyond the
// bounds (MaxPayload 64 KiB here, options 4 KiB).
// Run: go test -run '^$' -fuzz FuzzServeConn -fuzztime 60s ./diskbuf/nbd
func FuzzServeConn(f *testing.F) {
	hs := hx(`00000003 49484156454f5054 00000007 0000000c 00000004 6469736b 0001 0003`)
	f.Add(hs)
	f.Add(append(append([]byte(nil), hs...), hx(`25609513 0001 0001 0000000000000001 0000000000000200 00000004 61626364
		25609513 0000 0000 0000000000000002 0000000000000200 00000004
		25609513 0003 0006 0000000000000003 0000000000000000 00001000
		25609513 0000 0004 0000000000000004 0000000000000000 00000200
		25609513 0000 0003 0000000000000005 0000000000000000 00000000
		25609513 0000 0002 0000000000000000 0000000000000000 00000000`)...))
	f.Add(hx(`00000001 49484156454f5054 00000001 00000004 6469736b 25609513 0000 0000 0000000000000001 0000000000000000 00000010`))
	f.Add(hx(`00000003 49484156454f5054 00000003 00000000 49484156454f5054 00000006 00000008 00000000 0001 0001 49484156454f5054 00000002 00000000`))
	f.Add(hx(`00000003 49484156454f5054 0000002a 00000003 010203 49484156454f5054 00000007 ffffffff`))
	f.Fuzz(func(t *testing.T, data []byte) {
		srv, err := NewServer(Config{Name: "disk", Backend: NewMemBackend(64 << 10), MaxPayload: 64 << 10, Workers: 2})
		if err != nil {
			t.Fatal(err)
		}
		_ = srv.ServeConn(context.Background(), &streamConn{bytes.NewReader(data)})
		if st := srv.Stats(); st.InFlight != 0 || st.Waiting != 0 {
			t.Fatalf("after the stream ended: %+v", st)
		}
	})
}

// FuzzTransmission starts in the transmission phase (the kernel's
// socket), with an observer and a quiesce/resume before the stream.
func FuzzTransmission(f *testing.F) {
	f.Add(hx(`25609513 0001 0001 0000000000000001 0000000000000200 00000004 61626364`))
	f.Add(hx(`25609513 0000 0001 0000000000000001 000000000000fffe 00000004 61626364 25609513 0000 0000 0000000000000002 0000000000000000 0000ffff`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var n int
		srv, err := NewServer(Config{Backend: NewMemBackend(64 << 10), MaxPayload: 64 << 10, Workers: 2,
			Observer: func(c Change) error {
				if c.Offset < 0 || c.Offset+c.Length > 64<<10 || (c.Op == OpWrite && int64(len(c.Data)) != c.Length) {
					t.Fatalf("observed out-of-range change %+v", c)
				}
				n++
				return nil
			}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := srv.Quiesce(context.Background()); err != nil {
			t.Fatal(err)
		}
		srv.Resume()
		_ = srv.ServeTransmission(context.Background(), &streamConn{bytes.NewReader(data)})
		_ = n
	})
}

// FuzzParseRequest: ParseRequest round-trips every header it accepts.
func FuzzParseRequest(f *testing.F) {
	f.Add(hx(`25609513 0001 0001 0102030405060708 1122334455667788 99aabbcc`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRequest(b)
		if err != nil {
			return
		}
		if got := AppendRequest(nil, r); !bytes.Equal(got, b[:requestHeaderLen]) {
			t.Fatalf("round trip % x -> % x", b[:requestHeaderLen], got)
		}
	})
}

var _ io.ReadWriteCloser = (*streamConn)(nil)
