package epoch

import "fmt"

// Duration is a span of monotonic time in nanoseconds. The machines never
// read a clock: every event carries Now, an offset on the driver's
// monotonic clock.
type Duration int64

// Common durations.
const (
	Microsecond Duration = 1e3
	Millisecond Duration = 1e6
	Second      Duration = 1e9
)

// Mode is the checkpoint trigger.
type Mode uint8

const (
	// ModeEpoch checkpoints at a fixed interval on a grid that does not
	// drift by pause or transmit time (Remus).
	ModeEpoch Mode = iota
	// ModeEvent checkpoints as soon as the guest has output waiting, no
	// sooner than MinInterval after the last one and no later than
	// Interval (Kemari).
	ModeEvent
)

func (m Mode) String() string {
	if m == ModeEvent {
		return "event"
	}
	return "epoch"
}

// Config parameterises both machines.
type Config struct {
	Mode        Mode
	Interval    Duration // epoch: period; event: maximum spacing
	MinInterval Duration // event: minimum spacing
	Timeout     Duration // peer declared lost after this long unheard
	Heartbeat   Duration // heartbeat period; 0: Timeout/5
	Retry       Duration // reconnect period while unprotected; 0: Timeout/2
	Inflight    int      // checkpoints shipped but not acknowledged; 0: 1
	Reprotect   bool     // primary: reconnect after losing the standby
	Arbiter     bool     // an arbiter is configured (I4)
	// Lease: the arbiter leases (arbiter.Leaser). The primary releases
	// output only while the lease its events carry (Event.LeaseUntil) is
	// valid, and a lost lease is a lost standby; the standby, when the
	// stream ends, takes over as soon as the primary's lease has lapsed
	// (ActWaitLapsed) instead of after its timeout. Requires Arbiter.
	Lease bool
}

func (c Config) withDefaults() Config {
	if c.Heartbeat <= 0 {
		c.Heartbeat = c.Timeout / 5
	}
	if c.Retry <= 0 {
		c.Retry = c.Timeout / 2
	}
	if c.Inflight <= 0 {
		c.Inflight = 1
	}
	if c.MinInterval <= 0 {
		c.MinInterval = c.Interval
	}
	return c
}

// Validate reports a configuration the machines cannot run.
func (c Config) Validate() error {
	switch {
	case c.Interval <= 0:
		return fmt.Errorf("epoch: interval must be positive")
	case c.Timeout <= 0:
		return fmt.Errorf("epoch: timeout must be positive")
	case c.Mode == ModeEvent && c.MinInterval > c.Interval:
		return fmt.Errorf("epoch: min-interval %d ns exceeds interval %d ns", c.MinInterval, c.Interval)
	}
	return nil
}

// EventKind says what happened.
type EventKind uint8

// Events. Which role accepts which is noted; a machine ignores events that
// do not apply to its role or state.
const (
	EvStart         EventKind = iota + 1 // primary: begin protecting
	EvTick                               // both: time passed (a deadline fired)
	EvConnected                          // primary: hello exchanged; Epoch = standby's committed, HasReplica
	EvConnectFailed                      // primary: dial or hello failed
	EvSyncDone                           // primary: sync checkpoint Epoch captured and queued
	EvAck                                // primary: standby acknowledged Epoch
	EvNack                               // primary: standby discarded Epoch
	EvFrame                              // both: any frame from the peer (liveness)
	EvOutputWaiting                      // primary: guest output is held (event mode)
	EvDisconnected                       // both: the connection broke
	EvGranted                            // both: the arbiter granted activity
	EvDenied                             // both: the arbiter refused
	EvStop                               // both: stop protection cleanly
	EvStopConfirmed                      // primary: the standby answered the goodbye (its replica is gone)
	EvHello                              // standby: a primary connected
	EvEpochBegin                         // standby: records of Epoch follow
	EvEpochEnd                           // standby: Epoch complete; Verified says if it checked out
	EvStreamError                        // standby: a frame failed to decode (corrupt, torn, ...)
	EvGoodbye                            // standby: the primary ended protection
	EvPromote                            // standby: failover by hand
	EvCommitFailed                       // standby: applying staged Epoch to the replica failed; the replica is torn
	EvTakenOver                          // primary: the standby said it activated its replica at Epoch (protocol §7.7)
	EvLeaseLost                          // primary: its arbiter lease ended without a Release (lapsed, revoked)
	EvLapsed                             // standby: the primary's lease is gone (reply to ActWaitLapsed)
)

var eventNames = [...]string{"", "start", "tick", "connected", "connect-failed", "sync-done",
	"ack", "nack", "frame", "output-waiting", "disconnected", "granted", "denied", "stop",
	"stop-confirmed", "hello", "epoch-begin", "epoch-end", "stream-error", "goodbye", "promote", "commit-failed", "taken-over", "lease-lost", "lapsed"}

