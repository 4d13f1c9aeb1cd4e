package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/xl-kemari/xl-kemari/diskbuf/nbd"
)

// The disk front (docs/disk.md): a long-lived `xl-kemari disk serve NAME`
// process per protected disk serves the disk's store over NBD to a
// /dev/nbdN of this host and publishes the device for block-kemari.
// While `start` protects the domain, the front hands the device over to
// it (a "lease"): it drains and releases its sockets, start reattaches
// the same /dev/nbdN with a server of its own over a diskbuf.Primary
// gated by the engine, and gives it back when it ends; if start dies,
// its sockets die with it and the front reattaches. The guest's I/O
// waits in the kernel meanwhile (nbd's dead-connection timeout).

// diskNameRE is a disk name as block-kemari accepts it.
var diskNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// errDiskName: not a disk name.
var errDiskName = errors.New("disk name")

// frontName maps a block-kemari target to its disk name: NAME, or
// /dev/NAME as libxl may write a target without a leading slash.
func frontName(target string) (string, error) {
	n := strings.TrimPrefix(target, "/dev/")
	if !diskNameRE.MatchString(n) {
		return "", fmt.Errorf("%w: %q is not a disk name ([A-Za-z0-9][A-Za-z0-9._-]*, at most 64 bytes)", errDiskName, target)
	}
	return n, nil
}

// frontBackendID is the NBD_ATTR_BACKEND_IDENTIFIER of disk name's device:
// every reconfigure must repeat it.
func frontBackendID(name string) string { return "xl-kemari:" + name }

// defaultDiskDir holds a host's disk stores: the store of disk NAME is
// DIR/NAME (a file, or a symlink to a block device), on the primary the
// guest's disk, on the standby its copy.
const defaultDiskDir = "/var/lib/xl-kemari/disk"

// resolveDiskDir is --disk-dir, else $KEMARI_DISK_DIR, else
// defaultDiskDir.
func resolveDiskDir(e *env, flag string) string {
	if flag != "" {
		return flag
	}
	if d := e.Getenv("KEMARI_DISK_DIR"); d != "" {
		return d
	}
	return defaultDiskDir
}

// diskPaths are the rendezvous files of disk name under the run
// directory: published holds "/dev/nbdN\n" while the device is served,
// sock is the front's control socket.
type diskPaths struct{ dir, name string }

func (p diskPaths) published() string { return filepath.Join(p.dir, "disk", p.name) }
func (p diskPaths) sock() string      { return filepath.Join(p.dir, "disk", p.name+".sock") }

// frontRequest / frontResponse are the lines of the front's control
// socket (JSON, one per line).
type frontRequest struct {
	Op string `json:"op"` // "lease", "return", "detach", "status"
}

type frontResponse struct {
	OK     bool   `json:"ok"`
	Error  string `json:"error,omitempty"`
	Index  uint32 `json:"index"`
	Store  string `json:"store,omitempty"`
	Size   int64  `json:"size,omitempty"`
	Leased bool   `json:"leased,omitempty"`
	Heals  int64  `json:"heals,omitempty"`
	PID    int    `json:"pid,omitempty"`
}

// frontConfig is what a front needs.
type frontConfig struct {
	Name    string
	Store   string
	RunDir  string
	Dev     nbd.Device // the kernel (*nbd.Kernel), or a fake in tests
	Attach  nbd.AttachConfig
	Reuse   bool // reattach the published /dev/nbdN (a restarted front)
	Log     *slog.Logger
	Backend nbd.Backend // nil: open Store
	// LinkDead, if set, waits until the kernel declared index's socket
	// dead (NBD_CMD_LINK_DEAD) or the deadline passed: a reconfigure
	// before that replaces nothing (Linux answers success and drops the
	// new socket; the heal loop would retry).
	LinkDead func(index uint32, deadline time.Time)
}

// front serves one disk.
type front struct {
	cfg   frontConfig
	paths diskPaths
	srv   *nbd.Server
	back  nbd.Backend
	ln    *net.UnixListener
	log   *slog.Logger

	mu     sync.Mutex
	att    *nbd.Attachment // nil while leased
	cancel context.CancelFunc
	index  uint32
	leased bool
	done   chan struct{} // closed by detach
	closed bool
}

