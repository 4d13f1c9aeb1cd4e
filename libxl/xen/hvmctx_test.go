package xen

import (
	"bytes"
	"errors"
	"testing"

	"github.com/xl-kemari/xl-kemari/libxl"
)

// sampleHVM is a context stream of 2 vCPUs in Xen's order.
func sampleHVM() []byte {
	return appendHVM(nil, []hvmRecord{
		{Type: hvmHeader, Data: []byte("header..")},
		{Type: 2, Instance: 0, Data: []byte("cpu0")},
		{Type: 2, Instance: 1, Data: []byte("cpu1")},
		{Type: 3, Instance: 0, Data: []byte("pic0")},
		{Type: 3, Instance: 1, Data: []byte("pic1")},
		{Type: 4, Data: []byte("ioapic")},
		{Type: 5, Instance: 0, Data: []byte("lapic0")},
		{Type: 5, Instance: 1, Data: []byte("lapic1")},
		{Type: 16, Instance: 1, Data: []byte("xsave1")},
		{Type: hvmEnd},
	})
}

func TestHVMSplitJoin(t *testing.T) {
	ctx := sampleHVM()
	st, err := splitHVM(ctx, 2, []libxl.State{{Kind: libxl.StateDevice, Data: []byte("qemu")}})
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 4 || st[1].Kind != libxl.StatePlatform || st[2].Kind != libxl.StateVCPU || st[3].Index != 1 {
		t.Fatalf("split gave %+v", st)
	}
	// The engine may hand the blobs back in any order.
	got, err := joinHVM([]libxl.State{st[3], st[0], st[2], st[1]})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, ctx) {
		t.Errorf("join(split(ctx)) differs from ctx:\n%q\n%q", got, ctx)
	}
}

func TestHVMErrors(t *testing.T) {
	ctx := sampleHVM()
	for name, b := range map[string][]byte{
		"truncated descriptor": ctx[:len(ctx)-3],
		"overlong record":      ctx[:12],
		"empty":                nil,
		"no header":            appendHVM(nil, []hvmRecord{{Type: 2}, {Type: hvmEnd}}),
	} {
		if _, err := splitHVM(b, 2, nil); !errors.Is(err, ErrHVMContext) {
			t.Errorf("split %s: %v", name, err)
		}
	}
	if _, err := splitHVM(ctx, 1, nil); !errors.Is(err, ErrHVMContext) {
		t.Errorf("split with too few vCPUs: %v", err)
	}
	st, _ := splitHVM(ctx, 2, nil)
	for name, blobs := range map[string][]libxl.State{
		"no platform":      st[1:],
		"garbage vcpu":     {st[0], {Kind: libxl.StateVCPU, Data: []byte{1, 2, 3}}},
		"vcpu index lies":  {st[0], {Kind: libxl.StateVCPU, Index: 0, Data: st[2].Data}},
		"platform in vcpu": {st[0], {Kind: libxl.StateVCPU, Data: st[0].Data}},
	} {
		if _, err := joinHVM(blobs); err == nil {
			t.Errorf("join %s succeeded", name)
		}
	}
}
