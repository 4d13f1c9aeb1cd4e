package sim

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/xl-kemari/xl-kemari/libxl"
)

type runState int

const (
	stateSuspended runState = iota // by Suspend, or created paused
	stateRunning                   // the guest goroutine runs quanta
	stateReplica                   // created by CreateReplica, never activated
	stateDead                      // destroyed
)

// String names the state in errors.
func (s runState) String() string {
	return [...]string{"suspended", "running", "replica", "dead"}[s]
}

// Domain is one simulated guest: memory, vCPUs, NICs, disks and the
// goroutine that runs its program.
//
// Concurrency: safe for concurrent use. One lock (mu) covers the guest's
// memory and registers; the guest holds it for the whole of each quantum,
// so holding it means the guest is between two steps.
type Domain struct {
	h     *Hypervisor
	id    libxl.DomID
	cfg   DomainConfig // immutable after creation; Name is in h.names
	uuid  [16]byte
	lay   layout
	nics  []*NIC
	disks []*Disk

	// The guest goroutine: stop ends it, done is closed when it has
	// ended, kick wakes it after Resume.
	stop, done, kick chan struct{}

	mu sync.Mutex
	// Protected by mu.
	state    runState
	started  bool // the guest goroutine was started
	restored bool // RestoreState succeeded at least once
	logDirty bool
	mem      memory
	plat     platform
	vcpus    []vcpu
	scratch  [64]byte
	slotBuf  [MaxPayload]byte
}

func newDomain(h *Hypervisor, id libxl.DomID, cfg DomainConfig, st runState) *Domain {
	d := &Domain{
		h: h, id: id, cfg: cfg, lay: newLayout(&cfg),
		stop: make(chan struct{}), done: make(chan struct{}), kick: make(chan struct{}, 1),
		state: st, mem: newMemory(cfg.Pages), vcpus: make([]vcpu, cfg.VCPUs),
	}
	for i, n := range cfg.NICs {
		d.nics = append(d.nics, newNIC(i, n))
	}
	for i, k := range cfg.Disks {
		d.disks = append(d.disks, newDisk(i, k.Sectors))
	}
	return d
}

// ID returns the domain's id.
func (d *Domain) ID() libxl.DomID { return d.id }

// Name returns the domain's current name (a replica is "<name>--incoming"
// until it is activated).
func (d *Domain) Name() string {
	d.h.mu.Lock()
	defer d.h.mu.Unlock()
	return d.h.names[d.id]
}

// Config returns the configuration the domain was built from, defaults
// applied.
func (d *Domain) Config() DomainConfig { return d.cfg }

// NIC returns NIC i, or nil if there is none.
func (d *Domain) NIC(i int) *NIC {
	if i < 0 || i >= len(d.nics) {
		return nil
	}
	return d.nics[i]
}

// Disk returns disk i, or nil if there is none.
func (d *Domain) Disk(i int) *Disk {
	if i < 0 || i >= len(d.disks) {
		return nil
	}
	return d.disks[i]
}

// lock locks d.mu and fails with ErrNoDomain if d was destroyed.
func (d *Domain) lock() error {
	d.mu.Lock()
	if d.state == stateDead {
		d.mu.Unlock()
		return fmt.Errorf("sim: dom %d: %w", d.id, libxl.ErrNoDomain)
	}
	return nil
}

func (d *Domain) badState(op string) error {
	return fmt.Errorf("sim: %s dom %d: domain is %v: %w", op, d.id, d.state, libxl.ErrBadState)
}

// Running reports whether the guest goroutine is running quanta.
func (d *Domain) Running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state == stateRunning
}

// Steps returns the number of quanta the guest has run.
func (d *Domain) Steps() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.plat.steps
}

// Populated returns the number of guest pages backed by host memory.
func (d *Domain) Populated() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mem.populated
}

// Step runs n quanta synchronously on the caller's goroutine, to drive a
// guest deterministically. The domain must not be running: suspended (or
// created Paused), or a replica whose state has been restored.
func (d *Domain) Step(n int) error {
	if err := d.lock(); err != nil {
		return err
	}
	defer d.mu.Unlock()
	if d.state == stateRunning || (d.state == stateReplica && !d.restored) {
		return d.badState("step")
	}
	for range n {
		d.quantum()
	}
	return nil
}

