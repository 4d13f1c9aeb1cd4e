package diskbuf

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
)

// SectorSize is the unit of every offset and length.
const SectorSize = 512

// Mode selects how writes are protected.
type Mode uint8

// Modes, named as in the kemari disk= setting.
const (
	Replicate Mode = iota
	Shared
	None
)

// ParseMode maps "replicate", "shared", "none".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "replicate", "":
		return Replicate, nil
	case "shared":
		return Shared, nil
	case "none":
		return None, nil
	}
	return 0, fmt.Errorf("%w: disk mode %q (want replicate, shared or none)", ErrBadWrite, s)
}

func (m Mode) String() string { return [...]string{"replicate", "shared", "none"}[m] }

// Errors.
var (
	ErrBadWrite = errors.New("diskbuf: bad write")
	ErrNoDisk   = errors.New("diskbuf: no such disk")
)

// Store is the backing storage of one disk: a file or block device on the
// host, or memory in tests.
type Store interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// Write is one guest write: whole sectors at Sector of disk Disk.
type Write struct {
	Disk   uint32
	Sector uint64
	Data   []byte
}

type entry struct {
	epoch uint64 // 0 until a barrier claims it
	w     Write
}

// Primary is the primary side for all disks of one domain.
//
// Concurrency: the guest's I/O path calls ReadAt/WriteAt through Device
// from any goroutine; the primary loop calls the rest. A mutex orders them.
type Primary struct {
	mode   Mode
	stores []Store

	// gate, if set, is drained at every Barrier (SetGate); gated says
	// Barrier closed it and Open has not reopened it. Both belong to the
	// primary loop.
	gate  Gate
	gated bool

	mu sync.Mutex
	// Protected by mu.
	cur         []entry                   // writes not yet under a barrier
	held        []entry                   // shared: barriered, not yet released, ascending epoch
	overlay     []map[uint64]*overlaySect // shared: latest held data per sector, per disk
	unprotected bool
}

type overlaySect struct {
	epoch uint64 // 0 while current
	data  [SectorSize]byte
}

// NewPrimary returns the primary side over stores (one per disk).
func NewPrimary(mode Mode, stores []Store) *Primary {
	p := &Primary{mode: mode, stores: stores}
	p.overlay = make([]map[uint64]*overlaySect, len(stores))
	for i := range p.overlay {
		p.overlay[i] = map[uint64]*overlaySect{}
	}
	return p
}

// Gate is what serves a Primary's devices to the guest and can hold its
// requests at an epoch boundary: an NBD front's *nbd.Server.
type Gate interface {
	// Quiesce stops admitting requests and returns once every admitted
	// one has been answered.
	Quiesce(ctx context.Context) (uint64, error)
	// Resume admits requests again.
	Resume()
}

// SetGate makes every Barrier drain g first, so that the writes a barrier
// closes are exactly those the guest was answered for: without it a write
// in flight at the barrier (admitted, not yet on the store) would land in
// the next epoch while the guest already saw its answer in this one.
// Call it once, before the first Barrier.
func (p *Primary) SetGate(g Gate) { p.gate = g }

// Device returns disk i as an io.ReaderAt + io.WriterAt for the guest's
// disk backend. Offsets and lengths must be multiples of SectorSize.
func (p *Primary) Device(i int) *Device { return &Device{p: p, disk: uint32(i)} }

// Device is one disk of a Primary, as the guest sees it.
type Device struct {
	p    *Primary
	disk uint32
}

// WriteAt implements io.WriterAt for the guest.
func (d *Device) WriteAt(b []byte, off int64) (int, error) {
	if err := d.p.write(Write{Disk: d.disk, Sector: uint64(off) / SectorSize, Data: b}, off); err != nil {
		return 0, err
	}
	return len(b), nil
}

// ReadAt implements io.ReaderAt for the guest: in shared mode it sees the
// writes still held.
func (d *Device) ReadAt(b []byte, off int64) (int, error) { return d.p.read(d.disk, b, off) }

// Sync is the guest's flush: replicate mode (and an unprotected primary)
// syncs the local store, which holds every write already. In shared mode
// the held writes are not on the store until their epoch is acknowledged
// (Release syncs them then); a flush answered before that is safe because
// a guest that saw the answer is lost with its epoch if the primary dies
// before the ack, and a replica resumes from an epoch before the flush.
func (d *Device) Sync() error {
	if int(d.disk) >= len(d.p.stores) {
		return fmt.Errorf("%w %d", ErrNoDisk, d.disk)
	}
	if err := d.p.stores[d.disk].Sync(); err != nil {
		return fmt.Errorf("diskbuf: sync disk %d: %w", d.disk, err)
	}
	return nil
}

func checkIO(nstores int, disk uint32, n int, off int64) error {
	if int(disk) >= nstores {
		return fmt.Errorf("%w %d", ErrNoDisk, disk)
	}
	if off < 0 || off%SectorSize != 0 || n%SectorSize != 0 {
		return fmt.Errorf("%w: offset %d length %d not whole sectors", ErrBadWrite, off, n)
	}
	return nil
}

