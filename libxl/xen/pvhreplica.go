package xen

import (
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/xl-kemari/xl-kemari/libxl"
)

// Route (b), standby side, for PVH guests: a pvhReplica is a real domain,
// created paused by libxl from the primary's configuration under a
// temporary name (libxl_domain_create_new builds it: kernel loaded, vif
// backends, xenstore introduced; it never runs), whose frames the engine
// writes by foreign mapping as epochs commit. RestoreState only checks and
// keeps the committed checkpoint's state. Activate does, without a
// restore, what libxc's HVM restore does when its stream ends
// (xg_sr_restore_x86_hvm.c, handle_x86_tsc_info, handle_hvm_params,
// x86_hvm_stream_complete): TSC info, the params (the xenstore and console
// ring pages zeroed first, because their indexes belong to the primary's
// backends), the HVM context, the grant table's reserved entries; then it
// renames the domain and unpauses it. The context was taken while the
// guest sat in its suspend hypercall with 0 (not cancelled) as its return
// value, so on the replica the guest returns from it as a migrated guest
// and reconnects its xenstore ring and PV frontends to this host's
// backends (the netfront announces the guest's addresses as it
// reconnects).

// hvmXen is what a pvhReplica needs of Xen: a Context (ctxHVM), or a fake
// in tests.
type hvmXen interface {
	// CreateNew creates a paused domain (Context.DomainCreateNew).
	CreateNew(configJSON []byte, name string) (libxl.DomID, error)
	// CopyFrames reads (write false) or writes frames (Context.ForeignCopy).
	CopyFrames(id libxl.DomID, gfns []uint64, buf []byte, write bool, errs []int32) error
	Populate(id libxl.DomID, gfns []uint64) error
	SetTSCInfo(id libxl.DomID, t TSCInfo) error
	ParamGet(id libxl.DomID, idx uint32) (uint64, error)
	ParamSet(id libxl.DomID, idx uint32, v uint64) error
	ClearPage(id libxl.DomID, gfn uint64) error
	SetContext(id libxl.DomID, ctx []byte) error
	GnttabSeed(id libxl.DomID, consoleGFN, storeGFN uint64) error
	Rename(id libxl.DomID, oldName, newName string) error
	Unpause(id libxl.DomID) error
	Destroy(id libxl.DomID) error
}

type pvhReplica struct {
	x     hvmXen
	id    libxl.DomID // synthetic, >= replicaBase
	dom   libxl.DomID // the real domain
	name  string      // the domain's name once activated
	tmp   string      // its name until then
	info  libxl.DomainInfo
	pages uint64
	// written: frames the engine wrote. The others read as zeros: they
	// are holes of the primary (the replica's own build may have put a
	// page there that the primary's guest gave up).
	written *libxl.Bitmap
	// rings are the replica's own xenstore and console ring frames (its
	// HVM params, which the same configuration makes the primary's too),
	// and held their pages as the engine wrote them: they never reach the
	// replica, whose xenstored and xenconsoled serve those rings while it
	// waits, and would act on a request torn by a live copy (a garbled
	// ring is a bad client to xenstored, lost for good). Activate zeroes
	// the frames, as a restore does.
	rings  map[uint64]bool
	held   map[uint64][]byte
	state  *pvhState // the last committed checkpoint's
	closed bool      // activated or destroyed

	// libxl builds the domain on a goroutine of its own: under TCG it
	// took ~40 s (vif hotplug included), and the standby's loop, which
	// calls CreateReplica, must go on answering the primary meanwhile
	// (lab: the primary gave up on its silent standby at every try).
	// ready is closed once dom (or cerr) is set; pages written before
	// wait in early (latest copy wins) and go in with the next call after.
	ready chan struct{}
	cerr  error
	early map[libxl.PFN][]byte
}

