package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"github.com/xl-kemari/xl-kemari/checkpoint"
)

// The control sockets: every protector (a primary's `start`, a standby's
// `receive` or `listen`) listens on a unix socket in the run directory,
// root-only, through which `status`, `stop` and `failover` talk to it.
// One request per connection, one JSON object per line each way.

// defaultRunDir is where control sockets live; --run-dir or
// KEMARI_RUN_DIR override it (tests run unprivileged in a temp dir).
const defaultRunDir = "/run/xen/kemari"

// Errors of the control channel.
var (
	errControl = errors.New("xl-kemari: control socket")
)

// Control operations.
const (
	opStatus   = "status"
	opStop     = "stop"
	opFailover = "failover"
	// opAttach hands the connection itself, after the answer, to the
	// standby of Domain as a replication stream: how a `receive --stdio`
	// that ssh started for a reconnecting primary reaches the standby
	// that holds the domain's replica (see attachToStandby).
	opAttach = "attach"
	// opAdmit lets the next new protection session of Domain replace
	// the one a listen service serves (xl kemari admit).
	opAdmit = "admit"
)

// ctlRequest is what a client sends.
type ctlRequest struct {
	Op     string `json:"op"`
	Domain string `json:"domain,omitempty"`
	Force  bool   `json:"force,omitempty"`
	// WaitMs bounds a failover's wait for the replica to run.
	WaitMs int64 `json:"wait_ms,omitempty"`
}

// ctlResponse is the protector's answer.
type ctlResponse struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Code is the exit code the client should return when !OK.
	Code       int                 `json:"code,omitempty"`
	PID        int                 `json:"pid"`
	Protectors []checkpoint.Status `json:"protectors"`
}

// ctlError is a refusal with the exit code it maps to.
type ctlError struct {
	code int
	msg  string
}

func (e *ctlError) Error() string { return e.msg }

// ctlHandlers are what a protector lets its control socket do; nil
// entries answer "not supported by this protector".
type ctlHandlers struct {
	Status func() []checkpoint.Status
	// Stop ends protection of domain and returns when it has ended.
	Stop func(ctx context.Context, domain string) error
	// Failover promotes the replica of domain and returns its state.
	Failover func(ctx context.Context, domain string, force bool) error
	// Attach returns where to hand a replication stream for domain, or
	// an error if this protector takes none now. push owns c once called
	// and reports false if the standby ended meanwhile.
	Attach func(domain string) (push func(c net.Conn) bool, err error)
	// Admit lets the next new session of domain replace the current one.
	Admit func(domain string) error
}

// resolveRunDir picks the run directory: flag, then KEMARI_RUN_DIR, then
// the default, which for a user other than root (who cannot write
// /run/xen) is $XDG_RUNTIME_DIR/xl-kemari or TMPDIR/xl-kemari-UID.
func resolveRunDir(e *env, flag string) string {
	if flag != "" {
		return flag
	}
	if d := e.Getenv("KEMARI_RUN_DIR"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return defaultRunDir
	}
	if d := e.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "xl-kemari")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("xl-kemari-%d", os.Geteuid()))
}

// ensureRunDir makes sure dir can hold control sockets: it creates it,
// mode 0700, if it is missing (and its parents, 0755), and otherwise
// accepts only a real directory (not a symbolic link) that this user
// owns and nobody else may enter. It never changes the mode of a
// directory it did not create: a shared directory (a 1777 /tmp, say)
// named by mistake is refused, not made private under its other users.
func ensureRunDir(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return fmt.Errorf("%w: run directory %s: %w", errControl, dir, err)
		}
		// Mkdir, not MkdirAll: it fails if someone made dir meanwhile,
		// which is then checked like any existing directory.
		if err := os.Mkdir(dir, 0o700); err == nil {
			// The umask may have taken bits off, never added any.
			return nil
		} else if !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w: run directory %s: %w", errControl, dir, err)
		}
		fi, err = os.Lstat(dir)
	}
	if err != nil {
		return fmt.Errorf("%w: run directory %s: %w", errControl, dir, err)
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		return fmt.Errorf("%w: run directory %s is a symbolic link; name the directory itself", errControl, dir)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: run directory %s is not a directory", errControl, dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Geteuid() {
		owner := "unknown"
		if ok {
			owner = fmt.Sprint(st.Uid)
		}
		return fmt.Errorf("%w: run directory %s belongs to uid %s, not to this user (uid %d)", errControl, dir, owner, os.Geteuid())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%w: run directory %s has mode %#o: others may enter it; use a private directory (mode 0700)", errControl, dir, perm)
	}
	return nil
}

