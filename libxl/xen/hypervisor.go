//go:build xen

package xen

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"

	"github.com/xl-kemari/xl-kemari/libxl"
)

func init() {
	libxl.Register("xen", func(opts libxl.Options) (libxl.Hypervisor, error) {
		return Open(opts)
	})
}

// Hypervisor is the "xen" backend: libxl.Hypervisor over a Context.
type Hypervisor struct {
	ctx *Context
	// pvDirect: PV guests use route (b)'s primitives (raw pages, Xen's
	// log-dirty) instead of the libxenguest stream; they cannot be
	// protected then. For tests of the primitives.
	pvDirect bool
	// pvh, if pvhSet, says whether PVH guests are listed in
	// Capabilities().Types (route (b)); otherwise pvhDefault does.
	pvh, pvhSet bool

	mu sync.Mutex
	// Protected by mu.
	doms        map[libxl.DomID]*domState   // the backend's own per-domain state
	replicas    map[libxl.DomID]*pvReplica  // under restore
	hreplicas   map[libxl.DomID]*pvhReplica // PVH replicas not activated yet
	active      map[libxl.DomID]Domid       // activated replicas' real ids
	nextReplica libxl.DomID
	bg          sync.WaitGroup // replicas being destroyed
	log         *slog.Logger   // SetLogger; nil: nothing logged
}

// SetLogger makes the backend log what the contract does not carry: where
// each replica's activation spent its time ("replica activation"). Call it
// before the first CreateReplica.
func (h *Hypervisor) SetLogger(l *slog.Logger) {
	h.mu.Lock()
	h.log = l
	h.mu.Unlock()
}

// domState is what Xen does not keep for us.
type domState struct {
	logDirty bool // we enabled log-dirty mode
	// markAll: the next ReadAndClearDirty reports every page, because the
	// contract says enabling the log marks all pages, and Xen's freshly
	// enabled log is empty.
	markAll bool
	// p2m is a PV guest's pfn->mfn table, read while the domain was last
	// suspended; nil when it must be read again.
	p2m []uint64
	// stream is a PV guest's route (a) capture, while log-dirty is on.
	stream *pvStream
	// hvmType is a translated guest's type (PVH or HVM, which the
	// hypervisor does not tell apart) as libxl configured the domain whose
	// xen_domain_handle is handle.
	hvmType libxl.DomainType
	handle  [16]byte
}

// Open opens the Xen backend. Options: pv=stream (the default: PV
// guests are captured and replicated by libxenguest's save/restore
// stream, route (a)) or pv=direct (route (b)'s primitives on PV guests,
// which cannot protect them; for tests); pvh=on or pvh=off, whether PVH
// guests are protected (route (b); the default is pvhDefault). Unknown
// options are an error so a typo is not silently ignored.
func Open(opts libxl.Options) (*Hypervisor, error) {
	var direct bool
	var pvh, pvhSet bool
	for k, v := range opts {
		switch {
		case k == "pv" && (v == "stream" || v == "direct"):
			direct = v == "direct"
		case k == "pv":
			return nil, fmt.Errorf("xen: backend option pv=%q: want stream or direct", v)
		case k == "pvh" && (v == "on" || v == "off"):
			pvh, pvhSet = v == "on", true
		case k == "pvh":
			return nil, fmt.Errorf("xen: backend option pvh=%q: want on or off", v)
		default:
			return nil, fmt.Errorf("xen: unknown backend option %q", k)
		}
	}
	ctx, err := NewContext()
	if err != nil {
		return nil, err
	}
	return &Hypervisor{ctx: ctx, pvDirect: direct, pvh: pvh, pvhSet: pvhSet, doms: map[libxl.DomID]*domState{}, replicas: map[libxl.DomID]*pvReplica{},
		hreplicas: map[libxl.DomID]*pvhReplica{}}, nil
}

// Context returns the backend's binding, for callers that need calls the
// contract does not have (tests, the command's diagnostics).
func (h *Hypervisor) Context() *Context { return h.ctx }

// Name implements libxl.Hypervisor.
func (h *Hypervisor) Name() string { return "xen" }

// pvhDefault: whether PVH guests are protected without the pvh=on option.
const pvhDefault = false

// Capabilities implements libxl.Hypervisor. Types lists PV (route (a),
// libxl.StreamCapture) unless the backend was opened with pv=direct, and
// PVH (route (b): log-dirty, foreign mapping, HVM context and params;
// pvhreplica.go). HVM is not listed, so the engine refuses it rather than
// fail mid-epoch: its device model's dirty log and state are not
// captured. See the package documentation.
func (h *Hypervisor) Capabilities() libxl.Capabilities {
	c := libxl.Capabilities{SuspendCancel: true, LogDirty: true}
	if !h.pvDirect {
		c.Types = []libxl.DomainType{libxl.TypePV}
	}
	if h.pvhSet && h.pvh || !h.pvhSet && pvhDefault {
		c.Types = append(c.Types, libxl.TypePVH)
	}
	return c
}