// newPVHReplica creates the paused domain a PVH replica of info is built in.
func newPVHReplica(x hvmXen, id libxl.DomID, info libxl.DomainInfo) (*pvhReplica, error) {
	if len(info.Config) == 0 {
		return nil, fmt.Errorf("xen: CreateReplica(%q): no libxl configuration in the description", info.Name)
	}
	if info.Pages == 0 || info.Pages > maxReplicaPages {
		return nil, fmt.Errorf("xen: CreateReplica(%q): %w: %d pages, want 1..%d", info.Name, libxl.ErrRange, info.Pages, uint64(maxReplicaPages))
	}
	if info.VCPUs < 1 {
		return nil, fmt.Errorf("xen: CreateReplica(%q): %w: %d vCPUs", info.Name, libxl.ErrRange, info.VCPUs)
	}
	r := &pvhReplica{x: x, id: id, name: info.Name, info: info, pages: info.Pages,
		tmp:     fmt.Sprintf("%s--kemari-%d-%d", info.Name, os.Getpid(), id-replicaBase),
		written: libxl.NewBitmap(info.Pages), ready: make(chan struct{}), early: map[libxl.PFN][]byte{},
		rings: map[uint64]bool{}, held: map[uint64][]byte{}}
	go r.create()
	return r, nil
}

// create builds the domain and learns its ring frames.
func (r *pvhReplica) create() {
	defer close(r.ready)
	dom, err := r.x.CreateNew(r.info.Config, r.tmp)
	if err != nil {
		r.cerr = fmt.Errorf("xen: CreateReplica(%q): %w", r.info.Name, err)
		return
	}
	for _, i := range []uint32{hvmParamStorePFN, hvmParamConsolePFN} {
		v, err := r.x.ParamGet(dom, i)
		if err != nil {
			r.x.Destroy(dom)
			r.cerr = fmt.Errorf("xen: CreateReplica(%q): %w", r.info.Name, err)
			return
		}
		if v != 0 {
			r.rings[v] = true
		}
	}
	r.dom = dom
}

// built reports whether the domain exists, writing the early pages into
// it first; with wait it blocks until libxl is done.
func (r *pvhReplica) built(wait bool) (bool, error) {
	if wait {
		<-r.ready
	} else {
		select {
		case <-r.ready:
		default:
			return false, nil
		}
	}
	if r.cerr != nil {
		return true, r.cerr
	}
	if len(r.early) > 0 {
		pfns := make([]libxl.PFN, 0, len(r.early))
		for p := range r.early {
			pfns = append(pfns, p)
		}
		slices.Sort(pfns)
		for len(pfns) > 0 {
			n := min(len(pfns), 4*mapBatchPages)
			buf := make([]byte, 0, n*libxl.PageSize)
			for _, p := range pfns[:n] {
				buf = append(buf, r.early[p]...)
			}
			if err := r.writeNow(pfns[:n], buf); err != nil {
				return true, err
			}
			for _, p := range pfns[:n] {
				delete(r.early, p)
			}
			pfns = pfns[n:]
		}
	}
	return true, nil
}

// mapBatchPages bounds the early pages written per call.
const mapBatchPages = 1024

func (r *pvhReplica) check(op string, pfns []libxl.PFN, n int) ([]uint64, error) {
	if r.closed {
		return nil, fmt.Errorf("xen: %s(%d): %w: the replica was activated or destroyed", op, r.id, libxl.ErrBadState)
	}
	if n < len(pfns)*libxl.PageSize {
		return nil, fmt.Errorf("xen: %s(%d): %d bytes for %d pages: %w", op, r.id, n, len(pfns), libxl.ErrRange)
	}
	gfns := make([]uint64, len(pfns))
	for i, p := range pfns {
		if uint64(p) >= r.pages {
			return nil, fmt.Errorf("xen: %s(%d): pfn %d of %d: %w", op, r.id, p, r.pages, libxl.ErrRange)
		}
		gfns[i] = uint64(p)
	}
	return gfns, nil
}

// writePages writes the pages into the replica's frames (or keeps them
// until libxl has built it).
func (r *pvhReplica) writePages(pfns []libxl.PFN, data []byte) error {
	if _, err := r.check("WritePages", pfns, len(data)); err != nil || len(pfns) == 0 {
		return err
	}
	ok, err := r.built(false)
	if err != nil {
		return err
	}
	if !ok {
		for i, p := range pfns {
			r.early[p] = append(r.early[p][:0], data[i*libxl.PageSize:(i+1)*libxl.PageSize]...)
		}
		return nil
	}
	return r.writeNow(pfns, data)
}

