//go:build xen

package xen

/*
#cgo pkg-config: xenlight xencontrol xenguest xenforeignmemory xentoollog
#include <stdlib.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <libxl.h>
#include <xenctrl.h>
#include <xenguest.h>
#include <xenforeignmemory.h>

// Maps n frames of domid read-only only to learn which exist: errs[i] is
// 0 for a frame behind which there is a page, a negative errno for a hole.
static int kemari_map_probe(xenforeignmemory_handle *fm, uint32_t domid, size_t n,
                            const uint64_t *frames, int *errs) {
	void *p = xenforeignmemory_map(fm, domid, PROT_READ, n, (const xen_pfn_t *)frames, errs);
	if (p == NULL) return -1;
	xenforeignmemory_unmap(fm, p, n);
	return 0;
}
*/
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"

	"github.com/xl-kemari/xl-kemari/libxl"
)

// HVMParamGet returns HVM param idx of domain id (xc_hvm_param_get).
func (c *Context) HVMParamGet(id Domid, idx uint32) (uint64, error) {
	if err := c.lock(); err != nil {
		return 0, err
	}
	defer c.unlock()
	var v C.uint64_t
	if rc, err := C.xc_hvm_param_get(c.xch, C.uint32_t(id), C.uint32_t(idx), &v); rc < 0 {
		return 0, fmt.Errorf("xen: xc_hvm_param_get(%d, param %d): %w", id, idx, errnoErr(err))
	}
	return uint64(v), nil
}

// HVMParamSet sets HVM param idx of domain id (xc_hvm_param_set).
func (c *Context) HVMParamSet(id Domid, idx uint32, v uint64) error {
	if err := c.lock(); err != nil {
		return err
	}
	defer c.unlock()
	if rc, err := C.xc_hvm_param_set(c.xch, C.uint32_t(id), C.uint32_t(idx), C.uint64_t(v)); rc < 0 {
		return fmt.Errorf("xen: xc_hvm_param_set(%d, param %d = %#x): %w", id, idx, v, errnoErr(err))
	}
	return nil
}

// DomainGetTSCInfo returns domain id's TSC configuration and elapsed time
// (xc_domain_get_tsc_info).
func (c *Context) DomainGetTSCInfo(id Domid) (TSCInfo, error) {
	if err := c.lock(); err != nil {
		return TSCInfo{}, err
	}
	defer c.unlock()
	var mode, khz, inc C.uint32_t
	var ns C.uint64_t
	if rc, err := C.xc_domain_get_tsc_info(c.xch, C.uint32_t(id), &mode, &ns, &khz, &inc); rc < 0 {
		return TSCInfo{}, fmt.Errorf("xen: xc_domain_get_tsc_info(%d): %w", id, errnoErr(err))
	}
	return TSCInfo{Mode: uint32(mode), KHz: uint32(khz), Incarnation: uint32(inc), ElapsedNsec: uint64(ns)}, nil
}

// DomainSetTSCInfo sets domain id's TSC configuration and elapsed time
// (xc_domain_set_tsc_info), as a restore does before the HVM context.
func (c *Context) DomainSetTSCInfo(id Domid, t TSCInfo) error {
	if err := c.lock(); err != nil {
		return err
	}
	defer c.unlock()
	if rc, err := C.xc_domain_set_tsc_info(c.xch, C.uint32_t(id), C.uint32_t(t.Mode), C.uint64_t(t.ElapsedNsec), C.uint32_t(t.KHz), C.uint32_t(t.Incarnation)); rc < 0 {
		return fmt.Errorf("xen: xc_domain_set_tsc_info(%d): %w", id, errnoErr(err))
	}
	return nil
}

// ClearDomainPage zeroes frame gfn of domain id (xc_clear_domain_pages,
// one page).
func (c *Context) ClearDomainPage(id Domid, gfn uint64) error {
	if err := c.lock(); err != nil {
		return err
	}
	defer c.unlock()
	if rc, err := C.xc_clear_domain_pages(c.xch, C.uint32_t(id), C.ulong(gfn), 1); rc < 0 {
		return fmt.Errorf("xen: xc_clear_domain_pages(%d, %#x): %w", id, gfn, errnoErr(err))
	}
	return nil
}

// PopulatePhysmap gives domain id a page at each of gfns
// (xc_domain_populate_physmap_exact, order 0).
func (c *Context) PopulatePhysmap(id Domid, gfns []uint64) error {
	if len(gfns) == 0 {
		return nil
	}
	if err := c.lock(); err != nil {
		return err
	}
	defer c.unlock()
	arr := make([]C.xen_pfn_t, len(gfns))
	for i, g := range gfns {
		arr[i] = C.xen_pfn_t(g)
	}
	if rc, err := C.xc_domain_populate_physmap_exact(c.xch, C.uint32_t(id), C.ulong(len(arr)), 0, 0, &arr[0]); rc < 0 {
		return fmt.Errorf("xen: xc_domain_populate_physmap_exact(%d, %d frames from %#x): %w", id, len(gfns), gfns[0], errnoErr(err))
	}
	return nil
}

