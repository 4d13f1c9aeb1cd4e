package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/xl-kemari/xl-kemari/diskbuf"
	"github.com/xl-kemari/xl-kemari/diskbuf/nbd"
)

// fakeNBD plays Linux nbd's side of a device: the sockets handed over
// by CONNECT and RECONFIGURE become userspace clients in the
// transmission phase (a stand-in for the kernel, which this machine
// lacks; the real one runs in the lab, test/xenlab/suite.sh).
type fakeNBD struct {
	mu      sync.Mutex
	size    int64
	flags   uint16
	clients []*nbd.Client
	events  chan string // "connect", "reconfigure", "disconnect"
}

func newFakeNBD() *fakeNBD { return &fakeNBD{events: make(chan string, 16)} }

func (k *fakeNBD) take(fds []int) error {
	k.clients = nil // the previous sockets are dead
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
		k.clients = append(k.clients, nbd.NewTransmissionClient(c, k.size, k.flags))
	}
	return nil
}

func (k *fakeNBD) Connect(c nbd.DeviceConfig) (uint32, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.size, k.flags = int64(c.Size), c.ServerFlags
	defer func() { k.events <- "connect" }()
	return 7, k.take(c.FDs)
}

func (k *fakeNBD) Reconfigure(r nbd.Reconfig) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if r.Index != 7 {
		return unix.ENODEV
	}
	defer func() { k.events <- "reconfigure" }()
	return k.take(r.FDs)
}

func (k *fakeNBD) Disconnect(uint32) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, c := range k.clients {
		c.Close()
	}
	k.events <- "disconnect"
	return nil
}

func (k *fakeNBD) client() *nbd.Client {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.clients[0]
}

func (k *fakeNBD) want(t *testing.T, ev string) {
	t.Helper()
	if got := <-k.events; got != ev {
		t.Fatalf("kernel saw %s, want %s", got, ev)
	}
}

func sector(b byte) []byte { return bytes.Repeat([]byte{b}, 4096) }

func newTestFront(t *testing.T) (*front, *fakeNBD, string, string) {
	t.Helper()
	dir := t.TempDir()
	store := filepath.Join(dir, "web.img")
	if err := os.WriteFile(store, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	k := newFakeNBD()
	f, err := newFront(frontConfig{Name: "web", Store: store, RunDir: dir, Dev: k})
	if err != nil {
		t.Fatal(err)
	}
	k.want(t, "connect")
	go f.serve()
	t.Cleanup(func() { f.close() })
	return f, k, dir, store
}

// TestDiskFrontLease: the front publishes its device; start leases it
// (the front drains and lets go, the lease holder reattaches the same
// device with a server over a gated diskbuf.Primary, whose barrier then
// sees the guest's write), and when the holder dies without returning
// it, the front reattaches and serves on; a returned lease is answered.
// Every write is on the store at the end.
func TestDiskFrontLease(t *testing.T) {
	f, k, dir, store := newTestFront(t)
	if b, err := os.ReadFile(filepath.Join(dir, "disk", "web")); err != nil || string(b) != "/dev/nbd7\n" {
		t.Fatalf("published %q, %v; want /dev/nbd7", b, err)
	}
	if st, err := os.Stat(filepath.Join(dir, "disk", "web.sock")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("control socket %v, %v; want mode 0600", st, err)
	}
	if err := k.client().WriteAt(sector('A'), 0, false); err != nil {
		t.Fatal(err)
	}

	for round, die := range []bool{true, false} {
		l, err := leaseFront(dir, "web")
		if err != nil {
			t.Fatal(err)
		}
		if l.Resp.Index != 7 || l.Resp.Store != store || l.Resp.Size != 1<<20 {
			t.Fatalf("lease %+v", l.Resp)
		}
		file, err := os.OpenFile(l.Resp.Store, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		prim := diskbuf.NewPrimary(diskbuf.Replicate, []diskbuf.Store{file})
		srv, err := nbd.NewServer(nbd.Config{Name: "web", Backend: nbd.StoreBackend{S: prim.Device(0), Bytes: l.Resp.Size}})
		if err != nil {
			t.Fatal(err)
		}
		prim.SetGate(srv)
		if err := l.Serve(k, srv, nbd.AttachConfig{}); err != nil {
			t.Fatal(err)
		}
		k.want(t, "reconfigure")
		b := byte('B' + round)
		if err := k.client().WriteAt(sector(b), int64(4096*(round+1)), true); err != nil {
			t.Fatal(err)
		}
		ws := prim.Barrier(1)
		if len(ws) != 1 || ws[0].Sector != uint64(8*(round+1)) || ws[0].Data[0] != b {
			t.Fatalf("round %d: barrier saw %d writes, want the guest's one", round, len(ws))
		}
		prim.Open()
		if die {
			// The holder dies: its sockets and its lease connection end.
			l.cancel()
			l.att.Wait()
			l.conn.Close()
		} else if err := l.End(); err != nil {
			t.Fatal(err)
		}
		k.want(t, "reconfigure") // the front took the device back
		file.Close()
		if err := k.client().WriteAt(sector('Z'-byte(round)), int64(4096*(10+round)), false); err != nil {
			t.Fatalf("round %d: after the lease: %v", round, err)
		}
	}
	r, err := frontCall(dir, "web", "status", 5e9)
	if err != nil || r.Leased || r.Index != 7 {
		t.Fatalf("status %+v, %v", r, err)
	}
	if _, err := frontCall(dir, "web", "detach", 5e9); err != nil {
		t.Fatal(err)
	}
	k.want(t, "disconnect")
	<-f.done
	if _, err := os.Stat(filepath.Join(dir, "disk", "web")); !os.IsNotExist(err) {
		t.Fatalf("still published after detach: %v", err)
	}
	got, _ := os.ReadFile(store)
	for off, b := range map[int]byte{0: 'A', 4096: 'B', 8192: 'C', 40960: 'Z', 45056: 'Y'} {
		if !bytes.Equal(got[off:off+4096], sector(b)) {
			t.Errorf("store at %d is not %c", off, b)
		}
	}
}

// TestDiskFrontLeaseOnce: a device already leased is not leased twice.
func TestDiskFrontLeaseOnce(t *testing.T) {
	_, k, dir, _ := newTestFront(t)
	l, err := leaseFront(dir, "web")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaseFront(dir, "web"); err == nil || !strings.Contains(err.Error(), "leased already") {
		t.Fatalf("second lease: %v", err)
	}
	if err := l.End(); err != nil {
		t.Fatal(err)
	}
	k.want(t, "reconfigure")
}

func TestFrontName(t *testing.T) {
	for in, want := range map[string]string{"web": "web", "/dev/web-1.a_b": "web-1.a_b", "X9": "X9"} {
		if got, err := frontName(in); err != nil || got != want {
			t.Errorf("frontName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-x", ".x", "a/b", "../x", "a;rm -rf /", "a b", "$(id)", "a\nb", strings.Repeat("a", 65), "/dev/", "/srv/x.img"} {
		if _, err := frontName(bad); err == nil {
			t.Errorf("frontName(%q) accepted", bad)
		}
	}
}
