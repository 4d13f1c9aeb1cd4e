package nbd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
)

func wantErrno(t *testing.T, err error, errno uint32, what string) {
	t.Helper()
	var se *ServerError
	if !errors.As(err, &se) || se.Errno != errno {
		t.Fatalf("%s: err %v, want errno %d", what, err, errno)
	}
}

func TestClientOps(t *testing.T) {
	mem := NewMemBackend(1 << 20)
	srv := newServer(t, Config{Backend: mem})
	c := dial(t, srv)
	if c.Size() != 1<<20 || c.Flags() != srv.Flags() || c.MaxBlock != MaxPayload || c.MinBlock != 1 {
		t.Fatalf("negotiated size %d flags %#x blocks %d/%d/%d", c.Size(), c.Flags(), c.MinBlock, c.PrefBlock, c.MaxBlock)
	}
	data := bytes.Repeat([]byte{0xab}, 8192)
	if err := c.WriteAt(data, 4096, false); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 8192)
	if err := c.ReadAt(got, 4096); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
	f0 := mem.Flushes()
	if err := c.WriteAt(data[:512], 0, true); err != nil {
		t.Fatal(err)
	}
	if mem.Flushes() != f0+1 {
		t.Fatalf("FUA write: %d backend flushes, want %d", mem.Flushes(), f0+1)
	}
	if err := c.Flush(); err != nil || mem.Flushes() != f0+2 {
		t.Fatalf("flush: %v, %d backend flushes", err, mem.Flushes())
	}
	if err := c.Trim(4096, 4096, false); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteZeroes(8192, 512, true, true); err != nil {
		t.Fatal(err)
	}
	if err := c.ReadAt(got, 4096); err != nil {
		t.Fatal(err)
	}
	want := append(make([]byte, 4096+512), data[:8192-4096-512]...)
	if !bytes.Equal(got, want) {
		t.Fatal("trim and write-zeroes did not zero their ranges only")
	}
	wantErrno(t, c.ReadAt(got, 1<<20-10), EINVAL, "read past end")
	wantErrno(t, c.WriteAt(got, 1<<20-10, false), ENOSPC, "write past end")
	wantErrno(t, c.Trim(1<<20, 1, false), EINVAL, "trim past end")
	wantErrno(t, c.WriteZeroes(1<<20-1, 2, false, false), ENOSPC, "zero past end")
	// Offset near 2^64: offset+length must not wrap.
	wantErrno(t, c.Do(Request{Type: CmdRead, Offset: ^uint64(0) - 1, Length: 4}, nil, make([]byte, 4)), EINVAL, "read at 2^64-2")
	wantErrno(t, c.Do(Request{Type: CmdCache}, nil, nil), EINVAL, "CACHE")
	wantErrno(t, c.Do(Request{Type: CmdBlockStatus, Length: 1}, nil, nil), EINVAL, "BLOCK_STATUS")
	wantErrno(t, c.Do(Request{Type: CmdWrite, Flags: CmdFlagNoHole, Length: 1}, []byte{1}, nil), EINVAL, "WRITE with NO_HOLE")
	// The connection is still good after every refusal.
	if err := c.ReadAt(got[:1], 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestReadOnly(t *testing.T) {
	srv := newServer(t, Config{ReadOnly: true})
	if f := srv.Flags(); f&FlagReadOnly == 0 || f&(FlagSendTrim|FlagSendWriteZeroes) != 0 {
		t.Fatalf("read-only flags %#x", f)
	}
	c := dial(t, srv)
	wantErrno(t, c.WriteAt([]byte{1}, 0, false), EPERM, "write")
	wantErrno(t, c.Trim(0, 512, false), EPERM, "trim")
	wantErrno(t, c.WriteZeroes(0, 512, false, false), EPERM, "zeroes")
	if err := c.ReadAt(make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
}

func TestListAndExportName(t *testing.T) {
	srv := newServer(t, Config{Name: "xvda"})
	names, err := List(serveOn(t, srv, true).c)
	if err != nil || len(names) != 1 || names[0] != "xvda" {
		t.Fatalf("List = %q, %v", names, err)
	}
	c, err := DialExportName(serveOn(t, srv, true).c, "xvda")
	if err != nil {
		t.Fatal(err)
	}
	if c.Size() != 1<<20 || c.Flags() != srv.Flags() {
		t.Fatalf("EXPORT_NAME size %d flags %#x", c.Size(), c.Flags())
	}
	if err := c.WriteAt([]byte("hello"), 10, false); err != nil {
		t.Fatal(err)
	}
	c.Close()
	var oe *OptionError
	if _, err := Dial(serveOn(t, srv, true).c, "nope"); !errors.As(err, &oe) || oe.Reply != repErrUnknown {
		t.Fatalf("Dial unknown export: %v", err)
	}
}

// blockingBackend holds each WriteAt until a token arrives on release.
type blockingBackend struct {
	*MemBackend
	entered chan struct{}
	release chan struct{}
}

func newBlocking(size int64) *blockingBackend {
	return &blockingBackend{MemBackend: NewMemBackend(size), entered: make(chan struct{}, 64), release: make(chan struct{})}
}

func (b *blockingBackend) WriteAt(p []byte, off int64) (int, error) {
	b.entered <- struct{}{}
	<-b.release
	return b.MemBackend.WriteAt(p, off)
}

func TestDiscAnswersInFlight(t *testing.T) {
	bb := newBlocking(1 << 16)
	srv := newServer(t, Config{Backend: bb})
	s := serveOn(t, srv, false)
	s.c.Write(hx(`25609513 0000 0001 0000000000000001 0000000000000000 00000002 beef`))
	<-bb.entered
	s.c.Write(hx(`25609513 0000 0002 0000000000000000 0000000000000000 00000000`)) // DISC
	close(bb.release)
	expect(t, s.c, hx(`67446698 00000000 0000000000000001`), "in-flight WRITE answered after DISC")
	expectEOF(t, s.c, "after DISC")
	if err := s.wait(); err != nil {
		t.Fatal(err)
	}
	if got := bb.Bytes()[:2]; !bytes.Equal(got, hx(`beef`)) {
		t.Fatalf("write not applied: % x", got)
	}
}

type errBackend struct {
	*MemBackend
	err error
}

func (b errBackend) WriteAt(p []byte, off int64) (int, error) { return 0, b.err }
func (b errBackend) Flush() error                             { return b.err }

func TestErrorMapping(t *testing.T) {
	for _, tc := range []struct {
		err   error
		errno uint32
	}{
		{fmt.Errorf("wrapped: %w", syscall.ENOSPC), ENOSPC},
		{syscall.EDQUOT, ENOSPC},
		{syscall.EROFS, EPERM},
		{syscall.EOPNOTSUPP, ENOTSUP},
		{errors.New("disk on fire"), EIO},
	} {
		srv := newServer(t, Config{Backend: errBackend{NewMemBackend(4096), tc.err}})
		c := dial(t, srv)
		wantErrno(t, c.WriteAt([]byte{1}, 0, false), tc.errno, tc.err.Error()+" write")
		wantErrno(t, c.Flush(), tc.errno, tc.err.Error()+" flush")
	}
}

func TestObserverOrderReproducesBackend(t *testing.T) {
	mem := NewMemBackend(64 << 10)
	var log changeLog
	srv := newServer(t, Config{Backend: mem, Observer: log.observe, FirstEpoch: 7})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		c := dial(t, srv)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				// Overlapping writes from every connection.
				off := int64((i * 509) % (60 << 10))
				if err := c.WriteAt(bytes.Repeat([]byte{byte(g*50 + i)}, 1024+i), off, i%7 == 0); err != nil {
					t.Error(err)
					return
				}
				if i%10 == 0 {
					if err := c.Trim(off, 512, false); err != nil {
						t.Error(err)
					}
					if err := c.Flush(); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	replica := NewMemBackend(64 << 10)
	for i, ch := range log.all() {
		if ch.Seq != uint64(i+1) || ch.Epoch != 7 {
			t.Fatalf("change %d: seq %d epoch %d", i, ch.Seq, ch.Epoch)
		}
		switch ch.Op {
		case OpWrite:
			replica.WriteAt(ch.Data, ch.Offset)
		case OpTrim, OpZero:
			replica.WriteZeroes(ch.Offset, ch.Length, false)
		}
	}
	if !bytes.Equal(replica.Bytes(), mem.Bytes()) {
		t.Fatal("replaying the observed changes in Seq order does not reproduce the backend")
	}
}

func TestObserverErrorIsEIO(t *testing.T) {
	srv := newServer(t, Config{Observer: func(Change) error { return errors.New("standby lost") }})
	c := dial(t, srv)
	wantErrno(t, c.WriteAt([]byte{1}, 0, false), EIO, "write with failing observer")
}

func TestPeerLengthNotAllocated(t *testing.T) {
	// A WRITE declaring 4 GiB - 1 is refused (EOVERFLOW) and its payload
	// skipped without allocation; the stream stays in sync.
	srv := newServer(t, Config{MaxPayload: 4096})
	s := serveOn(t, srv, false)
	go func() {
		s.c.Write(hx(`25609513 0000 0001 0000000000000001 0000000000000000 00002000`))
		s.c.Write(make([]byte, 0x2000))
		s.c.Write(hx(`25609513 0000 0000 0000000000000002 0000000000000000 00000001`))
	}()
	// Requests are served concurrently, so the two replies may come in
	// either order (the spec matches them by handle).
	want := map[string][]byte{
		"0000000000000001": hx(`67446698 0000004b 0000000000000001`),    // EOVERFLOW
		"0000000000000002": hx(`67446698 00000000 0000000000000002 00`), // the READ, in sync
	}
	for range 2 {
		head := make([]byte, 16)
		if _, err := io.ReadFull(s.c, head); err != nil {
			t.Fatalf("reply: %v", err)
		}
		h := fmt.Sprintf("%x", head[8:16])
		w, ok := want[h]
		if !ok {
			t.Fatalf("reply with handle %s: % x", h, head)
		}
		delete(want, h)
		got := append(head, make([]byte, len(w)-16)...)
		if _, err := io.ReadFull(s.c, got[16:]); err != nil {
			t.Fatalf("reply %s: %v", h, err)
		}
		if string(got) != string(w) {
			t.Fatalf("reply %s:\n got % x\nwant % x", h, got, w)
		}
	}
}

func TestServeListener(t *testing.T) {
	srv := newServer(t, Config{})
	l, err := net.Listen("unix", t.TempDir()+"/nbd.sock")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := contextWithCancel()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	conn, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := Dial(conn, "disk")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WriteAt([]byte{1, 2, 3}, 0, true); err != nil {
		t.Fatal(err)
	}
	cancel() // ends the listener and the connection
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := c.ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("after shutdown: %v", err)
	}
}