// GnttabSeed writes the reserved grant entries of the console and
// xenstore rings into HVM/PVH domain id's grant table, granting them to
// dom0 (xc_dom_gnttab_seed, is_hvm), as a restore does at the stream's
// end.
func (c *Context) GnttabSeed(id Domid, consoleGFN, storeGFN uint64) error {
	if err := c.lock(); err != nil {
		return err
	}
	defer c.unlock()
	if rc, err := C.xc_dom_gnttab_seed(c.xch, C.uint32_t(id), C.bool(true), C.xen_pfn_t(consoleGFN), C.xen_pfn_t(storeGFN), 0, 0); rc < 0 {
		return fmt.Errorf("xen: xc_dom_gnttab_seed(%d): %w", id, errnoErr(err))
	}
	return nil
}

// ProbeFrames reports, per frame of domain id, whether a page is behind
// it (0) or not (a negative errno), by mapping the frames read-only with
// xenforeignmemory_map and unmapping them at once.
func (c *Context) ProbeFrames(id Domid, frames []uint64, errs []int32) error {
	if len(errs) < len(frames) {
		return fmt.Errorf("xen: ProbeFrames(%d): %d error slots for %d frames: %w", id, len(errs), len(frames), libxl.ErrRange)
	}
	if err := c.lock(); err != nil {
		return err
	}
	defer c.unlock()
	cerr := make([]C.int, min(len(frames), mapBatch))
	for off := 0; off < len(frames); off += mapBatch {
		n := min(mapBatch, len(frames)-off)
		rc, err := C.kemari_map_probe(c.fmem, C.uint32_t(id), C.size_t(n), (*C.uint64_t)(unsafe.Pointer(&frames[off])), &cerr[0])
		if rc != 0 {
			return fmt.Errorf("xen: xenforeignmemory_map(%d, %d frames from %#x): %w", id, n, frames[off], errnoErr(err))
		}
		for i := range n {
			errs[off+i] = int32(cerr[i])
		}
	}
	runtime.KeepAlive(frames)
	return nil
}

// DomainCreateNew creates a domain from configJSON (libxl JSON, as
// RetrieveDomainConfiguration returns it; its c_info.name is replaced by
// name) with libxl_domain_config_from_json and libxl_domain_create_new
// (synchronous): the guest's kernel is loaded, its devices attached, and
// the domain left paused, never run. Its id is returned.
func (c *Context) DomainCreateNew(configJSON []byte, name string) (Domid, error) {
	js, err := renamedConfig("DomainCreateNew", configJSON, name)
	if err != nil {
		return DomidInvalid, err
	}
	if err := c.lock(); err != nil {
		return DomidInvalid, err
	}
	defer c.unlock()
	var dc C.libxl_domain_config
	C.libxl_domain_config_init(&dc)
	defer C.libxl_domain_config_dispose(&dc)
	cs := C.CString(string(js))
	defer C.free(unsafe.Pointer(cs))
	if rc := C.libxl_domain_config_from_json(c.ctx, &dc, cs); rc != 0 {
		return DomidInvalid, fmt.Errorf("xen: libxl_domain_config_from_json: %w", Error(rc))
	}
	id := C.uint32_t(DomidInvalid)
	if rc := C.libxl_domain_create_new(c.ctx, &dc, &id, nil, nil); rc != 0 {
		return DomidInvalid, fmt.Errorf("xen: libxl_domain_create_new(%q): %w", name, Error(rc))
	}
	return Domid(id), nil
}

// ctxHVM is a pvhReplica's Xen: the Context.
type ctxHVM struct{ c *Context }

func (x ctxHVM) CreateNew(cfg []byte, name string) (libxl.DomID, error) {
	id, err := x.c.DomainCreateNew(cfg, name)
	return libxl.DomID(id), err
}
func (x ctxHVM) CopyFrames(id libxl.DomID, gfns []uint64, buf []byte, write bool, errs []int32) error {
	return x.c.ForeignCopy(Domid(id), gfns, buf, write, errs)
}
func (x ctxHVM) Populate(id libxl.DomID, gfns []uint64) error {
	return x.c.PopulatePhysmap(Domid(id), gfns)
}
func (x ctxHVM) SetTSCInfo(id libxl.DomID, t TSCInfo) error {
	return x.c.DomainSetTSCInfo(Domid(id), t)
}
func (x ctxHVM) ParamGet(id libxl.DomID, idx uint32) (uint64, error) {
	return x.c.HVMParamGet(Domid(id), idx)
}
func (x ctxHVM) ParamSet(id libxl.DomID, idx uint32, v uint64) error {
	return x.c.HVMParamSet(Domid(id), idx, v)
}
func (x ctxHVM) ClearPage(id libxl.DomID, gfn uint64) error {
	return x.c.ClearDomainPage(Domid(id), gfn)
}
func (x ctxHVM) SetContext(id libxl.DomID, ctx []byte) error {
	return x.c.HVMSetContext(Domid(id), ctx)
}
func (x ctxHVM) GnttabSeed(id libxl.DomID, console, store uint64) error {
	return x.c.GnttabSeed(Domid(id), console, store)
}
func (x ctxHVM) Rename(id libxl.DomID, o, n string) error { return x.c.DomainRename(Domid(id), o, n) }
func (x ctxHVM) Unpause(id libxl.DomID) error             { return x.c.DomainUnpause(Domid(id)) }
func (x ctxHVM) Destroy(id libxl.DomID) error             { return x.c.DomainDestroy(Domid(id)) }
