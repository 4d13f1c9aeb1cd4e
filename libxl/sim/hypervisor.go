package sim

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xl-kemari/xl-kemari/libxl"
)

// Sentinel errors of the simulator (the contract's own, such as
// libxl.ErrNoDomain, are used wherever they fit).
var (
	// ErrConfig: a domain configuration or option is invalid.
	ErrConfig = errors.New("sim: invalid configuration")
	// ErrExists: a domain of that name exists already.
	ErrExists = errors.New("sim: domain name in use")
	// ErrClosed: the hypervisor handle was closed.
	ErrClosed = errors.New("sim: hypervisor closed")
	// ErrNoRoom: the simulated host's memory (host_memory) cannot hold
	// another replica of that size.
	ErrNoRoom = errors.New("sim: no room on this host")
	// ErrBind: a NIC could not bind its host address.
	ErrBind = errors.New("sim: cannot bind NIC address")
	// ErrNoSocket: a NIC without a bound socket was asked to transmit.
	ErrNoSocket = errors.New("sim: NIC has no socket")
	// ErrFrame: a NIC frame or datagram is malformed or too large.
	ErrFrame = errors.New("sim: bad frame")
	// ErrQueueFull: a NIC's receive queue is full; the datagram was dropped.
	ErrQueueFull = errors.New("sim: NIC receive queue full")
	// ErrStateBlob: RestoreState got a blob it cannot parse, or a set of
	// blobs that does not match the replica's shape.
	ErrStateBlob = errors.New("sim: bad state blob")
)

// BackendName is the name the simulator registers under.
const BackendName = "sim"

// DefaultBindRetry is how long Activate keeps retrying a NIC address that
// is still in use.
const DefaultBindRetry = 5 * time.Second

// replicaSuffix marks a replica's name until it is activated, as xl does
// for an incoming migration.
const replicaSuffix = "--incoming"

func init() {
	libxl.Register(BackendName, func(opts libxl.Options) (libxl.Hypervisor, error) { return New(opts) })
}

// Faults are fault-injection hooks. A nil hook means the call behaves
// normally; a hook that returns an error makes the call fail with it
// before it has any effect, wrapped so that errors.Is(err,
// libxl.ErrInjected) holds.
type Faults struct {
	Suspend       func(dom libxl.DomID) error
	Resume        func(dom libxl.DomID) error
	ReadDirty     func(dom libxl.DomID) error
	ReadPages     func(dom libxl.DomID, pfns []libxl.PFN) error
	CaptureState  func(dom libxl.DomID) error
	CreateReplica func(info libxl.DomainInfo) error
	WritePages    func(dom libxl.DomID, pfns []libxl.PFN) error
	RestoreState  func(dom libxl.DomID) error
	Activate      func(dom libxl.DomID) error
}

// Hypervisor is the simulated Xen of one host. It is its own Source and
// Sink: both sides of a failover (the standby that becomes primary and
// protects the domain again) see the same domains.
//
// Concurrency: safe for concurrent use; per the libxl contract, calls for
// one domain come from one goroutine at a time.
type Hypervisor struct {
	bindRetry time.Duration
	quantum   time.Duration
	hostPages uint64 // guest memory this host holds, all domains; 0: unlimited
	faults    atomic.Pointer[Faults]

	mu sync.Mutex
	// Protected by mu.
	doms   map[libxl.DomID]*Domain
	names  map[libxl.DomID]string
	nextID libxl.DomID
	closed bool
}

var (
	_ libxl.Hypervisor  = (*Hypervisor)(nil)
	_ libxl.Source      = (*Hypervisor)(nil)
	_ libxl.Sink        = (*Hypervisor)(nil)
	_ libxl.ReplicaRoom = (*Hypervisor)(nil)
)

