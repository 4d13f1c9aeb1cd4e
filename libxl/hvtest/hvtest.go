package hvtest

import (
	"bytes"
	"errors"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

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
	// guest keeps writing to its memory, and returns its id once the
	// guest runs.
	Create func(t *testing.T, hv libxl.Hypervisor, pages uint64) libxl.DomID

	// Spawn, optional, creates a running domain like Create but may
	// return before its guest has booted: Destroy needs a second running
	// domain, not a working guest, and a backend whose guests boot slowly
	// saves that boot. Nil means Create.
	Spawn func(t *testing.T, hv libxl.Hypervisor, pages uint64) libxl.DomID

	// Touch, optional, writes pages pfns of dom as a guest write would,
	// in any run state (suspended included). Without it the checks that
	// need an exact dirty set are skipped. It may run on a goroutine of
	// its own, so it reports problems with t.Error, never t.Fatal.
	Touch func(t *testing.T, hv libxl.Hypervisor, dom libxl.DomID, pfns []libxl.PFN)

	// NoTouch says why Touch is nil; the checks that skip print it.
	NoTouch string

	// Advance lets running guests execute for a while: long enough for
	// a running guest to write to its memory. A Bubble backend uses
	// Virtual, which moves the bubble's clock instead of waiting.
	Advance func(t *testing.T)

	// Bubble runs each subtest in a testing/synctest bubble: Advance may
	// then sleep in virtual time, and the bubble proves that no goroutine
	// outlives the subtest. Only for backends whose guests block on
	// bubble-aware primitives (sim domains without host sockets).
	Bubble bool

	// Reuse lets the subtests share one domain, for backends whose
	// domains take long to start (a Xen guest boots for half a minute):
	// the suite opens a host and creates the domain outside the subtests,
	// returns it after each subtest to a running domain with log-dirty
	// off (failing the suite if the backend cannot), and creates another
	// when a subtest destroyed it. Each subtest's checks are the same as
	// on a fresh domain. Not with Bubble: a bubble's domain cannot
	// outlive its subtest.
	Reuse bool

	// Pages, if not zero, is the size in pages of every domain Create
	// makes, whatever it is asked for: a backend whose guests have a
	// fixed size (a bootable Xen PV guest has tens of thousands of
	// pages). Zero means Create honours its pages argument, Pages.
	Pages uint64

	// Boot, optional, returns what identifies the current run of dom's
	// guest (a boot id): a replica activated from a checkpoint must
	// report the same as its primary, because it resumes the guest's run
	// rather than starting the guest again.
	Boot func(t *testing.T, hv libxl.Hypervisor, dom libxl.DomID) string
}

// Virtual returns an Advance for a Bubble backend: it moves the
// bubble's virtual clock on by d (time.Sleep in a bubble returns as soon
// as every other goroutine of the bubble is durably blocked, so no wall
// clock time passes), then waits until every guest goroutine has run
// the step due at that instant and blocked again, so that each guest has
// run exactly the steps d holds. Outside a synctest bubble the sleep
// would be a wall-clock wait: it fails the test instead.
func Virtual(d time.Duration) func(t *testing.T) {
	return func(t *testing.T) {
		t.Helper()
		if !inBubble() {
			t.Fatalf("hvtest: Virtual(%v) outside a testing/synctest bubble (Factory.Bubble): it would wait on the wall clock", d)
		}
		time.Sleep(d)
		synctest.Wait()
	}
}

// inBubble reports whether the calling goroutine is in a synctest
// bubble: synctest.Wait panics outside one.
func inBubble() (in bool) {
	defer func() {
		if recover() != nil {
			in = false
		}
	}()
	synctest.Wait()
	return true
}

// Pages is the size of the domains the suite asks Create for. The checks
// use the size Describe reports, so a backend with fixed-size guests
// (Factory.Pages) runs the same suite.
const Pages = 256

