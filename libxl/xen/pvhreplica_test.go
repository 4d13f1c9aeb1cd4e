package xen

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/xl-kemari/xl-kemari/libxl"
)

// fakeHVM is a paused PVH domain as pvhReplica sees it: frames (absent:
// a hole), params, and the calls made, in order.
type fakeHVM struct {
	gate     chan struct{} // if not nil, CreateNew waits for it
	frames   map[uint64][]byte
	params   map[uint32]uint64
	once     map[uint32]bool // params Xen lets be set only once
	calls    []string
	failCall string // a call to fail
	name     string
}

func newFakeHVM(pages uint64, holes ...uint64) *fakeHVM {
	// The replica's build put its xenstore ring at 5, its console at 6.
	f := &fakeHVM{frames: map[uint64][]byte{}, params: map[uint32]uint64{hvmParamStorePFN: 5, hvmParamConsolePFN: 6}, once: map[uint32]bool{}}
	for g := range pages {
		if !slices.Contains(holes, g) {
			f.frames[g] = make([]byte, libxl.PageSize)
		}
	}
	return f
}

func (f *fakeHVM) call(c string) error {
	f.calls = append(f.calls, c)
	if f.failCall != "" && strings.HasPrefix(c, f.failCall) {
		return fmt.Errorf("fake: %s fails", c)
	}
	return nil
}

func (f *fakeHVM) CreateNew(cfg []byte, name string) (libxl.DomID, error) {
	if f.gate != nil {
		<-f.gate
	}
	f.name = name
	return 7, f.call("create " + name)
}
func (f *fakeHVM) CopyFrames(id libxl.DomID, gfns []uint64, buf []byte, write bool, errs []int32) error {
	for i, g := range gfns {
		p, ok := f.frames[g]
		if !ok {
			errs[i] = -22
			continue
		}
		errs[i] = 0
		if write {
			copy(p, buf[i*libxl.PageSize:(i+1)*libxl.PageSize])
		} else {
			copy(buf[i*libxl.PageSize:], p)
		}
	}
	return nil
}
func (f *fakeHVM) Populate(id libxl.DomID, gfns []uint64) error {
	for _, g := range gfns {
		f.frames[g] = make([]byte, libxl.PageSize)
	}
	return f.call(fmt.Sprintf("populate %v", gfns))
}
func (f *fakeHVM) SetTSCInfo(id libxl.DomID, t TSCInfo) error {
	return f.call(fmt.Sprintf("tsc %d %d", t.Mode, t.ElapsedNsec))
}
func (f *fakeHVM) ParamGet(id libxl.DomID, idx uint32) (uint64, error) { return f.params[idx], nil }
func (f *fakeHVM) ParamSet(id libxl.DomID, idx uint32, v uint64) error {
	if err := f.call(fmt.Sprintf("param %d=%d", idx, v)); err != nil {
		return err
	}
	if f.once[idx] {
		return errors.New("fake: EEXIST")
	}
	f.params[idx] = v
	return nil
}
func (f *fakeHVM) ClearPage(id libxl.DomID, gfn uint64) error {
	clear(f.frames[gfn])
	return f.call(fmt.Sprintf("clear %d", gfn))
}
func (f *fakeHVM) SetContext(id libxl.DomID, ctx []byte) error {
	return f.call(fmt.Sprintf("context %d", len(ctx)))
}
func (f *fakeHVM) GnttabSeed(id libxl.DomID, console, store uint64) error {
	return f.call(fmt.Sprintf("seed %d %d", console, store))
}
func (f *fakeHVM) Rename(id libxl.DomID, o, n string) error { return f.call("rename " + o + " " + n) }
func (f *fakeHVM) Unpause(id libxl.DomID) error             { return f.call("unpause") }
func (f *fakeHVM) Destroy(id libxl.DomID) error             { return f.call("destroy") }

func pvhInfo(pages uint64) libxl.DomainInfo {
	return libxl.DomainInfo{Name: "g", Type: libxl.TypePVH, Pages: pages, VCPUs: 2, Config: []byte(`{"c_info":{}}`)}
}

