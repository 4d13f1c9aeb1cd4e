package arbiter

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"time"
)

// Mem is an in-process arbiter shared by both sides of a test cluster.
// It implements Leaser on Clock, which both sides share: a lease is live
// until its holder's last renewal (or grant) plus ttl, by Clock.
//
// The zero value is ready to use. Set Clock and Fault before first use.
type Mem struct {
	// Clock is the time of leases; nil is the real clock.
	Clock Clock
	// Fault, when not nil, runs before each operation, named "acquire",
	// "hold", "renew", "release" or "wait", in the goroutine that performs
	// it: it may block (a hung arbiter) or fail it with an error.
	Fault func(op string) error

	mu sync.Mutex
	// Protected by mu.
	owner   map[[16]byte]Role
	leases  map[[16]byte]*memLease
	changed chan struct{} // closed and replaced when a lease is released or revoked
}

type memLease struct {
	role    Role
	id      [8]byte
	expires time.Time
}

var _ Leaser = (*Mem)(nil)

// Configured implements Arbiter.
func (*Mem) Configured() bool { return true }

func (m *Mem) init() {
	if m.owner == nil {
		m.owner = map[[16]byte]Role{}
		m.leases = map[[16]byte]*memLease{}
		m.changed = make(chan struct{})
	}
}

// live returns session's lease if it is live at now. Called with mu held.
func (m *Mem) live(s [16]byte, now time.Time) *memLease {
	l := m.leases[s]
	if l == nil || !now.Before(l.expires) {
		return nil
	}
	return l
}

func (m *Mem) notify() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// Acquire implements Arbiter.
func (m *Mem) Acquire(ctx context.Context, s [16]byte, r Role) (bool, error) {
	var granted bool
	err := bounded(ctx, m.Fault, "acquire", func() error {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.init()
		if o, ok := m.owner[s]; ok {
			granted = o == r
			return nil
		}
		if l := m.live(s, clockOr(m.Clock).Now()); l != nil && l.role != r {
			return fmt.Errorf("%w (the %s's)", ErrHeld, l.role)
		}
		m.owner[s] = r
		granted = true
		return nil
	})
	if err != nil {
		return false, err // granted may still be written by an abandoned call
	}
	return granted, nil
}

// Owner reports who won session, if anyone.
func (m *Mem) Owner(s [16]byte) (Role, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.owner[s]
	return o, ok
}

// Hold implements Leaser.
func (m *Mem) Hold(ctx context.Context, s [16]byte, r Role, ttl time.Duration) (Lease, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("arbiter: hold: ttl %v is not positive", ttl)
	}
	clock := clockOr(m.Clock)
	start := clock.Now()
	var id [8]byte
	_, _ = rand.Read(id[:])
	err := bounded(ctx, m.Fault, "hold", func() error {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.init()
		if o, ok := m.owner[s]; ok && o != r {
			return fmt.Errorf("%w (the %s won it)", ErrDenied, o)
		}
		now := clock.Now()
		if l := m.live(s, now); l != nil {
			return fmt.Errorf("%w (the %s's)", ErrHeld, l.role)
		}
		m.leases[s] = &memLease{role: r, id: id, expires: now.Add(ttl)}
		return nil
	})
	if err != nil {
		return nil, err
	}
	renew := func(ctx context.Context) error {
		return bounded(ctx, m.Fault, "renew", func() error {
			m.mu.Lock()
			defer m.mu.Unlock()
			now := clock.Now()
			l := m.live(s, now)
			if l == nil || l.id != id {
				return fmt.Errorf("arbiter: renew: %w", ErrStopRenewing)
			}
			l.expires = now.Add(ttl)
			return nil
		})
	}
	drop := func(ctx context.Context) error {
		return bounded(ctx, m.Fault, "release", func() error {
			m.mu.Lock()
			defer m.mu.Unlock()
			if l := m.leases[s]; l != nil && l.id == id {
				delete(m.leases, s)
				m.notify()
			}
			return nil
		})
	}
	return newHeld(clock, start, ttl, renew, drop), nil
}

// WaitLapsed implements Leaser.
func (m *Mem) WaitLapsed(ctx context.Context, s [16]byte, r Role) error {
	clock := clockOr(m.Clock)
	return bounded(ctx, m.Fault, "wait", func() error {
		for {
			m.mu.Lock()
			m.init()
			now := clock.Now()
			l := m.live(s, now)
			if l == nil || l.role != r {
				m.mu.Unlock()
				return nil
			}
			left, changed := l.expires.Sub(now), m.changed
			m.mu.Unlock()
			select {
			case <-clock.After(left):
			case <-changed:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	})
}
