package netbuftest

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/xl-kemari/xl-kemari/netbuf"
)

// Link is the outside view of one buffered guest NIC.
type Link interface {
	// Send makes the guest emit a frame of protocol p tagged n.
	Send(p Proto, n uint32) error
	// Captured returns the tags of suite frames the client has received,
	// in arrival order.
	Captured() []Tag
	// WaitCaptured blocks until pred holds for the captured tags
	// (sentinels included) and returns the suite tags.
	WaitCaptured(t testing.TB, pred func([]Tag) bool) []Tag
	// Flush returns once every frame that left the host before the call
	// has been captured.
	Flush(t testing.TB)
}

// Port is one buffered NIC: its buffer and its link.
type Port struct {
	Buffer netbuf.Buffer
	Link   Link
}

// Harness adapts a backend to the suite.
type Harness interface {
	// Setup returns n guest NICs of a fresh host, each with its buffer
	// open and holding, the NICs independent of each other. It releases
	// everything through t.Cleanup and skips t when the backend cannot
	// run here.
	Setup(t *testing.T, n int) []Port
}

// Serial is implemented by harnesses whose backend lets out an epoch's
// frames at its Release only when no later barrier is outstanding (plug:
// sch_plug counts two epochs). The suite then skips its pipelined cases,
// saying so.
type Serial interface {
	Serial() bool
}

func requirePipelining(t *testing.T, h Harness) {
	if s, ok := h.(Serial); ok && s.Serial() {
		t.Skip("backend releases one outstanding barrier at a time; later epochs go out with the next barrier (see netbuf/plug)")
	}
}

// Run runs the contract suite against h.
func Run(t *testing.T, h Harness) {
	for _, c := range []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"HeldUntilRelease", testHeldUntilRelease},
		{"BarrierOrdering", testBarrierOrdering},
		{"ReleaseOrder", testReleaseOrder},
		{"ReleaseIdempotent", testReleaseIdempotent},
		{"UnprotectProtect", testUnprotectProtect},
		{"Discard", testDiscard},
		{"Close", testClose},
		{"EveryProtocol", testEveryProtocol},
		{"TwoDevices", testTwoDevices},
	} {
		t.Run(c.name, func(t *testing.T) { c.fn(t, h) })
	}
}

// WaitLimit bounds every wait of the suite for frames to be held or
// captured: a frame the kernel lost or a buffer that never releases fails
// the test with what was seen, instead of hanging until the go test
// timeout. It is far above any healthy wait (milliseconds).
const WaitLimit = 30 * time.Second

// WaitHeld blocks until buf holds at least n frames. It is used only to
// know that frames reached the holder before a Barrier; what is released
// is checked at the client.
func WaitHeld(t testing.TB, buf netbuf.Buffer, n uint64) {
	t.Helper()
	deadline := time.NewTimer(WaitLimit)
	defer deadline.Stop()
	var tick <-chan time.Time
	if !buf.Capabilities().Notifies {
		tk := time.NewTicker(time.Millisecond)
		defer tk.Stop()
		tick = tk.C
	}
	for buf.Stats().HeldFrames < n {
		select {
		case <-buf.Waiting():
		case <-tick:
		case <-deadline.C:
			t.Fatalf("buffer holds %d frames after %v, want %d", buf.Stats().HeldFrames, WaitLimit, n)
		case <-t.Context().Done():
			t.Fatalf("buffer holds %d frames, want %d", buf.Stats().HeldFrames, n)
		}
	}
}

func send(t testing.TB, l Link, p Proto, ns ...uint32) []Tag {
	t.Helper()
	var out []Tag
	for _, n := range ns {
		if err := l.Send(p, n); err != nil {
			t.Fatalf("send %v %d: %v", p, n, err)
		}
		out = append(out, Tag{p, n})
	}
	return out
}

func seq(from, n uint32) []uint32 {
	out := make([]uint32, n)
	for i := range out {
		out[i] = from + uint32(i)
	}
	return out
}

// waitAll waits until every tag in want was captured.
func waitAll(t testing.TB, l Link, want []Tag) []Tag {
	t.Helper()
	return l.WaitCaptured(t, func(got []Tag) bool { return containsAll(got, want) })
}

func containsAll(got, want []Tag) bool {
	have := map[Tag]bool{}
	for _, g := range got {
		have[g] = true
	}
	for _, w := range want {
		if !have[w] {
			return false
		}
	}
	return true
}

// noneOf fails if any tag of bad was captured (after a flush).
func noneOf(t testing.TB, l Link, what string, bad []Tag) {
	t.Helper()
	l.Flush(t)
	set := map[Tag]bool{}
	for _, b := range bad {
		set[b] = true
	}
	for _, g := range l.Captured() {
		if set[g] {
			t.Fatalf("%s: frame %v reached the client; captured %v", what, g, l.Captured())
		}
	}
}

