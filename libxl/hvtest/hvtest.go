package hvtest

import (
	"bytes"
	"errors"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/xl-kemari/xl-kemari/libxl"
)

// Factory tells the suite how to drive one backend.
type Factory struct {
	// Open returns a new hypervisor handle standing for one host. The
	// suite opens two per replica test (primary and standby host). Open
	// registers, with t.Cleanup, whatever releases the handle and any
	// domain the suite left behind.
	Open func(t *testing.T) libxl.Hypervisor

	// Create creates and starts on hv a domain of the given size whose
	// guest keeps writing to its memory, and returns its id.
	Create func(t *testing.T, hv libxl.Hypervisor, pages uint64) libxl.DomID

	// Touch, optional, writes pages pfns of dom as a guest write would,
	// in any run state (suspended included). Without it the checks that
	// need an exact dirty set are skipped. It may run on a goroutine of
	// its own, so it reports problems with t.Error, never t.Fatal.
	Touch func(t *testing.T, hv libxl.Hypervisor, dom libxl.DomID, pfns []libxl.PFN)

	// Advance lets running guests execute for a while: long enough for
	// a running guest to write to its memory.
	Advance func(t *testing.T)

	// Bubble runs each subtest in a testing/synctest bubble: Advance may
	// then sleep in virtual time, and the bubble proves that no goroutine
	// outlives the subtest. Only for backends whose guests block on
	// bubble-aware primitives (sim domains without host sockets).
	Bubble bool

	// Pages, if not zero, is the size in pages of every domain Create
	// makes, whatever it is asked for: a backend whose guests have a
	// fixed size (a bootable Xen PV guest has tens of thousands of
	// pages). Zero means Create honours its pages argument, Pages.
	Pages uint64
}

// Pages is the size of the domains the suite asks Create for. The checks
// use the size Describe reports, so a backend with fixed-size guests
// (Factory.Pages) runs the same suite.
const Pages = 256

// Run runs the contract suite against the backend f describes.
func Run(t *testing.T, f Factory) {
	tests := []struct {
		name string
		fn   func(*suite)
	}{
		{"Identity", (*suite).identity},
		{"Describe", (*suite).describe},
		{"SuspendResume", (*suite).suspendResume},
		{"SuspendedIsQuiet", (*suite).suspendedIsQuiet},
		{"DirtyLogOff", (*suite).dirtyLogOff},
		{"DirtyLogMarksAll", (*suite).dirtyLogMarksAll},
		{"DirtyLogFailedReadKeepsLog", (*suite).dirtyLogShortBitmap},
		{"DirtyLogExact", (*suite).dirtyLogExact},
		{"DirtyLogComplete", (*suite).dirtyLogComplete},
		{"DirtyLogConcurrentTouch", (*suite).dirtyLogConcurrent},
		{"ReadPages", (*suite).readPages},
		{"CaptureState", (*suite).captureState},
		{"Replica", (*suite).replica},
		{"ReplicaErrors", (*suite).replicaErrors},
		{"Destroy", (*suite).destroy},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := func(t *testing.T) { tc.fn(&suite{t: t, f: f}) }
			if f.Bubble {
				synctest.Test(t, body)
			} else {
				body(t)
			}
		})
	}
}

type suite struct {
	t *testing.T
	f Factory
	// pages is the size of the domain start created, as Describe reports
	// it (the expected size if Describe fails, which describe reports).
	pages uint64
}

// want is the size the suite expects Create's domains to have.
func (s *suite) want() uint64 {
	if s.f.Pages != 0 {
		return s.f.Pages
	}
	return Pages
}

// start opens a host and creates a running domain on it.
func (s *suite) start() (libxl.Hypervisor, libxl.DomID) {
	s.t.Helper()
	hv := s.f.Open(s.t)
	dom := s.f.Create(s.t, hv, s.want())
	s.pages = s.want()
	if info, err := hv.Source().Describe(dom); err == nil && info.Pages > 0 {
		s.pages = info.Pages
	}
	return hv, dom
}

