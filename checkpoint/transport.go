package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Conn is one replication connection: a reliable, ordered byte stream in
// both directions (TCP, an ssh pipe, TLS, or an in-memory pipe).
type Conn = io.ReadWriteCloser

// Dialer opens connections to the standby (primary side).
type Dialer interface {
	// Dial connects to the standby. It honours ctx's deadline.
	Dial(ctx context.Context) (Conn, error)
	// String names the peer for logs and status.
	String() string
}

// Listener accepts connections from primaries (standby side).
type Listener interface {
	// Accept waits for the next connection; it returns an error once the
	// listener is closed.
	Accept() (Conn, error)
	Close() error
	String() string
}

// ErrNotLoopback: the plain TCP transport was given a routable address. It
// carries guest memory unencrypted and unauthenticated, so it is limited to
// loopback (the demo and tests); real deployments use ssh or tls.
var ErrNotLoopback = errors.New("checkpoint: the tcp transport only serves loopback addresses; use ssh or tls")

func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("checkpoint: address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return fmt.Errorf("%w: %q", ErrNotLoopback, addr)
	}
	return nil
}

// TCPDialer dials a loopback TCP address.
type TCPDialer struct{ Addr string }

// Dial implements Dialer.
func (d TCPDialer) Dial(ctx context.Context) (Conn, error) {
	if err := checkLoopback(d.Addr); err != nil {
		return nil, err
	}
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp", d.Addr)
	if err != nil {
		return nil, err
	}
	tuneTCP(c)
	return c, nil
}

func (d TCPDialer) String() string { return "tcp:" + d.Addr }

// notsentLowat bounds the bytes the kernel holds written but not yet
// sent on a replication socket (TCP_NOTSENT_LOWAT): a write blocks
// beyond it, so a heartbeat the sender writes next waits behind at most
// this much unsent checkpoint data plus what is in flight (the link's
// bandwidth-delay product), not behind a 4 MiB send buffer.
const notsentLowat = 128 << 10

func tuneTCP(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
		tc.SetWriteBuffer(4 << 20)
		tc.SetReadBuffer(4 << 20)
		if rc, err := tc.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) {
				// Best effort: a kernel without it queues as before.
				unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, notsentLowat)
			})
		}
	}
}

// TCPListener accepts on a loopback TCP address. Accept outlives
// passing shortages (EMFILE, ENFILE, ...) with back-off, as TLSListener.
type TCPListener struct {
	ln   net.Listener
	done chan struct{}
	once sync.Once
	// AcceptError, if set before the first Accept, is told of each
	// accept error retried.
	AcceptError func(err error, retry time.Duration)
}

// ListenTCP listens on a loopback address ("127.0.0.1:0" picks a port).
// Plain TCP authenticates nobody: any local user can connect, so
// xl-kemari offers it only behind --insecure-tcp.
func ListenTCP(addr string) (*TCPListener, error) {
	if err := checkLoopback(addr); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &TCPListener{ln: ln, done: make(chan struct{})}, nil
}

// Accept implements Listener.
func (l *TCPListener) Accept() (Conn, error) {
	c, err := acceptRetrying(l.ln, l.done, l.AcceptError)
	if err != nil {
		return nil, err
	}
	tuneTCP(c)
	return c, nil
}

// AcceptRetrying accepts from ln, retrying with back-off the errors a
// process outlives (EMFILE, ENFILE, ENOBUFS, ENOMEM, ECONNABORTED, ...),
// each reported to report if not nil; it returns net.ErrClosed once done
// is closed, and any other error wrapped. For every listener of the
// command (control sockets too), so that running out of descriptors for
// a moment does not close one for good.
func AcceptRetrying(ln net.Listener, done <-chan struct{}, report func(error, time.Duration)) (net.Conn, error) {
	return acceptRetrying(ln, done, report)
}

func acceptRetrying(ln net.Listener, done <-chan struct{}, report func(error, time.Duration)) (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err == nil {
			return c, nil
		}
		select {
		case <-done:
			return nil, net.ErrClosed
		default:
		}
		if errors.Is(err, net.ErrClosed) || !retryableAccept(err) {
			return nil, fmt.Errorf("checkpoint: listener %s: accept: %w", ln.Addr(), err)
		}
		if !acceptRetry(&delay, done, report, err) {
			return nil, net.ErrClosed
		}
	}
}

// Close implements Listener.
func (l *TCPListener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.ln.Close()
	})
	return err
}

// Addr is the address listened on.
func (l *TCPListener) Addr() string { return l.ln.Addr().String() }

func (l *TCPListener) String() string { return "tcp:" + l.Addr() }

// PipeNetwork is an in-memory transport: a Dialer and a Listener joined by
// net.Pipe, for tests. Wrap lets a test interpose on every connection
// (fault injection).
type PipeNetwork struct {
	// Wrap and WrapStandby, if set, are applied to the primary's and the
	// standby's end of each connection (fault injection).
	Wrap        func(Conn) Conn
	WrapStandby func(Conn) Conn

	mu sync.Mutex
	// Protected by mu.
	closed bool
	down   bool

	pending chan Conn
	done    chan struct{} // closed by Close; pending is never closed, so a racing Dial cannot panic
}

// NewPipeNetwork returns an empty in-memory network.
func NewPipeNetwork() *PipeNetwork {
	return &PipeNetwork{pending: make(chan Conn, 4), done: make(chan struct{})}
}

// ErrNetDown: the in-memory network refuses connections (SetDown).
var ErrNetDown = errors.New("checkpoint: network down")

// SetDown makes Dial fail (a partition), or work again.
func (n *PipeNetwork) SetDown(down bool) {
	n.mu.Lock()
	n.down = down
	n.mu.Unlock()
}

// Dial implements Dialer.
func (n *PipeNetwork) Dial(ctx context.Context) (Conn, error) {
	n.mu.Lock()
	if n.closed || n.down {
		n.mu.Unlock()
		return nil, ErrNetDown
	}
	a, b := net.Pipe()
	n.mu.Unlock()
	var sb Conn = b
	if n.WrapStandby != nil {
		sb = n.WrapStandby(sb)
	}
	select {
	case n.pending <- sb:
	case <-ctx.Done():
		a.Close()
		b.Close()
		return nil, ctx.Err()
	case <-n.done:
		a.Close()
		b.Close()
		return nil, ErrNetDown
	}
	var c Conn = a
	if n.Wrap != nil {
		c = n.Wrap(c)
	}
	return c, nil
}

// Accept implements Listener.
func (n *PipeNetwork) Accept() (Conn, error) {
	select {
	case c := <-n.pending:
		return c, nil
	case <-n.done:
		return nil, net.ErrClosed
	}
}

// Close implements Listener.
func (n *PipeNetwork) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.closed {
		n.closed = true
		close(n.done)
	}
	return nil
}

func (n *PipeNetwork) String() string { return "pipe" }
