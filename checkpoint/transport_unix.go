package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// The unix transport: the local replication channel (the demo, tests, a
// standby and primary on one host). Unlike loopback TCP it knows who is
// at the other end: both ends check the peer's credentials (SO_PEERCRED)
// and talk only to root or to their own user, so that another local user
// can neither feed the standby a stream nor pose as the standby and read
// guest memory.

// ErrPeerCredentials: the process at the other end of a unix socket is
// neither root nor this process's user.
var ErrPeerCredentials = errors.New("checkpoint: unix peer is neither root nor this user")

// PeerCred returns the credentials of the process at the other end of c,
// as the kernel recorded them at connect (listen) time.
func PeerCred(c *net.UnixConn) (*syscall.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	if cerr != nil {
		return nil, fmt.Errorf("SO_PEERCRED: %w", cerr)
	}
	return cred, nil
}

// checkPeer admits root and this process's effective user.
func checkPeer(c *net.UnixConn) error {
	cred, err := PeerCred(c)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPeerCredentials, err)
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
		return fmt.Errorf("%w: uid %d (pid %d)", ErrPeerCredentials, cred.Uid, cred.Pid)
	}
	return nil
}

// UnixDialer connects to a standby's unix socket; the connection is
// returned only if the standby runs as root or as this user.
type UnixDialer struct{ Path string }

// Dial implements Dialer.
func (d UnixDialer) Dial(ctx context.Context) (Conn, error) {
	if !filepath.IsAbs(d.Path) {
		return nil, fmt.Errorf("checkpoint: unix socket %q: not an absolute path", d.Path)
	}
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "unix", d.Path)
	if err != nil {
		return nil, err
	}
	uc := c.(*net.UnixConn)
	if err := checkPeer(uc); err != nil {
		c.Close()
		return nil, fmt.Errorf("checkpoint: standby at %s: %w", d.Path, err)
	}
	return uc, nil
}

func (d UnixDialer) String() string { return "unix:" + d.Path }

// UnixListener accepts primaries on a unix socket, root's or this
// user's only.
type UnixListener struct {
	ln   *net.UnixListener
	path string
	done chan struct{}
	once sync.Once
	// Refused, if set before the first Accept, is told of every peer
	// refused for its credentials.
	Refused func(err error)
	// AcceptError, if set before the first Accept, is told of each
	// accept error retried.
	AcceptError func(err error, retry time.Duration)
}

// ListenUnix creates the socket path (absolute), mode 0600. A socket left
// there by a process that died is replaced; one that answers, or a file
// that is not a socket, is not.
func ListenUnix(path string) (*UnixListener, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("checkpoint: unix socket %q: not an absolute path", path)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("checkpoint: unix socket %s: a file that is not a socket is in the way", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("checkpoint: unix socket %s is in use", path)
		}
		os.Remove(path)
	}
	// Bind under a temporary name, make it 0600, then rename it into
	// place: the socket never stands at path with the umask's mode, not
	// even for a moment (connect finds a socket by its inode, so the
	// rename keeps it bound).
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false) // Close removes path, not tmp
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("checkpoint: unix socket %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("checkpoint: unix socket %s: %w", path, err)
	}
	return &UnixListener{ln: ln, path: path, done: make(chan struct{})}, nil
}

// Accept implements Listener: it returns the next peer that runs as root
// or as this user, and closes the others.
func (l *UnixListener) Accept() (Conn, error) {
	for {
		c, err := acceptRetrying(l.ln, l.done, l.AcceptError)
		if err != nil {
			return nil, err
		}
		uc := c.(*net.UnixConn)
		if err := checkPeer(uc); err != nil {
			uc.Close()
			if l.Refused != nil {
				l.Refused(err)
			}
			continue
		}
		return uc, nil
	}
}

// Close implements Listener; it removes the socket.
func (l *UnixListener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.ln.Close()
		os.Remove(l.path)
	})
	return err
}

// Path is the socket's path.
func (l *UnixListener) Path() string { return l.path }

func (l *UnixListener) String() string { return "unix:" + l.path }
