package nbd

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestDifferential sends random operations through the client and
// applies the same ones to a plain byte slice; every read must match the
// reference, every refusal must be the one the spec asks for, and the
// backend must end equal to the reference. It runs on the in-memory and
// the file backend (real pwrite, fallocate and fdatasync). A failure
// prints its seed.
func TestDifferential(t *testing.T) {
	const size = 256 << 10
	backends := map[string]func(t *testing.T) Backend{
		"mem": func(*testing.T) Backend { return NewMemBackend(size) },
		"file": func(t *testing.T) Backend {
			p := filepath.Join(t.TempDir(), "disk.img")
			if err := os.WriteFile(p, make([]byte, size), 0o600); err != nil {
				t.Fatal(err)
			}
			b, err := OpenFile(p, false)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			return b
		},
	}
	for name, mk := range backends {
		for seed := uint64(1); seed <= 4; seed++ {
			t.Run(name, func(t *testing.T) {
				runDifferential(t, mk(t), seed, size)
			})
		}
	}
}

func runDifferential(t *testing.T, b Backend, seed uint64, size int) {
	var key [32]byte
	key[0] = byte(seed)
	src := rand.NewChaCha8(key)
	rng := rand.New(src)
	ref := make([]byte, size)
	srv := newServer(t, Config{Backend: b, MaxPayload: 64 << 10})
	c := dial(t, srv)
	// Offsets mostly inside, sometimes straddling or past the end.
	span := func() (int64, int64) {
		n := int64(rng.IntN(70 << 10))
		if rng.IntN(4) == 0 {
			n = int64(rng.IntN(4096))
		}
		off := int64(rng.IntN(size + 8192))
		return off, n
	}
	inRange := func(off, n int64) bool { return off+n <= int64(size) }
	for i := 0; i < 400; i++ {
		off, n := span()
		op := rng.IntN(10)
		var err error
		var want uint32 // expected errno
		switch {
		case op < 4: // write
			p := make([]byte, n)
			src.Read(p)
			if n > 64<<10 {
				want = EOVERFLOW
			} else if !inRange(off, n) {
				want = ENOSPC
			} else {
				copy(ref[off:], p)
			}
			err = c.WriteAt(p, off, rng.IntN(8) == 0)
		case op < 7: // read
			p := make([]byte, n)
			if n > 64<<10 {
				want = EOVERFLOW
			} else if !inRange(off, n) {
				want = EINVAL
			}
			err = c.ReadAt(p, off)
			if err == nil && !bytes.Equal(p, ref[off:off+n]) {
				t.Fatalf("seed %d op %d: READ offset %d length %d differs from the reference", seed, i, off, n)
			}
		case op == 7:
			if !inRange(off, n) {
				want = EINVAL
			} else {
				clear(ref[off : off+n])
			}
			err = c.Trim(off, n, false)
		case op == 8:
			if !inRange(off, n) {
				want = ENOSPC
			} else {
				clear(ref[off : off+n])
			}
			err = c.WriteZeroes(off, n, rng.IntN(2) == 0, rng.IntN(2) == 0)
		default:
			err = c.Flush()
		}
		if want == 0 && err != nil {
			t.Fatalf("seed %d op %d (kind %d offset %d length %d): %v", seed, i, op, off, n, err)
		}
		if want != 0 {
			var se *ServerError
			if !errors.As(err, &se) || se.Errno != want {
				t.Fatalf("seed %d op %d (kind %d offset %d length %d): err %v, want errno %d", seed, i, op, off, n, err, want)
			}
		}
	}
	got := make([]byte, size)
	if _, err := b.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, ref) {
		t.Fatalf("seed %d: backend differs from the reference at the end", seed)
	}
}