// writeNow writes the pages into the replica's frames. A frame the
// replica lacks is populated first, unless the page is zeros (a hole
// stays one; it reads as zeros).
func (r *pvhReplica) writeNow(pfns []libxl.PFN, data []byte) error {
	gfns, err := r.check("WritePages", pfns, len(data))
	if err != nil || len(gfns) == 0 {
		return err
	}
	for i, g := range gfns {
		if r.rings[g] {
			r.held[g] = append(r.held[g][:0], data[i*libxl.PageSize:(i+1)*libxl.PageSize]...)
		}
	}
	if len(r.held) > 0 {
		var keep []int
		for i, g := range gfns {
			if !r.rings[g] {
				keep = append(keep, i)
			}
		}
		if len(keep) != len(gfns) {
			sub := make([]byte, len(keep)*libxl.PageSize)
			sp := make([]libxl.PFN, len(keep))
			for j, i := range keep {
				copy(sub[j*libxl.PageSize:], data[i*libxl.PageSize:(i+1)*libxl.PageSize])
				sp[j] = pfns[i]
			}
			return r.writeNow(sp, sub)
		}
	}
	errs := make([]int32, len(gfns))
	if err := r.x.CopyFrames(r.dom, gfns, data, true, errs); err != nil {
		return fmt.Errorf("xen: WritePages(%d): %w", r.id, err)
	}
	var missing []uint64
	var slots []int
	for i, e := range errs {
		if e == 0 {
			r.written.Set(pfns[i])
			continue
		}
		if isZero(data[i*libxl.PageSize : (i+1)*libxl.PageSize]) {
			r.written.Clear(pfns[i])
			continue
		}
		missing = append(missing, gfns[i])
		slots = append(slots, i)
	}
	if len(missing) == 0 {
		return nil
	}
	if err := r.x.Populate(r.dom, missing); err != nil {
		return fmt.Errorf("xen: WritePages(%d): pfn %d is no frame of the replica: %w", r.id, missing[0], err)
	}
	buf := make([]byte, len(missing)*libxl.PageSize)
	for j, i := range slots {
		copy(buf[j*libxl.PageSize:], data[i*libxl.PageSize:(i+1)*libxl.PageSize])
	}
	errs = errs[:len(missing)]
	if err := r.x.CopyFrames(r.dom, missing, buf, true, errs); err != nil {
		return fmt.Errorf("xen: WritePages(%d): %w", r.id, err)
	}
	for j, e := range errs {
		if e != 0 {
			return fmt.Errorf("xen: WritePages(%d): pfn %d: populated but not mappable (error %d)", r.id, missing[j], e)
		}
		r.written.Set(libxl.PFN(missing[j]))
	}
	return nil
}

// readPages reads the frames the engine wrote; the others read as zeros.
func (r *pvhReplica) readPages(pfns []libxl.PFN, dst []byte) error {
	if _, err := r.check("ReadPages", pfns, len(dst)); err != nil {
		return err
	}
	ok, err := r.built(false)
	if err != nil {
		return err
	}
	if !ok {
		for i, p := range pfns {
			if e := r.early[p]; e != nil {
				copy(dst[i*libxl.PageSize:(i+1)*libxl.PageSize], e)
			} else {
				clear(dst[i*libxl.PageSize : (i+1)*libxl.PageSize])
			}
		}
		return nil
	}
	var gfns []uint64
	var slots []int
	for i, p := range pfns {
		if h, ok := r.held[uint64(p)]; ok {
			copy(dst[i*libxl.PageSize:(i+1)*libxl.PageSize], h)
		} else if r.written.Test(p) {
			gfns = append(gfns, uint64(p))
			slots = append(slots, i)
		} else {
			clear(dst[i*libxl.PageSize : (i+1)*libxl.PageSize])
		}
	}
	if len(gfns) == 0 {
		return nil
	}
	buf := dst
	if len(gfns) != len(pfns) {
		buf = make([]byte, len(gfns)*libxl.PageSize)
	}
	errs := make([]int32, len(gfns))
	if err := r.x.CopyFrames(r.dom, gfns, buf, false, errs); err != nil {
		return fmt.Errorf("xen: ReadPages(%d): %w", r.id, err)
	}
	for j, e := range errs {
		if e != 0 {
			return fmt.Errorf("xen: ReadPages(%d): pfn %d was written but reads with error %d", r.id, gfns[j], e)
		}
	}
	if len(gfns) != len(pfns) {
		for j, i := range slots {
			copy(dst[i*libxl.PageSize:(i+1)*libxl.PageSize], buf[j*libxl.PageSize:])
		}
	}
	return nil
}