// Run runs the contract suite against the backend f describes.
//
// A backend that captures some domain types as a stream
// (libxl.StreamCapture, asked of the Source for the domain's type) is
// driven as the engine drives it wherever the contract's rules for streams
// apply: log-dirty on before the first checkpoint, the pages of a
// checkpoint read after its ReadAndClearDirty, its CaptureState once and
// after its ReadPages, and a replica fed checkpoint after checkpoint of
// one stream. The comments of the subtests say what each then checks.
func Run(t *testing.T, f Factory) {
	if f.Reuse && f.Bubble {
		t.Fatal("hvtest: Factory.Reuse and Factory.Bubble exclude each other: a bubble's domain cannot outlive its subtest")
	}
	tests := []struct {
		name   string
		fn     func(*suite)
		domain bool // needs a running domain (start)
	}{
		{"Identity", (*suite).identity, false},
		{"Describe", (*suite).describe, true},
		{"SuspendResume", (*suite).suspendResume, true},
		{"DirtyLogOff", (*suite).dirtyLogOff, true},
		{"SuspendedIsQuiet", (*suite).suspendedIsQuiet, true},
		{"DirtyLogMarksAll", (*suite).dirtyLogMarksAll, true},
		{"DirtyLogFailedReadKeepsLog", (*suite).dirtyLogShortBitmap, true},
		{"DirtyLogExact", (*suite).dirtyLogExact, true},
		{"DirtyLogComplete", (*suite).dirtyLogComplete, true},
		{"DirtyLogConcurrentTouch", (*suite).dirtyLogConcurrent, true},
		{"ReadPages", (*suite).readPages, true},
		{"CaptureState", (*suite).captureState, true},
		{"ReplicaErrors", (*suite).replicaErrors, true},
		{"Replica", (*suite).replica, true},
		{"Destroy", (*suite).destroy, true},
	}
	var sh *shared
	if f.Reuse {
		sh = &shared{dom: libxl.DomIDInvalid}
	}
	for _, tc := range tests {
		if sh != nil && tc.domain {
			sh.ensure(t, f)
		}
		t.Run(tc.name, func(t *testing.T) {
			body := func(t *testing.T) { tc.fn(&suite{t: t, f: f, sh: sh}) }
			if f.Bubble {
				synctest.Test(t, body)
			} else {
				body(t)
			}
		})
		if sh != nil && tc.domain {
			sh.reset(t, tc.name)
		}
	}
}

// shared is the domain the subtests share with Factory.Reuse. Only Run's
// goroutine creates and resets it, so its failures fail the parent test.
type shared struct {
	hv  libxl.Hypervisor
	dom libxl.DomID // DomIDInvalid: none (yet, or destroyed)
}

// ensure creates the shared domain if there is none.
func (sh *shared) ensure(t *testing.T, f Factory) {
	t.Helper()
	if sh.dom != libxl.DomIDInvalid {
		return
	}
	if sh.hv == nil {
		sh.hv = f.Open(t)
	}
	want := f.Pages
	if want == 0 {
		want = Pages
	}
	sh.dom = f.Create(t, sh.hv, want)
}

// reset returns the shared domain to a running domain with log-dirty off
// after subtest name, or forgets it if the subtest destroyed it.
func (sh *shared) reset(t *testing.T, name string) {
	t.Helper()
	if sh.dom == libxl.DomIDInvalid {
		return
	}
	src := sh.hv.Source()
	if _, err := src.Describe(sh.dom); errors.Is(err, libxl.ErrNoDomain) {
		sh.dom = libxl.DomIDInvalid
		return
	}
	err := src.SetLogDirty(sh.dom, false)
	if rerr := src.Resume(sh.dom); !errors.Is(rerr, libxl.ErrBadState) {
		err = errors.Join(err, rerr)
	}
	if err != nil {
		t.Errorf("hvtest: after %s, returning the shared domain %d to running with log-dirty off: %v", name, sh.dom, err)
		// The next subtest gets a domain of its own.
		src.Destroy(sh.dom)
		sh.dom = libxl.DomIDInvalid
	}
}

