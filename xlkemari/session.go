package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xl-kemari/xl-kemari/checkpoint"
)

// watch lets goroutines wait for a protector's status to change without
// polling: every observation closes the current channel.
type watch struct {
	mu sync.Mutex
	// Protected by mu.
	ch chan struct{}
}

// changed returns a channel closed at the next change. Take it before
// reading the status, so that no change is missed in between.
func (w *watch) changed() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	return w.ch
}

func (w *watch) notify() {
	w.mu.Lock()
	if w.ch != nil {
		close(w.ch)
		w.ch = nil
	}
	w.mu.Unlock()
}

// standbySession is one Standby as the command runs it: the driver, when
// it last committed (the failover guard), and a watch on its status.
type standbySession struct {
	s       *checkpoint.Standby
	arbiter bool          // an arbiter guards activation
	timeout time.Duration // the standby's failure-detection timeout
	// lastCommit is when an epoch was last committed, Unix nanoseconds.
	lastCommit atomic.Int64
	w          watch
	done       chan struct{} // closed when Run has returned
	err        error         // Run's result, once done is closed
}

// observe is chained into the Standby's Observer.
func (ss *standbySession) observe(o checkpoint.Observation) {
	if o.Kind == checkpoint.ObsCommit {
		ss.lastCommit.Store(time.Now().UnixNano())
	}
	if o.Kind == checkpoint.ObsState || o.Kind == checkpoint.ObsActivating || o.Kind == checkpoint.ObsActivate || o.Kind == checkpoint.ObsError {
		ss.w.notify()
	}
}

// run runs the Standby and records the result.
func (ss *standbySession) run(ctx context.Context) error {
	ss.err = ss.s.Run(ctx)
	close(ss.done)
	ss.w.notify()
	return ss.err
}

// waitFor waits until pred holds for the status, Run returns, or ctx ends.
func (ss *standbySession) waitFor(ctx context.Context, pred func(checkpoint.Status) bool) (checkpoint.Status, bool) {
	for {
		ch := ss.w.changed()
		st := ss.s.Status()
		if pred(st) {
			return st, true
		}
		select {
		case <-ch:
		case <-ss.done:
			st = ss.s.Status()
			return st, pred(st)
		case <-ctx.Done():
			return st, false
		}
	}
}

// failover is `xl kemari failover` on this standby. Without an arbiter,
// a replica still receiving checkpoints means a live primary: activating
// it would run the domain twice, so that needs force.
func (ss *standbySession) failover(ctx context.Context, force bool) error {
	st := ss.s.Status()
	switch st.State {
	case "active":
		return nil
	case "ready":
	default:
		return &ctlError{exitFailure, fmt.Sprintf("the replica of %s is %s: only a replica with a complete checkpoint (ready) can be activated", dash(st.Domain), st.State)}
	}
	if last := ss.lastCommit.Load(); !ss.arbiter && !force && last != 0 {
		if ago := time.Since(time.Unix(0, last)); ago < ss.timeout {
			return &ctlError{exitFailure, fmt.Sprintf("the primary of %s still checkpoints (last commit %v ago) and no arbiter guards it: activating now would run it on both hosts; "+
				"stop the primary (xl kemari stop on its host) or pass --force", st.Domain, ago.Round(time.Millisecond))}
		}
	}
	ss.s.Promote()
	st, ok := ss.waitFor(ctx, func(s checkpoint.Status) bool {
		return s.State == "active" || s.State == "denied" || s.State == "waiting" || s.State == "stopped"
	})
	switch {
	case ok && st.State == "active":
		return nil
	case ok && st.State == "denied":
		return &ctlError{exitFailure, "the arbiter kept the domain on its primary; the replica was discarded"}
	case ok:
		return &ctlError{exitFailure, "the replica was lost before activation (state " + st.State + ")"}
	}
	return &ctlError{exitFailure, fmt.Sprintf("not active yet (state %s); the arbiter may still be deciding", st.State)}
}