// New returns a simulated hypervisor. Options: bind_retry (a Go duration,
// default DefaultBindRetry), quantum (the default guest step period) and
// host_memory (MiB of guest memory the simulated host holds, all domains
// together; default unlimited).
// The keys DomainConfigFromOptions reads are accepted and ignored here;
// any other key is an error.
func New(opts libxl.Options) (*Hypervisor, error) {
	h := &Hypervisor{
		bindRetry: DefaultBindRetry,
		quantum:   DefaultQuantum,
		doms:      map[libxl.DomID]*Domain{},
		names:     map[libxl.DomID]string{},
		nextID:    1,
	}
	var probs []string
	dur := func(k string, dst *time.Duration) {
		if v, ok := opts[k]; ok {
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				probs = append(probs, fmt.Sprintf("%s=%q: not a non-negative duration", k, v))
				return
			}
			*dst = d
		}
	}
	dur("bind_retry", &h.bindRetry)
	dur("quantum", &h.quantum)
	if v, ok := opts["host_memory"]; ok {
		mib, err := strconv.ParseUint(v, 10, 32)
		if err != nil || mib == 0 {
			probs = append(probs, fmt.Sprintf("host_memory=%q: not a positive number of MiB", v))
		}
		h.hostPages = mib << 20 / libxl.PageSize
	}
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k != "bind_retry" && k != "quantum" && k != "host_memory" && !slices.Contains(domainKeys, k) {
			probs = append(probs, fmt.Sprintf("unknown option %q", k))
		}
	}
	if len(probs) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrConfig, strings.Join(probs, "; "))
	}
	return h, nil
}

// SetFaults installs fault hooks (the zero Faults removes them). Safe to
// call while domains run.
func (h *Hypervisor) SetFaults(f Faults) { h.faults.Store(&f) }

// noFaults is returned by hooks when none are set, so the hot paths
// (ReadPages, ReadAndClearDirty) do not allocate.
var noFaults Faults

func (h *Hypervisor) hooks() *Faults {
	if f := h.faults.Load(); f != nil {
		return f
	}
	return &noFaults
}

func injected(op string, dom libxl.DomID, err error) error {
	if errors.Is(err, libxl.ErrInjected) {
		return fmt.Errorf("sim: %s dom %d: %w", op, dom, err)
	}
	return fmt.Errorf("sim: %s dom %d: %w: %w", op, dom, libxl.ErrInjected, err)
}

// Name implements libxl.Hypervisor.
func (h *Hypervisor) Name() string { return BackendName }

// Capabilities implements libxl.Hypervisor.
func (h *Hypervisor) Capabilities() libxl.Capabilities {
	return libxl.Capabilities{SuspendCancel: true, LogDirty: true, Types: []libxl.DomainType{libxl.TypePVH}}
}

// Source implements libxl.Hypervisor.
func (h *Hypervisor) Source() libxl.Source { return h }

// Sink implements libxl.Hypervisor.
func (h *Hypervisor) Sink() libxl.Sink { return h }

// Close implements libxl.Hypervisor: no new domains can be created; the
// existing ones keep running (DestroyAll ends them).
func (h *Hypervisor) Close() error {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	return nil
}

// DestroyAll destroys every domain, stopping their goroutines and closing
// their sockets.
func (h *Hypervisor) DestroyAll() {
	h.mu.Lock()
	doms := make([]*Domain, 0, len(h.doms))
	for id, d := range h.doms {
		doms = append(doms, d)
		delete(h.doms, id)
		delete(h.names, id)
	}
	h.mu.Unlock()
	for _, d := range doms {
		d.shutdown()
	}
}

// Lookup implements libxl.Hypervisor: a domain name, or a numeric id.
func (h *Hypervisor) Lookup(name string) (libxl.DomID, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, n := range h.names {
		if n == name {
			return id, nil
		}
	}
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		if _, ok := h.doms[libxl.DomID(n)]; ok {
			return libxl.DomID(n), nil
		}
	}
	return libxl.DomIDInvalid, fmt.Errorf("sim: lookup %q: %w", name, libxl.ErrNoDomain)
}

// Domain returns the domain dom, for the simulator's own helpers.
func (h *Hypervisor) Domain(dom libxl.DomID) (*Domain, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	d, ok := h.doms[dom]
	if !ok {
		return nil, fmt.Errorf("sim: dom %d: %w", dom, libxl.ErrNoDomain)
	}
	return d, nil
}