func (p *Primary) write(w Write, off int64) error {
	if err := checkIO(len(p.stores), w.Disk, len(w.Data), off); err != nil {
		return err
	}
	w.Data = append([]byte(nil), w.Data...)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == Shared && !p.unprotected {
		// Output: hold it; reads see it through the overlay.
		ov := p.overlay[w.Disk]
		for i := 0; i < len(w.Data); i += SectorSize {
			s := ov[w.Sector+uint64(i/SectorSize)]
			if s == nil {
				s = &overlaySect{}
				ov[w.Sector+uint64(i/SectorSize)] = s
			}
			s.epoch = 0
			copy(s.data[:], w.Data[i:])
		}
	} else if _, err := p.stores[w.Disk].WriteAt(w.Data, off); err != nil {
		return fmt.Errorf("diskbuf: write disk %d sector %d: %w", w.Disk, w.Sector, err)
	}
	if p.mode != None && !p.unprotected {
		p.cur = append(p.cur, entry{w: w})
	}
	return nil
}

func (p *Primary) read(disk uint32, b []byte, off int64) (int, error) {
	if err := checkIO(len(p.stores), disk, len(b), off); err != nil {
		return 0, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	n, err := p.stores[disk].ReadAt(b, off)
	if err == io.EOF {
		clear(b[n:])
		n, err = len(b), nil
	}
	if err != nil {
		return n, err
	}
	if p.mode == Shared {
		ov := p.overlay[disk]
		first := uint64(off) / SectorSize
		for i := 0; i < len(b)/SectorSize; i++ {
			if s := ov[first+uint64(i)]; s != nil {
				copy(b[i*SectorSize:], s.data[:])
			}
		}
	}
	return len(b), nil
}

// Barrier closes epoch: it returns the writes made since the previous
// barrier, in order, for shipping with checkpoint epoch. Called while the
// guest is suspended. The returned slices stay valid and unmodified.
//
// With a Gate (SetGate), the gate is quiesced first and stays closed
// until Open: every request the guest's backend had sent is answered and
// its write is in this epoch, and no request is answered between the cut
// and Open, which the primary calls once the epoch's memory is captured.
// So an answer the captured memory holds (blkback writes its responses
// into the guest's ring) is always for a write of this epoch or an
// earlier one; a write in flight at the cut is at worst on the disk
// ahead of the memory, and the guest's frontend resubmits it after a
// failover (same data, same place). The drain has no deadline of its
// own: it waits for the store to finish the requests already admitted.
// A gate already quiesced by someone else admits nothing either, so the
// cut is consistent then too.
func (p *Primary) Barrier(epoch uint64) []Write {
	if p.gate != nil && !p.gated {
		if _, err := p.gate.Quiesce(context.Background()); err == nil {
			p.gated = true
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Write, len(p.cur))
	for i := range p.cur {
		p.cur[i].epoch = epoch
		out[i] = p.cur[i].w
	}
	if p.mode == Shared {
		for _, ov := range p.overlay {
			for _, s := range ov {
				if s.epoch == 0 {
					s.epoch = epoch
				}
			}
		}
		p.held = append(p.held, p.cur...)
	}
	p.cur = p.cur[:0]
	return out
}

// Open reopens the gate Barrier closed (a no-op without one). The primary
// calls it when the epoch's capture is over, whether it succeeded or not.
func (p *Primary) Open() {
	if p.gated {
		p.gated = false
		p.gate.Resume()
	}
}

// Release makes the writes of epochs <= epoch durable output: in shared
// mode they are written to the shared disk now. (Replicate mode wrote
// through already.)
func (p *Primary) Release(epoch uint64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode != Shared {
		return nil
	}
	n := 0
	for n < len(p.held) && p.held[n].epoch <= epoch {
		n++
	}
	if err := p.flush(p.held[:n]); err != nil {
		return err
	}
	p.held = append(p.held[:0], p.held[n:]...)
	for _, ov := range p.overlay {
		for sec, s := range ov {
			if s.epoch != 0 && s.epoch <= epoch {
				delete(ov, sec)
			}
		}
	}
	return nil
}

// flush writes entries to their stores and syncs them.
// Preconditions: mu held.
func (p *Primary) flush(es []entry) error {
	touched := map[uint32]bool{}
	for _, e := range es {
		if _, err := p.stores[e.w.Disk].WriteAt(e.w.Data, int64(e.w.Sector)*SectorSize); err != nil {
			return fmt.Errorf("diskbuf: flush disk %d sector %d: %w", e.w.Disk, e.w.Sector, err)
		}
		touched[e.w.Disk] = true
	}
	for d := range touched {
		if err := p.stores[d].Sync(); err != nil {
			return fmt.Errorf("diskbuf: sync disk %d: %w", d, err)
		}
	}
	return nil
}

// Unprotect flushes every held write and writes through from now on (the
// standby was lost and the primary runs alone).
func (p *Primary) Unprotect() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unprotected = true
	all := append(p.held, p.cur...)
	p.held, p.cur = nil, nil
	if p.mode == Shared {
		for _, ov := range p.overlay {
			clear(ov)
		}
		return p.flush(all)
	}
	return nil
}

// Protect starts capturing (and, shared, holding) writes again.
func (p *Primary) Protect() {
	p.mu.Lock()
	p.unprotected = false
	p.mu.Unlock()
}

// Discard drops held writes without writing them (the primary was fenced:
// the standby owns the disk now).
func (p *Primary) Discard() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.held, p.cur = nil, nil
	for _, ov := range p.overlay {
		clear(ov)
	}
}