// StreamCaptured implements libxl.StreamCapture: PV guests are, unless the
// backend was opened with pv=direct.
func (h *Hypervisor) StreamCaptured(t libxl.DomainType) bool {
	return t == libxl.TypePV && !h.pvDirect
}

// StreamCaptured implements libxl.StreamCapture for the engine, which
// asks its Source.
func (s *source) StreamCaptured(t libxl.DomainType) bool { return (*Hypervisor)(s).StreamCaptured(t) }

// StreamCaptured implements libxl.StreamCapture for the engine, which
// asks its Sink.
func (s *sink) StreamCaptured(t libxl.DomainType) bool { return (*Hypervisor)(s).StreamCaptured(t) }

// stream returns dom's running route (a) capture, or nil.
func (h *Hypervisor) stream(dom libxl.DomID) *pvStream {
	h.mu.Lock()
	defer h.mu.Unlock()
	if st := h.doms[dom]; st != nil {
		return st.stream
	}
	return nil
}

// hreplica returns the PVH replica called dom not activated yet, or nil.
func (h *Hypervisor) hreplica(dom libxl.DomID) *pvhReplica {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.hreplicas[dom]
}

// replica returns the replica under restore called dom, or nil.
func (h *Hypervisor) replica(dom libxl.DomID) *pvReplica {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.replicas[dom]
}

// resolve maps a DomID the Source is given to the domain it acts on. The
// Sink's own DomIDs (replicaBase and up) stay valid after Activate, as the
// contract has it (the engine protects the activated replica by the id it
// knows): they stand for the domain the restore built. A replica still
// under restore is no domain yet, so the Source can do nothing with it.
func (h *Hypervisor) resolve(op string, dom libxl.DomID) (libxl.DomID, error) {
	if dom < replicaBase {
		return dom, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if id, ok := h.active[dom]; ok {
		return libxl.DomID(id), nil
	}
	if h.replicas[dom] != nil || h.hreplicas[dom] != nil {
		return dom, fmt.Errorf("xen: %s(%d): %w: a replica under restore becomes a domain only when activated", op, dom, libxl.ErrBadState)
	}
	return dom, fmt.Errorf("xen: %s(%d): %w: no such replica", op, dom, libxl.ErrNoDomain)
}

// Lookup implements libxl.Hypervisor: a decimal id is checked with
// xc_domain_getinfolist, a name resolved with libxl_name_to_domid.
func (h *Hypervisor) Lookup(name string) (libxl.DomID, error) {
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		if _, err := h.ctx.DomainGetInfo(Domid(n)); err != nil {
			return libxl.DomIDInvalid, err
		}
		return libxl.DomID(n), nil
	}
	id, err := h.ctx.NameToDomid(name)
	if err != nil {
		return libxl.DomIDInvalid, err
	}
	return libxl.DomID(id), nil
}

// Source implements libxl.Hypervisor.
func (h *Hypervisor) Source() libxl.Source { return (*source)(h) }

// Sink implements libxl.Hypervisor.
func (h *Hypervisor) Sink() libxl.Sink { return (*sink)(h) }

