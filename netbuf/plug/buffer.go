package plug

import (
	"fmt"
	"sync"

	"github.com/xl-kemari/xl-kemari/netbuf"
)

// ctl is what a Buffer needs from the kernel; tests model sch_plug with
// it.
type ctl interface {
	Plug(action int32) error
	Reset() error // drop everything held, holding again
	Counters() (counters, error)
	Teardown() error
}

// Buffer is a plug-backed netbuf.Buffer.
type Buffer struct {
	k ctl

	mu sync.Mutex
	// Protected by mu.
	plugged     uint64 // epoch of the outstanding plug; 0: none
	lastBarrier uint64
	lastRelease uint64
	unprotected bool
	closed      bool
	final       netbuf.Stats // counters at Close
}

var _ netbuf.Buffer = (*Buffer)(nil)

func newBuffer(k ctl) *Buffer { return &Buffer{k: k} }

// Barrier implements netbuf.Buffer.Barrier; see the package comment for
// barriers that come while an earlier one is unreleased.
func (b *Buffer) Barrier(epoch uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return netbuf.ErrClosed
	}
	if epoch <= b.lastBarrier {
		return fmt.Errorf("%w: barrier %d after %d", netbuf.ErrOrder, epoch, b.lastBarrier)
	}
	if b.plugged == 0 && !b.unprotected {
		if err := b.k.Plug(TCQPlugBuffer); err != nil {
			return err
		}
		b.plugged = epoch
	}
	b.lastBarrier = epoch
	return nil
}

// Release implements netbuf.Buffer.Release.
func (b *Buffer) Release(epoch uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return netbuf.ErrClosed
	}
	if b.plugged != 0 && epoch >= b.plugged {
		if err := b.k.Plug(TCQPlugReleaseOne); err != nil {
			return err
		}
		b.plugged = 0
	}
	if epoch > b.lastRelease && epoch <= b.lastBarrier {
		b.lastRelease = epoch
	}
	return nil
}

// Unprotect implements netbuf.Buffer.Unprotect.
func (b *Buffer) Unprotect() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return netbuf.ErrClosed
	}
	if err := b.k.Plug(TCQPlugReleaseIndefinite); err != nil {
		return err
	}
	b.unprotected, b.plugged = true, 0
	return nil
}

// Protect implements netbuf.Buffer.Protect.
func (b *Buffer) Protect() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return netbuf.ErrClosed
	}
	if !b.unprotected {
		return nil
	}
	if err := b.k.Plug(TCQPlugBuffer); err != nil {
		return err
	}
	b.unprotected = false
	return nil
}

// Discard implements netbuf.Buffer.Discard.
func (b *Buffer) Discard() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	if err := b.k.Reset(); err != nil {
		return err
	}
	b.plugged = 0
	if b.unprotected {
		return b.k.Plug(TCQPlugReleaseIndefinite)
	}
	return nil
}

// Close implements netbuf.Buffer.Close.
func (b *Buffer) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.final = b.statsLocked()
	b.final.Dropped += b.final.HeldFrames
	b.final.HeldFrames, b.final.HeldBytes = 0, 0
	b.closed = true
	err := b.k.Teardown()
	if k, ok := b.k.(*kernel); ok {
		k.teardown()
	}
	return err
}

// Waiting implements netbuf.Buffer.Waiting: plug cannot tell.
func (b *Buffer) Waiting() <-chan struct{} { return nil }

// Capabilities implements netbuf.Buffer.Capabilities.
func (b *Buffer) Capabilities() netbuf.Capabilities { return netbuf.Capabilities{} }

// Stats implements netbuf.Buffer.Stats from the plug qdisc's counters:
// LimitHits are its drops.
func (b *Buffer) Stats() netbuf.Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return b.final
	}
	return b.statsLocked()
}

func (b *Buffer) statsLocked() netbuf.Stats {
	c, _ := b.k.Counters()
	return netbuf.Stats{
		HeldFrames: c.held, HeldBytes: c.heldBytes,
		Released: c.released, ReleasedBytes: c.releasedBytes,
		Dropped: c.dropped + c.discarded, LimitHits: c.dropped,
		LastRelease: b.lastRelease,
	}
}
