package nbd

import (
	"context"
	"encoding/hex"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// connPair returns the two ends of a unix socketpair as net.Conns.
func connPair(t testing.TB) (a, b net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conv := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return conv(fds[0]), conv(fds[1])
}

// served starts srv on one end of a pair and returns the other end; the
// cleanup closes it and waits for the server, failing on a server error
// unless allowErr.
type served struct {
	c    net.Conn
	done chan error
}

func serveOn(t testing.TB, srv *Server, handshake bool) *served {
	t.Helper()
	cli, sc := connPair(t)
	s := &served{c: cli, done: make(chan error, 1)}
	go func() {
		if handshake {
			s.done <- srv.ServeConn(context.Background(), sc)
		} else {
			s.done <- srv.ServeTransmission(context.Background(), sc)
		}
	}()
	t.Cleanup(func() { cli.Close(); <-s.done })
	return s
}

// wait returns the server's result (after the client closed or the
// server ended).
func (s *served) wait() error {
	err := <-s.done
	s.done <- err // for the cleanup
	return err
}

func newServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.Backend == nil {
		cfg.Backend = NewMemBackend(1 << 20)
	}
	if cfg.Name == "" {
		cfg.Name = "disk"
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// dial returns a client negotiated with NBD_OPT_GO.
func dial(t testing.TB, srv *Server) *Client {
	t.Helper()
	s := serveOn(t, srv, true)
	c, err := Dial(s.c, "disk")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// hx decodes hex with spaces and newlines; on each line, the first word
// that is not hex starts a comment.
func hx(s string) []byte {
	var out []byte
	for _, line := range strings.Split(s, "\n") {
		for _, w := range strings.Fields(line) {
			b, err := hex.DecodeString(w)
			if err != nil {
				break
			}
			out = append(out, b...)
		}
	}
	return out
}

// expect reads len(want) bytes from r and compares them.
func expect(t *testing.T, r io.Reader, want []byte, what string) {
	t.Helper()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatalf("%s: read %d bytes: %v (got % x)", what, len(want), err, got)
	}
	if string(got) != string(want) {
		t.Fatalf("%s:\n got % x\nwant % x", what, got, want)
	}
}

// expectEOF checks the server closed the stream.
func expectEOF(t *testing.T, r io.Reader, what string) {
	t.Helper()
	var b [1]byte
	if n, err := r.Read(b[:]); n != 0 || err == nil {
		t.Fatalf("%s: want EOF, got %d bytes (% x), err %v", what, n, b[:n], err)
	}
}

// mu-protected change log for observer tests.
type changeLog struct {
	mu sync.Mutex
	ch []Change
}

func (l *changeLog) observe(c Change) error {
	c.Data = append([]byte(nil), c.Data...)
	l.mu.Lock()
	l.ch = append(l.ch, c)
	l.mu.Unlock()
	return nil
}

func (l *changeLog) all() []Change {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Change(nil), l.ch...)
}

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}