// Close implements libxl.Hypervisor: it turns off the log-dirty mode this
// backend enabled (so a PV guest leaves shadow mode) and closes the
// Context.
func (h *Hypervisor) Close() error {
	h.mu.Lock()
	var streams []*pvStream
	for _, st := range h.doms {
		if st.stream != nil {
			streams = append(streams, st.stream)
			st.stream = nil
		}
	}
	reps := h.replicas
	h.replicas = map[libxl.DomID]*pvReplica{}
	hreps := h.hreplicas
	h.hreplicas = map[libxl.DomID]*pvhReplica{}
	h.mu.Unlock()
	for _, s := range streams {
		s.end()
	}
	var errs []error
	for _, r := range reps {
		if err := r.destroy(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, r := range hreps {
		if err := r.destroy(); err != nil {
			errs = append(errs, err)
		}
	}
	h.bg.Wait()
	h.mu.Lock()
	for d, st := range h.doms {
		if st.logDirty {
			if err := h.ctx.ShadowControl(Domid(d), ShadowOpOff); err != nil && !errors.Is(err, libxl.ErrNoDomain) {
				errs = append(errs, err)
			}
		}
	}
	h.doms = map[libxl.DomID]*domState{}
	h.mu.Unlock()
	errs = append(errs, h.ctx.Close())
	return errors.Join(errs...)
}

// state returns the backend state of dom, creating it. Callers hold mu.
func (h *Hypervisor) state(dom libxl.DomID) *domState {
	st := h.doms[dom]
	if st == nil {
		st = &domState{}
		h.doms[dom] = st
	}
	return st
}

// domain is what one getinfo tells about dom.
type domain struct {
	xc        *XcDominfo
	typ       libxl.DomainType
	suspended bool // shut down with reason suspend
}

// lookupDomain fails with libxl.ErrNoDomain for an absent or dying domain.
func (h *Hypervisor) lookupDomain(dom libxl.DomID) (domain, error) {
	xi, err := h.ctx.DomainGetInfo(Domid(dom))
	if err != nil {
		h.forget(dom, err)
		return domain{}, err
	}
	if xi.Flags&DominfDying != 0 {
		h.forget(dom, libxl.ErrNoDomain)
		return domain{}, fmt.Errorf("%w: domain %d is dying", libxl.ErrNoDomain, dom)
	}
	d := domain{xc: xi, typ: libxl.TypePV}
	if xi.Flags&DominfHVMGuest != 0 {
		d.typ = h.translatedType(dom, xi)
	}
	d.suspended = xi.Flags&DominfShutdown != 0 && xi.ShutdownReason() == ShutdownReasonSuspend
	return d, nil
}

// translatedType tells PVH from HVM. The hypervisor does not, nor does
// libxl_domain_info (its domain_type says HVM for both); the domain's
// libxl configuration does. It is read once per domain (by its handle,
// so a reused domid is read again); a domain libxl cannot describe is
// taken for HVM.
func (h *Hypervisor) translatedType(dom libxl.DomID, xi *XcDominfo) libxl.DomainType {
	h.mu.Lock()
	if st := h.doms[dom]; st != nil && st.hvmType != "" && st.handle == xi.Handle {
		h.mu.Unlock()
		return st.hvmType
	}
	h.mu.Unlock()
	t := libxl.TypeHVM
	if js, err := h.ctx.RetrieveDomainConfiguration(Domid(dom)); err == nil && configType(js) == "pvh" {
		t = libxl.TypePVH
	}
	h.mu.Lock()
	st := h.state(dom)
	st.hvmType, st.handle = t, xi.Handle
	h.mu.Unlock()
	return t
}

// forget drops the state of a domain that no longer exists, so a reused
// domid starts clean.
func (h *Hypervisor) forget(dom libxl.DomID, err error) {
	if errors.Is(err, libxl.ErrNoDomain) {
		h.mu.Lock()
		if st := h.doms[dom]; st != nil && st.stream != nil {
			// libxc fails on a domain that is gone; reap the goroutines.
			s := st.stream
			h.bg.Add(1)
			go func() { defer h.bg.Done(); s.gone() }()
		}
		delete(h.doms, dom)
		h.mu.Unlock()
	}
}

// pages is the number of guest frames the dirty bitmap and ReadPages cover:
// the highest gfn plus one.
func (h *Hypervisor) pages(dom libxl.DomID) (uint64, error) {
	g, err := h.ctx.DomainMaximumGpfn(Domid(dom))
	if err != nil {
		return 0, err
	}
	return g + 1, nil
}

// source is the primary side of the backend.
type source Hypervisor

// Describe implements libxl.Source from libxl_domain_info and the libxl
// JSON config (libxl_retrieve_domain_configuration).
func (s *source) Describe(dom libxl.DomID) (libxl.DomainInfo, error) {
	h := (*Hypervisor)(s)
	if r := h.replica(dom); r != nil {
		// The domain libxl builds when the stream ends: the shape it was
		// created with, named (as the simulator names its replicas) after
		// the domain it replicates.
		return r.info, nil
	}
	if r := h.hreplica(dom); r != nil {
		return r.info, nil
	}
	dom, err := h.resolve("Describe", dom)
	if err != nil {
		return libxl.DomainInfo{}, err
	}
	d, err := h.lookupDomain(dom)
	if err != nil {
		return libxl.DomainInfo{}, err
	}
	li, err := h.ctx.DomainInfo(Domid(dom))
	if err != nil {
		return libxl.DomainInfo{}, err
	}
	pages, err := h.pages(dom)
	if err != nil {
		return libxl.DomainInfo{}, err
	}
	info := libxl.DomainInfo{
		Name:  h.ctx.DomidToName(Domid(dom)),
		UUID:  li.Uuid,
		Type:  d.typ,
		Pages: pages,
		VCPUs: int(li.VcpuMaxId) + 1,
	}
	js, err := h.ctx.RetrieveDomainConfiguration(Domid(dom))
	if err != nil {
		return libxl.DomainInfo{}, err
	}
	if err := parseConfig(js, dom, &info); err != nil {
		return libxl.DomainInfo{}, err
	}
	info.Type = d.typ // the hypervisor's word over the config's
	info.Config = js
	return info, nil
}

// Suspend implements libxl.Source with libxl_domain_suspend_only.
func (s *source) Suspend(dom libxl.DomID) error {
	h := (*Hypervisor)(s)
	dom, err := h.resolve("Suspend", dom)
	if err != nil {
		return err
	}
	d, err := h.lookupDomain(dom)
	if err != nil {
		return err
	}
	if d.suspended {
		return fmt.Errorf("xen: Suspend(%d): %w: already suspended", dom, libxl.ErrBadState)
	}
	if st := h.stream(dom); st != nil {
		return st.suspend()
	}
	if err := h.ctx.DomainSuspendOnly(Domid(dom)); err != nil {
		return err
	}
	h.mu.Lock()
	h.state(dom).p2m = nil // the guest may have changed its p2m while it ran
	h.mu.Unlock()
	return nil
}

// Resume implements libxl.Source with libxl_domain_resume(suspend_cancel=1).
func (s *source) Resume(dom libxl.DomID) error {
	h := (*Hypervisor)(s)
	dom, err := h.resolve("Resume", dom)
	if err != nil {
		return err
	}
	d, err := h.lookupDomain(dom)
	if err != nil {
		return err
	}
	if !d.suspended {
		return fmt.Errorf("xen: Resume(%d): %w: not suspended", dom, libxl.ErrBadState)
	}
	if st := h.stream(dom); st != nil {
		return st.resume()
	}
	return h.ctx.DomainResume(Domid(dom), true)
}

// SetLogDirty implements libxl.Source with xc_shadow_control
// (OP_ENABLE_LOGDIRTY, OP_OFF). For a PV guest this needs a hypervisor
// built with shadow paging (see the package documentation), and with
// pv=stream it starts (on) or ends (off) the guest's save stream instead,
// which enables log-dirty itself. For HVM the device model's own dirty log
// (QMP xen-set-global-dirty-log) is not switched yet.
func (s *source) SetLogDirty(dom libxl.DomID, on bool) error {
	h := (*Hypervisor)(s)
	dom, err := h.resolve("SetLogDirty", dom)
	if err != nil {
		return err
	}
	d, err := h.lookupDomain(dom)
	if err != nil {
		return err
	}
	if d.typ == libxl.TypePV && !h.pvDirect {
		return h.setStream(dom, on)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.state(dom)
	switch {
	case on && !st.logDirty:
		if err := h.ctx.ShadowControl(Domid(dom), ShadowOpEnableLogDirty); err != nil {
			return fmt.Errorf("xen: SetLogDirty(%d, on): %w", dom, err)
		}
		st.logDirty, st.markAll = true, true
	case on:
		st.markAll = true
	case st.logDirty:
		if err := h.ctx.ShadowControl(Domid(dom), ShadowOpOff); err != nil {
			return fmt.Errorf("xen: SetLogDirty(%d, off): %w", dom, err)
		}
		st.logDirty, st.markAll = false, false
	}
	return nil
}

// setStream ends dom's route (a) stream, if any, and with on starts a new
// one: a stream is never resumed (libxl.StreamCapture).
func (h *Hypervisor) setStream(dom libxl.DomID, on bool) error {
	h.mu.Lock()
	st := h.state(dom)
	old := st.stream
	st.stream = nil
	h.mu.Unlock()
	if old != nil {
		old.end()
	}
	if !on {
		return nil
	}
	pages, err := h.pages(dom)
	if err != nil {
		return err
	}
	s, err := startStream(ctxSaver{h.ctx}, dom, pages)
	if err != nil {
		return fmt.Errorf("xen: SetLogDirty(%d, on): %w", dom, err)
	}
	h.mu.Lock()
	h.state(dom).stream = s
	h.mu.Unlock()
	return nil
}

// ctxSaver is a pvStream's Xen: the Context.
type ctxSaver struct{ c *Context }

func (x ctxSaver) SaveRemus(dom libxl.DomID, w *os.File, cb *SaveCallbacks) error {
	return x.c.DomainSaveRemus(Domid(dom), w, cb)
}
func (x ctxSaver) SuspendOnly(dom libxl.DomID) error { return x.c.DomainSuspendOnly(Domid(dom)) }
func (x ctxSaver) ResumeCancel(dom libxl.DomID) error {
	return x.c.DomainResume(Domid(dom), true)
}

// ctxRestorer is a pvReplica's Xen: the Context.
type ctxRestorer struct{ c *Context }

func (x ctxRestorer) CreateRestore(cfg []byte, name string, r *os.File) (libxl.DomID, error) {
	id, err := x.c.DomainCreateRestore(cfg, name, r)
	return libxl.DomID(id), err
}
func (x ctxRestorer) Rename(id libxl.DomID, o, n string) error {
	return x.c.DomainRename(Domid(id), o, n)
}
func (x ctxRestorer) Unpause(id libxl.DomID) error { return x.c.DomainUnpause(Domid(id)) }
func (x ctxRestorer) Destroy(id libxl.DomID) error { return x.c.DomainDestroy(Domid(id)) }
func (x ctxRestorer) NameToID(name string) (libxl.DomID, error) {
	id, err := x.c.NameToDomid(name)
	return libxl.DomID(id), err
}

// ReadAndClearDirty implements libxl.Source with xc_logdirty_control
// (OP_CLEAN), which reads and clears Xen's log in one hypercall.
func (s *source) ReadAndClearDirty(dom libxl.DomID, dst *libxl.Bitmap) error {
	h := (*Hypervisor)(s)
	dom, err := h.resolve("ReadAndClearDirty", dom)
	if err != nil {
		return err
	}
	d, err := h.lookupDomain(dom)
	if err != nil {
		return err
	}
	if st := h.stream(dom); st != nil {
		return st.readAndClear(dst)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.state(dom)
	if !st.logDirty {
		return fmt.Errorf("xen: ReadAndClearDirty(%d): %w: log-dirty is off", dom, libxl.ErrBadState)
	}
	pages, err := h.pages(dom)
	if err != nil {
		return err
	}
	if dst.Len() < pages {
		return fmt.Errorf("xen: ReadAndClearDirty(%d): bitmap of %d bits for %d pages: %w", dom, dst.Len(), pages, libxl.ErrRange)
	}
	if _, err := h.ctx.LogDirtyControl(Domid(dom), ShadowOpClean, pages, dst.Words()); err != nil {
		return err
	}
	if st.markAll {
		if d.typ != libxl.TypePV {
			// A translated guest's frames up to the highest are mostly
			// holes (its special pages sit below 4 GiB): mark the frames
			// that hold a page.
			if err := h.markPopulated(dom, pages, dst); err != nil {
				return err
			}
		} else {
			for p := range pages {
				dst.Set(libxl.PFN(p))
			}
		}
		st.markAll = false
	}
	return nil
}

// markPopulated sets in dst the frames of HVM/PVH domain dom below pages
// that hold a page (Context.ProbeFrames). Callers hold mu.
func (h *Hypervisor) markPopulated(dom libxl.DomID, pages uint64, dst *libxl.Bitmap) error {
	frames := make([]uint64, 0, 16*mapBatch)
	errs := make([]int32, 16*mapBatch)
	for base := uint64(0); base < pages; base += uint64(cap(frames)) {
		frames = frames[:0]
		for p := base; p < min(base+uint64(cap(frames)), pages); p++ {
			frames = append(frames, p)
		}
		if err := h.ctx.ProbeFrames(Domid(dom), frames, errs); err != nil {
			return fmt.Errorf("xen: ReadAndClearDirty(%d): %w", dom, err)
		}
		for i, f := range frames {
			if errs[i] == 0 {
				dst.Set(libxl.PFN(f))
			}
		}
	}
	return nil
}

// ReadPages implements libxl.Source by mapping the frames with
// xenforeignmemory_map. For a PV guest the PFNs are first translated
// through the guest's own p2m; the pages come out as the guest holds them,
// so page-table pages contain machine frame numbers of this host.
func (s *source) ReadPages(dom libxl.DomID, pfns []libxl.PFN, dst []byte) error {
	h := (*Hypervisor)(s)
	dom, err := h.resolve("ReadPages", dom)
	if err != nil {
		return err
	}
	if st := h.stream(dom); st != nil {
		if _, err := h.lookupDomain(dom); err != nil {
			return err
		}
		if len(dst) < len(pfns)*libxl.PageSize {
			return fmt.Errorf("xen: ReadPages(%d): %d bytes for %d pages: %w", dom, len(dst), len(pfns), libxl.ErrRange)
		}
		return st.readPages(pfns, dst)
	}
	return h.readPages(dom, pfns, dst)
}

func (h *Hypervisor) readPages(dom libxl.DomID, pfns []libxl.PFN, dst []byte) error {
	d, err := h.lookupDomain(dom)
	if err != nil {
		return err
	}
	if len(dst) < len(pfns)*libxl.PageSize {
		return fmt.Errorf("xen: ReadPages(%d): %d bytes for %d pages: %w", dom, len(dst), len(pfns), libxl.ErrRange)
	}
	if len(pfns) == 0 {
		return nil
	}
	pages, err := h.pages(dom)
	if err != nil {
		return err
	}
	frames := make([]uint64, len(pfns))
	for i, p := range pfns {
		if uint64(p) >= pages {
			return fmt.Errorf("xen: ReadPages(%d): pfn %d of %d: %w", dom, p, pages, libxl.ErrRange)
		}
		frames[i] = uint64(p)
	}
	if d.typ == libxl.TypePV {
		p2m, err := h.p2m(dom, d)
		if err != nil {
			return err
		}
		for i, p := range pfns {
			if uint64(p) >= uint64(len(p2m)) {
				frames[i] = invalidMFN
			} else {
				frames[i] = p2m[p]
			}
		}
	}
	errs := make([]int32, len(frames))
	// Holes (no frame behind the pfn) read as zeros, as a fresh replica's.
	var mapped []uint64
	var slots []int
	for i, f := range frames {
		if f == invalidMFN {
			clear(dst[i*libxl.PageSize : (i+1)*libxl.PageSize])
			continue
		}
		mapped = append(mapped, f)
		slots = append(slots, i)
	}
	if len(slots) == len(frames) {
		err = h.ctx.ForeignCopy(Domid(dom), mapped, dst, false, errs)
	} else {
		tmp := make([]byte, len(mapped)*libxl.PageSize)
		if err = h.ctx.ForeignCopy(Domid(dom), mapped, tmp, false, errs); err == nil {
			for j, i := range slots {
				copy(dst[i*libxl.PageSize:(i+1)*libxl.PageSize], tmp[j*libxl.PageSize:])
			}
		}
	}
	if err != nil {
		return fmt.Errorf("xen: ReadPages(%d): %w", dom, err)
	}
	for j, e := range errs[:len(mapped)] {
		if e == 0 {
			continue
		}
		if d.typ != libxl.TypePV {
			// A hole in a translated guest's frames: zeros, as a
			// replica's frame that was never written.
			i := slots[j]
			clear(dst[i*libxl.PageSize : (i+1)*libxl.PageSize])
			continue
		}
		return fmt.Errorf("xen: ReadPages(%d): pfn %d (frame %#x): mapping error %d", dom, pfns[slots[j]], mapped[j], e)
	}
	return nil
}

// p2m returns the PV guest's pfn->mfn table, cached while it stays
// suspended; a running guest's table is read afresh each call (pre-copy
// reads may then see a page move, which the dirty log reports again).
func (h *Hypervisor) p2m(dom libxl.DomID, d domain) ([]uint64, error) {
	h.mu.Lock()
	st := h.state(dom)
	cached := st.p2m
	h.mu.Unlock()
	if cached != nil && d.suspended {
		return cached, nil
	}
	var p2m []uint64
	var err error
	// The guest bumps p2m_generation around changes; retry a torn read.
	for range 3 {
		var a, b p2mAnchor
		if a, err = h.ctx.p2mAnchor(Domid(dom), d.xc.SharedInfoFrame); err != nil {
			return nil, err
		}
		if p2m, err = readP2M(pvFrames{h.ctx, Domid(dom)}, a); err != nil {
			continue
		}
		if b, err = h.ctx.p2mAnchor(Domid(dom), d.xc.SharedInfoFrame); err != nil {
			return nil, err
		}
		if a.Generation == b.Generation {
			break
		}
		err = fmt.Errorf("%w: p2m changed while read (generation %d -> %d)", ErrP2M, a.Generation, b.Generation)
	}
	if err != nil {
		return nil, fmt.Errorf("xen: domain %d: %w", dom, err)
	}
	if d.suspended {
		h.mu.Lock()
		h.state(dom).p2m = p2m
		h.mu.Unlock()
	}
	return p2m, nil
}

// CaptureState implements libxl.Source. PV (pv=stream): the checkpoint's
// records from the save stream (libxl.StreamCapture). HVM/PVH: the
// Xen-side context (xc_domain_hvm_getcontext) split into a platform blob
// and one blob per vCPU; the device model's state of an HVM guest is not
// captured yet. PV with pv=direct: libxl.ErrUnsupported, because PV vCPU
// state and page tables hold machine frame numbers that mean nothing on
// the standby.
func (s *source) CaptureState(dom libxl.DomID, dst []libxl.State) ([]libxl.State, error) {
	h := (*Hypervisor)(s)
	dom, err := h.resolve("CaptureState", dom)
	if err != nil {
		return dst, err
	}
	d, err := h.lookupDomain(dom)
	if err != nil {
		return dst, err
	}
	if st := h.stream(dom); st != nil {
		// A stream's checkpoint stays readable after Resume
		// (libxl.StreamCapture); the stream checks its own state.
		return st.captureState(dst)
	}
	if !d.suspended {
		return dst, fmt.Errorf("xen: CaptureState(%d): %w: not suspended", dom, libxl.ErrBadState)
	}
	if d.typ == libxl.TypePV {
		return dst, fmt.Errorf("xen: CaptureState(%d): %w: PV state capture needs MFN canonicalisation (libxenguest stream route), not implemented yet", dom, libxl.ErrUnsupported)
	}
	// As libxc's HVM save ends a checkpoint (xg_sr_save_x86_hvm.c): the
	// TSC info, the HVM context, the non-zero params.
	tsc, err := h.ctx.DomainGetTSCInfo(Domid(dom))
	if err != nil {
		return dst, err
	}
	ctx, err := h.ctx.HVMGetContext(Domid(dom))
	if err != nil {
		return dst, err
	}
	ps := hvmParamsState{TSC: tsc}
	for _, i := range hvmSavedParams {
		v, err := h.ctx.HVMParamGet(Domid(dom), i)
		if err != nil {
			return dst, err
		}
		if v != 0 {
			ps.Params = append(ps.Params, HVMParam{Index: i, Value: v})
		}
	}
	dst, err = splitHVM(ctx, int(d.xc.MaxVCPUID)+1, dst)
	if err != nil {
		return dst, err
	}
	return append(dst, ps.encode()), nil
}

// Destroy implements libxl.Source with libxl_domain_destroy; a DomID the
// Sink handed out is destroyed as Sink.Destroy does.
func (s *source) Destroy(dom libxl.DomID) error {
	if dom >= replicaBase {
		return (*sink)(s).Destroy(dom)
	}
	return (*Hypervisor)(s).destroy(dom)
}

func (h *Hypervisor) destroy(dom libxl.DomID) error {
	if _, err := h.lookupDomain(dom); err != nil {
		return err
	}
	err := h.ctx.DomainDestroy(Domid(dom))
	h.mu.Lock()
	var s *pvStream
	if st := h.doms[dom]; st != nil {
		s = st.stream
	}
	delete(h.doms, dom)
	h.mu.Unlock()
	if s != nil {
		s.gone() // libxc fails on the destroyed domain at once
	}
	return err
}

// sink is the standby side of the backend: PV replicas are built by
// libxl_domain_create_restore from the committed epochs (route (a),
// pvreplica.go), PVH replicas are paused domains written as epochs commit
// (route (b), pvhreplica.go); both are named by DomIDs from replicaBase
// up, which stay valid after Activate. HVM replicas are not implemented
// (libxl.ErrUnsupported).
type sink Hypervisor

var errNoReplica = fmt.Errorf("%w: the xen backend builds PV and PVH replicas only (HVM's device model is not replicated)", libxl.ErrUnsupported)

// CreateReplica implements libxl.Sink: for a PV domain, a restore that
// reads the replica's stream; the domain it builds appears under a
// temporary name, paused, only once Activate ends the stream. For a PVH
// domain, a paused domain under a temporary name, at once.
func (s *sink) CreateReplica(info libxl.DomainInfo) (libxl.DomID, error) {
	h := (*Hypervisor)(s)
	pvh := info.Type == libxl.TypePVH
	if !h.StreamCaptured(info.Type) && !pvh {
		return libxl.DomIDInvalid, fmt.Errorf("xen: CreateReplica(%s %q): %w", info.Type, info.Name, errNoReplica)
	}
	h.mu.Lock()
	id := replicaBase + h.nextReplica
	h.nextReplica++
	h.mu.Unlock()
	if pvh {
		r, err := newPVHReplica(ctxHVM{h.ctx}, id, info)
		if err != nil {
			return libxl.DomIDInvalid, err
		}
		h.mu.Lock()
		h.hreplicas[r.id] = r
		h.mu.Unlock()
		return r.id, nil
	}
	r, err := newReplica(ctxRestorer{h.ctx}, id, info)
	if err != nil {
		return libxl.DomIDInvalid, err
	}
	h.mu.Lock()
	if h.log != nil {
		r.log = h.log
	}
	h.replicas[r.id] = r
	h.mu.Unlock()
	return r.id, nil
}

// RoomFor implements libxl.ReplicaRoom: Xen must have the guest's memory
// free (libxl_get_free_memory), with 1/64 more for page tables and
// libxl's per-domain overhead.
func (s *sink) RoomFor(info libxl.DomainInfo) error {
	free, err := (*Hypervisor)(s).ctx.GetFreeMemory()
	if err != nil {
		return err
	}
	need := info.Pages * libxl.PageSize / 1024
	if info.Type != libxl.TypePV {
		// A translated guest's frames run up to its special pages below
		// 4 GiB; its memory is what its configuration gives it.
		if m := configMaxMemKB(info.Config); m > 0 {
			need = m
		}
	}
	need += max(need/64, 8<<10)
	if free < need {
		return fmt.Errorf("xen: %d MiB free for a replica of %q that needs %d MiB", free>>10, info.Name, need>>10)
	}
	return nil
}

// noReplica is the answer for a DomID that is not a replica under
// restore: an activated replica takes no more epochs (ErrBadState), any
// other DomID is no replica of this sink.
func (s *sink) noReplica(op string, dom libxl.DomID) error {
	if dom >= replicaBase {
		if _, ok := (*Hypervisor)(s).ReplicaDomid(dom); ok {
			return fmt.Errorf("xen: %s(%d): %w: the replica was activated", op, dom, libxl.ErrBadState)
		}
		return fmt.Errorf("xen: %s(%d): %w: no such replica", op, dom, libxl.ErrNoDomain)
	}
	if _, err := (*Hypervisor)(s).lookupDomain(dom); err != nil {
		return err
	}
	return fmt.Errorf("xen: %s(%d): %w", op, dom, errNoReplica)
}

// WritePages implements libxl.Sink: into the replica's page store.
func (s *sink) WritePages(dom libxl.DomID, pfns []libxl.PFN, data []byte) error {
	if r := (*Hypervisor)(s).replica(dom); r != nil {
		return r.writePages(pfns, data)
	}
	if r := (*Hypervisor)(s).hreplica(dom); r != nil {
		return r.writePages(pfns, data)
	}
	return s.noReplica("WritePages", dom)
}

// ReadPages implements libxl.Sink: a replica's pages from its store (the
// form the stream carries: PV page tables canonical), a real domain's like
// Source.ReadPages.
func (s *sink) ReadPages(dom libxl.DomID, pfns []libxl.PFN, dst []byte) error {
	h := (*Hypervisor)(s)
	if r := h.replica(dom); r != nil {
		return r.readPages(pfns, dst)
	}
	if r := h.hreplica(dom); r != nil {
		return r.readPages(pfns, dst)
	}
	if id, ok := h.ReplicaDomid(dom); ok {
		// Activated: the running domain, as its Source reads it.
		return (*source)(s).ReadPages(libxl.DomID(id), pfns, dst)
	}
	if dom >= replicaBase {
		return s.noReplica("ReadPages", dom)
	}
	return h.readPages(dom, pfns, dst)
}

// RestoreState implements libxl.Sink: the committed epoch (the pages
// written since the last one, and st) is checked and queued for the
// restore.
func (s *sink) RestoreState(dom libxl.DomID, st []libxl.State) error {
	if r := (*Hypervisor)(s).replica(dom); r != nil {
		return r.restoreState(st)
	}
	if r := (*Hypervisor)(s).hreplica(dom); r != nil {
		return r.restoreState(st)
	}
	return s.noReplica("RestoreState", dom)
}

// Activate implements libxl.Sink: end the stream, wait for libxl to build
// the domain from the last whole checkpoint, give it the primary's name
// and unpause it. ReplicaDomid then tells its real domain id.
func (s *sink) Activate(dom libxl.DomID) error {
	h := (*Hypervisor)(s)
	if r := h.hreplica(dom); r != nil {
		id, err := r.activate()
		if err != nil {
			return err
		}
		h.mu.Lock()
		delete(h.hreplicas, dom)
		h.activated(dom, Domid(id))
		h.mu.Unlock()
		return nil
	}
	r := h.replica(dom)
	if r == nil {
		return s.noReplica("Activate", dom)
	}
	id, err := r.activate()
	if err != nil {
		return err
	}
	h.mu.Lock()
	delete(h.replicas, dom)
	h.activated(dom, Domid(id))
	h.mu.Unlock()
	return nil
}

// PrepareActivate implements libxl.ActivationPreparer: end the stream and
// wait for libxl to build the paused domain from the last whole
// checkpoint; Activate then renames and unpauses it.
func (s *sink) PrepareActivate(dom libxl.DomID) error {
	if r := (*Hypervisor)(s).replica(dom); r != nil {
		return r.prepare()
	}
	return s.noReplica("PrepareActivate", dom)
}

// Destroy implements libxl.Sink: a replica's restore is ended and what it
// built destroyed, in the background (it may take seconds); a real domain
// is destroyed with libxl_domain_destroy.
func (s *sink) Destroy(dom libxl.DomID) error {
	h := (*Hypervisor)(s)
	h.mu.Lock()
	r := h.replicas[dom]
	delete(h.replicas, dom)
	hr := h.hreplicas[dom]
	delete(h.hreplicas, dom)
	if r != nil || hr != nil {
		h.bg.Add(1)
	}
	h.mu.Unlock()
	if hr != nil {
		hr.closed = true
		go func() {
			defer h.bg.Done()
			// Nobody is left to hear of a failure: libxl has logged it.
			hr.destroy()
		}()
		return nil
	}
	if r == nil {
		if dom >= replicaBase {
			if id, ok := h.ReplicaDomid(dom); ok {
				err := h.destroy(libxl.DomID(id))
				if err == nil || errors.Is(err, libxl.ErrNoDomain) {
					// Its domid may be reused: forget it.
					h.mu.Lock()
					delete(h.active, dom)
					h.mu.Unlock()
				}
				return err
			}
			return s.noReplica("Destroy", dom)
		}
		return h.destroy(dom)
	}
	r.closed = true // the loop may not use it any more
	go func() {
		defer h.bg.Done()
		// Nobody is left to hear of a failure: libxl has logged it.
		r.destroy()
	}()
	return nil
}

// ReplicaDomid returns the real domain id of a replica the Sink activated
// (its DomID is the Sink's own until then).
func (h *Hypervisor) ReplicaDomid(dom libxl.DomID) (Domid, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	id, ok := h.active[dom]
	return id, ok
}

// activated records a replica's real domain id. Callers hold mu.
func (h *Hypervisor) activated(dom libxl.DomID, id Domid) {
	if h.active == nil {
		h.active = map[libxl.DomID]Domid{}
	}
	h.active[dom] = id
}

// Frame returns the frame number ReadPages maps for pfn of dom: the pfn
// itself for HVM/PVH, the MFN from the guest's p2m for PV (invalidMFN,
// all ones, for a hole). For diagnostics: xenstore's ring-ref of a PV
// guest is such an MFN.
func (h *Hypervisor) Frame(dom libxl.DomID, pfn libxl.PFN) (uint64, error) {
	d, err := h.lookupDomain(dom)
	if err != nil {
		return 0, err
	}
	if d.typ != libxl.TypePV {
		return uint64(pfn), nil
	}
	p2m, err := h.p2m(dom, d)
	if err != nil {
		return 0, err
	}
	if uint64(pfn) >= uint64(len(p2m)) {
		return 0, fmt.Errorf("xen: Frame(%d, %d): %w", dom, pfn, libxl.ErrRange)
	}
	return p2m[pfn], nil
}
