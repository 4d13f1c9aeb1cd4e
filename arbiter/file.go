package arbiter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// File arbitrates through a directory on storage both hosts share (the
// VMware FT approach). Every operation runs under an flock of
// <Dir>/.lock, so it is atomic against the other host's.
//
// Ownership: the first side to create <Dir>/<session> (O_EXCL; contents
// the role) owns the session for good.
//
// Leases: <Dir>/<session>.lease holds "role nonce seq ttl". Its holder
// rewrites it with the next seq every ttl/3 (write to a temporary file,
// rename). An observer never compares the two hosts' clocks: it notes,
// by its own monotonic clock, when it first saw the current contents, and
// judges the lease lapsed when they have not changed for ttl; it then
// removes the file (reaps it), so that the holder's next renewal finds
// it gone and the holder loses the lease. Release removes the file.
//
// Holder lock: the holder of a lease also keeps <Dir>/<session>.lease.<nonce>
// open with an exclusive flock for the lease's life. An observer that
// can take that flock knows the holder's process is gone (the kernel, or
// the NFS lock manager, drops a dead process's locks) or that its lease
// ended there, and reaps the lease at once instead of after its ttl: a
// killed primary's lease is gone within milliseconds. A holder that lives
// but does not run (SIGSTOP, a hung host) keeps its lock, so then only
// the ttl rule above applies, as it does when the lock file is absent
// (an older holder) or cannot be tried. This needs locks that all hosts
// see, as the directory lock already does: a mount with nolock or
// local_lock= gets no holder lock (the holder checks /proc/self/mountinfo)
// and falls back on the ttl alone. On NFS, flock is a POSIX lock, which a
// process's own second open would not conflict with: a File never probes
// a holder lock it holds itself.
//
// Hung storage: every filesystem operation (of a call) runs in a
// goroutine bounded by the call's ctx; a call on a hung mount (an NFS
// server gone, a blocked flock) returns ctx.Err() by ctx's deadline and
// leaves that goroutine blocked in the kernel until the mount answers.
// At most one such goroutine per File exists: later calls wait for it,
// also bounded by their ctx, rather than stacking more. What the
// abandoned operation still does when it completes is safe to find
// later: a decision record is read by the next Acquire, a lease that no
// one renews lapses.
//
// Set Fault before first use; a File must not be copied after first use.
type File struct {
	Dir string
	// Fault, when not nil, runs before each operation, named "acquire",
	// "hold", "renew", "release" or "wait", in the goroutine that performs
	// the filesystem calls: it may block (a stand-in for a hung mount) or
	// fail the operation.
	Fault func(op string) error

	gateOnce sync.Once
	gate     chan struct{} // one token: the filesystem goroutine in flight

	mu sync.Mutex
	// Protected by mu.
	seen  map[string]sighting // lease path → when these contents were first seen
	mine  map[string]bool     // holder lock paths this File holds
	noLck *bool               // Dir's mount shares no locks between hosts (nil: not checked)
}

type sighting struct {
	contents string
	first    time.Time
}

var _ Leaser = (*File)(nil)

// Configured implements Arbiter.
func (*File) Configured() bool { return true }

// run runs fn under the directory lock in the File's one filesystem
// goroutine, bounded by ctx.
func (f *File) run(ctx context.Context, op string, fn func() error) error {
	f.gateOnce.Do(func() { f.gate = make(chan struct{}, 1) })
	select {
	case f.gate <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("arbiter: %s %s: waiting for an earlier filesystem operation: %w", op, f.Dir, ctx.Err())
	}
	res := make(chan error, 1)
	go func() {
		defer func() { <-f.gate }()
		if f.Fault != nil {
			if err := f.Fault(op); err != nil {
				res <- err
				return
			}
		}
		res <- f.locked(fn)
	}()
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return fmt.Errorf("arbiter: %s %s: %w (the storage did not answer)", op, f.Dir, ctx.Err())
	}
}