// pvhCheckpoint is a checkpoint's state of a 2-vCPU guest whose store
// ring is frame 5 and console ring frame 6.
func pvhCheckpoint(t *testing.T) []libxl.State {
	t.Helper()
	st, err := splitHVM(sampleHVM(), 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	ps := hvmParamsState{TSC: TSCInfo{Mode: 1, KHz: 2000000, Incarnation: 3, ElapsedNsec: 99},
		Params: []HVMParam{{hvmParamStorePFN, 5}, {hvmParamConsolePFN, 6}, {hvmParamX87FIPWidth, 8}}}
	return append(st, ps.encode())
}

func page(b byte) []byte { return bytes.Repeat([]byte{b}, libxl.PageSize) }

func TestHVMParamsBlob(t *testing.T) {
	ps := hvmParamsState{TSC: TSCInfo{Mode: 2, KHz: 3, Incarnation: 4, ElapsedNsec: 1 << 40},
		Params: []HVMParam{{hvmParamStorePFN, 0xfeffc}, {hvmParamMCACap, 1}}}
	b := ps.encode()
	if b.Kind != libxl.StatePlatform || b.Index != hvmParamsIndex {
		t.Fatalf("blob kind %d index %d", b.Kind, b.Index)
	}
	got, err := decodeHVMParams(b.Data)
	if err != nil || got.TSC != ps.TSC || !slices.Equal(got.Params, ps.Params) {
		t.Fatalf("decode = %+v, %v; want %+v", got, err, ps)
	}
	bad := map[string][]byte{
		"short":         b.Data[:20],
		"magic":         append([]byte("XXXX"), b.Data[4:]...),
		"count":         b.Data[:len(b.Data)-1],
		"unknown param": hvmParamsState{Params: []HVMParam{{hvmParamStoreEvtchn, 1}}}.encode().Data,
	}
	for name, d := range bad {
		if _, err := decodeHVMParams(d); !errors.Is(err, ErrHVMContext) {
			t.Errorf("%s: decode = %v, want ErrHVMContext", name, err)
		}
	}
}

func TestParsePVHState(t *testing.T) {
	st := pvhCheckpoint(t)
	s, err := parsePVHState(st, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.ctx, sampleHVM()) || len(s.params.Params) != 3 {
		t.Errorf("parsed ctx %d bytes, %d params", len(s.ctx), len(s.params.Params))
	}
	cases := map[string][]libxl.State{
		"no params":    st[:3],
		"no vcpu 1":    slices.Delete(slices.Clone(st), 2, 3),
		"two params":   append(slices.Clone(st), st[3]),
		"device blob":  append(slices.Clone(st), libxl.State{Kind: libxl.StateDevice, Data: []byte("qemu")}),
		"vcpu 2 of 2":  append(slices.Clone(st), libxl.State{Kind: libxl.StateVCPU, Index: 2}),
		"garbage vcpu": append(slices.Delete(slices.Clone(st), 1, 2), libxl.State{Kind: libxl.StateVCPU, Index: 0, Data: []byte{1, 2, 3}}),
	}
	for name, c := range cases {
		if _, err := parsePVHState(c, 2); !errors.Is(err, ErrHVMContext) {
			t.Errorf("%s: parse = %v, want ErrHVMContext", name, err)
		}
	}
}

func TestPVHReplicaPages(t *testing.T) {
	f := newFakeHVM(16, 9, 10)
	r, err := newPVHReplica(f, replicaBase, pvhInfo(16))
	if err != nil {
		t.Fatal(err)
	}
	<-r.ready
	if !strings.HasPrefix(f.name, "g--kemari-") {
		t.Errorf("created as %q, want a temporary name", f.name)
	}
	data := slices.Concat(page(1), make([]byte, libxl.PageSize), page(3))
	// Frame 9 is a hole and the page is zeros: it stays a hole. Frame 10
	// is a hole with data: populated, then written.
	if err := r.writePages([]libxl.PFN{2, 9, 10}, data); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.frames[9]; ok {
		t.Error("a zero page populated hole 9")
	}
	if !bytes.Equal(f.frames[10], page(3)) || !bytes.Equal(f.frames[2], page(1)) {
		t.Error("pages not written")
	}
	f.frames[4] = page(4) // the replica's own build wrote frame 4; never sent
	got := make([]byte, 4*libxl.PageSize)
	if err := r.readPages([]libxl.PFN{2, 4, 9, 10}, got); err != nil {
		t.Fatal(err)
	}
	if want := slices.Concat(page(1), make([]byte, 2*libxl.PageSize), page(3)); !bytes.Equal(got, want) {
		t.Error("readPages: want the written pages and zeros elsewhere")
	}
	if err := r.writePages([]libxl.PFN{16}, page(1)); !errors.Is(err, libxl.ErrRange) {
		t.Errorf("write beyond the guest = %v, want ErrRange", err)
	}
	if err := r.writePages([]libxl.PFN{1, 2}, page(1)); !errors.Is(err, libxl.ErrRange) {
		t.Errorf("short data = %v, want ErrRange", err)
	}
}

func TestPVHReplicaActivate(t *testing.T) {
	f := newFakeHVM(16)
	f.once[hvmParamX87FIPWidth] = true
	f.params[hvmParamX87FIPWidth] = 8 // set by the replica's build, as on the primary
	r, err := newPVHReplica(f, replicaBase+1, pvhInfo(16))
	if err != nil {
		t.Fatal(err)
	}
	<-r.ready
	if _, err := r.activate(); !errors.Is(err, libxl.ErrBadState) {
		t.Fatalf("activate before a checkpoint = %v, want ErrBadState", err)
	}
	f.frames[5] = page(0xee) // the replica's xenstored's view of its ring
	if err := r.writePages([]libxl.PFN{5, 6, 7}, slices.Concat(page(5), page(6), page(7))); err != nil {
		t.Fatal(err)
	}
	// The rings are held back from the replica until it is activated,
	// and read back as written.
	if !bytes.Equal(f.frames[5], page(0xee)) || !bytes.Equal(f.frames[6], make([]byte, libxl.PageSize)) || !bytes.Equal(f.frames[7], page(7)) {
		t.Error("the xenstore or console ring reached the replica before its activation")
	}
	got := make([]byte, 3*libxl.PageSize)
	if err := r.readPages([]libxl.PFN{5, 6, 7}, got); err != nil || !bytes.Equal(got, slices.Concat(page(5), page(6), page(7))) {
		t.Errorf("readPages of the rings = %v, or not as written", err)
	}
	if err := r.restoreState(pvhCheckpoint(t)); err != nil {
		t.Fatal(err)
	}
	if err := r.restoreState(pvhCheckpoint(t)[:2]); !errors.Is(err, ErrHVMContext) {
		t.Fatalf("restoreState(torn) = %v", err)
	}
	f.calls = nil
	dom, err := r.activate()
	if err != nil || dom != 7 {
		t.Fatalf("activate = %d, %v", dom, err)
	}
	want := []string{"tsc 1 99", "clear 5", "param 1=5", "clear 6", "param 17=6", "param 36=8",
		fmt.Sprintf("context %d", len(sampleHVM())), "seed 6 5", "rename " + r.tmp + " g", "unpause"}
	if !slices.Equal(f.calls, want) {
		t.Errorf("activation calls\n got %q\nwant %q", f.calls, want)
	}
	if !bytes.Equal(f.frames[5], make([]byte, libxl.PageSize)) || !bytes.Equal(f.frames[7], page(7)) {
		t.Error("the store ring must be zeroed, other pages kept")
	}
	if err := r.writePages([]libxl.PFN{1}, page(1)); !errors.Is(err, libxl.ErrBadState) {
		t.Errorf("write after activate = %v, want ErrBadState", err)
	}
	if _, err := r.activate(); !errors.Is(err, libxl.ErrBadState) {
		t.Errorf("second activate = %v, want ErrBadState", err)
	}
}

// A failing step leaves the replica paused under its temporary name.
func TestPVHReplicaActivateFails(t *testing.T) {
	for _, step := range []string{"tsc", "clear", "context", "seed", "unpause"} {
		f := newFakeHVM(16)
		f.failCall = step
		r, err := newPVHReplica(f, replicaBase, pvhInfo(16))
		if err != nil {
			t.Fatal(err)
		}
		<-r.ready
		if err := r.restoreState(pvhCheckpoint(t)); err != nil {
			t.Fatal(err)
		}
		if _, err := r.activate(); err == nil {
			t.Errorf("%s fails: activate succeeded", step)
			continue
		}
		renamed := 0
		for _, c := range f.calls {
			if strings.HasPrefix(c, "rename") {
				renamed++
			}
			if c == "unpause" && step != "unpause" {
				t.Errorf("%s fails: unpaused anyway (%q)", step, f.calls)
			}
		}
		if renamed%2 != 0 {
			t.Errorf("%s fails: left renamed (%q)", step, f.calls)
		}
	}
}

func TestPVHReplicaRefuses(t *testing.T) {
	for name, info := range map[string]libxl.DomainInfo{
		"no config": {Name: "g", Type: libxl.TypePVH, Pages: 4, VCPUs: 1},
		"no pages":  {Name: "g", Type: libxl.TypePVH, VCPUs: 1, Config: []byte("{}")},
		"no vcpus":  {Name: "g", Type: libxl.TypePVH, Pages: 4, Config: []byte("{}")},
	} {
		f := newFakeHVM(4)
		if _, err := newPVHReplica(f, replicaBase, info); err == nil || len(f.calls) != 0 {
			t.Errorf("%s: created (%v, calls %q)", name, err, f.calls)
		}
	}
}

func TestPVHReplicaDestroy(t *testing.T) {
	f := newFakeHVM(4)
	r, err := newPVHReplica(f, replicaBase, pvhInfo(4))
	if err != nil {
		t.Fatal(err)
	}
	<-r.ready
	if err := r.destroy(); err != nil || f.calls[len(f.calls)-1] != "destroy" {
		t.Fatalf("destroy = %v, calls %q", err, f.calls)
	}
	if err := r.writePages([]libxl.PFN{1}, page(1)); !errors.Is(err, libxl.ErrBadState) {
		t.Errorf("write after destroy = %v, want ErrBadState", err)
	}
	if err := r.restoreState(pvhCheckpoint(t)); !errors.Is(err, libxl.ErrBadState) {
		t.Errorf("restoreState after destroy = %v, want ErrBadState", err)
	}
}

// Pages written while libxl still builds the domain are kept and go in
// with the first call after; the loop never waits for the build.
func TestPVHReplicaEarlyPages(t *testing.T) {
	f := newFakeHVM(16)
	f.gate = make(chan struct{})
	r, err := newPVHReplica(f, replicaBase, pvhInfo(16))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.writePages([]libxl.PFN{3, 4}, slices.Concat(page(3), page(4))); err != nil {
		t.Fatal(err)
	}
	if err := r.writePages([]libxl.PFN{3}, page(9)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 3*libxl.PageSize)
	if err := r.readPages([]libxl.PFN{3, 4, 7}, got); err != nil || !bytes.Equal(got, slices.Concat(page(9), page(4), make([]byte, libxl.PageSize))) {
		t.Fatalf("readPages before the build = %v, or not the pages kept", err)
	}
	close(f.gate)
	<-r.ready
	if err := r.writePages([]libxl.PFN{7}, page(7)); err != nil {
		t.Fatal(err)
	}
	for g, want := range map[uint64][]byte{3: page(9), 4: page(4), 7: page(7)} {
		if !bytes.Equal(f.frames[g], want) {
			t.Errorf("frame %d not written after the build", g)
		}
	}
	if len(r.early) != 0 {
		t.Errorf("%d early pages left", len(r.early))
	}
}
