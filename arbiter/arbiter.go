package arbiter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Role of the asking side.
type Role string

// Roles.
const (
	Primary Role = "primary"
	Standby Role = "standby"
)

// Errors. Anything else an Arbiter returns means "could not be reached":
// the caller keeps what the answer decides about as it is and asks again.
var (
	// ErrBadSpec: an arbiter setting that cannot be parsed.
	ErrBadSpec = errors.New("arbiter: bad arbiter setting")
	// ErrHeld: a live lease of another holder exists on the session.
	// Transient: it ends when that lease is released or lapses
	// (Leaser.WaitLapsed says when); ask again then.
	ErrHeld = errors.New("arbiter: session leased by another holder")
	// ErrDenied: Hold was refused because the other role owns the session
	// (it won Acquire). Final, as a false grant from Acquire is.
	ErrDenied = errors.New("arbiter: session owned by the other role")
	// ErrLeaseLost: a lease ended without Release: it lapsed (no renewal
	// in time by the holder's own clock), or the arbiter revoked or
	// reaped it. Lease.Err returns it (wrapped).
	ErrLeaseLost = errors.New("arbiter: lease lost")
	// ErrReleased: Lease.Err after Release.
	ErrReleased = errors.New("arbiter: lease released")
)

// Arbiter grants at most one side of a session the right to be active.
type Arbiter interface {
	// Configured is false for "none": the engine then acts on the
	// fail-stop assumption.
	Configured() bool
	// Acquire asks for session on behalf of role.
	//
	// Preconditions: none; both sides may call it at any time, also
	// concurrently, from several goroutines or hosts.
	// Success: granted true: role owns the session for good (also when it
	// already did). Granted false: the other side owns it for good; the
	// caller must stand down (the primary fences its guest, the standby
	// discards its replica).
	// Failure: nothing was decided for this call (a decision recorded by
	// a call that failed is returned by the next). ErrHeld: the other
	// role holds a live lease (Leaser) on the session; any other error:
	// the arbiter could not be reached, or ctx ended. Either way the
	// caller keeps waiting (holding output, or keeping the replica
	// paused) and asks again.
	// Acquire returns by ctx's end at the latest, also on a hung backend.
	Acquire(ctx context.Context, session [16]byte, role Role) (granted bool, err error)
}

// Leaser is the lease capability of an Arbiter (mem, file and etcd have
// it; none has not): a time-bounded hold on a session that its holder
// renews in the background and loses when it can no longer renew. It lets
// the holder bind an action to the lease (the primary releases output
// only while Valid) and the peer take over as soon as the lease is gone
// (WaitLapsed) rather than after its own timeout.
//
// A session has at most one live lease, of either role. A lease is live
// on the arbiter from Hold until Release, or until the arbiter has not
// seen a renewal for its ttl (measured by the arbiter, or for file by the
// observing host's monotonic clock, never by comparing two hosts' wall
// clocks). Its holder considers it valid for less: from before the
// request that granted or renewed it, ttl less Margin(ttl), by the
// holder's own monotonic clock, so that Valid is false before any peer
// can see the lease lapse, provided the two clocks' rates differ by less
// than the margin (ttl/10).
type Leaser interface {
	Arbiter
	// Hold takes a lease on session for role.
	//
	// Preconditions: ttl > 0 (backends may round it up: etcd to whole
	// seconds and its server's minimum; the holder's validity is computed
	// from ttl as given, or, for etcd, from the whole seconds asked for,
	// which the server's ttl is never below).
	// Success: a Lease that is Valid now and renewed every ttl/3 until
	// Release or loss.
	// Failure: no lease is held. ErrDenied: the other role owns the
	// session (Acquire). ErrHeld: a live lease exists (of either role,
	// also an earlier one of role's own, e.g. before a restart: wait for
	// it with WaitLapsed). Anything else: unreachable or ctx ended; a
	// lease the arbiter may still record from such a call is never
	// renewed and lapses after ttl.
	// Concurrency: safe from any goroutine and host; of concurrent Holds
	// on one session at most one succeeds. Returns by ctx's end.
	Hold(ctx context.Context, session [16]byte, role Role, ttl time.Duration) (Lease, error)
	// WaitLapsed returns nil once no live lease of role exists on
	// session: at once if there is none, else when it is released or
	// lapses. An error means ctx ended (wrapping ctx.Err()) or the arbiter
	// could not be reached; the lease may still be live.
	// A nil return is a statement about that instant only: the caller
	// that wants the session next calls Acquire or Hold, which decide.
	// Concurrency: safe from any goroutine and host.
	WaitLapsed(ctx context.Context, session [16]byte, role Role) error
}

