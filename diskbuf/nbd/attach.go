package nbd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// setIOFlusher marks the calling thread PR_SET_IO_FLUSHER (Linux 5.6,
// needs CAP_SYS_RESOURCE): its allocations do not recurse into I/O, so a
// server backing a local /dev/nbdN cannot deadlock on its own writeback.
// The flag is per thread: callers lock their goroutine to the thread.
func setIOFlusher() error { return unix.Prctl(unix.PR_SET_IO_FLUSHER, 1, 0, 0, 0) }

// ioFlusher reports PR_GET_IO_FLUSHER of the calling thread.
func ioFlusher() (bool, error) {
	v, err := unix.PrctlRetInt(unix.PR_GET_IO_FLUSHER, 0, 0, 0, 0)
	return v == 1, err
}

// Device is the kernel side of an attachment, as Attach needs it:
// *Kernel, or a fake in tests.
type Device interface {
	Connect(DeviceConfig) (uint32, error)
	Reconfigure(Reconfig) error
	Disconnect(index uint32) error
}

// AttachConfig tunes Attach.
type AttachConfig struct {
	Index       *uint32 // nil: the kernel picks a free device
	BlockSize   uint64  // default 512
	Connections int     // sockets (default 1)
	// Timeout and DeadConnTimeout: see DeviceConfig. Defaults 30 s and
	// 120 s, so that a restarted xl-kemari has two minutes to Reattach
	// before the guest sees I/O errors.
	Timeout, DeadConnTimeout time.Duration
	ClientFlags              uint64
	BackendID                string
	// NoHeal disables healing: by default, when a socket ends without
	// NBD_CMD_DISC while the attachment is live (the kernel timed a
	// request out and marked the socket dead), a new socketpair is handed
	// to the same device with NBD_CMD_RECONFIGURE, so one slow request
	// does not leave the guest's I/O waiting for a reconfigure that
	// nobody would send.
	NoHeal bool
}

func (c *AttachConfig) defaults() {
	if c.BlockSize == 0 {
		c.BlockSize = 512
	}
	if c.Connections <= 0 {
		c.Connections = 1
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	if c.DeadConnTimeout == 0 {
		c.DeadConnTimeout = 120 * time.Second
	}
}

// Attachment is a server attached to /dev/nbdIndex over socketpairs.
type Attachment struct {
	Index     uint32
	dev       Device
	cfg       AttachConfig
	wg        sync.WaitGroup
	detaching atomic.Bool
	heals     atomic.Int64
	mu        sync.Mutex
	errs      []error
}

// Heals returns how many sockets were replaced after the kernel dropped
// one.
func (a *Attachment) Heals() int64 { return a.heals.Load() }

// Path is the device node.
func (a *Attachment) Path() string { return fmt.Sprintf("/dev/nbd%d", a.Index) }

// socketpairs makes n pairs; it returns the kernel ends as raw fds and
// the server ends as conns.
func socketpairs(n int) (kfds []int, conns []net.Conn, err error) {
	closeAll := func() {
		for _, fd := range kfds {
			unix.Close(fd)
		}
		for _, c := range conns {
			c.Close()
		}
	}
	for i := 0; i < n; i++ {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("nbd: socketpair: %w", err)
		}
		kfds = append(kfds, fds[0])
		f := os.NewFile(uintptr(fds[1]), "nbd-server")
		c, err := net.FileConn(f) // dups the fd
		f.Close()
		if err != nil {
			unix.Close(fds[0])
			closeAll()
			return nil, nil, fmt.Errorf("nbd: socketpair conn: %w", err)
		}
		conns = append(conns, c)
	}
	return kfds, conns, nil
}

