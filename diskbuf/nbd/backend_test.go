package nbd

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func tempImage(t *testing.T, size int) (string, *FileBackend) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, bytes.Repeat([]byte{0xee}, size), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := OpenFile(p, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return p, b
}

// TestFileBackendZeroing: TRIM and WRITE_ZEROES leave zeroes, whether
// fallocate is used or the fallback writes them, and nothing around the
// range changes.
func TestFileBackendZeroing(t *testing.T) {
	for _, mode := range []string{"fallocate", "zero-range only", "write zeroes"} {
		t.Run(mode, func(t *testing.T) {
			const size = 1 << 20
			p, b := tempImage(t, size)
			switch mode {
			case "zero-range only":
				b.noPunch.Store(true)
			case "write zeroes":
				b.noPunch.Store(true)
				b.noZeroRange.Store(true)
			}
			if b.Size() != size {
				t.Fatalf("size %d", b.Size())
			}
			if err := b.Trim(4096, 8192); err != nil {
				t.Fatal(err)
			}
			if err := b.WriteZeroes(65536, 3000, true); err != nil {
				t.Fatal(err)
			}
			if err := b.WriteZeroes(200000, 1<<19, false); err != nil {
				t.Fatal(err)
			}
			if err := b.Flush(); err != nil {
				t.Fatal(err)
			}
			want := bytes.Repeat([]byte{0xee}, size)
			clear(want[4096 : 4096+8192])
			clear(want[65536 : 65536+3000])
			clear(want[200000 : 200000+1<<19])
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("file differs from the expected zeroed ranges")
			}
			if fi, _ := os.Stat(p); fi.Size() != size {
				t.Fatalf("file size changed to %d", fi.Size())
			}
		})
	}
}

func TestFileBackendErrors(t *testing.T) {
	if _, err := OpenFile(filepath.Join(t.TempDir(), "absent"), false); err == nil {
		t.Fatal("opened a missing file")
	}
	p, _ := tempImage(t, 4096)
	ro, err := OpenFile(p, true)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	_, err = ro.WriteAt([]byte{1}, 0)
	if errnoOf(err) != EPERM && errnoOf(err) != EIO {
		t.Fatalf("write to read-only file: %v (errno %d)", err, errnoOf(err))
	}
	if e := errnoOf(unix.EBADF); e != EIO {
		t.Fatalf("EBADF maps to %d", e)
	}
}

func TestStoreBackend(t *testing.T) {
	p, _ := tempImage(t, 8192)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	srv := newServer(t, Config{Backend: StoreBackend{S: f, Bytes: 8192}})
	c := dial(t, srv)
	if err := c.WriteAt([]byte("store"), 10, true); err != nil {
		t.Fatal(err)
	}
	if err := c.Trim(0, 8, false); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 16)
	if err := c.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, append(append(make([]byte, 8), 0xee, 0xee), "store\xee"...)) {
		t.Fatalf("store contents % x", got)
	}
}