// Touch writes to pages pfns as a guest write would (a 16-byte edit whose
// content changes with every call), logging them dirty. It works in any
// state, suspended included, so benchmarks can build a dirty set of exact
// size while the guest is stopped. Failure: ErrNoDomain, ErrRange (nothing
// written).
func (d *Domain) Touch(pfns []libxl.PFN) error {
	if err := d.lock(); err != nil {
		return err
	}
	defer d.mu.Unlock()
	for _, p := range pfns {
		if uint64(p) >= d.cfg.Pages {
			return fmt.Errorf("sim: touch dom %d pfn %d of %d: %w", d.id, p, d.cfg.Pages, libxl.ErrRange)
		}
	}
	for _, p := range pfns {
		d.plat.touches++
		off := int(d.plat.touches*16) % libxl.PageSize
		pg := d.mem.writable(p)
		binary.LittleEndian.PutUint64(pg[off:], d.plat.touches)
		binary.LittleEndian.PutUint64(pg[off+8:], uint64(p)|1<<63)
	}
	return nil
}

// maxSnapshot bounds Snapshot, which is meant for small test guests.
const maxSnapshot = 1 << 30

// Snapshot returns a copy of the whole guest memory (Pages*PageSize
// bytes). Failure: ErrNoDomain, ErrUnsupported above 1 GiB.
func (d *Domain) Snapshot() ([]byte, error) {
	if d.cfg.Pages*libxl.PageSize > maxSnapshot {
		return nil, fmt.Errorf("sim: snapshot of %d pages: %w", d.cfg.Pages, libxl.ErrUnsupported)
	}
	if err := d.lock(); err != nil {
		return nil, err
	}
	defer d.mu.Unlock()
	out := make([]byte, d.cfg.Pages*libxl.PageSize)
	for c, ch := range d.mem.chunks {
		if ch == nil {
			continue
		}
		for i, pg := range ch {
			if pg != nil {
				copy(out[(uint64(c)*chunkPages+uint64(i))*libxl.PageSize:], pg[:])
			}
		}
	}
	return out, nil
}

// ServiceStats is the service workload's state, as read from guest memory.
type ServiceStats struct {
	Counter    uint64 // the INCR counter
	Applied    uint64 // requests applied (journaled and recorded)
	Duplicates uint64 // retries answered from the dedup table
	Stale      uint64 // requests older than the client's last
	Malformed  uint64 // datagrams that were not requests
	Keys       uint64 // KV entries
	Clients    uint64 // dedup entries
	Journal    uint64 // journal sectors written
	IOErrors   uint64 // requests refused because the journal write failed
	Full       uint64 // requests refused for a full table
}

// Service reads the service state out of guest memory. Failure:
// ErrNoDomain, ErrUnsupported (not a service domain).
func (d *Domain) Service() (ServiceStats, error) {
	if d.cfg.Workload != WorkloadService {
		return ServiceStats{}, fmt.Errorf("sim: dom %d runs %q: %w", d.id, d.cfg.Workload, libxl.ErrUnsupported)
	}
	if err := d.lock(); err != nil {
		return ServiceStats{}, err
	}
	defer d.mu.Unlock()
	r := func(off int) uint64 { return d.mem.u64(d.lay.svcState, off) }
	return ServiceStats{
		Counter: r(svcOffCounter), Applied: r(svcOffApplied), Duplicates: r(svcOffDupes),
		Stale: r(svcOffStale), Malformed: r(svcOffMalformed), Keys: r(svcOffKeys),
		Clients: r(svcOffClients), Journal: r(svcOffJournal), IOErrors: r(svcOffIOErrors), Full: r(svcOffFull),
	}, nil
}

// start launches the guest goroutine. Preconditions: d.mu held.
func (d *Domain) start() {
	if !d.started {
		d.started = true
		go d.run()
	}
}

// run is the guest goroutine: one quantum under the lock, then a timer
// wait, never a spin, so that in a testing/synctest bubble it is durably
// blocked between quanta and virtual time can advance.
func (d *Domain) run() {
	defer close(d.done)
	t := time.NewTimer(d.cfg.Quantum)
	defer t.Stop()
	for {
		d.mu.Lock()
		switch d.state {
		case stateRunning:
			d.quantum()
			d.mu.Unlock()
			t.Reset(d.cfg.Quantum)
			select {
			case <-d.stop:
				return
			case <-t.C:
			}
		case stateDead:
			d.mu.Unlock()
			return
		default:
			d.mu.Unlock()
			select {
			case <-d.stop:
				return
			case <-d.kick:
			}
		}
	}
}

// shutdown stops the guest and releases its sockets.
func (d *Domain) shutdown() {
	d.mu.Lock()
	if d.state == stateDead {
		d.mu.Unlock()
		return
	}
	d.state = stateDead
	started := d.started
	d.mu.Unlock()
	close(d.stop)
	if started {
		<-d.done
	}
	for _, n := range d.nics {
		n.unbind()
	}
}