// Attach connects srv's export to a kernel nbd device: it makes
// cfg.Connections socketpairs, hands one end of each to the kernel
// (NBD_CMD_CONNECT with the server's size and flags), and serves the
// other ends with ServeTransmission until the device disconnects or ctx
// ends. Set Config.IOFlusher on srv.
func Attach(ctx context.Context, dev Device, srv *Server, cfg AttachConfig) (*Attachment, error) {
	cfg.defaults()
	kfds, conns, err := socketpairs(cfg.Connections)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, fd := range kfds {
			unix.Close(fd) // the kernel holds its own references
		}
	}()
	idx, err := dev.Connect(DeviceConfig{
		Index: cfg.Index, Size: uint64(srv.Size()), BlockSize: cfg.BlockSize,
		ServerFlags: srv.Flags(), ClientFlags: cfg.ClientFlags,
		Timeout: cfg.Timeout, DeadConnTimeout: cfg.DeadConnTimeout,
		BackendID: cfg.BackendID, FDs: kfds,
	})
	if err != nil {
		for _, c := range conns {
			c.Close()
		}
		return nil, err
	}
	a := &Attachment{Index: idx, dev: dev, cfg: cfg}
	a.serve(ctx, srv, conns)
	return a, nil
}

// Reattach hands new sockets to an existing /dev/nbdIndex whose sockets
// died with a previous xl-kemari (NBD_CMD_RECONFIGURE): requests the
// kernel requeued meanwhile are served by srv, and the guest sees no
// error if this happens within the dead-connection timeout.
func Reattach(ctx context.Context, dev Device, srv *Server, index uint32, cfg AttachConfig) (*Attachment, error) {
	cfg.defaults()
	kfds, conns, err := socketpairs(cfg.Connections)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, fd := range kfds {
			unix.Close(fd)
		}
	}()
	if err := dev.Reconfigure(Reconfig{Index: index, FDs: kfds, Timeout: cfg.Timeout, DeadConnTimeout: cfg.DeadConnTimeout, BackendID: cfg.BackendID}); err != nil {
		for _, c := range conns {
			c.Close()
		}
		return nil, err
	}
	a := &Attachment{Index: index, dev: dev, cfg: cfg}
	a.serve(ctx, srv, conns)
	return a, nil
}

func (a *Attachment) serve(ctx context.Context, srv *Server, conns []net.Conn) {
	for _, c := range conns {
		a.wg.Add(1)
		go a.loop(ctx, srv, c)
	}
}

func (a *Attachment) record(err error) {
	a.mu.Lock()
	a.errs = append(a.errs, fmt.Errorf("nbd: /dev/nbd%d: %w", a.Index, err))
	a.mu.Unlock()
}

// loop serves one socket slot, healing it while the attachment is live.
func (a *Attachment) loop(ctx context.Context, srv *Server, c net.Conn) {
	defer a.wg.Done()
	for {
		err := srv.ServeTransmission(ctx, c)
		if err == nil {
			return
		}
		lost := errors.Is(err, ErrConnLost)
		if lost && (ctx.Err() != nil || a.detaching.Load()) {
			return // the end we asked for
		}
		if !lost || a.cfg.NoHeal {
			a.record(err)
			return
		}
		kfds, conns, err := socketpairs(1)
		if err != nil {
			a.record(fmt.Errorf("heal: %w", err))
			return
		}
		err = a.dev.Reconfigure(Reconfig{Index: a.Index, FDs: kfds, Timeout: a.cfg.Timeout, DeadConnTimeout: a.cfg.DeadConnTimeout, BackendID: a.cfg.BackendID})
		unix.Close(kfds[0])
		if err != nil {
			conns[0].Close()
			a.record(fmt.Errorf("heal: %w", err))
			return
		}
		a.heals.Add(1)
		c = conns[0]
	}
}

// Detach disconnects the device (NBD_CMD_DISCONNECT: the kernel sends
// DISC on every socket once its queue is drained) and waits for the
// serving goroutines to end.
func (a *Attachment) Detach() error {
	a.detaching.Store(true)
	err := a.dev.Disconnect(a.Index)
	if err != nil {
		return err
	}
	return a.Wait()
}

// Wait waits for every socket of the attachment to end and returns their
// errors.
func (a *Attachment) Wait() error {
	a.wg.Wait()
	a.mu.Lock()
	defer a.mu.Unlock()
	return errors.Join(a.errs...)
}
