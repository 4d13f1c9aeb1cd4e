package nbd

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrQuiesced is returned by Quiesce when the server is already quiesced.
var ErrQuiesced = errors.New("nbd: already quiesced")

// gate is the epoch barrier shared by every connection of a Server.
// A request is admitted (counted in flight, tagged with the current epoch)
// once its header and payload are read, and released once its reply has
// been written. Quiesce stops admissions and waits for the count to reach
// zero; Resume opens the next epoch.
type gate struct {
	mu   sync.Mutex
	cond *sync.Cond // broadcast on every change; used by tests to wait for a state
	// Protected by mu.
	epoch    uint64
	quiesced bool
	inflight int
	waiting  int           // admissions blocked by a quiesce
	resume   chan struct{} // closed by Resume; non-nil while quiesced
	drained  chan struct{} // closed when inflight reaches 0 during a quiesce
}

func newGate(epoch uint64) *gate {
	g := &gate{epoch: epoch}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// admit blocks while the gate is quiesced, then counts one request in
// flight and returns the epoch it belongs to. It returns ok=false if done
// is closed first.
func (g *gate) admit(done <-chan struct{}) (epoch uint64, ok bool) {
	g.mu.Lock()
	for g.quiesced {
		ch := g.resume
		g.waiting++
		g.cond.Broadcast()
		g.mu.Unlock()
		select {
		case <-ch:
		case <-done:
			g.mu.Lock()
			g.waiting--
			g.cond.Broadcast()
			g.mu.Unlock()
			return 0, false
		}
		g.mu.Lock()
		g.waiting--
	}
	g.inflight++
	epoch = g.epoch
	g.cond.Broadcast()
	g.mu.Unlock()
	return epoch, true
}

// release ends one admitted request (its reply is written, or it never
// will be because the connection died).
func (g *gate) release() {
	g.mu.Lock()
	g.inflight--
	if g.inflight == 0 && g.drained != nil {
		close(g.drained)
		g.drained = nil
	}
	g.cond.Broadcast()
	g.mu.Unlock()
}

func (g *gate) quiesce(ctx context.Context) (uint64, error) {
	g.mu.Lock()
	if g.quiesced {
		g.mu.Unlock()
		return 0, ErrQuiesced
	}
	g.quiesced = true
	g.resume = make(chan struct{})
	epoch := g.epoch
	if g.inflight == 0 {
		g.cond.Broadcast()
		g.mu.Unlock()
		return epoch, nil
	}
	d := make(chan struct{})
	g.drained = d
	n := g.inflight
	g.cond.Broadcast()
	g.mu.Unlock()
	select {
	case <-d:
		return epoch, nil
	case <-ctx.Done():
	}
	// Give up: reopen the same epoch so the guest's I/O flows again.
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.drained == nil { // drained meanwhile: the barrier holds after all
		return epoch, nil
	}
	g.drained = nil
	g.quiesced = false
	close(g.resume)
	g.resume = nil
	g.cond.Broadcast()
	return 0, fmt.Errorf("nbd: quiesce epoch %d: %d requests were in flight: %w", epoch, n, ctx.Err())
}

func (g *gate) resumeNext() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.quiesced || g.drained != nil { // not quiesced, or a Quiesce still draining
		return
	}
	g.epoch++
	g.quiesced = false
	close(g.resume)
	g.resume = nil
	g.cond.Broadcast()
}

// state returns a snapshot.
func (g *gate) state() (epoch uint64, quiesced bool, inflight, waiting int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.epoch, g.quiesced, g.inflight, g.waiting
}

// waitFor blocks until cond holds (tests). cond runs with g.mu held.
func (g *gate) waitFor(cond func(quiesced bool, inflight, waiting int) bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for !cond(g.quiesced, g.inflight, g.waiting) {
		g.cond.Wait()
	}
}
