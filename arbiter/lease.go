package arbiter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Clock is the time source of a backend and of its leases' validity.
// The real one is time.Now and time.After; tests inject a fake one (see
// arbitertest.FakeClock) into Mem.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

func clockOr(c Clock) Clock {
	if c == nil {
		return realClock{}
	}
	return c
}

// ErrStopRenewing, wrapped in what a renew func (NewLease) returns, means
// the arbiter no longer knows the lease: the holder loses it at once.
var ErrStopRenewing = errors.New("arbiter: lease not known to the arbiter")

// held is the holder's side of a lease, common to the backends: a
// validity computed on the holder's clock, a renewer goroutine that calls
// the backend (and may hang in it), and an expirer goroutine that closes
// Done when the validity runs out whatever the renewer is doing.
type held struct {
	clock Clock
	ttl   time.Duration
	// renew extends the lease on the arbiter; wrapping ErrStopRenewing
	// means it is gone there. Other errors are retried at the next tick.
	renew func(ctx context.Context) error
	// drop removes the lease on the arbiter (Release).
	drop func(ctx context.Context) error
	// gone, if not nil, runs once when the lease ends at the holder, for
	// whatever reason (file: drops the holder's lock).
	gone     func()
	goneOnce sync.Once

	ctx    context.Context // cancelled when the lease ends: stops a renewal in flight
	cancel context.CancelFunc
	done   chan struct{}
	moved  chan struct{} // a renewal moved until (buffered 1): the expirer rereads it

	mu sync.Mutex
	// Protected by mu.
	until    time.Time
	err      error
	released bool
}

// NewLease is the holder's side of a lease for a backend in another
// package (arbiter/etcd): validity on clock (nil: the real clock) from
// start, the instant read before the request that granted the lease was
// sent, to start+ttl-Margin(ttl), moved forward by each renew that
// succeeds (renew runs every ttl/3; an error wrapping ErrStopRenewing ends
// the lease, others are retried); drop runs once, at Release.
func NewLease(clock Clock, start time.Time, ttl time.Duration, renew, drop func(context.Context) error) Lease {
	return newHeld(clockOr(clock), start, ttl, renew, drop)
}

// newHeld starts the lease's goroutines. start is the holder's clock
// read before the request that granted the lease was sent.
func newHeld(clock Clock, start time.Time, ttl time.Duration, renew, drop func(context.Context) error) *held {
	h := &held{clock: clock, ttl: ttl, renew: renew, drop: drop,
		done: make(chan struct{}), moved: make(chan struct{}, 1), until: start.Add(ttl - Margin(ttl))}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	go h.renewer()
	go h.expirer()
	return h
}

func (h *held) Valid(now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err == nil && now.Before(h.until)
}

func (h *held) Until() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.until
}

func (h *held) Done() <-chan struct{} { return h.done }

func (h *held) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// end records why the lease ended, once, and closes done.
func (h *held) end(err error) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return false
	}
	h.err = err
	close(h.done)
	h.cancel()
	if h.gone != nil {
		h.goneOnce.Do(h.gone)
	}
	return true
}

// setGone sets the func run once the lease ends at the holder (also at
// once if it has ended already).
func (h *held) setGone(f func()) {
	h.mu.Lock()
	h.gone = f
	ended := h.err != nil
	h.mu.Unlock()
	if ended {
		h.goneOnce.Do(f)
	}
}

// Abandon implements Abandoner.
func (h *held) Abandon() {
	h.mu.Lock()
	h.released = true // no drop: the arbiter hears nothing
	h.mu.Unlock()
	h.end(fmt.Errorf("%w: abandoned by its holder", ErrLeaseLost))
}

func (h *held) Release(ctx context.Context) error {
	h.mu.Lock()
	first := !h.released
	h.released = true
	h.mu.Unlock()
	h.end(ErrReleased)
	if !first {
		return nil
	}
	return h.drop(ctx)
}

func (h *held) renewer() {
	for {
		select {
		case <-h.clock.After(h.ttl / 3):
		case <-h.done:
			return
		}
		start := h.clock.Now()
		err := h.renew(h.ctx)
		switch {
		case err == nil:
			h.mu.Lock()
			if u := start.Add(h.ttl - Margin(h.ttl)); h.err == nil && u.After(h.until) {
				h.until = u
			}
			h.mu.Unlock()
			select {
			case h.moved <- struct{}{}:
			default:
			}
		case errors.Is(err, ErrStopRenewing):
			h.end(fmt.Errorf("%w: %v", ErrLeaseLost, err))
			return
		}
	}
}

func (h *held) expirer() {
	for {
		u := h.Until()
		now := h.clock.Now()
		if !now.Before(u) {
			h.end(fmt.Errorf("%w: not renewed within its ttl (%v) by the holder's clock", ErrLeaseLost, h.ttl))
			return
		}
		select {
		case <-h.clock.After(u.Sub(now)):
		case <-h.moved:
		case <-h.done:
			return
		}
	}
}
