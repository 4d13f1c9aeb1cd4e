// Package arbiter decides which host may run a protected domain when the
// primary and the standby lose each other (design I4: one active copy).
//
// Each side asks only after it has declared its peer lost: the primary
// before it releases output unprotected, the standby before it activates
// the replica. The first to ask for a protection session wins it for good;
// the other is refused and must stand down (the primary fences its guest,
// the standby discards its replica). Without an arbiter ("none") both
// proceed, which is safe only under the fail-stop assumption that a silent
// peer is a dead one: xl-kemari says so in a warning at start.
//
// Backends: none, mem (in process, for tests), file:PATH (a lease file on
// storage both hosts share, the VMware FT approach).
package arbiter

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// Role of the asking side.
type Role string

// Roles.
const (
	Primary Role = "primary"
	Standby Role = "standby"
)

// ErrBadSpec: an arbiter setting that cannot be parsed.
var ErrBadSpec = errors.New("arbiter: bad arbiter setting")

// Arbiter grants at most one side of a session the right to be active.
type Arbiter interface {
	// Configured is false for "none": the engine then acts on the
	// fail-stop assumption.
	Configured() bool
	// Acquire asks for session on behalf of role. Granted true: role owns
	// the session (also when it already did). Granted false: the other
	// side owns it. An error means the arbiter could not be reached; the
	// caller keeps waiting (holding output, or keeping the replica paused)
	// and asks again.
	Acquire(ctx context.Context, session [16]byte, role Role) (granted bool, err error)
}

// Open parses an arbiter setting: "none", "file:PATH". ("etcd://..." is
// reserved and refused until implemented.)
func Open(spec string) (Arbiter, error) {
	switch {
	case spec == "" || spec == "none":
		return None{}, nil
	case strings.HasPrefix(spec, "file:"):
		p := strings.TrimPrefix(spec, "file:")
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("%w: %q: the lease path must be absolute", ErrBadSpec, spec)
		}
		return &File{Dir: p}, nil
	case strings.HasPrefix(spec, "etcd://"):
		return nil, fmt.Errorf("%w: %q: the etcd arbiter is not available in this build", ErrBadSpec, spec)
	}
	return nil, fmt.Errorf("%w: %q (want none, file:PATH or etcd://HOST:PORT/PREFIX)", ErrBadSpec, spec)
}

// None is the absent arbiter: every request is granted.
type None struct{}

// Configured implements Arbiter.
func (None) Configured() bool { return false }

// Acquire implements Arbiter.
func (None) Acquire(context.Context, [16]byte, Role) (bool, error) { return true, nil }

// Mem is an in-process arbiter shared by both sides of a test cluster.
type Mem struct {
	mu sync.Mutex
	// Protected by mu.
	owner map[[16]byte]Role
}

// Configured implements Arbiter.
func (*Mem) Configured() bool { return true }

// Acquire implements Arbiter.
func (m *Mem) Acquire(_ context.Context, s [16]byte, r Role) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.owner == nil {
		m.owner = map[[16]byte]Role{}
	}
	if o, ok := m.owner[s]; ok {
		return o == r, nil
	}
	m.owner[s] = r
	return true, nil
}

// Owner reports who won session, if anyone.
func (m *Mem) Owner(s [16]byte) (Role, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.owner[s]
	return o, ok
}

// File arbitrates through a directory on storage both hosts share: the
// first side to create <Dir>/<session> (O_EXCL, under an flock of the
// directory's lock file) owns the session.
type File struct{ Dir string }

// Configured implements Arbiter.
func (*File) Configured() bool { return true }

// Acquire implements Arbiter.
func (f *File) Acquire(_ context.Context, s [16]byte, r Role) (bool, error) {
	if err := os.MkdirAll(f.Dir, 0o700); err != nil {
		return false, fmt.Errorf("arbiter: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(f.Dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return false, fmt.Errorf("arbiter: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return false, fmt.Errorf("arbiter: lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	name := filepath.Join(f.Dir, hex.EncodeToString(s[:]))
	fd, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err == nil {
		_, werr := fd.WriteString(string(r) + "\n")
		if cerr := fd.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return false, fmt.Errorf("arbiter: %w", werr)
		}
		return true, nil
	}
	if !errors.Is(err, os.ErrExist) {
		return false, fmt.Errorf("arbiter: %w", err)
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return false, fmt.Errorf("arbiter: %w", err)
	}
	return strings.TrimSpace(string(b)) == string(r), nil
}