type suite struct {
	t  *testing.T
	f  Factory
	sh *shared // nil unless Factory.Reuse
	// pages is the size of the domain start created, as Describe reports
	// it (the expected size if Describe fails, which describe reports).
	pages uint64
	// streamed: start's domain is captured as a stream
	// (libxl.StreamCapture).
	streamed bool
}

// want is the size the suite expects Create's domains to have.
func (s *suite) want() uint64 {
	if s.f.Pages != 0 {
		return s.f.Pages
	}
	return Pages
}

// start opens a host and creates a running domain on it (or, with
// Factory.Reuse, returns the shared one).
func (s *suite) start() (libxl.Hypervisor, libxl.DomID) {
	s.t.Helper()
	var hv libxl.Hypervisor
	var dom libxl.DomID
	if s.sh != nil {
		hv, dom = s.sh.hv, s.sh.dom
	} else {
		hv = s.f.Open(s.t)
		dom = s.f.Create(s.t, hv, s.want())
	}
	s.pages = s.want()
	if info, err := hv.Source().Describe(dom); err == nil {
		if info.Pages > 0 {
			s.pages = info.Pages
		}
		s.streamed = streamedBy(hv.Source(), info.Type)
	}
	return hv, dom
}

// streamedBy reports whether x captures (Source) or restores (Sink)
// domains of type t as a stream.
func streamedBy(x any, t libxl.DomainType) bool {
	sc, ok := x.(libxl.StreamCapture)
	return ok && sc.StreamCaptured(t)
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

// identity: the backend names itself, can run the engine, protects some
// domain type, and answers libxl.StreamCapture alike from every view the
// engine asks (the primary asks its Source, the standby its Sink: if they
// disagreed, a stream would reach a replica that cannot take it).
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
	for _, typ := range []libxl.DomainType{libxl.TypePV, libxl.TypePVH, libxl.TypeHVM} {
		src, sink := streamedBy(hv.Source(), typ), streamedBy(hv.Sink(), typ)
		if src != sink {
			s.t.Errorf("StreamCaptured(%s): the Source says %v, the Sink %v", typ, src, sink)
		}
		if _, ok := hv.(libxl.StreamCapture); ok && streamedBy(hv, typ) != src {
			s.t.Errorf("StreamCaptured(%s): the Hypervisor says %v, its Source %v", typ, streamedBy(hv, typ), src)
		}
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
// until Resume; after Resume it runs again. With a stream the memory is
// the checkpoint's, as the stream carries it, and the state is taken
// before Resume, once, as the stream's rules want.
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
	if s.streamed {
		_, err := src.CaptureState(dom, nil)
		s.ok(err, "CaptureState")
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
		s.t.Skipf("hvtest: needs Factory.Touch to write chosen pages; this backend has none: %s", s.f.NoTouch)
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
//
// With a stream, memory is what the stream carried (ReadPages), and only
// until the first checkpoint can all of it be read: every page that
// differs between a read during the pre-copy rounds and the first
// checkpoint must have been reported by a later round or the checkpoint;
// at later checkpoints the Source serves the dirty pages only, so the
// suite checks that they are readable and that the guest kept changing
// them. Whether the stream
// misses a write that a page's raw contents would show is answered end to
// end by Replica: a replica built from the stream resumes the guest.
func (s *suite) dirtyLogComplete() {
	hv, dom := s.start()
	if s.streamed {
		s.dirtyLogCompleteStream(hv, dom)
		return
	}
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
		changed += s.unreported(prev, cur, seen, round)
		prev = cur
	}
	if changed == 0 {
		s.t.Error("guest changed no page in 4 rounds: Create must start a guest that writes its memory")
	}
}

// unreported compares two reads of all memory, reports every page that
// changed without being in seen, and returns how many changed.
func (s *suite) unreported(prev, cur []byte, seen *libxl.Bitmap, round int) int {
	s.t.Helper()
	changed := 0
	for p := range s.pages {
		o := p * libxl.PageSize
		if !bytes.Equal(prev[o:o+libxl.PageSize], cur[o:o+libxl.PageSize]) {
			changed++
			if !seen.Test(libxl.PFN(p)) {
				s.t.Errorf("round %d: page %d changed but was never reported dirty", round, p)
			}
		}
	}
	return changed
}

func (s *suite) dirtyLogCompleteStream(hv libxl.Hypervisor, dom libxl.DomID) {
	src := hv.Source()
	s.ok(src.SetLogDirty(dom, true), "SetLogDirty(true)")
	if got := s.dirty(src, dom); got.Count() != s.pages {
		s.t.Fatalf("first pre-copy round after SetLogDirty(true) = %v, want all %d pages", got, s.pages)
	}
	// A read of a running domain may be torn, but a page that differs
	// from it at the first checkpoint was written after the log read
	// before it, so one of the later reads reports it.
	prev := s.memory(src, dom)
	seen := libxl.NewBitmap(s.pages)
	for range 2 {
		s.f.Advance(s.t)
		s.ok(src.ReadAndClearDirty(dom, seen), "ReadAndClearDirty(pre-copy round)")
	}
	s.ok(src.Suspend(dom), "Suspend")
	s.ok(src.ReadAndClearDirty(dom, seen), "ReadAndClearDirty(first checkpoint)")
	cur := s.memory(src, dom)
	changed := s.unreported(prev, cur, seen, 0)
	prev = cur
	_, err := src.CaptureState(dom, nil)
	s.ok(err, "CaptureState")
	// Later checkpoints carry their dirty pages only.
	for range 3 {
		s.ok(src.Resume(dom), "Resume")
		s.f.Advance(s.t)
		pfns, data, _ := s.epoch(src, dom)
		changed += overlay(prev, pfns, data)
	}
	if changed == 0 {
		s.t.Error("guest changed no page in 2 pre-copy rounds and 4 checkpoints: Create must start a guest that writes its memory")
	}
}

// dirtyLogConcurrent: reads racing with writes lose none of them.
func (s *suite) dirtyLogConcurrent() {
	if s.f.Touch == nil {
		s.t.Skipf("hvtest: needs Factory.Touch to write chosen pages; this backend has none: %s", s.f.NoTouch)
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

// readPages: ReadPages of a suspended domain; with a stream, also of its
// first checkpoint, which carries every page.
func (s *suite) readPages() {
	hv, dom := s.start()
	src := hv.Source()
	// Allowed while running (pre-copy): pages may be torn, but the call works.
	s.ok(src.ReadPages(dom, []libxl.PFN{0, 1}, make([]byte, 2*libxl.PageSize)), "ReadPages(running)")
	s.ok(src.Suspend(dom), "Suspend")
	s.reads(src, dom)
	if !s.streamed {
		return
	}
	s.ok(src.Resume(dom), "Resume")
	s.ok(src.SetLogDirty(dom, true), "SetLogDirty(true)")
	s.ok(src.Suspend(dom), "Suspend")
	if got := s.dirty(src, dom); got.Count() != s.pages {
		s.t.Fatalf("a stream's first checkpoint = %v, want all %d pages", got, s.pages)
	}
	s.reads(src, dom)
	_, err := src.CaptureState(dom, nil)
	s.ok(err, "CaptureState")

	// A checkpoint is a private copy once its suspension ended
	// (libxl.StreamCapture): read before Resume and again after it, with
	// the guest writing meanwhile, its pages are the same.
	s.ok(src.Resume(dom), "Resume")
	s.f.Advance(s.t)
	s.ok(src.Suspend(dom), "Suspend")
	pfns := s.dirty(src, dom).AppendSet(nil)
	before := make([]byte, len(pfns)*libxl.PageSize)
	s.ok(src.ReadPages(dom, pfns, before), "ReadPages(checkpoint, suspended)")
	s.ok(src.Resume(dom), "Resume")
	s.f.Advance(s.t)
	after := make([]byte, len(pfns)*libxl.PageSize)
	s.ok(src.ReadPages(dom, pfns, after), "ReadPages(checkpoint, after Resume)")
	if !bytes.Equal(before, after) {
		s.t.Error("a stream's checkpoint read after Resume differs from the same checkpoint read before it")
	}
	_, err = src.CaptureState(dom, nil)
	s.ok(err, "CaptureState(after Resume)")

	// The engine's order: the whole checkpoint read after Resume.
	s.f.Advance(s.t)
	pfns, _, _ = s.epochAfterResume(src, dom)
	if len(pfns) == 0 {
		s.t.Error("a checkpoint read after Resume carries no page: ReadAndClearDirty must return the suspension's checkpoint")
	}
	s.ok(src.Suspend(dom), "Suspend")
}

// epochAfterResume takes a checkpoint as the engine does for a stream:
// Suspend, Resume, then (the guest writing meanwhile) the checkpoint's
// dirty set, pages and state. The guest is left running.
func (s *suite) epochAfterResume(src libxl.Source, dom libxl.DomID) ([]libxl.PFN, []byte, []libxl.State) {
	s.t.Helper()
	s.ok(src.Suspend(dom), "Suspend")
	s.ok(src.Resume(dom), "Resume (before reading the checkpoint)")
	s.f.Advance(s.t)
	pfns := s.dirty(src, dom).AppendSet(nil)
	data := make([]byte, len(pfns)*libxl.PageSize)
	s.ok(src.ReadPages(dom, pfns, data), "ReadPages(checkpoint, after Resume)")
	st, err := src.CaptureState(dom, nil)
	s.ok(err, "CaptureState(after Resume)")
	return pfns, data, st
}

// reads checks ReadPages on suspended dom, all of whose pages it can read.
func (s *suite) reads(src libxl.Source, dom libxl.DomID) {
	s.t.Helper()
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

// captureState: the state of a suspended domain, appended to dst, with
// every vCPU's registers. With a stream the state is the checkpoint's, so
// the checkpoint is taken first (log-dirty on, its pages read).
func (s *suite) captureState() {
	hv, dom := s.start()
	src := hv.Source()
	_, err := src.CaptureState(dom, nil)
	s.is(err, libxl.ErrBadState, "CaptureState(running)")
	if s.streamed {
		s.ok(src.SetLogDirty(dom, true), "SetLogDirty(true)")
	}
	s.ok(src.Suspend(dom), "Suspend")
	if s.streamed {
		s.dirty(src, dom)
		s.memory(src, dom)
	}
	pre := []libxl.State{{Kind: libxl.StatePlatform, Data: []byte("kept")}}
	st, err := src.CaptureState(dom, pre)
	s.ok(err, "CaptureState(suspended)")
	if len(st) < 2 || string(st[0].Data) != "kept" {
		s.t.Fatalf("CaptureState did not append to dst: %d blobs", len(st))
	}
	info, _ := src.Describe(dom)
	vcpus := map[uint32]int{}
	for _, b := range st[1:] {
		if b.Kind == libxl.StateVCPU {
			vcpus[b.Index]++
		}
	}
	for v := range info.VCPUs {
		if vcpus[uint32(v)] == 0 {
			s.t.Errorf("CaptureState gave no blob for vcpu %d of %d", v, info.VCPUs)
		}
	}
	n := 0
	for v, c := range vcpus {
		n += c
		if int(v) >= info.VCPUs {
			s.t.Errorf("CaptureState gave a blob for vcpu %d of %d", v, info.VCPUs)
		}
	}
	// A stream carries several records per vCPU (registers, extended
	// state, MSRs); otherwise a vCPU is one blob.
	if !s.streamed && n != info.VCPUs {
		s.t.Errorf("CaptureState gave %d vcpu blobs for %d vcpus", n, info.VCPUs)
	}
	_, err = src.CaptureState(absent, nil)
	s.is(err, libxl.ErrNoDomain, "CaptureState(unknown)")
}

// checkpoint suspends dom and returns its description, memory and state.
// With a stream, log-dirty must be on: the checkpoint is the stream's
// first, which carries every page.
func (s *suite) checkpoint(src libxl.Source, dom libxl.DomID) (libxl.DomainInfo, []byte, []libxl.State) {
	s.t.Helper()
	s.ok(src.Suspend(dom), "Suspend")
	info, err := src.Describe(dom)
	s.ok(err, "Describe")
	if s.streamed {
		if got := s.dirty(src, dom); got.Count() != s.pages {
			s.t.Fatalf("a stream's first checkpoint = %v, want all %d pages", got, s.pages)
		}
	}
	mem := s.memory(src, dom)
	st, err := src.CaptureState(dom, nil)
	s.ok(err, "CaptureState")
	return info, mem, st
}

// replica: a replica built on a second host from Describe alone, fed the
// primary's pages and state, equals the primary and runs when activated,
// as the same domain: same shape, same run of the guest (Factory.Boot),
// and a domain the new primary can protect.
//
// With a stream the replica is fed as the engine feeds it: the stream's
// first checkpoint (every page), then a second one (its dirty pages and
// state), never the same state twice; what the replica holds before
// activation is the stream's form of the pages, so it is compared with
// what the primary's Source read.
func (s *suite) replica() {
	hv, dom := s.start()
	src := hv.Source()
	boot := ""
	if s.f.Boot != nil {
		boot = s.f.Boot(s.t, hv, dom)
	}
	if s.streamed {
		s.ok(src.SetLogDirty(dom, true), "SetLogDirty(true)")
	}
	s.f.Advance(s.t)
	t0 := time.Now()
	info, mem, st := s.checkpoint(src, dom)
	s.t.Logf("replica: first checkpoint (%d pages) taken in %v", s.pages, time.Since(t0).Round(time.Millisecond))

	standby := s.f.Open(s.t)
	sink := standby.Sink()
	r, err := sink.CreateReplica(info)
	s.ok(err, "CreateReplica(Describe())")
	zero := make([]byte, libxl.PageSize)
	got := make([]byte, s.pages*libxl.PageSize) // a guest's worth: one buffer
	s.ok(sink.ReadPages(r, allPFNs(s.pages), got), "ReadPages(new replica)")
	for o := 0; o < len(got); o += libxl.PageSize {
		if !bytes.Equal(got[o:o+libxl.PageSize], zero) {
			s.t.Errorf("a new replica's memory is not zeroed (pfn %d)", o/libxl.PageSize)
			break
		}
	}
	s.is(sink.Activate(r), libxl.ErrBadState, "Activate before RestoreState")
	// Write in two batches, in reverse order, to exercise batching.
	half := s.pages / 2
	s.ok(sink.WritePages(r, allPFNs(s.pages)[half:], mem[half*libxl.PageSize:]), "WritePages(upper half)")
	s.ok(sink.WritePages(r, allPFNs(s.pages)[:half], mem[:half*libxl.PageSize]), "WritePages(lower half)")
	s.ok(sink.RestoreState(r, st), "RestoreState")
	tFeed := time.Now()
	if s.streamed {
		// Each epoch restores: the next checkpoint of the stream, read as
		// the engine reads it (after Resume).
		s.ok(src.Resume(dom), "Resume")
		s.f.Advance(s.t)
		pfns, data, st2 := s.epochAfterResume(src, dom)
		overlay(mem, pfns, data)
		s.ok(sink.WritePages(r, pfns, data), "WritePages(second checkpoint)")
		s.ok(sink.RestoreState(r, st2), "RestoreState(second checkpoint)")
		st = st2
	} else {
		s.ok(sink.RestoreState(r, st), "RestoreState again (each epoch restores)")
	}
	s.ok(sink.ReadPages(r, allPFNs(s.pages), got), "ReadPages(replica)")
	if !bytes.Equal(got, mem) {
		s.t.Fatal("replica memory differs from the primary's checkpoint")
	}
	// Describe works on the replica and gives the same shape.
	shape := func(when string) {
		s.t.Helper()
		if ri, err := standby.Source().Describe(r); err != nil {
			s.t.Errorf("Describe(replica) %s: %v", when, err)
		} else if ri.Pages != info.Pages || ri.VCPUs != info.VCPUs || len(ri.NICs) != len(info.NICs) || len(ri.Disks) != len(info.Disks) || ri.UUID != info.UUID || ri.Type != info.Type {
			s.t.Errorf("replica shape %s %+v differs from primary %+v", when, ri, info)
		}
	}
	shape("before activation")

	// Fail over: the primary goes away, the replica runs.
	s.ok(src.Destroy(dom), "Destroy(primary)")
	t0 = time.Now()
	s.ok(sink.Activate(r), "Activate")
	s.t.Logf("replica: second checkpoint fed and primary destroyed in %v, replica activated in %v", t0.Sub(tFeed).Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	s.is(sink.WritePages(r, []libxl.PFN{0}, zero), libxl.ErrBadState, "WritePages after Activate")
	s.is(sink.RestoreState(r, st), libxl.ErrBadState, "RestoreState after Activate")
	shape("after activation")
	if s.f.Boot != nil {
		t0 = time.Now()
		b := s.f.Boot(s.t, standby, r)
		s.t.Logf("replica: its guest answers after %v", time.Since(t0).Round(time.Millisecond))
		if b != boot {
			s.t.Errorf("the activated replica's guest is at boot %q, its primary's was at %q: it started again instead of resuming", b, boot)
		}
	}
	// The activated replica is a running domain the new primary protects.
	rsrc := standby.Source()
	s.ok(rsrc.SetLogDirty(r, true), "SetLogDirty(activated replica)")
	s.f.Advance(s.t)
	s.epoch(rsrc, r)
	s.ok(rsrc.Resume(r), "Resume(activated replica)")
	s.f.Advance(s.t)
	pfns, _, _ := s.epoch(rsrc, r)
	if len(pfns) == 0 {
		s.t.Error("the activated replica wrote nothing between two checkpoints: it does not run")
	}
	s.ok(rsrc.Resume(r), "Resume(activated replica)")
	s.ok(sink.Destroy(r), "Destroy(replica)")
}

func (s *suite) replicaErrors() {
	hv, dom := s.start()
	if s.streamed {
		s.ok(hv.Source().SetLogDirty(dom, true), "SetLogDirty(true)")
	}
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

// destroy: a running and a suspended domain are destroyed, and every call
// on them then fails with ErrNoDomain.
func (s *suite) destroy() {
	hv, dom := s.start()
	src := hv.Source()
	spawn := s.f.Spawn
	if spawn == nil {
		spawn = s.f.Create
	}
	dom2 := spawn(s.t, hv, s.want())
	s.ok(src.Suspend(dom), "Suspend(first)")
	s.ok(src.Destroy(dom2), "Destroy(running)")
	s.ok(src.Destroy(dom), "Destroy(suspended)")
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

// epoch takes one checkpoint of a domain whose log-dirty mode is on, as
// the engine does: Suspend, ReadAndClearDirty, ReadPages of the dirty
// set, CaptureState (once, after the pages: the rule for streams). It
// returns the dirty set, its pages and the state, leaving dom suspended.
func (s *suite) epoch(src libxl.Source, dom libxl.DomID) ([]libxl.PFN, []byte, []libxl.State) {
	s.t.Helper()
	s.ok(src.Suspend(dom), "Suspend")
	pfns := s.dirty(src, dom).AppendSet(nil)
	data := make([]byte, len(pfns)*libxl.PageSize)
	s.ok(src.ReadPages(dom, pfns, data), "ReadPages(dirty)")
	st, err := src.CaptureState(dom, nil)
	s.ok(err, "CaptureState")
	return pfns, data, st
}

// overlay writes pages pfns (data, in order) into the memory image mem and
// counts those whose contents changed.
func overlay(mem []byte, pfns []libxl.PFN, data []byte) int {
	n := 0
	for i, p := range pfns {
		dst := mem[int(p)*libxl.PageSize : int(p+1)*libxl.PageSize]
		src := data[i*libxl.PageSize : (i+1)*libxl.PageSize]
		if !bytes.Equal(dst, src) {
			n++
			copy(dst, src)
		}
	}
	return n
}