// Abandoner is an optional capability of a Lease: Abandon ends it at the
// holder as the death of the holder's process would, without a word to
// the arbiter (no Release): Valid is false and Done closed when it
// returns. What the arbiter then sees is what it would see of a killed
// holder: for file:, the holder's lock dropped, so that an observer finds
// the lease gone at once (File); for the others, a lease no one renews,
// which lapses after its ttl. The engine uses it to model a killed
// primary in process (Primary.Run's ctx). Idempotent; safe from any
// goroutine.
type Abandoner interface {
	Abandon()
}

// Lease is a holder's view of a lease from Leaser.Hold. Its methods are
// safe for concurrent use.
type Lease interface {
	// Valid reports whether the holder may still act on the lease at now,
	// a reading of the holder's clock (time.Now() in production; it must
	// carry a monotonic reading). It needs no I/O and does not depend on
	// the keep-alive goroutine being scheduled: a renewal that hangs
	// leaves Valid true only until the last granted validity ends. False
	// once Done is closed.
	Valid(now time.Time) bool
	// Until is the end of the current validity (holder's clock): Valid(t)
	// is false for every t at or after it until a renewal moves it.
	Until() time.Time
	// Done is closed when the lease ends for good: Release, a validity
	// that ran out without renewal, or loss on the arbiter (revoked,
	// reaped). It may close a little after Until; Valid does not wait
	// for it.
	Done() <-chan struct{}
	// Err is nil until Done is closed, then ErrReleased or ErrLeaseLost
	// (wrapped with the reason).
	Err() error
	// Release ends the lease: Valid is false and Done closed when it
	// returns, whatever the error. The error says whether the arbiter
	// heard: if not (unreachable, ctx ended), the lease lapses there after
	// its ttl instead. Idempotent.
	Release(ctx context.Context) error
}

// Margin is how much shorter than ttl a holder's validity is (ttl/10):
// headroom for clock-rate differences between the holder and the arbiter
// and for the action bound to the lease (a release of output) that began
// just before it ended.
func Margin(ttl time.Duration) time.Duration { return ttl / 10 }

var (
	schemesMu sync.Mutex
	// Protected by schemesMu.
	schemes = map[string]func(endpoint, prefix string) (Arbiter, error){}
)

// Register makes Open serve scheme ("etcd") with open, given the endpoint
// and key prefix Open parsed from the setting. Backends whose client
// libraries are heavy live in subpackages that register themselves, so
// that only the programs that import them link those libraries (the
// engine and its tests do not). Safe for concurrent use; a later call for
// the same scheme replaces the earlier.
func Register(scheme string, open func(endpoint, prefix string) (Arbiter, error)) {
	schemesMu.Lock()
	defer schemesMu.Unlock()
	schemes[scheme] = open
}