// Domains returns the ids of all domains, ascending.
func (h *Hypervisor) Domains() []libxl.DomID {
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := make([]libxl.DomID, 0, len(h.doms))
	for id := range h.doms {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// add registers a new domain under a unique name. Preconditions: h.mu held.
func (h *Hypervisor) add(cfg DomainConfig, name string, st runState) (*Domain, error) {
	if h.closed {
		return nil, ErrClosed
	}
	for _, n := range h.names {
		if n == name {
			return nil, fmt.Errorf("%w: %q", ErrExists, name)
		}
	}
	id := h.nextID
	h.nextID++
	d := newDomain(h, id, cfg, st)
	h.doms[id] = d
	h.names[id] = name
	return d, nil
}

func (h *Hypervisor) remove(id libxl.DomID) {
	h.mu.Lock()
	delete(h.doms, id)
	delete(h.names, id)
	h.mu.Unlock()
}

// CreateDomain creates a guest from cfg (defaults applied to zero fields),
// binds its NICs' host addresses and starts it, unless cfg.Paused.
//
// Failure: ErrConfig (every problem listed), ErrExists, ErrBind, ErrClosed;
// nothing is left behind.
func (h *Hypervisor) CreateDomain(cfg DomainConfig) (libxl.DomID, error) {
	h.mu.Lock()
	if cfg.Name == "" {
		cfg.Name = fmt.Sprintf("sim%d", h.nextID)
	}
	h.mu.Unlock()
	cfg, err := cfg.withDefaults(h.quantum)
	if err != nil {
		return libxl.DomIDInvalid, err
	}
	var uuid [16]byte
	if _, err := rand.Read(uuid[:]); err != nil {
		return libxl.DomIDInvalid, fmt.Errorf("sim: uuid: %w", err)
	}
	uuid[6] = uuid[6]&0x0f | 0x40 // RFC 4122 version 4
	uuid[8] = uuid[8]&0x3f | 0x80
	h.mu.Lock()
	d, err := h.add(cfg, cfg.Name, stateSuspended)
	if err == nil {
		d.uuid = uuid
	}
	h.mu.Unlock()
	if err != nil {
		return libxl.DomIDInvalid, err
	}
	for _, n := range d.nics {
		if err := n.bind(0); err != nil {
			h.remove(d.id)
			d.shutdown()
			return libxl.DomIDInvalid, fmt.Errorf("sim: create %q: %w", cfg.Name, err)
		}
	}
	d.mu.Lock()
	d.boot()
	if !cfg.Paused {
		d.state = stateRunning
	}
	d.start()
	d.mu.Unlock()
	return d.id, nil
}

// get returns dom or ErrNoDomain.
func (h *Hypervisor) get(op string, dom libxl.DomID) (*Domain, error) {
	h.mu.Lock()
	d, ok := h.doms[dom]
	h.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("sim: %s dom %d: %w", op, dom, libxl.ErrNoDomain)
	}
	return d, nil
}

// Describe implements libxl.Source. Config holds the DomainConfig as JSON.
func (h *Hypervisor) Describe(dom libxl.DomID) (libxl.DomainInfo, error) {
	d, err := h.get("describe", dom)
	if err != nil {
		return libxl.DomainInfo{}, err
	}
	cfg := d.cfg
	if n := d.Name(); !strings.HasPrefix(n, cfg.Name+replicaSuffix) {
		cfg.Name = n
	}
	cfg.Paused = false
	raw, err := json.Marshal(cfg)
	if err != nil {
		return libxl.DomainInfo{}, fmt.Errorf("sim: describe dom %d: %w", dom, err)
	}
	info := libxl.DomainInfo{
		Name: cfg.Name, UUID: d.uuid, Type: libxl.TypePVH,
		Pages: cfg.Pages, VCPUs: cfg.VCPUs, Workload: cfg.Workload, Config: raw,
	}
	for i, n := range d.nics {
		nic := libxl.NIC{Index: i, MAC: n.mac, Backend: fmt.Sprintf("sim:%d.%d", dom, i)}
		if ap, err := netip.ParseAddrPort(n.listen); err == nil {
			nic.Addrs = []netip.Addr{ap.Addr()}
		}
		info.NICs = append(info.NICs, nic)
	}
	for i, k := range d.disks {
		info.Disks = append(info.Disks, libxl.Disk{Index: i, Target: "sim:mem", Sectors: k.sectors, Writable: true})
	}
	return info, nil
}

// Suspend implements libxl.Source. It returns once the guest is between
// two quanta; no quantum runs until Resume.
func (h *Hypervisor) Suspend(dom libxl.DomID) error {
	d, err := h.get("suspend", dom)
	if err != nil {
		return err
	}
	if f := h.hooks().Suspend; f != nil {
		if err := f(dom); err != nil {
			return injected("suspend", dom, err)
		}
	}
	if err := d.lock(); err != nil {
		return err
	}
	defer d.mu.Unlock()
	if d.state != stateRunning {
		return d.badState("suspend")
	}
	d.state = stateSuspended
	return nil
}

// Resume implements libxl.Source.
func (h *Hypervisor) Resume(dom libxl.DomID) error {
	d, err := h.get("resume", dom)
	if err != nil {
		return err
	}
	if f := h.hooks().Resume; f != nil {
		if err := f(dom); err != nil {
			return injected("resume", dom, err)
		}
	}
	if err := d.lock(); err != nil {
		return err
	}
	defer d.mu.Unlock()
	if d.state != stateSuspended {
		return d.badState("resume")
	}
	d.state = stateRunning
	select {
	case d.kick <- struct{}{}:
	default:
	}
	return nil
}

// SetLogDirty implements libxl.Source.
func (h *Hypervisor) SetLogDirty(dom libxl.DomID, on bool) error {
	d, err := h.get("set-log-dirty", dom)
	if err != nil {
		return err
	}
	if err := d.lock(); err != nil {
		return err
	}
	defer d.mu.Unlock()
	if on {
		d.mem.markAll()
	} else {
		d.mem.clearLog()
	}
	d.logDirty = on
	return nil
}

// ReadAndClearDirty implements libxl.Source. A dst shorter than the
// domain fails with ErrRange, the log unchanged.
func (h *Hypervisor) ReadAndClearDirty(dom libxl.DomID, dst *libxl.Bitmap) error {
	d, err := h.get("read-dirty", dom)
	if err != nil {
		return err
	}
	if f := h.hooks().ReadDirty; f != nil {
		if err := f(dom); err != nil {
			return injected("read-dirty", dom, err)
		}
	}
	if err := d.lock(); err != nil {
		return err
	}
	defer d.mu.Unlock()
	if !d.logDirty {
		return fmt.Errorf("sim: read-dirty dom %d: log-dirty off: %w", dom, libxl.ErrBadState)
	}
	if dst.Len() < d.cfg.Pages {
		return fmt.Errorf("sim: read-dirty dom %d: bitmap of %d bits for %d pages: %w", dom, dst.Len(), d.cfg.Pages, libxl.ErrRange)
	}
	d.mem.readAndClear(dst.Words())
	return nil
}

// checkPages validates a page batch.
func (d *Domain) checkPages(op string, pfns []libxl.PFN, buf []byte) error {
	if len(buf) < len(pfns)*libxl.PageSize {
		return fmt.Errorf("sim: %s dom %d: buffer of %d bytes for %d pages: %w", op, d.id, len(buf), len(pfns), libxl.ErrRange)
	}
	for _, p := range pfns {
		if uint64(p) >= d.cfg.Pages {
			return fmt.Errorf("sim: %s dom %d: pfn %d of %d: %w", op, d.id, p, d.cfg.Pages, libxl.ErrRange)
		}
	}
	return nil
}

// ReadPages implements libxl.Source and libxl.Sink. It works in every
// state; on a running guest a page is read between two quanta, so it is
// never torn, but the set is not a consistent checkpoint.
func (h *Hypervisor) ReadPages(dom libxl.DomID, pfns []libxl.PFN, dst []byte) error {
	d, err := h.get("read-pages", dom)
	if err != nil {
		return err
	}
	if f := h.hooks().ReadPages; f != nil {
		if err := f(dom, pfns); err != nil {
			return injected("read-pages", dom, err)
		}
	}
	if err := d.lock(); err != nil {
		return err
	}
	defer d.mu.Unlock()
	if err := d.checkPages("read-pages", pfns, dst); err != nil {
		return err
	}
	// A large dirty set is copied by several workers, as a real backend
	// copies through several foreign mappings: the pause is then bounded
	// by memory bandwidth rather than by one core. The domain lock held
	// here keeps every writer out while they read.
	workers := min(runtime.GOMAXPROCS(0), 4, len(pfns)/parallelReadPages)
	if workers < 2 {
		for i, p := range pfns {
			d.mem.load(p, dst[i*libxl.PageSize:(i+1)*libxl.PageSize])
		}
		return nil
	}
	var wg sync.WaitGroup
	per := (len(pfns) + workers - 1) / workers
	for lo := 0; lo < len(pfns); lo += per {
		hi := min(lo+per, len(pfns))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := lo; i < hi; i++ {
				d.mem.load(pfns[i], dst[i*libxl.PageSize:(i+1)*libxl.PageSize])
			}
		}()
	}
	wg.Wait()
	return nil
}