func (f *File) locked(fn func() error) error {
	if err := os.MkdirAll(f.Dir, 0o700); err != nil {
		return fmt.Errorf("arbiter: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(f.Dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("arbiter: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("arbiter: lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	return fn()
}

func (f *File) recordPath(s [16]byte) string { return filepath.Join(f.Dir, hex.EncodeToString(s[:])) }
func (f *File) leasePath(s [16]byte) string  { return f.recordPath(s) + ".lease" }

// owner reads the decision record. Called under the lock.
func (f *File) owner(s [16]byte) (Role, bool, error) {
	b, err := os.ReadFile(f.recordPath(s))
	if errors.Is(err, os.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("arbiter: %w", err)
	}
	return Role(strings.TrimSpace(string(b))), true, nil
}

type leaseFile struct {
	role  Role
	nonce string
	seq   uint64
	ttl   time.Duration
}

func (l leaseFile) String() string {
	return fmt.Sprintf("%s %s %d %d\n", l.role, l.nonce, l.seq, l.ttl.Nanoseconds())
}

func parseLeaseFile(b string) (leaseFile, error) {
	fs := strings.Fields(b)
	if len(fs) != 4 {
		return leaseFile{}, fmt.Errorf("want 4 fields, have %d", len(fs))
	}
	seq, err1 := strconv.ParseUint(fs[2], 10, 64)
	ttl, err2 := strconv.ParseInt(fs[3], 10, 64)
	if err := errors.Join(err1, err2); err != nil || ttl <= 0 {
		return leaseFile{}, fmt.Errorf("bad seq or ttl: %q", b)
	}
	return leaseFile{Role(fs[0]), fs[1], seq, time.Duration(ttl)}, nil
}

// readLease reads session's lease file. Called under the lock.
func (f *File) readLease(s [16]byte) (leaseFile, string, bool, error) {
	b, err := os.ReadFile(f.leasePath(s))
	if errors.Is(err, os.ErrNotExist) {
		return leaseFile{}, "", false, nil
	}
	if err != nil {
		return leaseFile{}, "", false, fmt.Errorf("arbiter: %w", err)
	}
	l, err := parseLeaseFile(string(b))
	if err != nil {
		return leaseFile{}, "", false, fmt.Errorf("arbiter: lease file %s: %v", f.leasePath(s), err)
	}
	return l, string(b), true, nil
}

// live returns session's lease if it is live as this File sees it,
// reaping it when it has lapsed. Called under the lock.
func (f *File) live(s [16]byte) (leaseFile, bool, error) {
	l, raw, ok, err := f.readLease(s)
	if err != nil || !ok {
		return leaseFile{}, false, err
	}
	p := f.leasePath(s)
	now := time.Now()
	f.mu.Lock()
	if f.seen == nil {
		f.seen = map[string]sighting{}
	}
	sg, had := f.seen[p]
	if !had || sg.contents != raw {
		sg = sighting{raw, now}
		f.seen[p] = sg
	}
	f.mu.Unlock()
	if now.Sub(sg.first) < l.ttl && !f.holderGone(p, l) {
		return l, true, nil
	}
	f.removeHolder(p, l)
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return leaseFile{}, false, fmt.Errorf("arbiter: reap %s: %w", p, err)
	}
	f.forget(p)
	return leaseFile{}, false, nil
}

func holderPath(lease string, l leaseFile) string { return lease + "." + l.nonce }

// holderGone reports whether the holder lock of lease l at path p exists
// and is free: its holder is dead, or its lease ended there. Any doubt
// (no lock file, an error, a lock this File holds) is "not gone". Called
// under the lock.
func (f *File) holderGone(p string, l leaseFile) bool {
	hp := holderPath(p, l)
	f.mu.Lock()
	own := f.mine[hp]
	f.mu.Unlock()
	if own {
		return false
	}
	fd, err := os.OpenFile(hp, os.O_RDWR, 0)
	if err != nil {
		return false
	}
	defer fd.Close()
	if err := syscall.Flock(int(fd.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return false // held (EWOULDBLOCK), or cannot tell
	}
	syscall.Flock(int(fd.Fd()), syscall.LOCK_UN)
	return true
}

// removeHolder removes the holder lock file of lease l at p, if any.
// Called under the lock.
func (f *File) removeHolder(p string, l leaseFile) {
	if err := os.Remove(holderPath(p, l)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return
	}
}

// takeHolder creates and locks the holder lock of lease l at p, which this
// File then holds until the returned func; nil when the mount shares no
// locks between hosts or the lock cannot be taken (the ttl rule alone
// then applies). Called under the lock.
func (f *File) takeHolder(p string, l leaseFile) func() {
	if f.locksLocal() {
		return nil
	}
	hp := holderPath(p, l)
	fd, err := os.OpenFile(hp, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return nil
	}
	if err := syscall.Flock(int(fd.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		fd.Close()
		os.Remove(hp)
		return nil
	}
	f.mu.Lock()
	if f.mine == nil {
		f.mine = map[string]bool{}
	}
	f.mine[hp] = true
	f.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			// Closing drops the lock: observers find the lease gone.
			fd.Close()
			f.mu.Lock()
			delete(f.mine, hp)
			f.mu.Unlock()
		})
	}
}

// locksLocal reports whether Dir is on a mount whose locks other hosts do
// not see (NFS with nolock or local_lock=), from /proc/self/mountinfo;
// unknown is false (the directory lock needs shared locks anyway).
func (f *File) locksLocal() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.noLck != nil {
		return *f.noLck
	}
	v := mountLocksLocal(f.Dir)
	f.noLck = &v
	return v
}

