//go:build xen

package xlutil

/*
#cgo pkg-config: xlutil
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <libxlutil.h>

// libxlutil exposes no iterator over the settings of a parsed file, and its
// internal header (libxlu_internal.h) is not installed. These two structs
// restate the layout of struct XLU_Config and XLU_ConfigSetting, unchanged
// since libxlutil first appeared (Xen 4.0), so that every key can be listed.
struct kemari_xlu_setting {
	struct kemari_xlu_setting *next;
	char *name;
	XLU_ConfigValue *value;
	enum XLU_Operation op;
	int lineno;
};

struct kemari_xlu_config {
	struct kemari_xlu_setting *settings;
	FILE *report;
	char *config_source;
};

static struct kemari_xlu_setting *kemari_first(XLU_Config *cfg) {
	return ((struct kemari_xlu_config *)cfg)->settings;
}

static const char *kemari_string(XLU_ConfigValue *v) {
	char *s = NULL;
	if (xlu_cfg_value_get_string(NULL, v, &s, 1)) return NULL;
	return s;
}

static XLU_ConfigList *kemari_list(XLU_ConfigValue *v) {
	XLU_ConfigList *l = NULL;
	if (xlu_cfg_value_get_list(NULL, v, &l, 1)) return NULL;
	return l;
}
*/
import "C"

import (
	"unsafe"
)

// Value is a value as libxlutil stores it.
type Value struct {
	List  bool    // XLU_LIST rather than XLU_STRING
	Str   string  // the string, when !List
	Items []Value // the elements, when List
}

// Setting is one stored statement. Value is what libxlutil stored for it,
// which for "+=" is already the concatenation.
type Setting struct {
	Name   string // the key
	Append bool   // XLU_OP_ADDITION ("+=")
	Line   int    // libxlutil's lineno: the line of the value's first token
	Value  Value  // as stored
}

// Result is the outcome of one xlu_cfg_readdata call.
type Result struct {
	// Errno is xlu_cfg_readdata's return value: 0 when xl accepts the file.
	Errno int
	// Report is everything libxlutil printed to its report stream.
	Report string
	// Settings lists the stored statements in file order; only meaningful
	// when Errno is 0.
	Settings []Setting
}

// ReadData parses data with libxlutil's xlu_cfg_readdata, naming it name in
// messages.
//
// data must not contain a NUL byte: libxlutil's string decoder uses strlen
// and aborts on one.
func ReadData(name string, data []byte) Result {
	var buf *C.char
	var size C.size_t
	report := C.open_memstream(&buf, &size)
	if report == nil {
		return Result{Errno: -1, Report: "open_memstream failed"}
	}
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	cfg := C.xlu_cfg_init(report, cname)
	if cfg == nil {
		C.fclose(report)
		C.free(unsafe.Pointer(buf))
		return Result{Errno: -1, Report: "xlu_cfg_init failed"}
	}
	var cdata *C.char
	if len(data) > 0 {
		cdata = (*C.char)(C.CBytes(data))
		defer C.free(unsafe.Pointer(cdata))
	}
	e := C.xlu_cfg_readdata(cfg, cdata, C.int(len(data)))
	r := Result{Errno: int(e)}
	if e == 0 {
		for s := C.kemari_first(cfg); s != nil; s = s.next {
			r.Settings = append(r.Settings, Setting{
				Name:   C.GoString(s.name),
				Append: s.op == C.XLU_OP_ADDITION,
				Line:   int(s.lineno),
				Value:  value(s.value),
			})
		}
		// The list is newest first.
		for i, j := 0, len(r.Settings)-1; i < j; i, j = i+1, j-1 {
			r.Settings[i], r.Settings[j] = r.Settings[j], r.Settings[i]
		}
	}
	C.xlu_cfg_destroy(cfg)
	C.fclose(report)
	r.Report = C.GoStringN(buf, C.int(size))
	C.free(unsafe.Pointer(buf))
	return r
}

// value converts with xlu_cfg_value_type, xlu_cfg_value_get_string,
// xlu_cfg_value_get_list and xlu_cfg_get_listitem2.
func value(v *C.XLU_ConfigValue) Value {
	if C.xlu_cfg_value_type(v) == C.XLU_STRING {
		return Value{Str: C.GoString(C.kemari_string(v))}
	}
	out := Value{List: true, Items: []Value{}}
	l := C.kemari_list(v)
	for i := 0; l != nil; i++ {
		item := C.xlu_cfg_get_listitem2(l, C.int(i))
		if item == nil {
			break
		}
		out.Items = append(out.Items, value(item))
	}
	return out
}