// parallelReadPages is the dirty-set size from which ReadPages splits the
// copy between workers (below it, starting them costs more than it saves).
const parallelReadPages = 4096

// CaptureState implements libxl.Source. A paused replica may be captured
// too (tests compare it with its primary).
func (h *Hypervisor) CaptureState(dom libxl.DomID, dst []libxl.State) ([]libxl.State, error) {
	d, err := h.get("capture", dom)
	if err != nil {
		return dst, err
	}
	if f := h.hooks().CaptureState; f != nil {
		if err := f(dom); err != nil {
			return dst, injected("capture", dom, err)
		}
	}
	if err := d.lock(); err != nil {
		return dst, err
	}
	defer d.mu.Unlock()
	if d.state == stateRunning {
		return dst, d.badState("capture")
	}
	return d.captureState(dst), nil
}

// Destroy implements libxl.Source and libxl.Sink.
func (h *Hypervisor) Destroy(dom libxl.DomID) error {
	h.mu.Lock()
	d, ok := h.doms[dom]
	delete(h.doms, dom)
	delete(h.names, dom)
	h.mu.Unlock()
	if !ok {
		return fmt.Errorf("sim: destroy dom %d: %w", dom, libxl.ErrNoDomain)
	}
	d.shutdown()
	return nil
}