// newFront opens the store, attaches (or, Reuse, reattaches) the device,
// listens on the control socket and publishes the device.
func newFront(cfg frontConfig) (*front, error) {
	if _, err := frontName(cfg.Name); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	f := &front{cfg: cfg, paths: diskPaths{cfg.RunDir, cfg.Name}, log: cfg.Log, done: make(chan struct{})}
	b := cfg.Backend
	if b == nil {
		fb, err := nbd.OpenFile(cfg.Store, false)
		if err != nil {
			return nil, fmt.Errorf("disk %s: store: %w", cfg.Name, err)
		}
		b = fb
	}
	if b.Size() == 0 || b.Size()%512 != 0 {
		return nil, fmt.Errorf("disk %s: store %s is %d bytes, not a positive multiple of 512", cfg.Name, cfg.Store, b.Size())
	}
	srv, err := nbd.NewServer(nbd.Config{Name: cfg.Name, Backend: b, IOFlusher: true,
		Logf: func(format string, args ...any) { f.log.Warn(fmt.Sprintf(format, args...)) }})
	if err != nil {
		return nil, err
	}
	f.srv, f.back = srv, b
	if err := os.MkdirAll(filepath.Dir(f.paths.sock()), 0o700); err != nil {
		return nil, fmt.Errorf("disk %s: %w", cfg.Name, err)
	}
	ln, err := listenFrontSocket(f.paths.sock())
	if err != nil {
		return nil, fmt.Errorf("disk %s: %w", cfg.Name, err)
	}
	f.ln = ln
	var prev *uint32
	if cfg.Reuse {
		if idx, err := readPublished(f.paths.published()); err == nil {
			prev = &idx
		}
	}
	if err := f.attach(prev); err != nil {
		ln.Close()
		os.Remove(f.paths.sock())
		return nil, err
	}
	if err := writeFileAtomic(f.paths.published(), fmt.Sprintf("/dev/nbd%d\n", f.index)); err != nil {
		f.detach()
		f.finish()
		return nil, fmt.Errorf("disk %s: publish: %w", cfg.Name, err)
	}
	return f, nil
}

// attach connects the device (prev nil) or reattaches /dev/nbd*prev.
func (f *front) attach(prev *uint32) error {
	ctx, cancel := context.WithCancel(context.Background())
	var a *nbd.Attachment
	var err error
	if prev != nil {
		a, err = nbd.Reattach(ctx, f.cfg.Dev, f.srv, *prev, f.cfg.Attach)
	} else {
		cfg := f.cfg.Attach
		a, err = nbd.Attach(ctx, f.cfg.Dev, f.srv, cfg)
	}
	if err != nil {
		cancel()
		return fmt.Errorf("disk %s: %w", f.cfg.Name, err)
	}
	f.mu.Lock()
	f.att, f.cancel, f.index = a, cancel, a.Index
	f.mu.Unlock()
	f.log.Info("disk served", "disk", f.cfg.Name, "device", a.Path(), "store", f.cfg.Store, "reattached", prev != nil)
	return nil
}

// release drains the server (every admitted request answered, the store
// synced) and drops this process's sockets to the device; the kernel
// holds what the guest sends meanwhile. The gate stays closed until
// reattach.
func (f *front) release() error {
	f.mu.Lock()
	a, cancel := f.att, f.cancel
	f.mu.Unlock()
	if a == nil {
		return errors.New("the device is leased already")
	}
	ctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	if _, err := f.srv.Quiesce(ctx); err != nil {
		return err
	}
	if err := f.back.Flush(); err != nil {
		f.srv.Resume()
		return fmt.Errorf("flush %s: %w", f.cfg.Store, err)
	}
	cancel()
	if err := a.Wait(); err != nil {
		f.log.Warn("disk release", "disk", f.cfg.Name, "err", err)
	}
	f.mu.Lock()
	f.att, f.leased = nil, true
	f.mu.Unlock()
	if f.cfg.LinkDead != nil {
		f.cfg.LinkDead(f.index, time.Now().Add(10*time.Second))
	}
	return nil
}

