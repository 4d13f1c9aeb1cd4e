package main

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/xl-kemari/xl-kemari/checkpoint"
	"github.com/xl-kemari/xl-kemari/checkpoint/wire"
)

// nopConn is a Conn over a byte stream, for peekHello.
type nopConn struct{ io.Reader }

func (nopConn) Write(p []byte) (int, error) { return len(p), nil }
func (nopConn) Close() error                { return nil }

func stream(t *testing.T, recs ...wire.Record) []byte {
	t.Helper()
	var b bytes.Buffer
	w := wire.NewWriter(&b)
	if err := w.WriteHeader(0); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// The listen service reads the hello to route a connection, then hands
// the Standby the stream from its first byte.
func TestPeekHelloReplays(t *testing.T) {
	hello := &wire.Hello{Version: wire.Version, Role: wire.RolePrimary, Inflight: 1, Domain: wire.DomainDesc{Name: "web1", Pages: 16}}
	b := stream(t, hello, &wire.Heartbeat{SentNanos: 1})
	name, c, err := peekHello(nopConn{bytes.NewReader(b)})
	if err != nil || name != "web1" {
		t.Fatalf("peekHello: %q, %v", name, err)
	}
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("replayed %d bytes of %d, %v", len(got), len(b), err)
	}
}

func TestPeekHelloRefuses(t *testing.T) {
	standby := &wire.Hello{Version: wire.Version, Role: wire.RoleStandby, Inflight: 1, Domain: wire.DomainDesc{Name: "web1"}}
	noName := &wire.Hello{Version: wire.Version, Role: wire.RolePrimary, Inflight: 1}
	for name, in := range map[string][]byte{
		"garbage":       []byte("GET / HTTP/1.1\r\n\r\n"),
		"empty":         nil,
		"standby hello": stream(t, standby),
		"no domain":     stream(t, noName),
	} {
		if _, _, err := peekHello(nopConn{bytes.NewReader(in)}); err == nil {
			t.Errorf("%s: accepted", name)
		} else if name == "standby hello" && !errors.Is(err, checkpoint.ErrPeer) {
			t.Errorf("%s: %v, want ErrPeer", name, err)
		}
	}
}
