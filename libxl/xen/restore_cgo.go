//go:build xen

package xen

/*
#cgo pkg-config: xenlight xentoollog
#include <stdlib.h>
#include <libxl.h>
*/
import "C"

import (
	"fmt"
	"os"
	"runtime"
	"unsafe"
)

// DomainCreateRestore creates a domain from configJSON (libxl JSON, as
// RetrieveDomainConfiguration returns it; its c_info.name is replaced by
// name) and restores it from the libxl migration stream read from r
// (libxl_domain_config_from_json, then libxl_domain_create_restore with
// checkpointed_stream REMUS, stream_version 2, synchronous). It blocks for
// as long as the stream lasts: libxl applies each complete checkpoint and,
// when the stream ends or breaks, finishes building the domain from the
// last complete one. The domain is left paused; its id is returned.
func (c *Context) DomainCreateRestore(configJSON []byte, name string, r *os.File) (Domid, error) {
	js, err := renamedConfig("DomainCreateRestore", configJSON, name)
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
	var params C.libxl_domain_restore_params
	C.libxl_domain_restore_params_init(&params)
	defer C.libxl_domain_restore_params_dispose(&params)
	params.checkpointed_stream = C.LIBXL_CHECKPOINTED_STREAM_REMUS
	params.stream_version = 2
	id := C.uint32_t(DomidInvalid)
	rc := C.libxl_domain_create_restore(c.ctx, &dc, &id, C.int(r.Fd()), -1, &params, nil, nil)
	runtime.KeepAlive(r)
	if rc != 0 {
		return DomidInvalid, fmt.Errorf("xen: libxl_domain_create_restore(%q): %w", name, Error(rc))
	}
	return Domid(id), nil
}