// takeBack reattaches after a lease ended (returned, or its holder died).
func (f *front) takeBack() error {
	if f.cfg.LinkDead != nil {
		f.cfg.LinkDead(f.index, time.Now().Add(10*time.Second))
	}
	f.srv.Resume()
	idx := f.index
	if err := f.attach(&idx); err != nil {
		return err
	}
	f.mu.Lock()
	f.leased = false
	f.mu.Unlock()
	return nil
}

// detach disconnects the device and unpublishes it (block-kemari remove).
func (f *front) detach() error {
	f.mu.Lock()
	a := f.att
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	f.mu.Unlock()
	os.Remove(f.paths.published())
	var err error
	if a != nil {
		err = a.Detach()
	} else {
		err = f.cfg.Dev.Disconnect(f.index)
	}
	f.ln.Close()
	os.Remove(f.paths.sock())
	return err
}

// finish ends serve's caller (after detach was answered).
func (f *front) finish() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.done:
	default:
		close(f.done)
	}
}

// close stops serving the control socket but leaves the device attached
// and published: a restarted front (Reuse) reattaches it before the
// dead-connection timeout, and the guest sees no error.
func (f *front) close() {
	f.mu.Lock()
	cancel := f.cancel
	f.mu.Unlock()
	f.ln.Close()
	if cancel != nil {
		cancel()
	}
}

// serve answers control connections until detach or close.
func (f *front) serve() {
	for {
		c, err := f.ln.AcceptUnix()
		if err != nil {
			return
		}
		go f.handle(c)
	}
}

func (f *front) handle(c *net.UnixConn) {
	defer c.Close()
	reply := func(r frontResponse) error {
		b, _ := json.Marshal(r)
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Write(append(b, '\n'))
		return err
	}
	if !peerAllowed(c) {
		reply(frontResponse{Error: "permission denied"})
		return
	}
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	req, err := readFrontRequest(br)
	if err != nil {
		reply(frontResponse{Error: err.Error()})
		return
	}
	c.SetReadDeadline(time.Time{})
	f.mu.Lock()
	st := frontResponse{OK: true, Index: f.index, Store: f.cfg.Store, Size: f.srv.Size(), Leased: f.leased, PID: os.Getpid()}
	if f.att != nil {
		st.Heals = f.att.Heals()
	}
	f.mu.Unlock()
	switch req.Op {
	case "status":
		reply(st)
	case "detach":
		defer f.finish()
		if err := f.detach(); err != nil {
			reply(frontResponse{Error: err.Error()})
			return
		}
		reply(st)
	case "lease":
		if err := f.release(); err != nil {
			reply(frontResponse{Error: "lease: " + err.Error()})
			return
		}
		f.log.Info("disk leased", "disk", f.cfg.Name, "device", fmt.Sprintf("/dev/nbd%d", f.index))
		st.Leased = true
		if reply(st) != nil {
			f.reclaim("the lease's holder went away before it was answered")
			return
		}
		// The holder keeps the connection for the lease's life: a
		// "return" line (it released its sockets) or its end (it died,
		// and its sockets with it).
		why := "the lease's holder ended"
		if r, err := readFrontRequest(br); err == nil && r.Op == "return" {
			why = ""
		}
		err := f.reclaim(why)
		if why == "" {
			if err != nil {
				reply(frontResponse{Error: err.Error()})
			} else {
				reply(frontResponse{OK: true, Index: f.index})
			}
		}
	default:
		reply(frontResponse{Error: fmt.Sprintf("unknown op %q (want status, lease, return or detach)", req.Op)})
	}
}

// reclaim takes the device back after a lease.
func (f *front) reclaim(why string) error {
	if why != "" {
		f.log.Warn("disk lease lost; serving again", "disk", f.cfg.Name, "why", why)
	}
	f.mu.Lock()
	closed := f.closed
	f.mu.Unlock()
	if closed {
		return nil
	}
	if err := f.takeBack(); err != nil {
		f.log.Error("disk reattach after lease", "disk", f.cfg.Name, "err", err)
		return err
	}
	return nil
}

func readFrontRequest(br *bufio.Reader) (frontRequest, error) {
	line, err := br.ReadBytes('\n')
	if err != nil {
		return frontRequest{}, fmt.Errorf("no request: %w", err)
	}
	var r frontRequest
	if err := json.Unmarshal(line, &r); err != nil {
		return frontRequest{}, fmt.Errorf("bad request: %w", err)
	}
	return r, nil
}