func mountLocksLocal(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	if d, err := filepath.EvalSymlinks(dir); err == nil {
		dir = d
	}
	best, opts := -1, ""
	for _, line := range strings.Split(string(b), "\n") {
		// id parent major:minor root mountpoint options ... - fstype source superoptions
		fs := strings.Fields(line)
		if len(fs) < 10 {
			continue
		}
		mp := fs[4]
		if (dir == mp || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > best {
			best, opts = len(mp), fs[5]
			for i, x := range fs {
				if x == "-" && i+3 < len(fs) {
					opts += "," + fs[i+3]
				}
			}
		}
	}
	for _, o := range strings.Split(opts, ",") {
		if o == "nolock" || strings.HasPrefix(o, "local_lock=") && o != "local_lock=none" {
			return true
		}
	}
	return false
}

func (f *File) forget(p string) {
	f.mu.Lock()
	delete(f.seen, p)
	f.mu.Unlock()
}

// writeLease replaces session's lease file atomically. Called under the lock.
func (f *File) writeLease(s [16]byte, l leaseFile) error {
	p := f.leasePath(s)
	tmp := p + ".tmp-" + l.nonce
	if err := os.WriteFile(tmp, []byte(l.String()), 0o600); err != nil {
		return fmt.Errorf("arbiter: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("arbiter: %w", err)
	}
	return nil
}

// Acquire implements Arbiter.
func (f *File) Acquire(ctx context.Context, s [16]byte, r Role) (bool, error) {
	var granted bool
	err := f.run(ctx, "acquire", func() error {
		if o, ok, err := f.owner(s); err != nil || ok {
			granted = o == r
			return err
		}
		if l, ok, err := f.live(s); err != nil {
			return err
		} else if ok && l.role != r {
			return fmt.Errorf("%w (the %s's)", ErrHeld, l.role)
		}
		fd, err := os.OpenFile(f.recordPath(s), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return fmt.Errorf("arbiter: %w", err)
		}
		_, werr := fd.WriteString(string(r) + "\n")
		if err := errors.Join(werr, fd.Sync(), fd.Close()); err != nil {
			return fmt.Errorf("arbiter: %w", err)
		}
		granted = true
		return nil
	})
	if err != nil {
		return false, err // granted may still be written by an abandoned call
	}
	return granted, nil
}

// Hold implements Leaser. The lease file carries ttl, so an observer
// needs no configuration to judge it.
func (f *File) Hold(ctx context.Context, s [16]byte, r Role, ttl time.Duration) (Lease, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("arbiter: hold: ttl %v is not positive", ttl)
	}
	var nb [8]byte
	_, _ = rand.Read(nb[:])
	mine := leaseFile{role: r, nonce: hex.EncodeToString(nb[:]), seq: 1, ttl: ttl}
	start := time.Now()
	var unlock func()
	err := f.run(ctx, "hold", func() error {
		if o, ok, err := f.owner(s); err != nil {
			return err
		} else if ok && o != r {
			return fmt.Errorf("%w (the %s won it)", ErrDenied, o)
		}
		if l, ok, err := f.live(s); err != nil {
			return err
		} else if ok {
			return fmt.Errorf("%w (the %s's)", ErrHeld, l.role)
		}
		if err := f.writeLease(s, mine); err != nil {
			return err
		}
		unlock = f.takeHolder(f.leasePath(s), mine)
		return nil
	})
	if err != nil {
		if unlock != nil {
			unlock() // an abandoned call: the lease lapses, as an unrenewed one
		}
		return nil, err
	}
	var mu sync.Mutex // seq: renewals are sequential, but a Release may race one
	renew := func(ctx context.Context) error {
		return f.run(ctx, "renew", func() error {
			l, _, ok, err := f.readLease(s)
			if err != nil {
				return err
			}
			if !ok || l.nonce != mine.nonce {
				return fmt.Errorf("arbiter: renew %s: %w (reaped or replaced)", f.leasePath(s), ErrStopRenewing)
			}
			mu.Lock()
			mine.seq++
			next := mine
			mu.Unlock()
			return f.writeLease(s, next)
		})
	}
	drop := func(ctx context.Context) error {
		return f.run(ctx, "release", func() error {
			l, _, ok, err := f.readLease(s)
			if err != nil || !ok || l.nonce != mine.nonce {
				return err
			}
			f.removeHolder(f.leasePath(s), mine)
			if err := os.Remove(f.leasePath(s)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("arbiter: %w", err)
			}
			return nil
		})
	}
	h := newHeld(realClock{}, start, ttl, renew, drop)
	if unlock != nil {
		h.setGone(unlock)
	}
	return h, nil
}

// WaitLapsed implements Leaser. Storage sends no notifications: it looks
// every ttl/4 (at most every second, at least every 10 ms).
func (f *File) WaitLapsed(ctx context.Context, s [16]byte, r Role) error {
	for {
		var (
			held bool
			ttl  time.Duration
		)
		err := f.run(ctx, "wait", func() error {
			l, ok, err := f.live(s)
			held, ttl = ok && l.role == r, l.ttl
			return err
		})
		if err != nil || !held {
			return err
		}
		select {
		case <-time.After(min(max(ttl/4, 10*time.Millisecond), time.Second)):
		case <-ctx.Done():
			return fmt.Errorf("arbiter: wait %s: %w", f.Dir, ctx.Err())
		}
	}
}