func (k EventKind) String() string {
	if int(k) < len(eventNames) {
		return eventNames[k]
	}
	return fmt.Sprintf("event(%d)", k)
}

// Event is one input to a machine.
type Event struct {
	Kind       EventKind
	Now        Duration
	Epoch      uint64
	HasReplica bool // EvConnected: the standby still holds a replica of this session
	// Fences (EvConnected): the standby would have answered TAKEN_OVER
	// had it activated a replica of the domain (HELLO flag FENCES), so
	// none runs there from it.
	Fences   bool
	Verified bool // EvEpochEnd: counts, digests and memory digest matched
	Initial  bool // EvEpochBegin/EvEpochEnd: a pre-copy round (epoch 0), not a checkpoint
	Resync   bool // EvEpochBegin: the epoch carries every change since the last committed one (RESYNC), so it may follow a gap
	// Retire (EvHello, standby): the primary rebuilds a replica of the
	// session the standby holds (its output is still held, so the held
	// replica covers every output released) and the standby can keep
	// that replica as a fallback until the new one commits.
	Retire bool
	// LeaseUntil (primary, Config.Lease): the end of the validity of the
	// arbiter lease held for the current session, on the Now clock; 0: no
	// lease held. Every event carries it, as it carries Now.
	LeaseUntil Duration
}

// ActionKind says what the driver must do.
type ActionKind uint8

// Actions, carried out in the order returned.
const (
	// Primary.
	ActConnect    ActionKind = iota + 1 // dial the standby and exchange hellos (async; reply EvConnected/EvConnectFailed)
	ActSync                             // Full: iterative pre-copy then checkpoint Epoch; else resync: checkpoint Epoch with the dirty sets of every epoch after Since
	ActCheckpoint                       // suspend, barrier(Epoch), read+clear dirty, copy, capture state, resume, queue Epoch for sending
	ActRelease                          // release output through barrier Epoch
	ActUnprotect                        // release all held output and pass output through (standby lost)
	ActFence                            // the arbiter refused, or the standby took over: destroy the guest, discard held output
	ActGoodbye                          // send goodbye; reply EvStopConfirmed when the standby answers (an unanswered goodbye is the machine's timeout)
	ActTeardown                         // release held output and tear down: the standby discarded its replica, or the standby is lost and the arbiter (if any) granted
	// Both.
	ActHeartbeat  // send a heartbeat
	ActDisconnect // close the connection
	ActAcquire    // ask the arbiter for the right to be active (async; reply EvGranted/EvDenied)
	ActNotify     // the state changed; Reason says why (for logs, status, hooks)
	// Standby.
	ActCommit         // apply staged epoch Epoch to the replica atomically
	ActAck            // send Ack(Epoch)
	ActDiscard        // drop the staged epoch
	ActNack           // send Nack(Epoch)
	ActActivate       // failover: activate the replica at the committed epoch
	ActDestroyReplica // drop the replica
	ActRetire         // keep the replica aside as the fallback (at Epoch); the next replica is built beside it
	ActDropFallback   // drop the fallback replica: a newer checkpoint is committed, or it is stale
	ActUseFallback    // drop the replica being built and make the fallback (at Epoch) the replica again
	ActTakenOver      // tell the connected primary this standby activates its replica at Epoch (protocol §7.7), before the disconnect
	ActWaitLapsed     // wait until the primary's arbiter lease is gone (async; reply EvLapsed)
)

var actionNames = [...]string{"", "connect", "sync", "checkpoint", "release", "unprotect", "fence",
	"goodbye", "teardown", "heartbeat", "disconnect", "acquire", "notify", "commit", "ack", "discard",
	"nack", "activate", "destroy-replica", "retire", "drop-fallback", "use-fallback", "taken-over", "wait-lapsed"}

func (k ActionKind) String() string {
	if int(k) < len(actionNames) {
		return actionNames[k]
	}
	return fmt.Sprintf("action(%d)", k)
}

// Action is one instruction to the driver.
type Action struct {
	Kind   ActionKind
	Epoch  uint64
	Since  uint64 // ActSync (resync): the standby has everything through Since
	Full   bool   // ActSync: full pre-copy
	Reason string // ActNotify, ActNack, ActDisconnect
}

func (a Action) String() string {
	s := a.Kind.String()
	switch a.Kind {
	case ActSync:
		if a.Full {
			return fmt.Sprintf("sync full epoch=%d", a.Epoch)
		}
		return fmt.Sprintf("sync resync epoch=%d since=%d", a.Epoch, a.Since)
	case ActCheckpoint, ActRelease, ActCommit, ActAck, ActDiscard, ActRetire, ActUseFallback, ActTakenOver:
		return fmt.Sprintf("%s %d", s, a.Epoch)
	case ActNack:
		return fmt.Sprintf("%s %d (%s)", s, a.Epoch, a.Reason)
	case ActNotify, ActDisconnect:
		return fmt.Sprintf("%s (%s)", s, a.Reason)
	}
	return s
}
