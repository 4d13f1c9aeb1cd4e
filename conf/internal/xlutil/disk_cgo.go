//go:build xen

package xlutil

/*
#cgo pkg-config: xlutil xenlight
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <libxl.h>
#include <libxlutil.h>
*/
import "C"

import "unsafe"

// Disk is what libxlutil's xlu_disk_parse leaves in a libxl_device_disk
// that package conf reads.
type Disk struct {
	Errno    int    // xlu_disk_parse's return value: 0 when xl accepts the spec
	Target   string // pdev_path
	Writable bool   // readwrite && !is_cdrom, as libxl attaches it
}

// ParseDisk parses one disk spec with xlu_disk_parse, its messages
// discarded (libxl_device_disk_init and _dispose around it).
func ParseDisk(spec string) Disk {
	null := C.CString("/dev/null")
	defer C.free(unsafe.Pointer(null))
	w := C.CString("w")
	defer C.free(unsafe.Pointer(w))
	report := C.fopen(null, w)
	if report == nil {
		return Disk{Errno: -1}
	}
	defer C.fclose(report)
	name := C.CString("disk")
	defer C.free(unsafe.Pointer(name))
	cfg := C.xlu_cfg_init(report, name)
	if cfg == nil {
		return Disk{Errno: -1}
	}
	defer C.xlu_cfg_destroy(cfg)
	cspec := C.CString(spec)
	defer C.free(unsafe.Pointer(cspec))
	var d C.libxl_device_disk
	C.libxl_device_disk_init(&d)
	defer C.libxl_device_disk_dispose(&d)
	specs := []*C.char{cspec}
	e := C.xlu_disk_parse(cfg, 1, (**C.char)(unsafe.Pointer(&specs[0])), &d)
	out := Disk{Errno: int(e), Writable: d.readwrite != 0 && d.is_cdrom == 0}
	if d.pdev_path != nil {
		out.Target = C.GoString(d.pdev_path)
	}
	return out
}
