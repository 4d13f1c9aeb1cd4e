package arbitertest

import (
	"context"
	"sync"
	"time"
)

// FakeClock is an arbiter.Clock that moves only when Advance is called.
// Safe for concurrent use.
type FakeClock struct {
	mu sync.Mutex
	// Protected by mu.
	now    time.Time
	timers []fakeTimer
	added  chan struct{} // closed and replaced when a timer is added
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

// NewFakeClock returns a clock at an arbitrary fixed instant.
func NewFakeClock() *FakeClock {
	return &FakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), added: make(chan struct{})}
}

// Now implements arbiter.Clock.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After implements arbiter.Clock: the channel receives once the clock has
// been advanced by d (at once for d <= 0).
func (c *FakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.timers = append(c.timers, fakeTimer{c.now.Add(d), ch})
	close(c.added)
	c.added = make(chan struct{})
	return ch
}

// Advance moves the clock by d and fires the timers that are due.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, t := range c.timers {
		if t.at.After(c.now) {
			kept = append(kept, t)
			continue
		}
		t.ch <- c.now
	}
	c.timers = kept
}

// WaitTimers blocks until at least n timers are pending (goroutines
// waiting on the clock), or ctx ends.
func (c *FakeClock) WaitTimers(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		have, added := len(c.timers), c.added
		c.mu.Unlock()
		if have >= n {
			return nil
		}
		select {
		case <-added:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Faults is a fault hook for a backend's Fault field: Block makes the
// named operations hang until resumed. The zero value blocks nothing.
type Faults struct {
	mu sync.Mutex
	// Protected by mu.
	blocked map[string]chan struct{}
}

// Hook is the backend's Fault func: it blocks while op (or "*") is
// blocked, then lets the operation go on.
func (f *Faults) Hook(op string) error {
	f.mu.Lock()
	ch := f.blocked[op]
	if ch == nil {
		ch = f.blocked["*"]
	}
	f.mu.Unlock()
	if ch != nil {
		<-ch
	}
	return nil
}

// Block makes ops ("*" for every operation) hang until resume is called;
// resume is idempotent.
func (f *Faults) Block(ops ...string) (resume func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.blocked == nil {
		f.blocked = map[string]chan struct{}{}
	}
	ch := make(chan struct{})
	for _, op := range ops {
		f.blocked[op] = ch
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			for _, op := range ops {
				if f.blocked[op] == ch {
					delete(f.blocked, op)
				}
			}
			f.mu.Unlock()
			close(ch)
		})
	}
}