// listenFrontSocket listens on path, root (and this user) only. A stale
// socket (nobody answers) is replaced; a live one is an error.
func listenFrontSocket(path string) (*net.UnixListener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s: another front serves this disk", path)
	}
	os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// readPublished reads the /dev/nbdN a front published.
func readPublished(path string) (uint32, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	n, ok := strings.CutPrefix(s, "/dev/nbd")
	if !ok {
		return 0, fmt.Errorf("%s: %q is not /dev/nbdN", path, s)
	}
	idx, err := strconv.ParseUint(n, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not /dev/nbdN", path, s)
	}
	return uint32(idx), nil
}

func writeFileAtomic(path, content string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// frontCall sends one request to the front of disk name and returns its
// answer.
func frontCall(runDir, name, op string, timeout time.Duration) (frontResponse, error) {
	c, err := net.DialTimeout("unix", diskPaths{runDir, name}.sock(), timeout)
	if err != nil {
		return frontResponse{}, fmt.Errorf("disk %s: no front serves it: %w", name, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	b, _ := json.Marshal(frontRequest{Op: op})
	if _, err := c.Write(append(b, '\n')); err != nil {
		return frontResponse{}, fmt.Errorf("disk %s: %w", name, err)
	}
	return readFrontResponse(bufio.NewReader(c), name)
}

func readFrontResponse(br *bufio.Reader, name string) (frontResponse, error) {
	line, err := br.ReadBytes('\n')
	if err != nil {
		return frontResponse{}, fmt.Errorf("disk %s: front's answer: %w", name, err)
	}
	var r frontResponse
	if err := json.Unmarshal(line, &r); err != nil {
		return frontResponse{}, fmt.Errorf("disk %s: front's answer: %w", name, err)
	}
	if !r.OK {
		return r, fmt.Errorf("disk %s: front: %s", name, r.Error)
	}
	return r, nil
}

// frontLease is start's hold on a front's device: while it lasts, the
// device is served by this process (Serve) and the front waits.
type frontLease struct {
	name string
	Resp frontResponse
	conn net.Conn
	br   *bufio.Reader

	att    *nbd.Attachment
	cancel context.CancelFunc
}

// leaseFront asks the front of disk name for its device. The front
// drains, syncs and releases it before answering.
func leaseFront(runDir, name string) (*frontLease, error) {
	c, err := net.DialTimeout("unix", diskPaths{runDir, name}.sock(), 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("disk %s: no front serves it (is block-kemari the disk's script, and the domain running?): %w", name, err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	b, _ := json.Marshal(frontRequest{Op: "lease"})
	if _, err := c.Write(append(b, '\n')); err != nil {
		c.Close()
		return nil, fmt.Errorf("disk %s: %w", name, err)
	}
	br := bufio.NewReader(c)
	r, err := readFrontResponse(br, name)
	if err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return &frontLease{name: name, Resp: r, conn: c, br: br}, nil
}

// Serve reattaches the leased device to srv.
func (l *frontLease) Serve(dev nbd.Device, srv *nbd.Server, cfg nbd.AttachConfig) error {
	ctx, cancel := context.WithCancel(context.Background())
	a, err := nbd.Reattach(ctx, dev, srv, l.Resp.Index, cfg)
	if err != nil {
		cancel()
		return fmt.Errorf("disk %s: %w", l.name, err)
	}
	l.att, l.cancel = a, cancel
	return nil
}

// End drops this process's sockets (after srv answered what it admitted:
// the caller quiesces or stops the engine first) and gives the device
// back to the front, which reattaches it.
func (l *frontLease) End() error {
	if l.cancel != nil {
		l.cancel()
		l.att.Wait()
	}
	defer l.conn.Close()
	l.conn.SetDeadline(time.Now().Add(20 * time.Second))
	b, _ := json.Marshal(frontRequest{Op: "return"})
	if _, err := l.conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("disk %s: return the device: %w", l.name, err)
	}
	_, err := readFrontResponse(l.br, l.name)
	return err
}