// Replica is the standby side for all disks of one domain.
//
// Concurrency: one goroutine (the standby loop).
type Replica struct {
	mode    Mode
	stores  []Store
	staged  []Write
	pending []entry // shared: committed, maybe not yet flushed by the primary
}

// NewReplica returns the standby side over stores (one per disk).
func NewReplica(mode Mode, stores []Store) *Replica {
	return &Replica{mode: mode, stores: stores}
}

// Stage holds one shipped write of the epoch being received.
func (r *Replica) Stage(w Write) error {
	if err := checkIO(len(r.stores), w.Disk, len(w.Data), int64(w.Sector)*SectorSize); err != nil {
		return err
	}
	r.staged = append(r.staged, Write{Disk: w.Disk, Sector: w.Sector, Data: append([]byte(nil), w.Data...)})
	return nil
}

// Discard drops the staged writes of a torn epoch.
func (r *Replica) Discard() { r.staged = r.staged[:0] }

// Commit applies the staged writes as epoch: replicate mode writes them to
// this host's copy; shared mode keeps them until the primary reports them
// flushed (or, on failover, Activate flushes them).
func (r *Replica) Commit(epoch uint64) error {
	defer func() { r.staged = r.staged[:0] }()
	switch r.mode {
	case Replicate:
		es := make([]entry, len(r.staged))
		for i, w := range r.staged {
			es[i] = entry{epoch: epoch, w: w}
		}
		return r.apply(es)
	case Shared:
		for _, w := range r.staged {
			r.pending = append(r.pending, entry{epoch: epoch, w: w})
		}
	}
	return nil
}

// Flushed tells a shared-mode replica that the primary wrote every epoch
// <= epoch to the shared disk.
func (r *Replica) Flushed(epoch uint64) {
	n := sort.Search(len(r.pending), func(i int) bool { return r.pending[i].epoch > epoch })
	r.pending = append(r.pending[:0], r.pending[n:]...)
}

// Pending returns the number of committed writes not yet known flushed.
func (r *Replica) Pending() int { return len(r.pending) }

// Activate finishes the disk side of a failover: in shared mode, every
// committed write not known flushed is written now, in order (rewriting
// one the primary did flush is harmless: same data, same place).
func (r *Replica) Activate() error {
	if r.mode == Shared {
		err := r.apply(r.pending)
		r.pending = nil
		return err
	}
	for i, s := range r.stores {
		if err := s.Sync(); err != nil {
			return fmt.Errorf("diskbuf: sync disk %d: %w", i, err)
		}
	}
	return nil
}

func (r *Replica) apply(es []entry) error {
	for _, e := range es {
		if _, err := r.stores[e.w.Disk].WriteAt(e.w.Data, int64(e.w.Sector)*SectorSize); err != nil {
			return fmt.Errorf("diskbuf: apply disk %d sector %d: %w", e.w.Disk, e.w.Sector, err)
		}
	}
	return nil
}

// MemStore is a sparse in-memory Store, for tests and the demo.
type MemStore struct {
	mu   sync.Mutex
	size int64
	// Protected by mu.
	sect map[int64][]byte
}

// NewMemStore returns an empty (zeroed) store of size bytes.
func NewMemStore(size int64) *MemStore { return &MemStore{size: size, sect: map[int64][]byte{}} }

// ReadAt implements io.ReaderAt.
func (m *MemStore) ReadAt(b []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || off+int64(len(b)) > m.size {
		return 0, fmt.Errorf("%w: read past end", ErrBadWrite)
	}
	for i := 0; i < len(b); {
		s := (off + int64(i)) / SectorSize
		o := int((off + int64(i)) % SectorSize)
		n := min(SectorSize-o, len(b)-i)
		if d := m.sect[s]; d != nil {
			copy(b[i:i+n], d[o:])
		} else {
			clear(b[i : i+n])
		}
		i += n
	}
	return len(b), nil
}

// WriteAt implements io.WriterAt.
func (m *MemStore) WriteAt(b []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || off+int64(len(b)) > m.size {
		return 0, fmt.Errorf("%w: write past end", ErrBadWrite)
	}
	for i := 0; i < len(b); {
		s := (off + int64(i)) / SectorSize
		o := int((off + int64(i)) % SectorSize)
		n := min(SectorSize-o, len(b)-i)
		d := m.sect[s]
		if d == nil {
			d = make([]byte, SectorSize)
			m.sect[s] = d
		}
		copy(d[o:], b[i:i+n])
		i += n
	}
	return len(b), nil
}

// Sync implements Store.
func (m *MemStore) Sync() error { return nil }

// Size returns the store's size in bytes.
func (m *MemStore) Size() int64 { return m.size }
