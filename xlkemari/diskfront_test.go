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

	"github.com/xl-kemari/xl-kemari/checkpoint"
	"github.com/xl-kemari/xl-kemari/diskbuf"
	"github.com/xl-kemari/xl-kemari/diskbuf/nbd"
	"github.com/xl-kemari/xl-kemari/libxl"
)

// fakeNBD plays Linux nbd's side of a device: the sockets handed over
// by CONNECT and RECONFIGURE become userspace clients in the
// transmission phase (a stand-in for the kernel, which this machine
// lacks; the real one runs in the lab, test/xenlab/suite.sh).
type fakeNBD struct {
	mu      sync.Mutex
	size    int64
	flags   uint16
	backend string
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
	k.size, k.flags, k.backend = int64(c.Size), c.ServerFlags, c.BackendID
	defer func() { k.events <- "connect" }()
	return 7, k.take(c.FDs)
}

func (k *fakeNBD) Reconfigure(r nbd.Reconfig) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if r.Index != 7 {
		return unix.ENODEV
	}
	if r.BackendID != k.backend {
		// Linux 6.1: "must specify backend" / "backend image doesn't match".
		return unix.EINVAL
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
	f, err := newFront(frontConfig{Name: "web", Store: store, RunDir: dir, Dev: k, Attach: nbd.AttachConfig{BackendID: frontBackendID("web")}})
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
		if err := l.Serve(k, srv, nbd.AttachConfig{BackendID: frontBackendID("web")}); err != nil {
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

// TestLeaseDisksReplicate is start's disk path without the engine: the
// front's device is leased and served from a replicate-mode Primary
// (a read-only disk beside it gets an empty store); the guest's writes
// of each epoch, as Barrier returns them, applied to a Replica over the
// standby's copy (standbyDisks: made at the primary's size), leave the
// copy equal to the store; when protection ends the front serves again.
func TestLeaseDisksReplicate(t *testing.T) {
	_, k, dir, store := newTestFront(t)
	if err := k.client().WriteAt(sector('A'), 0, false); err != nil {
		t.Fatal(err)
	}
	disks := []libxl.Disk{{Index: 0, Target: "/srv/iso/debian.iso"}, {Index: 1, Target: "web", Writable: true, Script: "block-kemari"}}
	ld, err := leaseDisks(dir, disks, func() (nbd.Device, func(), error) { return k, func() {}, nil }, nbd.AttachConfig{})
	if err != nil {
		t.Fatal(err)
	}
	k.want(t, "reconfigure")
	if ld.sectors[0] != 0 || ld.sectors[1] != 2048 {
		t.Fatalf("sectors %v, want [0 2048]", ld.sectors)
	}
	// The standby: its copy made at the primary's size, the initial copy
	// (here the whole store) then the epochs.
	info := libxl.DomainInfo{Disks: []libxl.Disk{{Target: disks[0].Target}, {Target: "web", Writable: true, Sectors: ld.sectors[1]}}}
	copyDir := t.TempDir()
	stores, err := standbyDisks(copyDir)(info)
	if err != nil {
		t.Fatal(err)
	}
	rep := diskbuf.NewReplica(diskbuf.Replicate, stores)
	whole := make([]byte, 1<<20)
	if _, err := ld.prim.Device(1).ReadAt(whole, 0); err != nil {
		t.Fatal(err)
	}
	rep.Stage(diskbuf.Write{Disk: 1, Data: whole})
	rep.Commit(0)
	ld.prim.Protect()
	for e := uint64(1); e <= 3; e++ {
		for i := 0; i < 4; i++ {
			if err := k.client().WriteAt(sector(byte('a'+e)), int64(4096*(int(e)*8+i)), i == 3); err != nil {
				t.Fatal(err)
			}
		}
		if err := k.client().WriteZeroes(0, 4096, false, false); err != nil && e == 2 {
			t.Fatal(err)
		}
		for _, w := range ld.prim.Barrier(e) {
			if err := rep.Stage(w); err != nil {
				t.Fatal(err)
			}
		}
		ld.prim.Open()
		if err := rep.Commit(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := ld.end(); err != nil {
		t.Fatal(err)
	}
	k.want(t, "reconfigure") // the front serves again
	if err := k.client().Flush(); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(store)
	b, _ := os.ReadFile(filepath.Join(copyDir, "web"))
	if !bytes.Equal(a, b) {
		t.Fatal("the standby's copy differs from the primary's store")
	}
}

// TestStandbyDisks: the standby's copy is made at the primary's size,
// a stale one is zeroed, one of another size is refused by name.
func TestStandbyDisks(t *testing.T) {
	dir := t.TempDir()
	info := libxl.DomainInfo{Disks: []libxl.Disk{{Target: "web", Writable: true, Sectors: 8}, {Target: "/srv/x.iso", Sectors: 4}}}
	if err := os.WriteFile(filepath.Join(dir, "web"), bytes.Repeat([]byte{7}, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := standbyDisks(dir)(info)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "web")); !bytes.Equal(got, make([]byte, 4096)) {
		t.Error("the stale copy was not zeroed")
	}
	if m, ok := st[1].(*diskbuf.MemStore); !ok || m.Size() != 2048 {
		t.Errorf("read-only disk: store %T", st[1])
	}
	st[0].(*os.File).Close()
	info.Disks[0].Sectors = 16
	if _, err := standbyDisks(dir)(info); err == nil || !strings.Contains(err.Error(), "disk web: the standby's copy "+filepath.Join(dir, "web")+" is 4096 bytes, the primary's disk 8192") {
		t.Errorf("size mismatch: %v", err)
	}
	os.Remove(filepath.Join(dir, "web"))
	if st, err := standbyDisks(dir)(info); err != nil {
		t.Error(err)
	} else if fi, _ := os.Stat(filepath.Join(dir, "web")); fi.Size() != 8192 {
		t.Errorf("made a copy of %d bytes, want 8192", fi.Size())
	} else {
		st[0].(*os.File).Close()
	}
}

// status shows the initial disk copy's progress while it runs.
func TestStateTextDiskSync(t *testing.T) {
	for _, c := range []struct {
		disk float64
		want string
	}{{0, "syncing 95%"}, {40, "syncing 95% (disks 40%)"}, {100, "syncing 95%"}} {
		if got := stateText(checkpoint.Status{Role: "primary", State: "syncing", SyncPercent: 95, DiskSyncPercent: c.disk}); got != c.want {
			t.Errorf("disk %v%%: %q, want %q", c.disk, got, c.want)
		}
	}
}