// ConfigFromInfo recovers the DomainConfig a replica of info is built
// from: the JSON in info.Config when present, else the generic fields.
// Every field must agree with info's shape.
func ConfigFromInfo(info libxl.DomainInfo) (DomainConfig, error) {
	var cfg DomainConfig
	if len(info.Config) > 0 {
		dec := json.NewDecoder(bytes.NewReader(info.Config))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cfg); err != nil {
			return cfg, fmt.Errorf("%w: domain info config: %v", ErrConfig, err)
		}
	} else {
		cfg = DomainConfig{Name: info.Name, Pages: info.Pages, VCPUs: info.VCPUs, Workload: info.Workload}
		for _, n := range info.NICs {
			cfg.NICs = append(cfg.NICs, NICConfig{MAC: n.MAC.String()})
		}
		for _, k := range info.Disks {
			cfg.Disks = append(cfg.Disks, DiskConfig{Sectors: k.Sectors})
		}
	}
	if info.Name != "" {
		cfg.Name = info.Name
	}
	var probs []string
	if cfg.Pages != info.Pages || cfg.VCPUs != info.VCPUs || cfg.Workload != info.Workload {
		probs = append(probs, fmt.Sprintf("config pages=%d vcpus=%d workload=%q disagree with info %d/%d/%q",
			cfg.Pages, cfg.VCPUs, cfg.Workload, info.Pages, info.VCPUs, info.Workload))
	}
	if len(cfg.NICs) != len(info.NICs) || len(cfg.Disks) != len(info.Disks) {
		probs = append(probs, fmt.Sprintf("config has %d nics/%d disks, info %d/%d",
			len(cfg.NICs), len(cfg.Disks), len(info.NICs), len(info.Disks)))
	}
	if info.Type != "" && info.Type != libxl.TypePVH {
		probs = append(probs, fmt.Sprintf("type %q: the simulator runs pvh guests", info.Type))
	}
	if len(probs) > 0 {
		return cfg, fmt.Errorf("%w: %s", ErrConfig, strings.Join(probs, "; "))
	}
	return cfg, nil
}

// CreateReplica implements libxl.Sink: a paused domain of info's shape,
// named "<name>--incoming" (or "<name>--incoming-N" while that one
// exists), with zeroed memory and no sockets; Activate
// binds them.
func (h *Hypervisor) CreateReplica(info libxl.DomainInfo) (libxl.DomID, error) {
	if f := h.hooks().CreateReplica; f != nil {
		if err := f(info); err != nil {
			return libxl.DomIDInvalid, injected("create-replica", 0, err)
		}
	}
	// The size comes from the primary: checked before the replica's
	// memory tables are allocated for it.
	if err := h.RoomFor(info); err != nil {
		return libxl.DomIDInvalid, err
	}
	cfg, err := ConfigFromInfo(info)
	if err != nil {
		return libxl.DomIDInvalid, err
	}
	cfg.Paused = false
	if cfg, err = cfg.withDefaults(h.quantum); err != nil {
		return libxl.DomIDInvalid, err
	}
	h.mu.Lock()
	// A standby keeps its previous replica while it builds the next
	// (checkpoint: the fallback replica), so a second one gets a number.
	d, err := h.add(cfg, cfg.Name+replicaSuffix, stateReplica)
	for n := 2; errors.Is(err, ErrExists) && n < 16; n++ {
		d, err = h.add(cfg, fmt.Sprintf("%s%s-%d", cfg.Name, replicaSuffix, n), stateReplica)
	}
	if err == nil {
		d.uuid = info.UUID
	}
	h.mu.Unlock()
	if err != nil {
		return libxl.DomIDInvalid, fmt.Errorf("sim: create replica of %q: %w", cfg.Name, err)
	}
	return d.id, nil
}

