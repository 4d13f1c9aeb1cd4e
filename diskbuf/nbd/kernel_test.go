package nbd

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// kernelOrSkip returns a netlink connection to the kernel's nbd driver,
// or skips: this needs root and the nbd module (the Xen lab's dom0 has
// it; this CI kernel does not).
func kernelOrSkip(t *testing.T) *Kernel {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("no nbd module check: kernel attach needs root")
	}
	if _, err := os.Stat("/sys/module/nbd"); err != nil {
		if out, err := exec.Command("modprobe", "nbd").CombinedOutput(); err != nil {
			t.Skipf("no nbd module: /sys/module/nbd absent and modprobe nbd failed: %v: %s", err, bytes.TrimSpace(out))
		}
	}
	k, err := OpenKernel()
	if errors.Is(err, ErrNoModule) {
		t.Skipf("no nbd module: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

// alignedBuf is page-aligned memory for O_DIRECT.
func alignedBuf(t *testing.T, n int) []byte {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	return b
}

type opCounter struct {
	mu sync.Mutex
	n  map[Op]int
}

func (o *opCounter) observe(c Change) error {
	o.mu.Lock()
	o.n[c.Op]++
	o.mu.Unlock()
	return nil
}

func (o *opCounter) get(op Op) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[op]
}

// TestKernelAttach (lab): a file-backed export attached to /dev/nbdN over
// a socketpair with NBD_CMD_CONNECT; writes and reads through the block
// device with O_DIRECT, fdatasync (-> NBD_CMD_FLUSH), BLKDISCARD (->
// NBD_CMD_TRIM), STATUS, then NBD_CMD_DISCONNECT.
// Run as root where nbd exists: go test -run TestKernel -v ./diskbuf/nbd
func TestKernelAttach(t *testing.T) {
	k := kernelOrSkip(t)
	const size = 16 << 20
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	fb, err := OpenFile(img, false)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	ops := &opCounter{n: map[Op]int{}}
	srv, err := NewServer(Config{Name: "lab", Backend: fb, Observer: ops.observe, IOFlusher: true, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := Attach(ctx, k, srv, AttachConfig{Timeout: 30 * time.Second, DeadConnTimeout: 60 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	detached := false
	defer func() {
		if !detached {
			k.Disconnect(a.Index)
		}
	}()
	t.Logf("attached %s; IO flusher: %v", a.Path(), srv.IOFlusherError())
	st, err := k.Status(&a.Index)
	if err != nil || len(st) != 1 || !st[0].Connected {
		t.Fatalf("status of %s: %+v, %v", a.Path(), st, err)
	}

	dev, err := os.OpenFile(a.Path(), os.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	var devSize uint64
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, dev.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&devSize))); e != 0 || devSize != size {
		t.Fatalf("BLKGETSIZE64 = %d, %v; want %d", devSize, e, size)
	}
	buf := alignedBuf(t, 1<<20)
	for i := range buf {
		buf[i] = byte(i*7 + 3)
	}
	if _, err := dev.WriteAt(buf, 4<<20); err != nil {
		t.Fatalf("O_DIRECT write: %v", err)
	}
	if err := unix.Fdatasync(int(dev.Fd())); err != nil {
		t.Fatalf("fdatasync %s: %v", a.Path(), err)
	}
	if ops.get(OpFlush) == 0 {
		t.Error("fdatasync on the device sent no NBD_CMD_FLUSH (is the write cache advertised?)")
	}
	back := alignedBuf(t, 1<<20)
	if _, err := dev.ReadAt(back, 4<<20); err != nil {
		t.Fatalf("O_DIRECT read: %v", err)
	}
	if !bytes.Equal(back, buf) {
		t.Fatal("read through the device differs from what was written")
	}
	onDisk := make([]byte, 1<<20)
	if _, err := fb.ReadAt(onDisk, 4<<20); err != nil || !bytes.Equal(onDisk, buf) {
		t.Fatalf("backing file differs from what was written through the device (%v)", err)
	}
	// BLKDISCARD 64 KiB -> NBD_CMD_TRIM -> zeroes (our TRIM is deterministic).
	rng := [2]uint64{4 << 20, 64 << 10}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, dev.Fd(), unix.BLKDISCARD, uintptr(unsafe.Pointer(&rng))); e != 0 {
		t.Errorf("BLKDISCARD: %v", e)
	} else {
		if ops.get(OpTrim) == 0 {
			t.Error("BLKDISCARD sent no NBD_CMD_TRIM")
		}
		if _, err := dev.ReadAt(back[:64<<10], 4<<20); err != nil || !bytes.Equal(back[:64<<10], make([]byte, 64<<10)) {
			t.Errorf("after discard: %v, data not zero", err)
		}
	}
	dev.Close()
	if err := a.Detach(); err != nil {
		t.Fatal(err)
	}
	detached = true
	if st, err := k.Status(&a.Index); err == nil && len(st) == 1 && st[0].Connected {
		t.Errorf("%s still connected after disconnect", a.Path())
	}
}

// TestKernelReattach (lab): the serving side dies with I/O outstanding
// (as when xl-kemari is restarted); the kernel announces the dead link,
// a new server reattaches with NBD_CMD_RECONFIGURE, and the write that
// was waiting completes without error.
func TestKernelReattach(t *testing.T) {
	k := kernelOrSkip(t)
	watch, err := OpenKernel()
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	if err := watch.WatchLinkDead(); err != nil {
		t.Fatal(err)
	}
	mem := NewMemBackend(8 << 20)
	srv1 := newServer(t, Config{Backend: mem, IOFlusher: true})
	ctx1, cancel1 := context.WithCancel(context.Background())
	a, err := Attach(ctx1, k, srv1, AttachConfig{Timeout: 10 * time.Second, DeadConnTimeout: 60 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Disconnect(a.Index)
	dev, err := os.OpenFile(a.Path(), os.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	cancel1() // the daemon is gone
	a.Wait()
	if idx, err := watch.NextLinkDead(time.Now().Add(30 * time.Second)); err != nil || idx != a.Index {
		t.Fatalf("NBD_CMD_LINK_DEAD: index %d, %v (want %d)", idx, err, a.Index)
	}
	buf := alignedBuf(t, 4096)
	copy(buf, "written while the daemon was away")
	werr := make(chan error, 1)
	go func() { _, err := dev.WriteAt(buf, 0); werr <- err }()
	a2, err := Reattach(context.Background(), k, newServer(t, Config{Backend: mem, IOFlusher: true}), a.Index, AttachConfig{DeadConnTimeout: 60 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write across the restart: %v", err)
	}
	if err := unix.Fdatasync(int(dev.Fd())); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(mem.Bytes(), []byte("written while the daemon was away")) {
		t.Fatal("write across the restart did not reach the store")
	}
	dev.Close()
	if err := a2.Detach(); err != nil {
		t.Fatal(err)
	}
}
