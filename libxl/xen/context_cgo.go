//go:build xen

package xen

/*
#cgo pkg-config: xenlight xencontrol xenguest xenforeignmemory xentoollog
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/mman.h>
#include <libxl.h>
#include <libxl_utils.h>
#include <xenctrl.h>
#include <xenguest.h>
#include <xenforeignmemory.h>
#include <xentoollog.h>

// libxl forks hotplug scripts, QEMU and its save helper. Go owns SIGCHLD
// (os/signal), so libxl is told that the main loop owns it, and Go forwards
// each SIGCHLD with libxl_childproc_sigchld_occurred.
static const libxl_childproc_hooks kemari_hooks = {
	.chldowner = libxl_sigchld_owner_mainloop,
};

static void kemari_childproc_setmode(libxl_ctx *ctx) {
	libxl_childproc_setmode(ctx, &kemari_hooks, NULL);
}

static xentoollog_logger *kemari_logger(xentoollog_logger_stdiostream *l) {
	return (xentoollog_logger *)l;
}

static xentoollog_logger_stdiostream *kemari_stderr_logger(xentoollog_level lvl) {
	return xtl_createlogger_stdiostream(stderr, lvl, 0);
}

// The fields of xc_domaininfo_t this package uses, copied out because its
// uint64_aligned_t members carry an alignment attribute cgo does not model.
struct kemari_xcinfo {
	uint32_t domain, flags, nr_online_vcpus, max_vcpu_id;
	uint64_t tot_pages, max_pages, shared_info_frame, cpu_time;
	uint8_t handle[16];
};

// One xc_domain_getinfolist call for exactly domid. Returns 1 when found, 0
// when not, -1 with errno on failure.
static int kemari_getinfo(xc_interface *xch, uint32_t domid, struct kemari_xcinfo *out) {
	xc_domaininfo_t info;
	int n = xc_domain_getinfolist(xch, domid, 1, &info);
	if (n < 0) return -1;
	if (n == 0 || info.domain != domid) return 0;
	out->domain = info.domain;
	out->flags = info.flags;
	out->nr_online_vcpus = info.nr_online_vcpus;
	out->max_vcpu_id = info.max_vcpu_id;
	out->tot_pages = info.tot_pages;
	out->max_pages = info.max_pages;
	out->shared_info_frame = info.shared_info_frame;
	out->cpu_time = info.cpu_time;
	memcpy(out->handle, info.handle, 16);
	return 1;
}

// xc_logdirty_control needs a hypercall buffer, whose macros
// (DECLARE_HYPERCALL_BUFFER, HYPERCALL_BUFFER) are GCC statement
// expressions cgo cannot expand; C can. The bitmap is ORed into out so the
// caller's bits survive. Returns the hypercall's result, -1 with errno on
// failure.
static long long kemari_logdirty(xc_interface *xch, uint32_t domid, unsigned int op,
                                 unsigned long pages, uint64_t *out, uint32_t *dirty) {
	DECLARE_HYPERCALL_BUFFER(unsigned long, bitmap);
	size_t words = (pages + 63) / 64;
	int nr = (int)((words * 8 + XC_PAGE_SIZE - 1) / XC_PAGE_SIZE);
	xc_shadow_op_stats_t stats;
	long long rc;
	size_t i;

	if (nr == 0) nr = 1;
	bitmap = xc_hypercall_buffer_alloc_pages(xch, bitmap, nr);
	if (bitmap == NULL) return -1;
	memset(bitmap, 0, (size_t)nr * XC_PAGE_SIZE);
	memset(&stats, 0, sizeof(stats));
	rc = xc_logdirty_control(xch, domid, op, HYPERCALL_BUFFER(bitmap), pages, 0, &stats);
	if (rc >= 0) {
		for (i = 0; i < words; i++) out[i] |= bitmap[i];
		*dirty = stats.dirty_count;
	}
	xc_hypercall_buffer_free_pages(xch, bitmap, nr);
	return rc;
}

// Frame numbers are xen_pfn_t (unsigned long, 64 bits on x86_64); the Go
// side passes uint64 arrays.
static int kemari_map_copy(xenforeignmemory_handle *fm, uint32_t domid, int write,
                           size_t n, const uint64_t *frames, int *errs, void *buf) {
	int prot = write ? PROT_READ | PROT_WRITE : PROT_READ;
	void *p = xenforeignmemory_map(fm, domid, prot, n, (const xen_pfn_t *)frames, errs);
	size_t i;
	if (p == NULL) return -1;
	for (i = 0; i < n; i++) {
		if (errs[i]) continue;
		if (write)
			memcpy((char *)p + i * XC_PAGE_SIZE, (char *)buf + i * XC_PAGE_SIZE, XC_PAGE_SIZE);
		else
			memcpy((char *)buf + i * XC_PAGE_SIZE, (char *)p + i * XC_PAGE_SIZE, XC_PAGE_SIZE);
	}
	xenforeignmemory_unmap(fm, p, n);
	return 0;
}

struct kemari_p2m_anchor {
	uint64_t max_pfn, fll, cr3, vaddr, generation;
};

// Reads shared_info.arch of a PV domain; frame is the shared_info MFN from
// getdomaininfo.
static int kemari_shinfo(xenforeignmemory_handle *fm, uint32_t domid, uint64_t frame,
                         struct kemari_p2m_anchor *out) {
	xen_pfn_t f = frame;
	int err = 0;
	shared_info_t *s = xenforeignmemory_map(fm, domid, PROT_READ, 1, &f, &err);
	if (s == NULL) return -1;
	if (err) {
		xenforeignmemory_unmap(fm, s, 1);
		errno = -err;
		return -1;
	}
	out->max_pfn = s->arch.max_pfn;
	out->fll = s->arch.pfn_to_mfn_frame_list_list;
	out->cr3 = s->arch.p2m_cr3;
	out->vaddr = s->arch.p2m_vaddr;
	out->generation = s->arch.p2m_generation;
	xenforeignmemory_unmap(fm, s, 1);
	return 0;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"unsafe"

	"github.com/xl-kemari/xl-kemari/libxl"
)

// Domid is a Xen domain id (uint32_t domid in libxl), as in xenlight.
type Domid uint32

// DomidInvalid is libxl's INVALID_DOMID.
const DomidInvalid Domid = ^Domid(0)

// Context holds the open Xen handles: a libxl context, a libxenctrl
// interface and a foreign-memory handle, with one shared stderr logger.
// Its methods may be called from any goroutine; libxl and libxenctrl lock
// internally.
type Context struct {
	mu          sync.RWMutex // write-held by Close; read-held by calls
	ctx         *C.libxl_ctx
	xch         *C.xc_interface
	fmem        *C.xenforeignmemory_handle
	logger      *C.xentoollog_logger_stdiostream
	sigchld     chan os.Signal
	sigchldDone chan struct{}
}

// LogLevel is the xentoollog level below which messages from the Xen
// libraries are dropped; NewContext uses it. 6 is XTL_NOTICE (notices,
// warnings, errors); 1 is XTL_DEBUG, what `xl -vvv` logs (ParseLogLevel).
var LogLevel = 6

// xtlLevels are xentoollog's level names, in the order of its enum
// (XTL_DEBUG = 1 ... XTL_CRITICAL = 9).
var xtlLevels = []string{"debug", "verbose", "detail", "progress", "info", "notice", "warn", "error", "critical"}

// ParseLogLevel returns the xentoollog level called name (debug, verbose,
// detail, progress, info, notice, warn, error, critical), for LogLevel.
func ParseLogLevel(name string) (int, error) {
	for i, n := range xtlLevels {
		if n == name {
			return i + 1, nil
		}
	}
	return 0, fmt.Errorf("xen: log level %q: want one of %v", name, xtlLevels)
}

// NewContext opens the Xen control interfaces: xtl_createlogger_stdiostream
// (stderr), libxl_ctx_alloc(LIBXL_VERSION), libxl_childproc_setmode
// (SIGCHLD owned by this process's main loop, forwarded by a goroutine to
// libxl_childproc_sigchld_occurred), xc_interface_open and
// xenforeignmemory_open. Outside a dom0, or without root, it fails with
// ErrNoXen wrapping the libxl code or errno.
func NewContext() (*Context, error) {
	c := &Context{}
	c.logger = C.kemari_stderr_logger(C.xentoollog_level(LogLevel))
	if c.logger == nil {
		return nil, fmt.Errorf("xen: xtl_createlogger_stdiostream failed")
	}
	lg := C.kemari_logger(c.logger)
	if rc := C.libxl_ctx_alloc(&c.ctx, C.LIBXL_VERSION, 0, lg); rc != 0 {
		c.ctx = nil
		c.free()
		return nil, fmt.Errorf("%w: libxl_ctx_alloc: %w", ErrNoXen, Error(rc))
	}
	var err error
	c.xch, err = C.xc_interface_open(lg, lg, 0)
	if c.xch == nil {
		c.free()
		return nil, fmt.Errorf("%w: xc_interface_open: %w", ErrNoXen, err)
	}
	c.fmem, err = C.xenforeignmemory_open(lg, 0)
	if c.fmem == nil {
		c.free()
		return nil, fmt.Errorf("%w: xenforeignmemory_open: %w", ErrNoXen, err)
	}
	C.kemari_childproc_setmode(c.ctx)
	c.sigchld = make(chan os.Signal, 2)
	c.sigchldDone = make(chan struct{})
	signal.Notify(c.sigchld, syscall.SIGCHLD)
	go c.sigchldHandler()
	return c, nil
}

// sigchldHandler forwards SIGCHLD to libxl until Close: libxl then reaps
// the children it forked (waitpid on their pids only, so os/exec's children
// are left to os/exec).
func (c *Context) sigchldHandler() {
	for {
		select {
		case <-c.sigchld:
			c.mu.RLock()
			if c.ctx != nil {
				C.libxl_childproc_sigchld_occurred(c.ctx)
			}
			c.mu.RUnlock()
		case <-c.sigchldDone:
			return
		}
	}
}

func (c *Context) free() {
	if c.fmem != nil {
		C.xenforeignmemory_close(c.fmem)
		c.fmem = nil
	}
	if c.xch != nil {
		C.xc_interface_close(c.xch)
		c.xch = nil
	}
	if c.ctx != nil {
		C.libxl_ctx_free(c.ctx)
		c.ctx = nil
	}
	if c.logger != nil {
		C.xtl_logger_destroy(C.kemari_logger(c.logger))
		c.logger = nil
	}
}

// Close stops SIGCHLD forwarding and releases the handles:
// xenforeignmemory_close, xc_interface_close, libxl_ctx_free,
// xtl_logger_destroy. Domains keep running. A second Close returns nil.
func (c *Context) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx == nil {
		return nil
	}
	signal.Stop(c.sigchld)
	close(c.sigchldDone)
	c.free()
	return nil
}

// lock read-holds the context for one call; it fails after Close.
func (c *Context) lock() error {
	c.mu.RLock()
	if c.ctx == nil {
		c.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

func (c *Context) unlock() { c.mu.RUnlock() }

// NameToDomid returns the id of the domain called name
// (libxl_name_to_domid). An unknown name is ErrorInval from libxl, reported
// as libxl.ErrNoDomain.
func (c *Context) NameToDomid(name string) (Domid, error) {
	if err := c.lock(); err != nil {
		return DomidInvalid, err
	}
	defer c.unlock()
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	var id C.uint32_t
	if rc := C.libxl_name_to_domid(c.ctx, cs, &id); rc != 0 {
		return DomidInvalid, fmt.Errorf("%w: libxl_name_to_domid(%q): %w", libxl.ErrNoDomain, name, Error(rc))
	}
	return Domid(id), nil
}

// DomidToName returns the name of domain id, or "" if it has none
// (libxl_domid_to_name).
func (c *Context) DomidToName(id Domid) string {
	if c.lock() != nil {
		return ""
	}
	defer c.unlock()
	cs := C.libxl_domid_to_name(c.ctx, C.uint32_t(id))
	if cs == nil {
		return ""
	}
	defer C.free(unsafe.Pointer(cs))
	return C.GoString(cs)
}

// DomainRename renames domain id from oldName to newName
// (libxl_domain_rename). It fails if newName is taken.
func (c *Context) DomainRename(id Domid, oldName, newName string) error {
	if err := c.lock(); err != nil {
		return err
	}
	defer c.unlock()
	co, cn := C.CString(oldName), C.CString(newName)
	defer C.free(unsafe.Pointer(co))
	defer C.free(unsafe.Pointer(cn))
	if rc := C.libxl_domain_rename(c.ctx, C.uint32_t(id), co, cn); rc != 0 {
		return fmt.Errorf("xen: libxl_domain_rename(%d, %q -> %q): %w", id, oldName, newName, Error(rc))
	}
	return nil
}

// Dominfo is libxl_dominfo, the fields this project uses, named as in
// xenlight.
type Dominfo struct {
	Uuid           [16]byte
	Domid          Domid
	Running        bool
	Blocked        bool
	Paused         bool
	Shutdown       bool
	Dying          bool
	ShutdownReason int // LIBXL_SHUTDOWN_REASON_*: 2 is suspend
	CurrentMemkb   uint64
	MaxMemkb       uint64
	VcpuMaxId      uint32
	VcpuOnline     uint32
	DomainType     int // LIBXL_DOMAIN_TYPE_*: 1 HVM, 2 PV, 3 PVH
}

// ShutdownReasonSuspend is LIBXL_SHUTDOWN_REASON_SUSPEND.
const ShutdownReasonSuspend = 2

// Domain types, as LIBXL_DOMAIN_TYPE_*.
const (
	DomainTypeHVM = 1
	DomainTypePV  = 2
	DomainTypePVH = 3
)

// DomainInfo returns libxl's view of domain id (libxl_domain_info, with
// libxl_dominfo_init/_dispose). Unlike xenlight 4.17's, it does not
// dereference a nil pointer. An absent domain is ErrorDomainNotfound,
// which matches libxl.ErrNoDomain.
func (c *Context) DomainInfo(id Domid) (*Dominfo, error) {
	if err := c.lock(); err != nil {
		return nil, err
	}
	defer c.unlock()
	var ci C.libxl_dominfo
	C.libxl_dominfo_init(&ci)
	defer C.libxl_dominfo_dispose(&ci)
	if rc := C.libxl_domain_info(c.ctx, &ci, C.uint32_t(id)); rc != 0 {
		return nil, fmt.Errorf("xen: libxl_domain_info(%d): %w", id, Error(rc))
	}
	d := &Dominfo{
		Domid:          Domid(ci.domid),
		Running:        bool(ci.running),
		Blocked:        bool(ci.blocked),
		Paused:         bool(ci.paused),
		Shutdown:       bool(ci.shutdown),
		Dying:          bool(ci.dying),
		ShutdownReason: int(ci.shutdown_reason),
		CurrentMemkb:   uint64(ci.current_memkb),
		MaxMemkb:       uint64(ci.max_memkb),
		VcpuMaxId:      uint32(ci.vcpu_max_id),
		VcpuOnline:     uint32(ci.vcpu_online),
		DomainType:     int(ci.domain_type),
	}
	for i := range d.Uuid {
		d.Uuid[i] = byte(ci.uuid.uuid[i])
	}
	return d, nil
}

// DomainPause pauses domain id (libxl_domain_pause, synchronous).
func (c *Context) DomainPause(id Domid) error {
	if err := c.lock(); err != nil {
		return err
	}
	defer c.unlock()
	if rc := C.libxl_domain_pause(c.ctx, C.uint32_t(id), nil); rc != 0 {
		return fmt.Errorf("xen: libxl_domain_pause(%d): %w", id, Error(rc))
	}
	return nil
}

// DomainUnpause unpauses domain id (libxl_domain_unpause, synchronous).
func (c *Context) DomainUnpause(id Domid) error {
	if err := c.lock(); err != nil {
		return err
	}
	defer c.unlock()
	if rc := C.libxl_domain_unpause(c.ctx, C.uint32_t(id), nil); rc != 0 {
		return fmt.Errorf("xen: libxl_domain_unpause(%d): %w", id, Error(rc))
	}
	return nil
}

// DomainDestroy destroys domain id and its devices (libxl_domain_destroy,
// synchronous).
func (c *Context) DomainDestroy(id Domid) error {
	if err := c.lock(); err != nil {
		return err
	}
	defer c.unlock()
	if rc := C.libxl_domain_destroy(c.ctx, C.uint32_t(id), nil); rc != 0 {
		return fmt.Errorf("xen: libxl_domain_destroy(%d): %w", id, Error(rc))
	}
	return nil
}

// DomainSuspendOnly suspends domain id cooperatively without saving it
// (libxl_domain_suspend_only, synchronous): the suspend event channel or
// the xenstore control/shutdown "suspend" request for PV and PVHVM guests,
// SHUTDOWN_suspend for plain HVM; for HVM libxl also saves QEMU's state.
// On success the domain is shut down with reason suspend.
func (c *Context) DomainSuspendOnly(id Domid) error {
	if err := c.lock(); err != nil {
		return err
	}
	defer c.unlock()
	if rc := C.libxl_domain_suspend_only(c.ctx, C.uint32_t(id), nil); rc != 0 {
		return fmt.Errorf("xen: libxl_domain_suspend_only(%d): %w", id, Error(rc))
	}
	return nil
}

// DomainResume resumes a suspended domain (libxl_domain_resume,
// synchronous). With suspendCancel the guest continues as if the suspend
// had been cancelled (xc_domain_resume fast=1), keeping its devices
// connected; PV and PVHVM Linux support this.
func (c *Context) DomainResume(id Domid, suspendCancel bool) error {
	if err := c.lock(); err != nil {
		return err
	}
	defer c.unlock()
	cancel := C.int(0)
	if suspendCancel {
		cancel = 1
	}
	if rc := C.libxl_domain_resume(c.ctx, C.uint32_t(id), cancel, nil); rc != 0 {
		return fmt.Errorf("xen: libxl_domain_resume(%d, suspend_cancel=%d): %w", id, cancel, Error(rc))
	}
	return nil
}

// GetFreeMemory returns the memory Xen has free for new domains, in KiB
// (libxl_get_free_memory: the host's free pages less what libxl keeps
// aside).
func (c *Context) GetFreeMemory() (uint64, error) {
	if err := c.lock(); err != nil {
		return 0, err
	}
	defer c.unlock()
	var kb C.uint64_t
	if rc := C.libxl_get_free_memory(c.ctx, &kb); rc != 0 {
		return 0, fmt.Errorf("xen: libxl_get_free_memory: %w", Error(rc))
	}
	return uint64(kb), nil
}

// RetrieveDomainConfiguration returns domain id's current configuration as
// libxl JSON (libxl_retrieve_domain_configuration, then
// libxl_domain_config_to_json), the form libxl_domain_config_from_json
// reads back on the standby.
func (c *Context) RetrieveDomainConfiguration(id Domid) ([]byte, error) {
	if err := c.lock(); err != nil {
		return nil, err
	}
	defer c.unlock()
	var cfg C.libxl_domain_config
	C.libxl_domain_config_init(&cfg)
	defer C.libxl_domain_config_dispose(&cfg)
	if rc := C.libxl_retrieve_domain_configuration(c.ctx, C.uint32_t(id), &cfg, nil); rc != 0 {
		return nil, fmt.Errorf("xen: libxl_retrieve_domain_configuration(%d): %w", id, Error(rc))
	}
	js := C.libxl_domain_config_to_json(c.ctx, &cfg)
	if js == nil {
		return nil, fmt.Errorf("xen: libxl_domain_config_to_json(%d) failed", id)
	}
	defer C.free(unsafe.Pointer(js))
	return []byte(C.GoString(js)), nil
}

// XcDominfo is the hypervisor's view of a domain (xc_domaininfo_t, the
// fields this package uses).
type XcDominfo struct {
	Domid           Domid
	Flags           uint32 // XEN_DOMINF_*
	TotPages        uint64
	MaxPages        uint64
	SharedInfoFrame uint64 // MFN (PV) or GFN (HVM) of shared_info
	CPUTime         uint64
	OnlineVCPUs     uint32
	MaxVCPUID       uint32
	Handle          [16]byte
}

// XEN_DOMINF_* flags and the shutdown-reason field of XcDominfo.Flags.
const (
	DominfDying        = C.XEN_DOMINF_dying
	DominfHVMGuest     = C.XEN_DOMINF_hvm_guest
	DominfShutdown     = C.XEN_DOMINF_shutdown
	DominfPaused       = C.XEN_DOMINF_paused
	dominfShutdownMask = C.XEN_DOMINF_shutdownmask
	dominfShutdownShft = C.XEN_DOMINF_shutdownshift
)

// ShutdownReason is the SHUTDOWN_* code in Flags (SHUTDOWN_suspend is 2).
func (i *XcDominfo) ShutdownReason() int {
	return int(i.Flags>>dominfShutdownShft) & dominfShutdownMask
}

// DomainGetInfo returns the hypervisor's view of domain id with one
// xc_domain_getinfolist(xch, id, 1, ...) call (4.17 has no
// xc_domain_getinfo_single). An absent domain is libxl.ErrNoDomain.
func (c *Context) DomainGetInfo(id Domid) (*XcDominfo, error) {
	if err := c.lock(); err != nil {
		return nil, err
	}
	defer c.unlock()
	var ci C.struct_kemari_xcinfo
	n, err := C.kemari_getinfo(c.xch, C.uint32_t(id), &ci)
	switch {
	case n < 0:
		return nil, fmt.Errorf("xen: xc_domain_getinfolist(%d): %w", id, err)
	case n == 0:
		return nil, fmt.Errorf("%w: domain %d", libxl.ErrNoDomain, id)
	}
	info := &XcDominfo{
		Domid:           Domid(ci.domain),
		Flags:           uint32(ci.flags),
		TotPages:        uint64(ci.tot_pages),
		MaxPages:        uint64(ci.max_pages),
		SharedInfoFrame: uint64(ci.shared_info_frame),
		CPUTime:         uint64(ci.cpu_time),
		OnlineVCPUs:     uint32(ci.nr_online_vcpus),
		MaxVCPUID:       uint32(ci.max_vcpu_id),
	}
	for i := range info.Handle {
		info.Handle[i] = byte(ci.handle[i])
	}
	return info, nil
}

// DomainMaximumGpfn returns the highest guest frame number of domain id
// (xc_domain_maximum_gpfn; for PV guests Xen derives it from
// shared_info.arch.max_pfn).
func (c *Context) DomainMaximumGpfn(id Domid) (uint64, error) {
	if err := c.lock(); err != nil {
		return 0, err
	}
	defer c.unlock()
	var g C.xen_pfn_t
	if rc, err := C.xc_domain_maximum_gpfn(c.xch, C.uint32_t(id), &g); rc < 0 {
		return 0, fmt.Errorf("xen: xc_domain_maximum_gpfn(%d): %w", id, errnoErr(err))
	}
	return uint64(g), nil
}

// Shadow operations for ShadowControl and LogDirtyControl
// (XEN_DOMCTL_SHADOW_OP_*).
const (
	ShadowOpOff            = C.XEN_DOMCTL_SHADOW_OP_OFF
	ShadowOpEnableLogDirty = C.XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY
	ShadowOpClean          = C.XEN_DOMCTL_SHADOW_OP_CLEAN
	ShadowOpPeek           = C.XEN_DOMCTL_SHADOW_OP_PEEK
)

// ShadowControl runs a bitmap-less shadow operation on domain id
// (xc_shadow_control(xch, id, op, NULL, 0), the 4.17 five-argument form),
// e.g. ShadowOpEnableLogDirty or ShadowOpOff.
func (c *Context) ShadowControl(id Domid, op uint) error {
	if err := c.lock(); err != nil {
		return err
	}
	defer c.unlock()
	if rc, err := C.xc_shadow_control(c.xch, C.uint32_t(id), C.uint(op), nil, 0); rc < 0 {
		return fmt.Errorf("xen: xc_shadow_control(%d, op %d): %w", id, op, errnoErr(err))
	}
	return nil
}

// LogDirtyControl runs ShadowOpClean or ShadowOpPeek on domain id for the
// first pages frames (xc_logdirty_control with a hypercall buffer from
// xc_hypercall_buffer_alloc_pages, through a C shim) and ORs the returned
// bitmap into dst, which must hold at least pages bits. It returns Xen's
// dirty count.
func (c *Context) LogDirtyControl(id Domid, op uint, pages uint64, dst []uint64) (uint64, error) {
	if uint64(len(dst))*64 < pages {
		return 0, fmt.Errorf("xen: LogDirtyControl(%d): %d-bit bitmap for %d pages: %w", id, len(dst)*64, pages, libxl.ErrRange)
	}
	if pages == 0 {
		return 0, nil
	}
	if err := c.lock(); err != nil {
		return 0, err
	}
	defer c.unlock()
	var dirty C.uint32_t
	rc, err := C.kemari_logdirty(c.xch, C.uint32_t(id), C.uint(op), C.ulong(pages), (*C.uint64_t)(unsafe.Pointer(&dst[0])), &dirty)
	if rc < 0 {
		return 0, fmt.Errorf("xen: xc_logdirty_control(%d, op %d, %d pages): %w", id, op, pages, errnoErr(err))
	}
	return uint64(dirty), nil
}

// mapBatch bounds the frames mapped at once, so a large read neither
// exhausts address space nor holds a huge privcmd mapping.
const mapBatch = 1024

// ForeignCopy copies frames of domain id to (write false) or from (write
// true) buf, PageSize bytes per frame, by mapping them with
// xenforeignmemory_map and unmapping with xenforeignmemory_unmap. Frames
// are GFNs for HVM/PVH and MFNs for PV (Xen does not translate for a PV
// guest). errs, if not nil, receives the per-frame error (a negative
// errno, e.g. -ENOENT); otherwise any per-frame error fails the call.
func (c *Context) ForeignCopy(id Domid, frames []uint64, buf []byte, write bool, errs []int32) error {
	if len(buf) < len(frames)*libxl.PageSize {
		return fmt.Errorf("xen: ForeignCopy(%d): buffer of %d bytes for %d frames: %w", id, len(buf), len(frames), libxl.ErrRange)
	}
	if err := c.lock(); err != nil {
		return err
	}
	defer c.unlock()
	cerr := make([]C.int, min(len(frames), mapBatch))
	w := C.int(0)
	if write {
		w = 1
	}
	for off := 0; off < len(frames); off += mapBatch {
		n := min(mapBatch, len(frames)-off)
		rc, err := C.kemari_map_copy(c.fmem, C.uint32_t(id), w, C.size_t(n),
			(*C.uint64_t)(unsafe.Pointer(&frames[off])), &cerr[0], unsafe.Pointer(&buf[off*libxl.PageSize]))
		if rc != 0 {
			return fmt.Errorf("xen: xenforeignmemory_map(%d, %d frames from %#x): %w", id, n, frames[off], errnoErr(err))
		}
		for i := range n {
			if errs != nil {
				errs[off+i] = int32(cerr[i])
			} else if cerr[i] != 0 {
				return fmt.Errorf("xen: xenforeignmemory_map(%d): frame %#x: %w", id, frames[off+i], syscall.Errno(-cerr[i]))
			}
		}
	}
	runtime.KeepAlive(frames)
	return nil
}

// pvFrames implements frameReader for the p2m walk of PV domain d.
type pvFrames struct {
	c *Context
	d Domid
}

func (p pvFrames) readFrames(mfns []uint64, dst []byte) error {
	return p.c.ForeignCopy(p.d, mfns, dst, false, nil)
}

// p2mAnchor reads shared_info.arch of PV domain id, whose shared_info MFN
// is frame (XcDominfo.SharedInfoFrame), by mapping it with
// xenforeignmemory_map.
func (c *Context) p2mAnchor(id Domid, frame uint64) (p2mAnchor, error) {
	if err := c.lock(); err != nil {
		return p2mAnchor{}, err
	}
	defer c.unlock()
	var a C.struct_kemari_p2m_anchor
	if rc, err := C.kemari_shinfo(c.fmem, C.uint32_t(id), C.uint64_t(frame), &a); rc != 0 {
		return p2mAnchor{}, fmt.Errorf("%w: mapping shared_info mfn %#x of domain %d: %w", ErrP2M, frame, id, errnoErr(err))
	}
	return p2mAnchor{
		MaxPFN:        uint64(a.max_pfn),
		FrameListList: uint64(a.fll),
		CR3:           uint64(a.cr3),
		VAddr:         uint64(a.vaddr),
		Generation:    uint64(a.generation),
	}, nil
}

// HVMGetContext returns the Xen-side state of HVM/PVH domain id as one
// record stream (xc_domain_hvm_getcontext, called first with a NULL buffer
// for the size).
func (c *Context) HVMGetContext(id Domid) ([]byte, error) {
	if err := c.lock(); err != nil {
		return nil, err
	}
	defer c.unlock()
	n, err := C.xc_domain_hvm_getcontext(c.xch, C.uint32_t(id), nil, 0)
	if n <= 0 {
		return nil, fmt.Errorf("xen: xc_domain_hvm_getcontext(%d, size): %w", id, errnoErr(err))
	}
	buf := C.malloc(C.size_t(n))
	defer C.free(buf)
	n, err = C.xc_domain_hvm_getcontext(c.xch, C.uint32_t(id), (*C.uint8_t)(buf), C.uint32_t(n))
	if n <= 0 {
		return nil, fmt.Errorf("xen: xc_domain_hvm_getcontext(%d): %w", id, errnoErr(err))
	}
	return C.GoBytes(buf, n), nil
}

// HVMSetContext loads a record stream into HVM/PVH domain id
// (xc_domain_hvm_setcontext).
func (c *Context) HVMSetContext(id Domid, ctx []byte) error {
	if len(ctx) == 0 {
		return fmt.Errorf("%w: empty", ErrHVMContext)
	}
	if err := c.lock(); err != nil {
		return err
	}
	defer c.unlock()
	buf := C.CBytes(ctx)
	defer C.free(buf)
	if rc, err := C.xc_domain_hvm_setcontext(c.xch, C.uint32_t(id), (*C.uint8_t)(buf), C.uint32_t(len(ctx))); rc < 0 {
		return fmt.Errorf("xen: xc_domain_hvm_setcontext(%d): %w", id, errnoErr(err))
	}
	return nil
}

// errnoErr maps ESRCH to libxl.ErrNoDomain (and keeps the errno), so a
// domain that vanished between calls is reported as the contract asks.
func errnoErr(err error) error {
	if err == nil {
		return errors.New("failed without errno")
	}
	if errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("%w (%w)", libxl.ErrNoDomain, err)
	}
	return err
}
