package svc

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// server answers requests on loopback, dropping the first n datagrams;
// it signals every datagram it receives on the returned channel.
func server(t *testing.T, drop int) (string, <-chan struct{}) {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	got := make(chan struct{}, 1)
	go func() {
		buf := make([]byte, 512)
		var counter uint64
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			select {
			case got <- struct{}{}:
			default:
			}
			if drop > 0 {
				drop--
				continue
			}
			req, err := DecodeRequest(buf[:n])
			if err != nil {
				continue
			}
			counter++
			// A stray datagram first: the client must ignore it.
			conn.WriteToUDPAddrPort([]byte("junk"), from)
			b, _ := EncodeReply(Reply{Client: req.Client, Seq: req.Seq, Status: StatusOK, Value: counter})
			conn.WriteToUDPAddrPort(b, from)
		}
	}()
	return conn.LocalAddr().String(), got
}

func TestClientRetries(t *testing.T) {
	addr, _ := server(t, 2)
	c, err := NewClient(addr, 5)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetTryTimeout(10 * time.Millisecond)
	rec := NewRecorder(nil)
	c.SetRecorder(rec)
	rep, err := c.Do(t.Context(), Request{Op: OpIncr})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Client != 5 || rep.Seq != 1 {
		t.Errorf("reply %+v", rep)
	}
	rs := rec.Records()
	if len(rs) != 1 || rs[0].Tries != 3 || !rs[0].Acked {
		t.Errorf("records %+v, want one acked after 3 tries", rs)
	}
	if _, err := c.Do(t.Context(), Request{Op: OpIncr, Key: 1}); !errors.Is(err, ErrMalformed) {
		t.Errorf("invalid request: %v", err)
	}
}

func TestClientContext(t *testing.T) {
	addr, got := server(t, 1<<30)
	c, err := NewClient(addr, 5)
	if err != nil {
		t.Fatal(err)
	}
	c.SetTryTimeout(time.Hour) // only cancellation can end the wait
	rec := NewRecorder(nil)
	c.SetRecorder(rec)
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-got // the first try reached the server
		cancel()
	}()
	if _, err := c.Do(ctx, Request{Op: OpGet}); !errors.Is(err, context.Canceled) {
		t.Errorf("Do after cancel: %v", err)
	}
	if rs := rec.Records(); len(rs) != 1 || rs[0].Acked || rs[0].Err == "" {
		t.Errorf("records %+v, want one unacked with its error", rs)
	}
	c.Close()
	if _, err := c.Do(t.Context(), Request{Op: OpGet}); !errors.Is(err, ErrClosed) {
		t.Errorf("Do after Close: %v", err)
	}
}
