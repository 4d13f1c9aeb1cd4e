package netbuftest

import (
	"sync"
	"testing"

	"github.com/xl-kemari/xl-kemari/netbuf/mem"
)

// memHarness runs the suite against netbuf/mem: frames go straight into
// Buffer.Send and are captured in deliver, which runs synchronously, so
// Flush has nothing to wait for.
type memHarness struct{}

type memCapture struct {
	mu     sync.Mutex
	tags   []Tag
	change chan struct{}
}

type memLink struct {
	buf *mem.Buffer
	cap *memCapture
	mac int
}

func (memHarness) Setup(t *testing.T, n int) []Port {
	c := &memCapture{change: make(chan struct{})}
	var ports []Port
	for i := 0; i < n; i++ {
		buf := mem.New(func(f []byte) {
			if tag, ok := ParseFrame(f); ok {
				c.mu.Lock()
				c.tags = append(c.tags, tag)
				close(c.change)
				c.change = make(chan struct{})
				c.mu.Unlock()
			}
		})
		t.Cleanup(func() { buf.Close() })
		ports = append(ports, Port{Buffer: buf, Link: &memLink{buf: buf, cap: c, mac: i}})
	}
	return ports
}

func (l *memLink) Send(p Proto, n uint32) error {
	l.buf.Send(Frame(p, GuestMAC(l.mac), GuestMAC(99), n))
	return nil
}

func (l *memLink) Captured() []Tag {
	l.cap.mu.Lock()
	defer l.cap.mu.Unlock()
	return suiteTags(l.cap.tags)
}

func (l *memLink) WaitCaptured(t testing.TB, pred func([]Tag) bool) []Tag {
	t.Helper()
	for {
		l.cap.mu.Lock()
		all := append([]Tag(nil), l.cap.tags...)
		ch := l.cap.change
		l.cap.mu.Unlock()
		if pred(all) {
			return suiteTags(all)
		}
		select {
		case <-ch:
		case <-t.Context().Done():
			t.Fatalf("capture: condition not met; captured %v", suiteTags(all))
		}
	}
}

func (l *memLink) Flush(testing.TB) {}

func TestContractMem(t *testing.T) { Run(t, memHarness{}) }