func (s *suite) is(err, target error, what string) {
	s.t.Helper()
	if !errors.Is(err, target) {
		s.t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

func (s *suite) ok(err error, what string) {
	s.t.Helper()
	if err != nil {
		s.t.Fatalf("%s: %v", what, err)
	}
}

func allPFNs(n uint64) []libxl.PFN {
	p := make([]libxl.PFN, n)
	for i := range p {
		p[i] = libxl.PFN(i)
	}
	return p
}

func (s *suite) memory(src libxl.Source, dom libxl.DomID) []byte {
	s.t.Helper()
	buf := make([]byte, s.pages*libxl.PageSize)
	s.ok(src.ReadPages(dom, allPFNs(s.pages), buf), "ReadPages(all)")
	return buf
}

func (s *suite) dirty(src libxl.Source, dom libxl.DomID) *libxl.Bitmap {
	s.t.Helper()
	bm := libxl.NewBitmap(s.pages)
	s.ok(src.ReadAndClearDirty(dom, bm), "ReadAndClearDirty")
	return bm
}

const absent libxl.DomID = 0xFFFF

func (s *suite) identity() {
	hv := s.f.Open(s.t)
	if hv.Name() == "" {
		s.t.Error("Name() is empty")
	}
	c := hv.Capabilities()
	if !c.LogDirty {
		s.t.Error("Capabilities().LogDirty is false: the engine cannot run on this backend")
	}
	if len(c.Types) == 0 {
		s.t.Error("Capabilities().Types is empty")
	}
	if hv.Source() == nil || hv.Sink() == nil {
		s.t.Fatal("Source() or Sink() is nil")
	}
}

func (s *suite) describe() {
	hv, dom := s.start()
	src := hv.Source()
	info, err := src.Describe(dom)
	s.ok(err, "Describe")
	if info.Pages != s.want() || info.VCPUs < 1 || info.Name == "" {
		s.t.Errorf("Describe = pages %d vcpus %d name %q; want %d pages, >= 1 vcpu, a name", info.Pages, info.VCPUs, info.Name, s.want())
	}
	id, err := hv.Lookup(info.Name)
	s.ok(err, "Lookup(name)")
	if id != dom {
		s.t.Errorf("Lookup(%q) = %d, want %d", info.Name, id, dom)
	}
	id, err = hv.Lookup(strconv.FormatUint(uint64(dom), 10))
	s.ok(err, "Lookup(id)")
	if id != dom {
		s.t.Errorf("Lookup(%d) = %d", dom, id)
	}
	_, err = hv.Lookup("hvtest-no-such-domain")
	s.is(err, libxl.ErrNoDomain, "Lookup(unknown)")
	_, err = src.Describe(absent)
	s.is(err, libxl.ErrNoDomain, "Describe(unknown)")
	// Describe works whatever the run state.
	s.ok(src.Suspend(dom), "Suspend")
	_, err = src.Describe(dom)
	s.ok(err, "Describe(suspended)")
}

func (s *suite) suspendResume() {
	hv, dom := s.start()
	src := hv.Source()
	s.ok(src.Suspend(dom), "Suspend(running)")
	s.is(src.Suspend(dom), libxl.ErrBadState, "Suspend(suspended)")
	s.ok(src.Resume(dom), "Resume(suspended)")
	s.is(src.Resume(dom), libxl.ErrBadState, "Resume(running)")
	s.ok(src.Suspend(dom), "Suspend after Resume")
	s.ok(src.Resume(dom), "Resume again")
	s.is(src.Suspend(absent), libxl.ErrNoDomain, "Suspend(unknown)")
	s.is(src.Resume(absent), libxl.ErrNoDomain, "Resume(unknown)")
}

// suspendedIsQuiet: after Suspend returns, the guest changes no memory
// until Resume; after Resume it runs again.
func (s *suite) suspendedIsQuiet() {
	hv, dom := s.start()
	src := hv.Source()
	s.ok(src.SetLogDirty(dom, true), "SetLogDirty(true)")
	s.f.Advance(s.t)
	s.ok(src.Suspend(dom), "Suspend")
	s.dirty(src, dom)
	before := s.memory(src, dom)
	s.f.Advance(s.t)
	if bm := s.dirty(src, dom); bm.Count() != 0 {
		s.t.Errorf("suspended guest dirtied %v", bm)
	}
	if !bytes.Equal(before, s.memory(src, dom)) {
		s.t.Error("suspended guest's memory changed")
	}
	s.ok(src.Resume(dom), "Resume")
	s.f.Advance(s.t)
	s.ok(src.Suspend(dom), "Suspend")
	if bm := s.dirty(src, dom); bm.Count() == 0 {
		s.t.Error("resumed guest wrote nothing: Create must start a guest that writes its memory")
	}
}

func (s *suite) dirtyLogOff() {
	hv, dom := s.start()
	src := hv.Source()
	bm := libxl.NewBitmap(s.pages)
	s.is(src.ReadAndClearDirty(dom, bm), libxl.ErrBadState, "ReadAndClearDirty with log-dirty never on")
	s.ok(src.SetLogDirty(dom, true), "SetLogDirty(true)")
	s.ok(src.SetLogDirty(dom, false), "SetLogDirty(false)")
	s.is(src.ReadAndClearDirty(dom, bm), libxl.ErrBadState, "ReadAndClearDirty after SetLogDirty(false)")
	s.is(src.SetLogDirty(absent, true), libxl.ErrNoDomain, "SetLogDirty(unknown)")
	s.is(src.ReadAndClearDirty(absent, bm), libxl.ErrNoDomain, "ReadAndClearDirty(unknown)")
}

func (s *suite) dirtyLogMarksAll() {
	hv, dom := s.start()
	src := hv.Source()
	s.ok(src.Suspend(dom), "Suspend")
	s.ok(src.SetLogDirty(dom, true), "SetLogDirty(true)")
	// A bitmap longer than the domain: the bits past it stay clear.
	bm := libxl.NewBitmap(s.pages + 100)
	s.ok(src.ReadAndClearDirty(dom, bm), "ReadAndClearDirty")
	if bm.Count() != s.pages {
		s.t.Errorf("first read after SetLogDirty(true) = %v, want all %d pages", bm, s.pages)
	}
	if got := s.dirty(src, dom); got.Count() != 0 {
		s.t.Errorf("second read while suspended = %v, want empty", got)
	}
	// ReadAndClearDirty ORs: bits already in dst stay set.
	bm = libxl.NewBitmap(s.pages)
	bm.Set(3)
	s.ok(src.ReadAndClearDirty(dom, bm), "ReadAndClearDirty")
	if !bm.Test(3) || bm.Count() != 1 {
		s.t.Errorf("ReadAndClearDirty into a bitmap with bit 3 set = %v, want just bit 3", bm)
	}
	// Switching on again marks everything again.
	s.ok(src.SetLogDirty(dom, true), "SetLogDirty(true) again")
	if got := s.dirty(src, dom); got.Count() != s.pages {
		s.t.Errorf("read after second SetLogDirty(true) = %v", got)
	}
}

// dirtyLogShortBitmap: a failed read leaves the log as it was.
func (s *suite) dirtyLogShortBitmap() {
	hv, dom := s.start()
	src := hv.Source()
	s.ok(src.Suspend(dom), "Suspend")
	s.ok(src.SetLogDirty(dom, true), "SetLogDirty(true)")
	if err := src.ReadAndClearDirty(dom, libxl.NewBitmap(s.pages/2)); err == nil {
		s.t.Fatal("ReadAndClearDirty into a bitmap shorter than the domain succeeded")
	}
	if got := s.dirty(src, dom); got.Count() != s.pages {
		s.t.Errorf("read after a failed read = %v, want all %d pages still dirty", got, s.pages)
	}
}

func (s *suite) dirtyLogExact() {
	if s.f.Touch == nil {
		s.t.Skip("hvtest: backend has no Touch")
	}
	hv, dom := s.start()
	src := hv.Source()
	s.ok(src.Suspend(dom), "Suspend")
	s.ok(src.SetLogDirty(dom, true), "SetLogDirty(true)")
	s.dirty(src, dom)
	want := []libxl.PFN{0, 7, 64, libxl.PFN(s.pages - 1)}
	before := s.memory(src, dom)
	s.f.Touch(s.t, hv, dom, want)
	got := s.dirty(src, dom).AppendSet(nil)
	if len(got) != len(want) {
		s.t.Fatalf("dirty after touching %v = %v", want, got)
	}
	for i := range got {
		if got[i] != want[i] {
			s.t.Fatalf("dirty after touching %v = %v", want, got)
		}
	}
	after := s.memory(src, dom)
	for _, p := range want {
		o := int(p) * libxl.PageSize
		if bytes.Equal(before[o:o+libxl.PageSize], after[o:o+libxl.PageSize]) {
			s.t.Errorf("Touch left page %d unchanged", p)
		}
	}
}

// dirtyLogComplete is the property the engine relies on: every page whose
// content differs between two checkpoints was reported dirty in between,
// whether the log was read while the guest ran (pre-copy) or suspended.
func (s *suite) dirtyLogComplete() {
	hv, dom := s.start()
	src := hv.Source()
	s.ok(src.SetLogDirty(dom, true), "SetLogDirty(true)")
	s.ok(src.Suspend(dom), "Suspend")
	s.dirty(src, dom)
	prev := s.memory(src, dom)
	changed := 0
	for round := range 4 {
		s.ok(src.Resume(dom), "Resume")
		seen := libxl.NewBitmap(s.pages)
		s.f.Advance(s.t)
		s.ok(src.ReadAndClearDirty(dom, seen), "ReadAndClearDirty(running)")
		s.f.Advance(s.t)
		s.ok(src.Suspend(dom), "Suspend")
		s.ok(src.ReadAndClearDirty(dom, seen), "ReadAndClearDirty(suspended)")
		cur := s.memory(src, dom)
		for p := range uint64(s.pages) {
			o := p * libxl.PageSize
			if !bytes.Equal(prev[o:o+libxl.PageSize], cur[o:o+libxl.PageSize]) {
				changed++
				if !seen.Test(libxl.PFN(p)) {
					s.t.Errorf("round %d: page %d changed but was never reported dirty", round, p)
				}
			}
		}
		prev = cur
	}
	if changed == 0 {
		s.t.Error("guest changed no page in 4 rounds: Create must start a guest that writes its memory")
	}
}

// dirtyLogConcurrent: reads racing with writes lose none of them.
func (s *suite) dirtyLogConcurrent() {
	if s.f.Touch == nil {
		s.t.Skip("hvtest: backend has no Touch")
	}
	hv, dom := s.start()
	src := hv.Source()
	s.ok(src.SetLogDirty(dom, true), "SetLogDirty(true)")
	s.dirty(src, dom)
	// The touches, one page at a time, over every page but a few that
	// nothing touches; the guest's own writes may add pages, never hide any.
	var touched []libxl.PFN
	for p := libxl.PFN(0); p < libxl.PFN(s.pages); p += 3 {
		touched = append(touched, p)
	}
	seen := libxl.NewBitmap(s.pages)
	var wg sync.WaitGroup
	wg.Go(func() {
		for _, p := range touched {
			s.f.Touch(s.t, hv, dom, []libxl.PFN{p})
		}
	})
	for range 50 {
		s.ok(src.ReadAndClearDirty(dom, seen), "ReadAndClearDirty(concurrent)")
	}
	wg.Wait()
	s.ok(src.ReadAndClearDirty(dom, seen), "ReadAndClearDirty(final)")
	for _, p := range touched {
		if !seen.Test(p) {
			s.t.Errorf("page %d touched during concurrent reads was never reported", p)
		}
	}
}

func (s *suite) readPages() {
	hv, dom := s.start()
	src := hv.Source()
	// Allowed while running (pre-copy): pages may be torn, but the call works.
	s.ok(src.ReadPages(dom, []libxl.PFN{0, 1}, make([]byte, 2*libxl.PageSize)), "ReadPages(running)")
	s.ok(src.Suspend(dom), "Suspend")
	s.ok(src.ReadPages(dom, nil, nil), "ReadPages(no pages)")
	all := s.memory(src, dom)
	pfns := []libxl.PFN{libxl.PFN(s.pages - 1), 5, 5, 0}
	buf := make([]byte, len(pfns)*libxl.PageSize+17) // longer than needed is fine
	s.ok(src.ReadPages(dom, pfns, buf), "ReadPages(out of order, duplicates)")
	for i, p := range pfns {
		got := buf[i*libxl.PageSize : (i+1)*libxl.PageSize]
		if !bytes.Equal(got, all[int(p)*libxl.PageSize:int(p+1)*libxl.PageSize]) {
			s.t.Errorf("ReadPages slot %d (pfn %d) differs from the full read", i, p)
		}
	}
	s.is(src.ReadPages(dom, []libxl.PFN{libxl.PFN(s.pages)}, make([]byte, libxl.PageSize)), libxl.ErrRange, "ReadPages(pfn == pages)")
	s.is(src.ReadPages(dom, []libxl.PFN{1 << 40}, make([]byte, libxl.PageSize)), libxl.ErrRange, "ReadPages(huge pfn)")
	if err := src.ReadPages(dom, []libxl.PFN{0, 1}, make([]byte, libxl.PageSize)); err == nil {
		s.t.Error("ReadPages into a short buffer succeeded")
	}
	s.is(src.ReadPages(absent, []libxl.PFN{0}, make([]byte, libxl.PageSize)), libxl.ErrNoDomain, "ReadPages(unknown)")
}

func (s *suite) captureState() {
	hv, dom := s.start()
	src := hv.Source()
	_, err := src.CaptureState(dom, nil)
	s.is(err, libxl.ErrBadState, "CaptureState(running)")
	s.ok(src.Suspend(dom), "Suspend")
	pre := []libxl.State{{Kind: libxl.StatePlatform, Data: []byte("kept")}}
	st, err := src.CaptureState(dom, pre)
	s.ok(err, "CaptureState(suspended)")
	if len(st) < 2 || string(st[0].Data) != "kept" {
		s.t.Fatalf("CaptureState did not append to dst: %d blobs", len(st))
	}
	vcpus := 0
	for _, b := range st[1:] {
		if b.Kind == libxl.StateVCPU {
			vcpus++
		}
	}
	info, _ := src.Describe(dom)
	if vcpus != info.VCPUs {
		s.t.Errorf("CaptureState gave %d vcpu blobs for %d vcpus", vcpus, info.VCPUs)
	}
	_, err = src.CaptureState(absent, nil)
	s.is(err, libxl.ErrNoDomain, "CaptureState(unknown)")
}

// checkpoint suspends dom and returns its description, memory and state.
func (s *suite) checkpoint(src libxl.Source, dom libxl.DomID) (libxl.DomainInfo, []byte, []libxl.State) {
	s.t.Helper()
	s.ok(src.Suspend(dom), "Suspend")
	info, err := src.Describe(dom)
	s.ok(err, "Describe")
	mem := s.memory(src, dom)
	st, err := src.CaptureState(dom, nil)
	s.ok(err, "CaptureState")
	return info, mem, st
}

// replica: a replica built on a second host from Describe alone, fed the
// primary's pages and state, equals the primary and runs when activated.
func (s *suite) replica() {
	hv, dom := s.start()
	src := hv.Source()
	s.f.Advance(s.t)
	info, mem, st := s.checkpoint(src, dom)

	standby := s.f.Open(s.t)
	sink := standby.Sink()
	r, err := sink.CreateReplica(info)
	s.ok(err, "CreateReplica(Describe())")
	zero := make([]byte, s.pages*libxl.PageSize)
	got := make([]byte, s.pages*libxl.PageSize)
	s.ok(sink.ReadPages(r, allPFNs(s.pages), got), "ReadPages(new replica)")
	if !bytes.Equal(got, zero) {
		s.t.Error("a new replica's memory is not zeroed")
	}
	s.is(sink.Activate(r), libxl.ErrBadState, "Activate before RestoreState")
	// Write in two batches, in reverse order, to exercise batching.
	half := s.pages / 2
	s.ok(sink.WritePages(r, allPFNs(s.pages)[half:], mem[half*libxl.PageSize:]), "WritePages(upper half)")
	s.ok(sink.WritePages(r, allPFNs(s.pages)[:half], mem[:half*libxl.PageSize]), "WritePages(lower half)")
	s.ok(sink.RestoreState(r, st), "RestoreState")
	s.ok(sink.RestoreState(r, st), "RestoreState again (each epoch restores)")
	s.ok(sink.ReadPages(r, allPFNs(s.pages), got), "ReadPages(replica)")
	if !bytes.Equal(got, mem) {
		s.t.Fatal("replica memory differs from the primary's checkpoint")
	}
	// Describe works on the replica and gives the same shape.
	if ri, err := standby.Source().Describe(r); err != nil {
		s.t.Errorf("Describe(replica): %v", err)
	} else if ri.Pages != info.Pages || ri.VCPUs != info.VCPUs || len(ri.NICs) != len(info.NICs) || len(ri.Disks) != len(info.Disks) || ri.UUID != info.UUID {
		s.t.Errorf("replica shape %+v differs from primary %+v", ri, info)
	}

	// Fail over: the primary goes away, the replica runs.
	s.ok(src.Destroy(dom), "Destroy(primary)")
	s.ok(sink.Activate(r), "Activate")
	s.is(sink.WritePages(r, []libxl.PFN{0}, zero[:libxl.PageSize]), libxl.ErrBadState, "WritePages after Activate")
	s.is(sink.RestoreState(r, st), libxl.ErrBadState, "RestoreState after Activate")
	// The activated replica is a running domain the new primary protects.
	rsrc := standby.Source()
	s.ok(rsrc.SetLogDirty(r, true), "SetLogDirty(activated replica)")
	s.f.Advance(s.t)
	s.ok(rsrc.Suspend(r), "Suspend(activated replica)")
	_, err = rsrc.CaptureState(r, nil)
	s.ok(err, "CaptureState(activated replica)")
	s.ok(rsrc.Resume(r), "Resume(activated replica)")
	s.ok(sink.Destroy(r), "Destroy(replica)")
}

func (s *suite) replicaErrors() {
	hv, dom := s.start()
	info, mem, _ := s.checkpoint(hv.Source(), dom)
	standby := s.f.Open(s.t)
	sink := standby.Sink()
	r, err := sink.CreateReplica(info)
	s.ok(err, "CreateReplica")
	s.is(sink.WritePages(r, []libxl.PFN{libxl.PFN(s.pages)}, mem[:libxl.PageSize]), libxl.ErrRange, "WritePages(pfn == pages)")
	if err := sink.WritePages(r, []libxl.PFN{0, 1}, mem[:libxl.PageSize]); err == nil {
		s.t.Error("WritePages with short data succeeded")
	}
	s.is(sink.WritePages(absent, []libxl.PFN{0}, mem[:libxl.PageSize]), libxl.ErrNoDomain, "WritePages(unknown)")
	if err := sink.RestoreState(r, nil); err == nil {
		s.t.Error("RestoreState(no blobs) succeeded")
	}
	bad := []libxl.State{{Kind: libxl.StateVCPU, Index: 0, Data: []byte{1, 2, 3}}}
	if err := sink.RestoreState(r, bad); err == nil {
		s.t.Error("RestoreState(garbage blob) succeeded")
	}
	s.is(sink.Activate(r), libxl.ErrBadState, "Activate after failed RestoreState")
	s.is(sink.Activate(absent), libxl.ErrNoDomain, "Activate(unknown)")
	// A never-activated replica is not a suspended domain.
	s.is(standby.Source().Resume(r), libxl.ErrBadState, "Resume(replica)")
	s.ok(sink.Destroy(r), "Destroy(replica)")
	s.is(sink.Destroy(r), libxl.ErrNoDomain, "Destroy(replica) twice")
	s.is(sink.ReadPages(r, []libxl.PFN{0}, mem[:libxl.PageSize]), libxl.ErrNoDomain, "ReadPages(destroyed replica)")
}

func (s *suite) destroy() {
	hv, dom := s.start()
	src := hv.Source()
	dom2 := s.f.Create(s.t, hv, s.want())
	s.ok(src.Suspend(dom2), "Suspend(second)")
	s.ok(src.Destroy(dom), "Destroy(running)")
	s.ok(src.Destroy(dom2), "Destroy(suspended)")
	bm := libxl.NewBitmap(s.pages)
	buf := make([]byte, libxl.PageSize)
	for _, d := range []libxl.DomID{dom, dom2} {
		s.is(src.Destroy(d), libxl.ErrNoDomain, "Destroy twice")
		_, err := src.Describe(d)
		s.is(err, libxl.ErrNoDomain, "Describe(destroyed)")
		s.is(src.Suspend(d), libxl.ErrNoDomain, "Suspend(destroyed)")
		s.is(src.Resume(d), libxl.ErrNoDomain, "Resume(destroyed)")
		s.is(src.SetLogDirty(d, true), libxl.ErrNoDomain, "SetLogDirty(destroyed)")
		s.is(src.ReadAndClearDirty(d, bm), libxl.ErrNoDomain, "ReadAndClearDirty(destroyed)")
		s.is(src.ReadPages(d, []libxl.PFN{0}, buf), libxl.ErrNoDomain, "ReadPages(destroyed)")
		_, err = src.CaptureState(d, nil)
		s.is(err, libxl.ErrNoDomain, "CaptureState(destroyed)")
		_, err = hv.Lookup(strconv.FormatUint(uint64(d), 10))
		s.is(err, libxl.ErrNoDomain, "Lookup(destroyed)")
	}
}