// WritePages implements libxl.Sink. All-zero pages never written before
// stay unallocated, so a sparse guest has a sparse replica.
func (h *Hypervisor) WritePages(dom libxl.DomID, pfns []libxl.PFN, data []byte) error {
	d, err := h.get("write-pages", dom)
	if err != nil {
		return err
	}
	if f := h.hooks().WritePages; f != nil {
		if err := f(dom, pfns); err != nil {
			return injected("write-pages", dom, err)
		}
	}
	if err := d.lock(); err != nil {
		return err
	}
	defer d.mu.Unlock()
	if d.state != stateReplica {
		return d.badState("write-pages")
	}
	if err := d.checkPages("write-pages", pfns, data); err != nil {
		return err
	}
	for i, p := range pfns {
		d.mem.store(p, data[i*libxl.PageSize:(i+1)*libxl.PageSize])
	}
	return nil
}

// RestoreState implements libxl.Sink. The blobs must describe exactly the
// replica's shape (one platform blob, one per vCPU, one per device);
// nothing is applied unless all of them parse.
func (h *Hypervisor) RestoreState(dom libxl.DomID, st []libxl.State) error {
	d, err := h.get("restore", dom)
	if err != nil {
		return err
	}
	if f := h.hooks().RestoreState; f != nil {
		if err := f(dom); err != nil {
			return injected("restore", dom, err)
		}
	}
	if err := d.lock(); err != nil {
		return err
	}
	defer d.mu.Unlock()
	if d.state != stateReplica {
		return d.badState("restore")
	}
	p, err := d.parseState(st)
	if err != nil {
		return fmt.Errorf("sim: restore dom %d: %w", dom, err)
	}
	d.applyState(p)
	d.restored = true
	return nil
}

// maxPages is the largest guest the simulator builds (DomainConfig).
const maxPages = 1 << 36

// RoomFor implements libxl.ReplicaRoom: the replica must be a guest the
// simulator can build and, with host_memory, fit beside every domain this
// host holds.
func (h *Hypervisor) RoomFor(info libxl.DomainInfo) error {
	if info.Pages == 0 || info.Pages > maxPages {
		return fmt.Errorf("%w: replica of %q: pages %d not in 1..%d", ErrConfig, info.Name, info.Pages, uint64(maxPages))
	}
	if h.hostPages == 0 {
		return nil
	}
	h.mu.Lock()
	var used uint64
	for _, d := range h.doms {
		used += d.cfg.Pages
	}
	h.mu.Unlock()
	if used+info.Pages > h.hostPages {
		return fmt.Errorf("%w: replica of %q needs %d MiB; the host holds %d MiB, %d MiB in use",
			ErrNoRoom, info.Name, info.Pages*libxl.PageSize>>20, h.hostPages*libxl.PageSize>>20, used*libxl.PageSize>>20)
	}
	return nil
}

// Activate implements libxl.Sink: bind the NICs' host addresses (retrying
// for up to bind_retry while an address is still in use), take the
// original name if it is free, and start the guest.
func (h *Hypervisor) Activate(dom libxl.DomID) error {
	d, err := h.get("activate", dom)
	if err != nil {
		return err
	}
	if f := h.hooks().Activate; f != nil {
		if err := f(dom); err != nil {
			return injected("activate", dom, err)
		}
	}
	if err := d.lock(); err != nil {
		return err
	}
	if d.state != stateReplica || !d.restored {
		err := d.badState("activate")
		if d.state == stateReplica {
			err = fmt.Errorf("sim: activate dom %d: state never restored: %w", dom, libxl.ErrBadState)
		}
		d.mu.Unlock()
		return err
	}
	d.mu.Unlock()
	for i, n := range d.nics {
		if err := n.bind(h.bindRetry); err != nil {
			for _, m := range d.nics[:i] {
				m.unbind()
			}
			return fmt.Errorf("sim: activate dom %d: %w", dom, err)
		}
	}
	h.mu.Lock()
	want := d.cfg.Name
	free := true
	for id, n := range h.names {
		if n == want && id != dom {
			free = false
		}
	}
	if _, ok := h.names[dom]; ok && free {
		h.names[dom] = want
	}
	h.mu.Unlock()
	if err := d.lock(); err != nil {
		for _, n := range d.nics {
			n.unbind()
		}
		return err
	}
	defer d.mu.Unlock()
	d.state = stateRunning
	d.start()
	return nil
}
