package nbd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Backend is the storage an export serves.
//
// Offsets and lengths reaching a Backend have been checked by the server:
// 0 <= off, off+len <= Size(). Errors are mapped to NBD error codes by
// unwrapping to a syscall.Errno (ENOSPC, EPERM, ...); anything else is EIO.
//
// Concurrency: every method may be called from several goroutines at
// once. When the server has an Observer it serialises the mutating calls
// (WriteAt, Trim, WriteZeroes) so that their order is the order observed.
type Backend interface {
	// Size is the export's size in bytes; constant for the Backend's life.
	Size() int64
	// ReadAt fills p from off; it returns len(p), nil or an error.
	ReadAt(p []byte, off int64) (int, error)
	// WriteAt writes p at off; on success the data is visible to every
	// later ReadAt, but maybe not yet durable.
	WriteAt(p []byte, off int64) (int, error)
	// Flush makes every write that has returned (from any connection)
	// durable. The server also uses it for FUA.
	Flush() error
	// Trim discards the range. Unlike NBD's TRIM (a hint), a Backend's
	// Trim must leave the range reading as zeroes, so that a replica
	// applying the same operation ends equal, byte for byte.
	Trim(off, length int64) error
	// WriteZeroes makes the range read as zeroes; with noHole the space
	// stays allocated (NBD_CMD_FLAG_NO_HOLE).
	WriteZeroes(off, length int64, noHole bool) error
}

// FileBackend serves a regular file or a block device: pwrite, fdatasync
// for FLUSH and FUA, fallocate(PUNCH_HOLE) for TRIM and
// fallocate(PUNCH_HOLE or ZERO_RANGE) for WRITE_ZEROES, falling back to
// writing zeroes where the file system or device refuses them.
type FileBackend struct {
	f    *os.File
	path string
	size int64
	// Set once a fallocate mode is known unsupported, so that the
	// syscall is not retried for every request.
	noPunch, noZeroRange atomic.Bool
}

// OpenFile opens path (a regular file or block device) as a Backend.
func OpenFile(path string, readOnly bool) (*FileBackend, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("nbd: open backend: %w", err)
	}
	// Seek to the end works for regular files and block devices alike.
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("nbd: size of backend %s: %w", path, err)
	}
	return &FileBackend{f: f, path: path, size: size}, nil
}

// Close closes the file.
func (b *FileBackend) Close() error { return b.f.Close() }

// Size implements Backend.
func (b *FileBackend) Size() int64 { return b.size }

// ReadAt implements Backend.
func (b *FileBackend) ReadAt(p []byte, off int64) (int, error) {
	n, err := b.f.ReadAt(p, off)
	if err == io.EOF && n == len(p) {
		err = nil
	}
	if err != nil {
		return n, fmt.Errorf("nbd: read %s offset %d length %d: %w", b.path, off, len(p), err)
	}
	return n, nil
}

// WriteAt implements Backend.
func (b *FileBackend) WriteAt(p []byte, off int64) (int, error) {
	n, err := b.f.WriteAt(p, off)
	if err != nil {
		return n, fmt.Errorf("nbd: write %s offset %d length %d: %w", b.path, off, len(p), err)
	}
	return n, nil
}

// Flush implements Backend with fdatasync(2).
func (b *FileBackend) Flush() error {
	if err := unix.Fdatasync(int(b.f.Fd())); err != nil {
		return fmt.Errorf("nbd: fdatasync %s: %w", b.path, err)
	}
	return nil
}

// Trim implements Backend: punch a hole (zeroes on read), else zero.
func (b *FileBackend) Trim(off, length int64) error { return b.WriteZeroes(off, length, false) }

// WriteZeroes implements Backend.
func (b *FileBackend) WriteZeroes(off, length int64, noHole bool) error {
	if length == 0 {
		return nil
	}
	fd := int(b.f.Fd())
	if !noHole && !b.noPunch.Load() {
		err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
		if err == nil {
			return nil
		}
		if !unsupported(err) {
			return fmt.Errorf("nbd: punch hole %s offset %d length %d: %w", b.path, off, length, err)
		}
		b.noPunch.Store(true)
	}
	if !b.noZeroRange.Load() {
		err := unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, length)
		if err == nil {
			return nil
		}
		if !unsupported(err) {
			return fmt.Errorf("nbd: zero range %s offset %d length %d: %w", b.path, off, length, err)
		}
		b.noZeroRange.Store(true)
	}
	return writeZeroes(b, off, length)
}

func unsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENODEV)
}

var zeroChunk = make([]byte, 1<<20)

// writeZeroes writes zeroes over the range in chunks, without allocating.
func writeZeroes(w io.WriterAt, off, length int64) error {
	for length > 0 {
		n := min(length, int64(len(zeroChunk)))
		if _, err := w.WriteAt(zeroChunk[:n], off); err != nil {
			return err
		}
		off += n
		length -= n
	}
	return nil
}

// MemBackend is a Backend in memory, for tests and the simulator.
type MemBackend struct {
	mu sync.RWMutex
	// Protected by mu.
	data    []byte
	flushes int
}

// NewMemBackend returns a zeroed backend of size bytes.
func NewMemBackend(size int64) *MemBackend { return &MemBackend{data: make([]byte, size)} }

// Size implements Backend.
func (m *MemBackend) Size() int64 { return int64(len(m.data)) }

// ReadAt implements Backend.
func (m *MemBackend) ReadAt(p []byte, off int64) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if off < 0 || off+int64(len(p)) > int64(len(m.data)) {
		return 0, fmt.Errorf("nbd: mem read offset %d length %d past size %d: %w", off, len(p), len(m.data), unix.EINVAL)
	}
	return copy(p, m.data[off:]), nil
}

// WriteAt implements Backend.
func (m *MemBackend) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(m.data)) {
		return 0, fmt.Errorf("nbd: mem write offset %d length %d past size %d: %w", off, len(p), len(m.data), unix.ENOSPC)
	}
	return copy(m.data[off:], p), nil
}

// Flush implements Backend.
func (m *MemBackend) Flush() error {
	m.mu.Lock()
	m.flushes++
	m.mu.Unlock()
	return nil
}

// Flushes returns how many times Flush was called.
func (m *MemBackend) Flushes() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.flushes
}

// Trim implements Backend.
func (m *MemBackend) Trim(off, length int64) error { return m.WriteZeroes(off, length, false) }

// WriteZeroes implements Backend.
func (m *MemBackend) WriteZeroes(off, length int64, _ bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || length < 0 || off+length > int64(len(m.data)) {
		return fmt.Errorf("nbd: mem zero offset %d length %d past size %d: %w", off, length, len(m.data), unix.ENOSPC)
	}
	clear(m.data[off : off+length])
	return nil
}

// Bytes returns a copy of the contents.
func (m *MemBackend) Bytes() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]byte(nil), m.data...)
}

// Store is the shape of diskbuf.Store (and of an *os.File): what
// StoreBackend adapts.
type Store interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// StoreBackend serves any Store of a known size: Flush is Sync, and Trim
// and WriteZeroes write zeroes. It is the shape a diskbuf Primary's
// Device needs to be served in shared mode (held writes, reads that see
// them) once Device has a Sync; its I/O must then be whole sectors, as
// the kernel's requests are with a 512-byte block size.
type StoreBackend struct {
	S     Store
	Bytes int64
}

// Size implements Backend.
func (s StoreBackend) Size() int64 { return s.Bytes }

// ReadAt implements Backend.
func (s StoreBackend) ReadAt(p []byte, off int64) (int, error) {
	n, err := s.S.ReadAt(p, off)
	if err == io.EOF && n == len(p) {
		err = nil
	}
	return n, err
}

// WriteAt implements Backend.
func (s StoreBackend) WriteAt(p []byte, off int64) (int, error) { return s.S.WriteAt(p, off) }

// Flush implements Backend.
func (s StoreBackend) Flush() error { return s.S.Sync() }

// Trim implements Backend.
func (s StoreBackend) Trim(off, length int64) error { return writeZeroes(s.S, off, length) }

// WriteZeroes implements Backend.
func (s StoreBackend) WriteZeroes(off, length int64, _ bool) error {
	return writeZeroes(s.S, off, length)
}