// socketName maps a protector to its socket file name: primary-DOMAIN
// for a primary (one per domain on a host), ROLE-PID otherwise (a standby
// learns its domain only from the primary's hello).
func socketName(role, domain string, pid int) string {
	if role == "primary" {
		return "primary-" + escapeName(domain) + ".sock"
	}
	return fmt.Sprintf("%s-%d.sock", role, pid)
}

// escapeName keeps a domain name usable as one file name component.
func escapeName(s string) string {
	var b strings.Builder
	for i := range len(s) {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.' && i > 0:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// maxSocketPath is the longest path a unix socket address holds.
const maxSocketPath = 107

// ctlServer serves one protector's control socket.
type ctlServer struct {
	path string
	ln   *net.UnixListener
	h    ctlHandlers
	wg   sync.WaitGroup

	done chan struct{} // closed by Shutdown

	mu sync.Mutex
	// Protected by mu.
	closed bool
}

// listenControl creates the control socket at dir/name. A socket left by a
// protector that died is replaced; one whose owner answers is not.
func listenControl(dir, name string, h ctlHandlers) (*ctlServer, error) {
	if err := ensureRunDir(dir); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, name)
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("%w: path %q is longer than %d bytes; use a shorter --run-dir", errControl, path, maxSocketPath)
	}
	if _, err := os.Lstat(path); err == nil {
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("%w: %s is in use: another protector runs (see xl kemari status)", errControl, path)
		}
		os.Remove(path)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errControl, err)
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		os.Remove(path)
		return nil, fmt.Errorf("%w: %w", errControl, err)
	}
	s := &ctlServer{path: path, ln: ln, h: h, done: make(chan struct{})}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

func (s *ctlServer) serve() {
	defer s.wg.Done()
	for {
		// Out of descriptors for a while (a flood on another listener)
		// must not close the control socket for good.
		nc, err := checkpoint.AcceptRetrying(s.ln, s.done, nil)
		if err != nil {
			return
		}
		c := nc.(*net.UnixConn)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if !s.handle(c) {
				c.Close()
			}
		}()
	}
}

// peerAllowed admits root and the protector's own user: the socket's
// mode already says so; this holds if the directory was made wider.
func peerAllowed(c *net.UnixConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var cred *syscall.Ucred
	var cerr error
	raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	})
	if cerr != nil || cred == nil {
		return false
	}
	return cred.Uid == 0 || int(cred.Uid) == os.Geteuid()
}

// handle answers one request; it reports whether it handed c on (an
// attach), so that the caller must not close it.
func (s *ctlServer) handle(c *net.UnixConn) (kept bool) {
	resp := ctlResponse{PID: os.Getpid()}
	var push func(net.Conn) bool
	defer func() {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		b, _ := json.Marshal(resp)
		_, werr := c.Write(append(b, '\n'))
		c.SetWriteDeadline(time.Time{})
		if push != nil && resp.OK && werr == nil {
			kept = push(c)
		}
	}()
	if !peerAllowed(c) {
		resp.Error, resp.Code = "permission denied", exitFailure
		return
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		resp.Error, resp.Code = "no request: "+err.Error(), exitUsage
		return
	}
	c.SetReadDeadline(time.Time{})
	var req ctlRequest
	if err := json.Unmarshal(line, &req); err != nil {
		resp.Error, resp.Code = "bad request: "+err.Error(), exitUsage
		return
	}
	// A client that goes away (Ctrl-C on `stop`) does not cancel the
	// operation: a half-done stop is worse than a finished one.
	ctx := context.Background()
	err = nil
	switch req.Op {
	case opStatus:
	case opStop:
		if s.h.Stop == nil {
			err = &ctlError{exitFailure, "this protector is not a primary; stop the domain's primary"}
		} else {
			err = s.h.Stop(ctx, req.Domain)
		}
	case opAttach:
		if s.h.Attach == nil {
			err = &ctlError{exitFailure, "this protector takes no replication streams"}
		} else {
			push, err = s.h.Attach(req.Domain)
		}
	case opAdmit:
		if s.h.Admit == nil {
			err = &ctlError{exitFailure, "this protector is not a listen service; admit applies to xl kemari listen"}
		} else {
			err = s.h.Admit(req.Domain)
		}
	case opFailover:
		if s.h.Failover == nil {
			err = &ctlError{exitFailure, "this protector is not a standby; run failover on the standby host"}
		} else {
			fctx, cancel := context.WithTimeout(ctx, time.Duration(max(req.WaitMs, 1000))*time.Millisecond)
			err = s.h.Failover(fctx, req.Domain, req.Force)
			cancel()
		}
	default:
		err = &ctlError{exitUsage, fmt.Sprintf("unknown operation %q", req.Op)}
	}
	if s.h.Status != nil {
		resp.Protectors = s.h.Status()
	}
	if err != nil {
		resp.Error, resp.Code = err.Error(), exitFailure
		var ce *ctlError
		if errors.As(err, &ce) {
			resp.Code = ce.code
		}
		return
	}
	resp.OK = true
	return
}

