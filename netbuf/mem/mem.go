// Package mem is the in-process netbuf backend: the simulator's virtual
// NICs send their frames into a Buffer, which hands them to a deliver
// function once the epoch that produced them is acknowledged.
//
// It holds frames in memory only, so "fail closed" is natural: if the
// process dies, the frames die with it.
package mem

import (
	"fmt"
	"sync"

	"github.com/xl-kemari/xl-kemari/netbuf"
)

// DefaultLimit bounds the bytes held per buffer, like the plug qdisc's
// 10 MB limit in upstream Remus.
const DefaultLimit = 64 << 20

type frame struct {
	epoch uint64 // 0: not yet under a barrier
	data  []byte
}

// Buffer is a netbuf.Buffer whose frames come from Send.
type Buffer struct {
	deliver func([]byte)
	limit   uint64
	waiting chan struct{}

	// OnRelease, if set, is called for each frame as it is released with the
	// epoch it belonged to (0 when it passed unprotected). Tests use it to
	// check output commit; it runs on the releasing goroutine.
	OnRelease func(epoch uint64, frame []byte)

	mu sync.Mutex
	// Protected by mu.
	held        []frame
	lastBarrier uint64
	unprotected bool
	closed      bool
	stats       netbuf.Stats
}

var _ netbuf.Buffer = (*Buffer)(nil)

// New returns a buffer that passes released frames to deliver. deliver is
// called without the buffer's lock held, in frame order.
func New(deliver func([]byte)) *Buffer {
	return &Buffer{deliver: deliver, limit: DefaultLimit, waiting: make(chan struct{}, 1)}
}

// SetLimit changes the byte limit (0 means DefaultLimit).
func (b *Buffer) SetLimit(n uint64) {
	if n == 0 {
		n = DefaultLimit
	}
	b.mu.Lock()
	b.limit = n
	b.mu.Unlock()
}

// Send is the guest side: it holds frame (copied) until its epoch is
// released, or passes it through when unprotected. Over the limit the frame
// is dropped, as a full qdisc would, and counted.
func (b *Buffer) Send(data []byte) {
	b.mu.Lock()
	if b.closed {
		b.stats.Dropped++
		b.mu.Unlock()
		return
	}
	if b.unprotected {
		b.stats.Released++
		b.stats.ReleasedBytes += uint64(len(data))
		b.mu.Unlock()
		if b.OnRelease != nil {
			b.OnRelease(0, data)
		}
		b.deliver(data)
		return
	}
	if b.stats.HeldBytes+uint64(len(data)) > b.limit {
		b.stats.Dropped++
		b.stats.LimitHits++
		b.mu.Unlock()
		return
	}
	b.held = append(b.held, frame{data: append([]byte(nil), data...)})
	b.stats.HeldFrames++
	b.stats.HeldBytes += uint64(len(data))
	b.mu.Unlock()
	select {
	case b.waiting <- struct{}{}:
	default:
	}
}

// Barrier implements netbuf.Buffer.Barrier.
func (b *Buffer) Barrier(epoch uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return netbuf.ErrClosed
	}
	if epoch <= b.lastBarrier {
		return fmt.Errorf("%w: barrier %d after %d", netbuf.ErrOrder, epoch, b.lastBarrier)
	}
	for i := len(b.held) - 1; i >= 0 && b.held[i].epoch == 0; i-- {
		b.held[i].epoch = epoch
	}
	b.lastBarrier = epoch
	return nil
}

// Release implements netbuf.Buffer.Release.
func (b *Buffer) Release(epoch uint64) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return netbuf.ErrClosed
	}
	n := 0
	for n < len(b.held) && b.held[n].epoch != 0 && b.held[n].epoch <= epoch {
		n++
	}
	out := b.take(n)
	if epoch > b.stats.LastRelease {
		b.stats.LastRelease = epoch
	}
	b.mu.Unlock()
	b.emit(out)
	return nil
}

// take removes the first n held frames and accounts them as released.
// Preconditions: mu held.
func (b *Buffer) take(n int) []frame {
	out := make([]frame, n)
	copy(out, b.held[:n])
	b.held = append(b.held[:0], b.held[n:]...)
	for _, f := range out {
		b.stats.HeldFrames--
		b.stats.HeldBytes -= uint64(len(f.data))
		b.stats.Released++
		b.stats.ReleasedBytes += uint64(len(f.data))
	}
	return out
}

func (b *Buffer) emit(out []frame) {
	for _, f := range out {
		if b.OnRelease != nil {
			b.OnRelease(f.epoch, f.data)
		}
		b.deliver(f.data)
	}
}

// Unprotect implements netbuf.Buffer.Unprotect.
func (b *Buffer) Unprotect() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return netbuf.ErrClosed
	}
	b.unprotected = true
	out := b.take(len(b.held))
	b.mu.Unlock()
	b.emit(out)
	return nil
}

// Protect implements netbuf.Buffer.Protect.
func (b *Buffer) Protect() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return netbuf.ErrClosed
	}
	b.unprotected = false
	return nil
}

// Discard implements netbuf.Buffer.Discard.
func (b *Buffer) Discard() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.drop()
	return nil
}

// drop discards every held frame. Preconditions: mu held.
func (b *Buffer) drop() {
	b.stats.Dropped += uint64(len(b.held))
	b.held = nil
	b.stats.HeldFrames, b.stats.HeldBytes = 0, 0
}

// Close implements netbuf.Buffer.Close: held frames are dropped.
func (b *Buffer) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.drop()
	b.closed = true
	return nil
}

// Waiting implements netbuf.Buffer.Waiting.
func (b *Buffer) Waiting() <-chan struct{} { return b.waiting }

// Stats implements netbuf.Buffer.Stats.
func (b *Buffer) Stats() netbuf.Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}

// Capabilities implements netbuf.Buffer.Capabilities.
func (b *Buffer) Capabilities() netbuf.Capabilities { return netbuf.Capabilities{Notifies: true} }