// Open parses an arbiter setting: "none", "file:PATH" or
// "etcd://HOST:PORT/PREFIX". It does not contact the arbiter.
func Open(spec string) (Arbiter, error) {
	switch {
	case spec == "" || spec == "none":
		return None{}, nil
	case strings.HasPrefix(spec, "file:"):
		p := strings.TrimPrefix(spec, "file:")
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("%w: arbiter %q: the lease path must be absolute", ErrBadSpec, spec)
		}
		return &File{Dir: p}, nil
	case strings.HasPrefix(spec, "etcd://"):
		ep, prefix, err := parseEtcd(spec)
		if err != nil {
			return nil, err
		}
		schemesMu.Lock()
		open := schemes["etcd"]
		schemesMu.Unlock()
		if open == nil {
			return nil, fmt.Errorf("%w: arbiter %q: the etcd arbiter is not linked into this program (import arbiter/etcd)", ErrBadSpec, spec)
		}
		return open(ep, prefix)
	case strings.HasPrefix(spec, "etcd+tls://") || strings.HasPrefix(spec, "etcds://"):
		return nil, fmt.Errorf("%w: arbiter %q: etcd over TLS is not available in this build (use etcd:// on a trusted management network)", ErrBadSpec, spec)
	}
	return nil, fmt.Errorf("%w: arbiter %q (want none, file:PATH or etcd://HOST:PORT/PREFIX)", ErrBadSpec, spec)
}

// parseEtcd splits etcd://HOST:PORT/PREFIX into "HOST:PORT" and "/PREFIX"
// (no trailing slash).
func parseEtcd(spec string) (endpoint, prefix string, err error) {
	bad := func(why string) (string, string, error) {
		return "", "", fmt.Errorf("%w: arbiter %q: %s", ErrBadSpec, spec, why)
	}
	u, perr := url.Parse(spec)
	if perr != nil {
		return bad("expected etcd://HOST:PORT/PREFIX")
	}
	if u.User != nil {
		return bad("user information is not accepted in the URL (credentials do not belong in a config line)")
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return bad("expected etcd://HOST:PORT/PREFIX without a query or fragment")
	}
	host, port, serr := net.SplitHostPort(u.Host)
	if serr != nil || host == "" || port == "" {
		return bad("the etcd endpoint needs HOST:PORT, e.g. etcd.example:2379")
	}
	p := strings.TrimRight(u.Path, "/")
	if p == "" {
		return bad("expected a key prefix after the endpoint, e.g. etcd://" + u.Host + "/xl-kemari")
	}
	return u.Host, p, nil
}

// None is the absent arbiter: every request is granted.
type None struct{}

// Configured implements Arbiter.
func (None) Configured() bool { return false }

// Acquire implements Arbiter.
func (None) Acquire(context.Context, [16]byte, Role) (bool, error) { return true, nil }

// SessionName is the name under which backends store session: a hash of
// it, not the session itself, because the session is also the secret by
// which a reconnecting primary proves to its standby that it is the same
// primary (anyone who can list the lease directory or the etcd prefix
// must not learn it). The etcd backend uses it; file: keeps the session's
// hex, as earlier releases wrote it, in a directory only root may read.
func SessionName(session [16]byte) string {
	h := sha256.Sum256(append([]byte("xl-kemari arbiter session v1\x00"), session[:]...))
	return hex.EncodeToString(h[:16])
}

// Bounded is bounded for backends in other packages (arbiter/etcd).
func Bounded(ctx context.Context, fault func(op string) error, op string, fn func() error) error {
	return bounded(ctx, fault, op, fn)
}

// bounded runs fault (when not nil) and then fn in a goroutine of their
// own and waits for them or for ctx's end, whichever comes first. On
// ctx's end it returns an error wrapping ctx.Err() and abandons the
// goroutine, which finishes when the backend answers (a hung mount, a
// stopped server): fn must not write what the caller reads unless it
// returned, and its effects must be safe to be found by a later call.
func bounded(ctx context.Context, fault func(op string) error, op string, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("arbiter: %s: %w", op, err)
	}
	res := make(chan error, 1)
	go func() {
		if fault != nil {
			if err := fault(op); err != nil {
				res <- err
				return
			}
		}
		res <- fn()
	}()
	select {
	case err := <-res:
		if err != nil && ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
			return fmt.Errorf("arbiter: %s: %w (%v)", op, ctx.Err(), err)
		}
		return err
	case <-ctx.Done():
		return fmt.Errorf("arbiter: %s: %w", op, ctx.Err())
	}
}
