package nbd

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeKernel plays the kernel's side of an attachment: it takes the
// sockets handed to Connect/Reconfigure (dup'ed, as the kernel takes a
// reference) and speaks the transmission phase on them, as Linux nbd
// does once configured.
type fakeKernel struct {
	mu      sync.Mutex
	cfg     DeviceConfig
	recfg   []Reconfig
	clients []*Client
	reconf  chan struct{} // if set, signalled after each Reconfigure
}

func (k *fakeKernel) take(fds []int, size int64, flags uint16) error {
	for _, fd := range fds {
		d, err := unix.Dup(fd)
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(d), "kernel-end")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			return err
		}
		k.clients = append(k.clients, NewTransmissionClient(c, size, flags))
	}
	return nil
}

func (k *fakeKernel) Connect(c DeviceConfig) (uint32, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.cfg = c
	if _, err := encodeConnect(c); err != nil {
		return 0, err
	}
	return 5, k.take(c.FDs, int64(c.Size), c.ServerFlags)
}

func (k *fakeKernel) Reconfigure(r Reconfig) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.recfg = append(k.recfg, r)
	k.clients = nil // the old sockets are dead
	err := k.take(r.FDs, int64(k.cfg.Size), k.cfg.ServerFlags)
	if k.reconf != nil {
		k.reconf <- struct{}{}
	}
	return err
}

func (k *fakeKernel) Disconnect(uint32) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, c := range k.clients {
		c.Close() // NBD_CMD_DISC on every socket, as the kernel sends
	}
	return nil
}

func (k *fakeKernel) client(i int) *Client {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.clients[i]
}

func TestAttachOverSocketpair(t *testing.T) {
	mem := NewMemBackend(1 << 20)
	srv := newServer(t, Config{Backend: mem})
	k := &fakeKernel{}
	a, err := Attach(context.Background(), k, srv, AttachConfig{Connections: 2})
	if err != nil {
		t.Fatal(err)
	}
	if a.Path() != "/dev/nbd5" || k.cfg.Size != 1<<20 || k.cfg.BlockSize != 512 || k.cfg.ServerFlags != srv.Flags() ||
		k.cfg.Timeout.Seconds() != 30 || k.cfg.DeadConnTimeout.Seconds() != 120 || len(k.cfg.FDs) != 2 {
		t.Fatalf("connect config %+v, path %s", k.cfg, a.Path())
	}
	if err := k.client(0).WriteAt([]byte("via socket 0"), 100, true); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 12)
	if err := k.client(1).ReadAt(got, 100); err != nil || string(got) != "via socket 0" {
		t.Fatalf("read on socket 1: %q, %v", got, err)
	}
	if err := a.Detach(); err != nil {
		t.Fatal(err)
	}
}

// TestReattachAfterRestart: the serving side dies (xl-kemari restarts);
// a new server on the same store reattaches with NBD_CMD_RECONFIGURE and
// the device's data is intact.
func TestReattachAfterRestart(t *testing.T) {
	mem := NewMemBackend(1 << 20)
	ctx, cancel := context.WithCancel(context.Background())
	k := &fakeKernel{}
	a, err := Attach(ctx, k, newServer(t, Config{Backend: mem}), AttachConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := k.client(0).WriteAt([]byte("before"), 0, false); err != nil {
		t.Fatal(err)
	}
	cancel() // the old daemon is gone: its socket ends close
	if err := a.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := k.client(0).ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("old socket after the restart: %v", err)
	}
	a2, err := Reattach(context.Background(), k, newServer(t, Config{Backend: mem}), 5, AttachConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if len(k.recfg) != 1 || k.recfg[0].Index != 5 || len(k.recfg[0].FDs) != 1 {
		t.Fatalf("reconfigure %+v", k.recfg)
	}
	got := make([]byte, 6)
	if err := k.client(0).ReadAt(got, 0); err != nil || string(got) != "before" {
		t.Fatalf("after reattach: %q, %v", got, err)
	}
	if err := a2.Detach(); err != nil {
		t.Fatal(err)
	}
}

// TestIOFlusher: PR_SET_IO_FLUSHER marks the serving thread. It needs
// CAP_SYS_RESOURCE and Linux 5.6; elsewhere it skips with the reason.
func TestIOFlusher(t *testing.T) {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // the thread dies with this goroutine
		if err := setIOFlusher(); err != nil {
			done <- err
			return
		}
		on, err := ioFlusher()
		if err == nil && !on {
			err = errors.New("PR_GET_IO_FLUSHER reports 0 after PR_SET_IO_FLUSHER")
		}
		done <- err
	}()
	err := <-done
	if err != nil {
		// Without the privilege the server still serves, and says why.
		srv := newServer(t, Config{IOFlusher: true})
		if err := dial(t, srv).WriteAt([]byte{1}, 0, false); err != nil {
			t.Fatal(err)
		}
		if srv.IOFlusherError() == nil {
			t.Fatal("IOFlusherError is nil although PR_SET_IO_FLUSHER fails here")
		}
	}
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EINVAL) {
		t.Skipf("PR_SET_IO_FLUSHER unavailable here (needs CAP_SYS_RESOURCE, Linux >= 5.6): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, Config{IOFlusher: true})
	c := dial(t, srv)
	if err := c.WriteAt([]byte{1}, 0, true); err != nil {
		t.Fatal(err)
	}
	if err := srv.IOFlusherError(); err != nil {
		t.Fatal(err)
	}
}

// TestAttachHeals: the kernel drops a socket without DISC (a request
// timed out); the attachment hands the device a new socket with
// NBD_CMD_RECONFIGURE and I/O goes on. With NoHeal the loss is reported.
func TestAttachHeals(t *testing.T) {
	mem := NewMemBackend(1 << 20)
	k := &fakeKernel{reconf: make(chan struct{}, 1)}
	a, err := Attach(context.Background(), k, newServer(t, Config{Backend: mem}), AttachConfig{})
	if err != nil {
		t.Fatal(err)
	}
	old := k.client(0)
	old.rw.Close() // the kernel shuts the socket down, no DISC
	<-old.done
	<-k.reconf // the healing loop handed the device a new socket
	if err := k.client(0).WriteAt([]byte("healed"), 0, true); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(mem.Bytes(), []byte("healed")) {
		t.Fatal("write after healing not in the store")
	}
	if err := a.Detach(); err != nil {
		t.Fatal(err)
	}
	if a.Heals() != 1 {
		t.Fatalf("%d heals, want 1", a.Heals())
	}

	k2 := &fakeKernel{}
	a2, err := Attach(context.Background(), k2, newServer(t, Config{}), AttachConfig{NoHeal: true})
	if err != nil {
		t.Fatal(err)
	}
	k2.client(0).rw.Close()
	if err := a2.Wait(); !errors.Is(err, ErrConnLost) {
		t.Fatalf("Wait without healing: %v", err)
	}
}