// Shutdown removes the socket and stops accepting; requests under way go
// on.
func (s *ctlServer) Shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	close(s.done)
	os.Remove(s.path)
	s.ln.Close()
}

// Wait waits (a bounded time) for the requests under way to be answered.
func (s *ctlServer) Wait() {
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}

// Close is Shutdown then Wait.
func (s *ctlServer) Close() {
	s.Shutdown()
	s.Wait()
}

// controlSockets lists the sockets in dir, primaries first.
func controlSockets(dir string) ([]string, error) {
	m, err := filepath.Glob(filepath.Join(dir, "*.sock"))
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(m, func(a, b string) int {
		pa, pb := strings.HasPrefix(filepath.Base(a), "primary-"), strings.HasPrefix(filepath.Base(b), "primary-")
		switch {
		case pa && !pb:
			return -1
		case pb && !pa:
			return 1
		}
		return strings.Compare(a, b)
	})
	return m, nil
}

// ask sends req to the socket at path and waits up to timeout for the
// answer.
func ask(path string, req ctlRequest, timeout time.Duration) (*ctlResponse, error) {
	c, err := net.DialTimeout("unix", path, min(timeout, 5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errControl, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	b, _ := json.Marshal(req)
	if _, err := c.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errControl, path, err)
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return nil, fmt.Errorf("%w: %s: no answer: %w", errControl, path, err)
	}
	var resp ctlResponse
	if err := json.Unmarshal(line, &resp); err != nil {
		return nil, fmt.Errorf("%w: %s: bad answer: %w", errControl, path, err)
	}
	return &resp, nil
}

// UnmarshalJSON reads the protectors' statuses, whose durations
// checkpoint.Dur writes as text ("1.5ms") but cannot read back.
func (r *ctlResponse) UnmarshalJSON(b []byte) error {
	type plain ctlResponse
	var raw struct {
		plain
		Protectors []statusIn `json:"protectors"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*r = ctlResponse(raw.plain)
	r.Protectors = nil
	for _, p := range raw.Protectors {
		st := p.Status
		st.LastPause, st.AvgPause, st.MaxPause = checkpoint.Dur(p.LastPause), checkpoint.Dur(p.AvgPause), checkpoint.Dur(p.MaxPause)
		st.CommitLatency, st.Activation = checkpoint.Dur(p.CommitLatency), checkpoint.Dur(p.Activation)
		r.Protectors = append(r.Protectors, st)
	}
	return nil
}

// statusIn is checkpoint.Status as read from JSON: its duration fields
// shadow the embedded ones.
type statusIn struct {
	checkpoint.Status
	LastPause     textDur `json:"last_pause"`
	AvgPause      textDur `json:"avg_pause"`
	MaxPause      textDur `json:"max_pause"`
	CommitLatency textDur `json:"avg_commit_latency"`
	Activation    textDur `json:"activation_time"`
}

// textDur reads a duration written by checkpoint.Dur.
type textDur time.Duration

func (d *textDur) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = textDur(v)
	return err
}

// protector is one answering control socket and what it protects.
type protector struct {
	Socket string
	PID    int
	Status []checkpoint.Status
}

// survey asks every socket in dir for its status. Sockets nobody answers
// (left by a protector that was killed) are skipped: the next protector of
// that name replaces them.
func survey(dir string, timeout time.Duration) ([]protector, error) {
	socks, err := controlSockets(dir)
	if err != nil {
		return nil, err
	}
	var out []protector
	for _, s := range socks {
		r, err := ask(s, ctlRequest{Op: opStatus}, timeout)
		if err != nil {
			continue
		}
		out = append(out, protector{Socket: s, PID: r.PID, Status: r.Protectors})
	}
	return out, nil
}

// find returns the protectors in dir whose role is role and that protect
// domain.
func find(dir, role, domain string, timeout time.Duration) ([]protector, error) {
	all, err := survey(dir, timeout)
	if err != nil {
		return nil, err
	}
	var out []protector
	for _, p := range all {
		for _, st := range p.Status {
			if st.Role == role && st.Domain == domain {
				out = append(out, p)
				break
			}
		}
	}
	return out, nil
}

// parseArgs parses a subcommand's flags. On --help it returns exitOK and
// false; on an error it prints it, with where to find help, and returns
// exitUsage and false.
func parseArgs(e *env, fs *pflag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK, false
		}
		e.errorf("%s: %v; see 'xl kemari help %s'", fs.Name(), err, fs.Name())
		return exitUsage, false
	}
	return exitOK, true
}