// only returns the captured tags that are in set, in capture order.
func only(got, set []Tag) []Tag {
	m := map[Tag]bool{}
	for _, s := range set {
		m[s] = true
	}
	var out []Tag
	for _, g := range got {
		if m[g] {
			out = append(out, g)
		}
	}
	return out
}

func noErr(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func testHeldUntilRelease(t *testing.T, h Harness) {
	p := h.Setup(t, 1)[0]
	a := send(t, p.Link, UDP4, seq(1, 5)...)
	WaitHeld(t, p.Buffer, 5)
	noneOf(t, p.Link, "before barrier", a)
	noErr(t, "Barrier(1)", p.Buffer.Barrier(1))
	noneOf(t, p.Link, "after barrier, before release", a)
	noErr(t, "Release(1)", p.Buffer.Release(1))
	if got := only(waitAll(t, p.Link, a), a); !reflect.DeepEqual(got, a) {
		t.Fatalf("released %v, want %v", got, a)
	}
	if s := p.Buffer.Stats(); s.LastRelease != 1 {
		t.Errorf("Stats.LastRelease = %d, want 1", s.LastRelease)
	}
}

func testBarrierOrdering(t *testing.T, h Harness) {
	requirePipelining(t, h)
	p := h.Setup(t, 1)[0]
	a := send(t, p.Link, UDP4, seq(100, 3)...)
	WaitHeld(t, p.Buffer, 3)
	noErr(t, "Barrier(1)", p.Buffer.Barrier(1))
	b := send(t, p.Link, UDP4, seq(200, 3)...)
	WaitHeld(t, p.Buffer, 6)
	noErr(t, "Barrier(2)", p.Buffer.Barrier(2))
	c := send(t, p.Link, ICMP4, seq(300, 2)...)
	WaitHeld(t, p.Buffer, 8)
	if err := p.Buffer.Barrier(2); !errors.Is(err, netbuf.ErrOrder) {
		t.Fatalf("Barrier(2) again: %v, want ErrOrder", err)
	}
	noErr(t, "Release(1)", p.Buffer.Release(1))
	waitAll(t, p.Link, a)
	noneOf(t, p.Link, "epoch 2 after Release(1)", append(b, c...))
	noErr(t, "Release(2)", p.Buffer.Release(2))
	waitAll(t, p.Link, b)
	noneOf(t, p.Link, "frames after the last barrier", c)
	noErr(t, "Barrier(3)", p.Buffer.Barrier(3))
	noErr(t, "Release(3)", p.Buffer.Release(3))
	all := append(append(append([]Tag(nil), a...), b...), c...)
	if got := only(waitAll(t, p.Link, all), all); !reflect.DeepEqual(got, all) {
		t.Fatalf("arrival order %v, want %v", got, all)
	}
}

func testReleaseOrder(t *testing.T, h Harness) {
	requirePipelining(t, h)
	p := h.Setup(t, 1)[0]
	var want []Tag
	for e := uint64(1); e <= 3; e++ {
		base := uint32(e * 1000)
		want = append(want, send(t, p.Link, UDP4, seq(base, 20)...)...)
		want = append(want, send(t, p.Link, UDP6, seq(base+500, 10)...)...)
		WaitHeld(t, p.Buffer, uint64(30*e))
		noErr(t, "Barrier", p.Buffer.Barrier(e))
	}
	noErr(t, "Release(3)", p.Buffer.Release(3))
	got := only(waitAll(t, p.Link, want), want)
	// Within a protocol, arrival order is send order.
	for _, pr := range []Proto{UDP4, UDP6} {
		var g, w []Tag
		for _, x := range got {
			if x.Proto == pr {
				g = append(g, x)
			}
		}
		for _, x := range want {
			if x.Proto == pr {
				w = append(w, x)
			}
		}
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("%v arrival order %v, want %v", pr, g, w)
		}
	}
}

func testReleaseIdempotent(t *testing.T, h Harness) {
	p := h.Setup(t, 1)[0]
	a := send(t, p.Link, UDP4, seq(1, 4)...)
	WaitHeld(t, p.Buffer, 4)
	noErr(t, "Barrier(1)", p.Buffer.Barrier(1))
	noErr(t, "Release(1)", p.Buffer.Release(1))
	waitAll(t, p.Link, a)
	noErr(t, "Release(1) again", p.Buffer.Release(1))
	noErr(t, "Release(0)", p.Buffer.Release(0))
	b := send(t, p.Link, UDP4, seq(10, 2)...)
	WaitHeld(t, p.Buffer, 2)
	noErr(t, "Release(1) with new frames held", p.Buffer.Release(1))
	noneOf(t, p.Link, "unbarriered frames after a repeated Release", b)
	counts := map[Tag]int{}
	for _, g := range p.Link.Captured() {
		counts[g]++
	}
	for _, x := range a {
		if counts[x] != 1 {
			t.Fatalf("frame %v arrived %d times", x, counts[x])
		}
	}
}

