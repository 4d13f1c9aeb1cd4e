// Package wirecap records the frames on a network interface with the
// kernel's receive timestamps, for tests that must judge from outside
// when a guest's output left: the output-commit checks of test/netns
// (namespaces on this machine) and of the Xen lab (a real dom0 bridge).
//
// Walk-through:
//
//	c, err := wirecap.Open("", "xenbr0") // "" = this network namespace
//	defer c.Close()
//	... run the clients ...
//	ok := c.WaitFor(10*time.Second, func(fs []wirecap.Frame) bool { ... })
//	frames, _ := c.Snapshot()
//
// Timestamps come from SO_TIMESTAMPNS (CLOCK_REALTIME at reception by the
// kernel), so they are comparable with the wall-clock times the engine
// logs (xl-kemari --events) on the same host, and do not depend on when a
// goroutine got to read the frame.
package wirecap

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/xl-kemari/xl-kemari/netbuf/auto/host"
)

// ErrOpen: the capture socket could not be set up.
var ErrOpen = errors.New("wirecap: open")

// Frame is one captured frame.
type Frame struct {
	Time time.Time // the kernel's receive timestamp
	Out  bool      // sent by this host (PACKET_OUTGOING)
	Data []byte    // from the Ethernet header on
}

// Capture records every frame on one interface, both directions.
type Capture struct {
	fd   int
	done chan struct{}
	wg   sync.WaitGroup

	mu sync.Mutex
	// Protected by mu.
	frames []Frame
	change chan struct{}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Open starts capturing on ifname in the network namespace at nsPath
// ("" = the caller's).
func Open(nsPath, ifname string) (*Capture, error) {
	c := &Capture{done: make(chan struct{}), change: make(chan struct{}), fd: -1}
	err := host.InNetNS(nsPath, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		c.fd = fd
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	})
	if err == nil {
		for _, o := range [][2]int{{unix.SO_TIMESTAMPNS, 1}, {unix.SO_RCVBUFFORCE, 16 << 20}} {
			if err = unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, o[0], o[1]); err != nil {
				break
			}
		}
	}
	if err == nil {
		// A blocked recvmsg is not woken by close: wake up every 50 ms
		// to notice Close.
		tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
		err = unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	}
	if err != nil {
		if c.fd >= 0 {
			unix.Close(c.fd)
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrOpen, ifname, err)
	}
	c.wg.Add(1)
	go c.read()
	return c, nil
}

// Close stops the capture. The frames stay readable.
func (c *Capture) Close() {
	select {
	case <-c.done:
		return
	default:
	}
	close(c.done)
	c.wg.Wait()
	unix.Close(c.fd)
}

func (c *Capture) read() {
	defer c.wg.Done()
	buf := make([]byte, 1<<16)
	oob := make([]byte, 256)
	for {
		select {
		case <-c.done:
			return
		default:
		}
		n, oobn, _, from, err := unix.Recvmsg(c.fd, buf, oob, 0)
		if err != nil {
			continue // EAGAIN from the timeout, EINTR
		}
		ts := time.Now()
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
					tsp := (*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
					ts = time.Unix(tsp.Unix())
				}
			}
		}
		out := false
		if ll, ok := from.(*unix.SockaddrLinklayer); ok {
			out = ll.Pkttype == unix.PACKET_OUTGOING
		}
		f := Frame{Time: ts, Out: out, Data: append([]byte(nil), buf[:n]...)}
		c.mu.Lock()
		c.frames = append(c.frames, f)
		close(c.change)
		c.change = make(chan struct{})
		c.mu.Unlock()
	}
}

// Snapshot returns the frames captured so far and a channel closed at the
// next one.
func (c *Capture) Snapshot() ([]Frame, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.frames[:len(c.frames):len(c.frames)], c.change
}

// WaitFor blocks until pred holds for the frames captured, or d passes
// (then it returns false): the bound of a wait for a frame that must come.
func (c *Capture) WaitFor(d time.Duration, pred func([]Frame) bool) bool {
	timeout := time.NewTimer(d)
	defer timeout.Stop()
	for {
		fs, ch := c.Snapshot()
		if pred(fs) {
			return true
		}
		select {
		case <-ch:
		case <-timeout.C:
			return false
		}
	}
}
