package sim

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/xl-kemari/xl-kemari/libxl"
)

// Backend is where a virtual disk's sectors live. The guest writes whole
// sectors at sector-aligned offsets; the replication layer (diskbuf)
// inserts itself here with Disk.SetBackend.
type Backend interface {
	io.ReaderAt
	io.WriterAt
}

// Disk is one virtual disk of a domain.
//
// Concurrency: safe for concurrent use. Guest writes happen inside a
// quantum, under the domain's lock, so a backend sees them in order and
// never while the domain is suspended.
type Disk struct {
	index   int
	sectors uint64
	writes  atomic.Uint64 // sectors written by the guest

	mu sync.Mutex
	// Protected by mu.
	backend Backend
}

func newDisk(i int, sectors uint64) *Disk {
	return &Disk{index: i, sectors: sectors, backend: NewMemDisk(sectors)}
}

// Index is the disk's position in DomainConfig.Disks.
func (k *Disk) Index() int { return k.index }

// Sectors is the disk's size in 512-byte sectors.
func (k *Disk) Sectors() uint64 { return k.sectors }

// Writes is the number of sectors the guest has written.
func (k *Disk) Writes() uint64 { return k.writes.Load() }

// SetBackend redirects the disk to b; nil installs a fresh, empty
// in-memory store.
func (k *Disk) SetBackend(b Backend) {
	if b == nil {
		b = NewMemDisk(k.sectors)
	}
	k.mu.Lock()
	k.backend = b
	k.mu.Unlock()
}

// Backend returns the current backend.
func (k *Disk) Backend() Backend {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.backend
}

// ReadAt reads through the current backend, for tests and verification.
func (k *Disk) ReadAt(p []byte, off int64) (int, error) { return k.Backend().ReadAt(p, off) }

// guestWrite writes whole sectors starting at sector.
func (k *Disk) guestWrite(sector uint64, data []byte) error {
	n := uint64(len(data)) / libxl.SectorSize
	if uint64(len(data))%libxl.SectorSize != 0 || sector+n > k.sectors {
		return fmt.Errorf("sim: disk %d: write of %d bytes at sector %d: %w", k.index, len(data), sector, libxl.ErrRange)
	}
	if _, err := k.Backend().WriteAt(data, int64(sector*libxl.SectorSize)); err != nil {
		return fmt.Errorf("sim: disk %d: write at sector %d: %w", k.index, sector, err)
	}
	k.writes.Add(n)
	return nil
}

const memBlock = 4096

// MemDisk is the default disk backend: a sparse in-memory store (4 KiB
// blocks allocated on first write; unwritten bytes read as zeros).
//
// Concurrency: safe for concurrent use.
type MemDisk struct {
	size int64

	mu sync.Mutex
	// Protected by mu.
	blocks map[int64]*[memBlock]byte
}

// NewMemDisk returns an empty store of the given size.
func NewMemDisk(sectors uint64) *MemDisk {
	return &MemDisk{size: int64(sectors * libxl.SectorSize), blocks: map[int64]*[memBlock]byte{}}
}

// Size is the store's size in bytes.
func (m *MemDisk) Size() int64 { return m.size }

// ReadAt implements io.ReaderAt.
func (m *MemDisk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("sim: memdisk read at %d: %w", off, libxl.ErrRange)
	}
	if off >= m.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), m.size-off))
	m.mu.Lock()
	for done := 0; done < n; {
		o := off + int64(done)
		bi, bo := o/memBlock, int(o%memBlock)
		c := min(n-done, memBlock-bo)
		if b := m.blocks[bi]; b != nil {
			copy(p[done:done+c], b[bo:])
		} else {
			clear(p[done : done+c])
		}
		done += c
	}
	m.mu.Unlock()
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt implements io.WriterAt; writes past the end fail whole.
func (m *MemDisk) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > m.size {
		return 0, fmt.Errorf("sim: memdisk write of %d bytes at %d (size %d): %w", len(p), off, m.size, libxl.ErrRange)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for done := 0; done < len(p); {
		o := off + int64(done)
		bi, bo := o/memBlock, int(o%memBlock)
		b := m.blocks[bi]
		if b == nil {
			b = new([memBlock]byte)
			m.blocks[bi] = b
		}
		done += copy(b[bo:], p[done:])
	}
	return len(p), nil
}