func testUnprotectProtect(t *testing.T, h Harness) {
	p := h.Setup(t, 1)[0]
	a := send(t, p.Link, UDP4, seq(1, 3)...)
	WaitHeld(t, p.Buffer, 3)
	noErr(t, "Barrier(1)", p.Buffer.Barrier(1))
	b := send(t, p.Link, ARP, seq(10, 2)...)
	WaitHeld(t, p.Buffer, 5)
	noneOf(t, p.Link, "before Unprotect", append(a, b...))
	noErr(t, "Unprotect", p.Buffer.Unprotect())
	waitAll(t, p.Link, append(a, b...))
	c := send(t, p.Link, UDP6, seq(20, 3)...)
	waitAll(t, p.Link, c) // passes with no barrier or release
	noErr(t, "Protect", p.Buffer.Protect())
	d := send(t, p.Link, UDP4, seq(30, 3)...)
	WaitHeld(t, p.Buffer, 3)
	noneOf(t, p.Link, "after Protect", d)
	noErr(t, "Barrier(2)", p.Buffer.Barrier(2))
	noErr(t, "Release(2)", p.Buffer.Release(2))
	waitAll(t, p.Link, d)
}

func testDiscard(t *testing.T, h Harness) {
	p := h.Setup(t, 1)[0]
	a := send(t, p.Link, UDP4, seq(1, 3)...)
	a = append(a, send(t, p.Link, ARP, 4)...)
	WaitHeld(t, p.Buffer, 4)
	noErr(t, "Barrier(1)", p.Buffer.Barrier(1))
	noErr(t, "Discard", p.Buffer.Discard())
	noErr(t, "Release(1) after Discard", p.Buffer.Release(1))
	noneOf(t, p.Link, "discarded", a)
	if s := p.Buffer.Stats(); s.HeldFrames != 0 {
		t.Errorf("HeldFrames = %d after Discard", s.HeldFrames)
	}
	b := send(t, p.Link, UDP4, seq(10, 2)...)
	WaitHeld(t, p.Buffer, 2)
	noErr(t, "Barrier(2)", p.Buffer.Barrier(2))
	noErr(t, "Release(2)", p.Buffer.Release(2))
	waitAll(t, p.Link, b)
	noneOf(t, p.Link, "discarded", a)
}

func testClose(t *testing.T, h Harness) {
	p := h.Setup(t, 1)[0]
	a := send(t, p.Link, UDP4, seq(1, 3)...)
	a = append(a, send(t, p.Link, ARP, 4)...)
	WaitHeld(t, p.Buffer, 4)
	noErr(t, "Barrier(1)", p.Buffer.Barrier(1))
	noErr(t, "Close", p.Buffer.Close())
	noneOf(t, p.Link, "closed", a)
	if err := p.Buffer.Release(1); !errors.Is(err, netbuf.ErrClosed) {
		t.Fatalf("Release after Close: %v, want ErrClosed", err)
	}
	if err := p.Buffer.Barrier(2); !errors.Is(err, netbuf.ErrClosed) {
		t.Fatalf("Barrier after Close: %v, want ErrClosed", err)
	}
	noErr(t, "Close again", p.Buffer.Close())
	noneOf(t, p.Link, "closed", a)
}

func testEveryProtocol(t *testing.T, h Harness) {
	p := h.Setup(t, 1)[0]
	var all []Tag
	for i, pr := range AllProtos {
		all = append(all, send(t, p.Link, pr, uint32(40+i))...)
	}
	WaitHeld(t, p.Buffer, uint64(len(all)))
	noErr(t, "Barrier(1)", p.Buffer.Barrier(1))
	for _, x := range all {
		noneOf(t, p.Link, fmt.Sprintf("%v before release", x.Proto), []Tag{x})
	}
	noErr(t, "Release(1)", p.Buffer.Release(1))
	waitAll(t, p.Link, all)
}

func testTwoDevices(t *testing.T, h Harness) {
	ps := h.Setup(t, 2)
	a := send(t, ps[0].Link, UDP4, seq(1, 3)...)
	a = append(a, send(t, ps[0].Link, ARP, 4)...)
	b := send(t, ps[1].Link, UDP4, seq(101, 3)...)
	b = append(b, send(t, ps[1].Link, ARP, 104)...)
	WaitHeld(t, ps[0].Buffer, 4)
	WaitHeld(t, ps[1].Buffer, 4)
	noErr(t, "Barrier nic0", ps[0].Buffer.Barrier(1))
	noErr(t, "Barrier nic1", ps[1].Buffer.Barrier(7))
	noErr(t, "Release nic0", ps[0].Buffer.Release(1))
	waitAll(t, ps[0].Link, a)
	noneOf(t, ps[1].Link, "nic1 while only nic0 released", b)
	noErr(t, "Release nic1", ps[1].Buffer.Release(7))
	waitAll(t, ps[1].Link, b)
}