// restoreState checks one committed checkpoint's state and keeps it for
// Activate; a bad one leaves the last good one in place.
func (r *pvhReplica) restoreState(st []libxl.State) error {
	if r.closed {
		return fmt.Errorf("xen: RestoreState(%d): %w: the replica was activated or destroyed", r.id, libxl.ErrBadState)
	}
	s, err := parsePVHState(st, r.info.VCPUs)
	if err != nil {
		return fmt.Errorf("xen: RestoreState(%d): %w", r.id, err)
	}
	r.state = &s
	return nil
}

// activate loads the last committed checkpoint's state, as libxc's restore
// does at the end of its stream, and starts the guest under its name. It
// returns the real domain id. On failure the domain stays paused.
func (r *pvhReplica) activate() (libxl.DomID, error) {
	if r.closed {
		return 0, fmt.Errorf("xen: Activate(%d): %w: the replica was activated or destroyed", r.id, libxl.ErrBadState)
	}
	if r.state == nil {
		return 0, fmt.Errorf("xen: Activate(%d): %w: no checkpoint restored yet", r.id, libxl.ErrBadState)
	}
	if _, err := r.built(true); err != nil {
		return 0, fmt.Errorf("xen: Activate(%d): %w", r.id, err)
	}
	st := r.state
	if err := r.x.SetTSCInfo(r.dom, st.params.TSC); err != nil {
		return 0, fmt.Errorf("xen: Activate(%d): %w", r.id, err)
	}
	var store, console uint64
	for _, p := range st.params.Params {
		switch p.Index {
		case hvmParamStorePFN:
			store = p.Value
		case hvmParamConsolePFN:
			console = p.Value
		}
		if hvmClearedParams[p.Index] {
			if uint64(p.Value) >= r.pages {
				return 0, fmt.Errorf("xen: Activate(%d): HVM param %d names frame %#x beyond the guest's %d", r.id, p.Index, p.Value, r.pages)
			}
			if err := r.x.ClearPage(r.dom, p.Value); err != nil {
				return 0, fmt.Errorf("xen: Activate(%d): %w", r.id, err)
			}
		}
		if err := r.x.ParamSet(r.dom, p.Index, p.Value); err != nil {
			// Some params may be set only once; libxl's build set
			// them already, to the same value for the same config.
			if v, gerr := r.x.ParamGet(r.dom, p.Index); gerr != nil || v != p.Value {
				return 0, fmt.Errorf("xen: Activate(%d): %w", r.id, err)
			}
		}
	}
	if err := r.x.SetContext(r.dom, st.ctx); err != nil {
		return 0, fmt.Errorf("xen: Activate(%d): %w", r.id, err)
	}
	if store != 0 || console != 0 {
		if err := r.x.GnttabSeed(r.dom, console, store); err != nil {
			return 0, fmt.Errorf("xen: Activate(%d): %w", r.id, err)
		}
	}
	if err := r.x.Rename(r.dom, r.tmp, r.name); err != nil {
		return 0, fmt.Errorf("xen: Activate(%d): %w", r.id, err)
	}
	if err := r.x.Unpause(r.dom); err != nil {
		// Give the name back, so that a retry finds the replica as it was.
		r.x.Rename(r.dom, r.name, r.tmp)
		return 0, fmt.Errorf("xen: Activate(%d): %w", r.id, err)
	}
	r.closed = true
	return r.dom, nil
}

// destroy destroys the replica's domain.
func (r *pvhReplica) destroy() error {
	r.closed = true
	<-r.ready
	if r.cerr != nil {
		return nil // nothing was built
	}
	err := r.x.Destroy(r.dom)
	if errors.Is(err, libxl.ErrNoDomain) {
		return nil
	}
	return err
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
