//go:build xen

package xen

/*
#cgo pkg-config: xenlight xencontrol xenguest xenforeignmemory xentoollog
#include <stdint.h>
#include <stdlib.h>
#include <xenctrl.h>
#include <xenguest.h>

// Implemented in Go (save_export_cgo.go); h is a runtime/cgo.Handle.
extern int kemariSaveSuspend(uintptr_t h);
extern int kemariSavePostcopy(uintptr_t h);
extern int kemariSaveCheckpoint(uintptr_t h);
extern int kemariSavePrecopy(uintptr_t h, unsigned int iteration, long dirty);

static int kemari_cb_suspend(void *d) { return kemariSaveSuspend((uintptr_t)d); }
static int kemari_cb_postcopy(void *d) { return kemariSavePostcopy((uintptr_t)d); }
static int kemari_cb_checkpoint(void *d) { return kemariSaveCheckpoint((uintptr_t)d); }
static int kemari_cb_precopy(struct precopy_stats s, void *d) {
	return kemariSavePrecopy((uintptr_t)d, s.iteration, s.dirty_count);
}

// One REMUS checkpointed save of domid into fd, live (the first
// checkpoint pre-copies memory while the guest runs), with the callbacks
// above. Returns xc_domain_save's result, errno set on failure.
static int kemari_save_remus(xc_interface *xch, int fd, uint32_t domid, uintptr_t h) {
	struct save_callbacks cb = {
		.suspend = kemari_cb_suspend,
		.precopy_policy = kemari_cb_precopy,
		.postcopy = kemari_cb_postcopy,
		.checkpoint = kemari_cb_checkpoint,
		.data = (void *)h,
	};
	return xc_domain_save(xch, fd, domid, XCFLAGS_LIVE, &cb, XC_STREAM_REMUS, -1);
}
*/
import "C"

import (
	"fmt"
	"os"
	"runtime"
	"runtime/cgo"
	"unsafe"
)

// saveSession is what the exported callbacks reach through the handle.
type saveSession struct {
	cb  *SaveCallbacks
	err error // the first callback error, reported by DomainSaveRemus
}

// DomainSaveRemus runs xc_domain_save(XCFLAGS_LIVE, XC_STREAM_REMUS) of
// domain id, writing the libxc stream (no libxl framing) to w, until
// cb.Checkpoint returns false or a callback or libxc fails. It enables
// log-dirty mode itself and turns it off when it ends, so it must not be
// combined with SetLogDirty on the same domain.
//
// A REMUS save never ends cleanly: when Checkpoint returns false libxc
// reports failure and writes no END record. DomainSaveRemus therefore
// returns nil when it ended because Checkpoint said so, the callback's
// error when one failed, and libxc's errno otherwise.
//
// It uses an xc_interface of its own (xc_interface_open), so the
// Context's handle keeps serving other goroutines, and holds the
// Context open (Close waits) while it runs.
func (c *Context) DomainSaveRemus(id Domid, w *os.File, cb *SaveCallbacks) error {
	if cb == nil || cb.Suspend == nil || cb.Postcopy == nil || cb.Checkpoint == nil {
		return fmt.Errorf("xen: DomainSaveRemus(%d): Suspend, Postcopy and Checkpoint callbacks are required", id)
	}
	if err := c.lock(); err != nil {
		return err
	}
	defer c.unlock()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// The stdio logger begins with its xentoollog_logger (xentoollog.h).
	lg := (*C.xentoollog_logger)(unsafe.Pointer(c.logger))
	xch, err := C.xc_interface_open(lg, lg, 0)
	if xch == nil {
		return fmt.Errorf("%w: xc_interface_open: %w", ErrNoXen, err)
	}
	defer C.xc_interface_close(xch)
	s := &saveSession{cb: cb}
	h := cgo.NewHandle(s)
	defer h.Delete()
	rc, err := C.kemari_save_remus(xch, C.int(w.Fd()), C.uint32_t(id), C.uintptr_t(h))
	runtime.KeepAlive(w)
	switch {
	case s.err == errStopped:
		return nil
	case s.err != nil:
		return fmt.Errorf("xen: xc_domain_save(%d): %w", id, s.err)
	case rc != 0:
		return fmt.Errorf("xen: xc_domain_save(%d): rc %d: %w", id, rc, errnoErr(err))
	}
	return nil
}
