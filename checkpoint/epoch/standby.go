package epoch

// StandbyState is where the standby machine is.
type StandbyState uint8

// Standby states.
const (
	SWaiting     StandbyState = iota // no replica; waiting for a primary
	SSyncing                         // a replica is being filled; no complete checkpoint yet
	SReady                           // holds a complete, committed checkpoint; can take over
	SArbitrating                     // primary lost; waiting for the arbiter
	SActive                          // failed over: the replica runs here
	SStopped                         // the primary ended protection; replica discarded
	SDenied                          // the arbiter gave the domain to the primary; replica discarded
)

var sstateNames = [...]string{"waiting", "syncing", "ready", "arbitrating", "active", "stopped", "denied"}

func (s StandbyState) String() string { return sstateNames[s] }

// Standby is the standby side's machine. One goroutine owns it.
type Standby struct {
	cfg       Config
	state     StandbyState
	committed uint64 // highest committed epoch
	fallback  uint64 // committed epoch of the retired replica kept while a new one syncs; 0: none
	staging   uint64 // epoch being received, 0 if none; ^0 for a pre-copy round
	initial   bool   // staging a pre-copy round
	connected bool
	undo      commitUndo // what the last ActCommit's step changed, for EvCommitFailed
	lastHeard Duration
	lastHB    Duration
	now       Duration
	// stalledAt: when this machine, without an arbiter, ran more than
	// Timeout/2 after a deadline it asked for (SIGSTOP, a hung dom0): the
	// primary may have counted that silence as this standby's death and
	// run unprotected since, so its replica no longer covers what the
	// primary released. 0: not stalled. Cleared by a hello, or by frames
	// heard for a whole Timeout after it (the primary kept streaming).
	stalledAt Duration
}

// NewStandby returns a machine waiting for a primary.
func NewStandby(cfg Config) *Standby { return &Standby{cfg: cfg.withDefaults()} }

// State returns the current state.
func (s *Standby) State() StandbyState { return s.state }

// Committed returns the highest committed epoch.
func (s *Standby) Committed() uint64 { return s.committed }

// Fallback returns the epoch of the replica kept aside while a new one is
// built (protocol §7.4), or 0.
func (s *Standby) Fallback() uint64 { return s.fallback }

// LastHeard returns when a frame of the primary was last heard (an offset
// on the driver's clock, as Event.Now), 0 if never.
func (s *Standby) LastHeard() Duration { return s.lastHeard }

// Deadline returns when the machine next needs an EvTick, or -1.
func (s *Standby) Deadline() Duration {
	switch s.state {
	case SSyncing, SReady:
		d := s.lastHeard + s.cfg.Timeout + 1
		if s.connected && s.lastHB+s.cfg.Heartbeat < d {
			d = s.lastHB + s.cfg.Heartbeat
		}
		return d
	}
	return -1
}

// Step feeds one event and returns the actions to carry out, in order.
func (s *Standby) Step(ev Event) []Action {
	if d := s.Deadline(); d >= 0 && ev.Now-d > s.cfg.Timeout/2 && !s.cfg.Arbiter {
		s.stalledAt = max(ev.Now, 1)
	}
	if ev.Now > s.now {
		s.now = ev.Now
	}
	var out []Action
	switch ev.Kind {
	case EvHello:
		s.stalledAt = 0 // a primary that dials again holds its output or starts anew
		// HasReplica: the hello continues the session whose replica this
		// standby holds (a resync); otherwise any replica is stale.
		switch s.state {
		case SWaiting, SStopped, SSyncing, SReady:
			if !ev.HasReplica || s.state != SReady {
				switch {
				case s.state == SReady && ev.Retire:
					// The primary held its output since our last ack:
					// this replica covers all it released. Keep it until
					// the new one commits. (I3, protocol §7.4)
					s.fallback = s.committed
					out = append(out, Action{Kind: ActRetire, Epoch: s.fallback})
				case s.state == SSyncing || s.state == SReady:
					out = append(out, Action{Kind: ActDestroyReplica})
				}
				if s.fallback != 0 && !ev.Retire {
					// Another session: the primary ran unprotected since,
					// so the fallback no longer covers its output.
					out = append(out, Action{Kind: ActDropFallback})
					s.fallback = 0
				}
				s.state = SSyncing
				s.committed = 0
			}
			s.connected = true
			s.lastHeard, s.lastHB = s.now, s.now
			s.staging = 0
		default:
			out = append(out, Action{Kind: ActDisconnect, Reason: "not accepting a primary in state " + s.state.String()})
		}
	case EvFrame:
		if s.connected {
			s.lastHeard = s.now
		}
	case EvEpochBegin:
		if !s.connected {
			break
		}
		s.lastHeard = s.now
		if ev.Initial && ev.Epoch == 0 && s.staging == 0 {
			// A pre-copy round (protocol §7.2). A primary that starts a
			// full sync over a replica we hold has given up on it: rebuild.
			if s.state == SReady {
				s.state, s.committed = SSyncing, 0
				out = append(out, Action{Kind: ActDestroyReplica}, notify("primary restarted the initial sync; replica rebuilt"))
			}
			if s.state != SSyncing {
				out = s.reject(0, "pre-copy round outside a sync", out)
				break
			}
			s.staging, s.initial = ^uint64(0), true
			break
		}
		if why := s.outOfOrder(ev); why != "" {
			// Out of order or nested: the stream cannot be trusted. (I2)
			out = s.reject(ev.Epoch, why, out)
			break
		}
		s.staging = ev.Epoch
	case EvEpochEnd:
		if !s.connected {
			break
		}
		s.lastHeard = s.now
		if s.initial && ev.Epoch == 0 && s.staging == ^uint64(0) {
			s.staging, s.initial = 0, false
			if !ev.Verified {
				out = s.reject(0, "pre-copy round failed verification", out)
				break
			}
			// Applied, never acknowledged: not a checkpoint.
			out = append(out, Action{Kind: ActCommit, Epoch: 0})
			break
		}
		switch {
		case s.staging == 0 || ev.Epoch != s.staging:
			out = s.reject(ev.Epoch, "epoch end without its begin", out)
		case !ev.Verified:
			out = s.reject(ev.Epoch, "epoch failed verification", out)
		default:
			// Commit, then ack: Ack(k) means k is held, verified, applied.
			// The driver carries out the commit before anything after it;
			// if it fails (EvCommitFailed) the rest is never carried out,
			// so what this step gives up is kept to be given back.
			s.undo = commitUndo{epoch: ev.Epoch, fallback: s.fallback, valid: true}
			s.committed, s.staging = ev.Epoch, 0
			out = append(out, Action{Kind: ActCommit, Epoch: ev.Epoch})
			if s.fallback != 0 {
				// Before the ack: once the primary has it, it releases
				// output the fallback does not cover.
				out = append(out, Action{Kind: ActDropFallback})
				s.fallback = 0
			}
			out = append(out, Action{Kind: ActAck, Epoch: ev.Epoch})
			if s.state == SSyncing {
				s.state = SReady
				out = append(out, notify("replica ready"))
			}
		}
	case EvCommitFailed:
		out = s.commitFailed(ev.Epoch, out)
	case EvStreamError:
		if s.connected {
			out = s.reject(s.staging, "malformed frame", out)
		}
	case EvDisconnected:
		if s.connected {
			s.connected = false
			if s.staging != 0 {
				out = append(out, Action{Kind: ActDiscard, Epoch: s.staging})
				s.staging = 0
			}
			if s.cfg.Lease && s.cfg.Arbiter && s.canTakeOver() {
				// The stream ended (EOF, reset): a primary that lives
				// holds its lease and reconnects; a dead one's lease
				// lapses, as soon as the arbiter can tell. (protocol §7.8)
				out = append(out, Action{Kind: ActWaitLapsed},
					notify("primary disconnected; waiting for it within the timeout, or for its lease to lapse"))
				break
			}
			out = append(out, notify("primary disconnected; waiting for it within the timeout"))
		}
	case EvLapsed:
		if s.cfg.Lease && !s.connected && s.canTakeOver() {
			// No live lease of the primary: it cannot release output any
			// more. The arbiter's grant still decides. (I4)
			if s.state == SSyncing {
				out = s.useFallback(out)
			}
			out = s.failover("primary's stream ended and its lease is gone", out)
		}
	case EvGoodbye:
		if s.state == SSyncing || s.state == SReady {
			out = append(out, s.discardStaging()...)
			s.state = SStopped
			s.connected = false
			out = append(out, Action{Kind: ActDestroyReplica})
			out = append(s.dropFallback(out), notify("primary ended protection"))
		}
	case EvPromote:
		switch {
		case s.state == SReady:
			out = s.failover("failover requested by hand", out)
		case s.state == SSyncing && s.fallback != 0:
			out = s.failover("failover requested by hand", s.useFallback(out))
		}
	case EvGranted:
		if s.state == SArbitrating {
			s.state = SActive
			out = append(out, Action{Kind: ActActivate, Epoch: s.committed}, notify("arbiter granted; activated"))
		}
	case EvDenied:
		if s.state == SArbitrating {
			s.state = SDenied
			out = append(out, Action{Kind: ActDestroyReplica}, notify("arbiter kept the domain on the primary"))
		}
	case EvStop:
		if s.state != SActive {
			out = append(out, s.discardStaging()...)
			if s.state == SSyncing || s.state == SReady || s.state == SArbitrating {
				out = append(out, Action{Kind: ActDestroyReplica})
			}
			out = s.dropFallback(out)
			s.state = SStopped
			s.connected = false
			out = append(out, Action{Kind: ActDisconnect, Reason: "stop"}, notify("stopped"))
		}
	}
	return s.timers(out)
}

// commitUndo is what the step that emitted ActCommit(epoch) gave up on
// the assumption that the commit succeeds: the fallback replica it dropped.
type commitUndo struct {
	epoch    uint64
	fallback uint64
	valid    bool
}

// outOfOrder says why an EPOCH_BEGIN of a checkpoint (not a pre-copy
// round) cannot be taken, or "" if it can. Reference: docs/protocol.md
// §7.2: the next expected epoch, or one with RESYNC after a gap (§7.4).
// Before the first checkpoint of a replica (committed 0) nothing is
// expected: the sync's checkpoint carries the primary's next number.
func (s *Standby) outOfOrder(ev Event) string {
	switch {
	case s.staging != 0:
		return "epoch begins inside another"
	case ev.Epoch <= s.committed:
		return "epoch out of order"
	case ev.Epoch == ^uint64(0):
		// No epoch can follow it: the primary would be stuck.
		return "epoch number exhausted"
	case s.committed != 0 && ev.Epoch != s.committed+1 && !ev.Resync:
		return "epoch gap without RESYNC"
	}
	return ""
}

// commitFailed handles a commit of epoch e that the driver could not
// carry out: part of it may be in the replica, which is then at no
// checkpoint and must never run (I3). It is destroyed; the fallback the
// commit's step dropped (it was never destroyed: the driver stops at the
// failed commit) is the replica again, else the standby has nothing and
// waits for a primary. The primary holds the output of e (no ACK went
// out) and rebuilds the replica after the NACK.
func (s *Standby) commitFailed(e uint64, out []Action) []Action {
	if s.state != SSyncing && s.state != SReady {
		return out
	}
	if s.undo.valid && s.undo.epoch == e && s.undo.fallback != 0 {
		s.fallback = s.undo.fallback
	}
	s.undo = commitUndo{}
	out = append(out, s.discardStaging()...)
	s.committed = 0
	out = append(out, Action{Kind: ActDestroyReplica})
	if s.connected {
		s.connected = false
		out = append(out, Action{Kind: ActNack, Epoch: e, Reason: "commit failed"},
			Action{Kind: ActDisconnect, Reason: "commit failed"})
	}
	if s.fallback != 0 {
		s.state = SSyncing
		return append(out, notify("commit failed; replica discarded, the previous replica kept"))
	}
	s.state = SWaiting
	return append(out, notify("commit failed; replica discarded"))
}

// canTakeOver reports whether the standby holds a checkpoint to resume:
// a ready replica, or the fallback of one being rebuilt.
func (s *Standby) canTakeOver() bool {
	return s.state == SReady || s.state == SSyncing && s.fallback != 0
}

func (s *Standby) dropFallback(out []Action) []Action {
	if s.fallback == 0 {
		return out
	}
	s.fallback = 0
	return append(out, Action{Kind: ActDropFallback})
}

// useFallback gives up the replica being built for the fallback, which
// becomes the committed replica again.
func (s *Standby) useFallback(out []Action) []Action {
	out = append(out, s.discardStaging()...)
	out = append(out, Action{Kind: ActUseFallback, Epoch: s.fallback})
	s.committed, s.fallback, s.state = s.fallback, 0, SReady
	return out
}

func (s *Standby) discardStaging() []Action {
	if s.staging == 0 {
		return nil
	}
	e := s.staging
	if s.initial {
		e = 0
	}
	s.staging, s.initial = 0, false
	return []Action{{Kind: ActDiscard, Epoch: e}}
}

// reject discards the staged epoch, tells the primary and drops the
// stream; the primary reconnects and resynchronises.
func (s *Standby) reject(e uint64, why string, out []Action) []Action {
	out = append(out, s.discardStaging()...)
	s.connected = false
	return append(out, Action{Kind: ActNack, Epoch: e, Reason: why},
		Action{Kind: ActDisconnect, Reason: why})
}

func (s *Standby) failover(why string, out []Action) []Action {
	out = append(out, s.discardStaging()...)
	if s.connected && !s.cfg.Arbiter {
		// Decided, with the primary still on the line (a stalled or
		// partitioned one whose stream has not broken, a failover by
		// hand): say so before hanging up, so that it fences its copy
		// when it next reads. (protocol §7.7)
		out = append(out, Action{Kind: ActTakenOver, Epoch: s.committed})
	}
	s.connected = false
	out = append(out, Action{Kind: ActDisconnect, Reason: why})
	if s.cfg.Arbiter {
		s.state = SArbitrating
		return append(out, Action{Kind: ActAcquire}, notify(why+"; asking the arbiter"))
	}
	s.state = SActive
	return append(out, Action{Kind: ActActivate, Epoch: s.committed}, notify(why+"; activated"))
}

func (s *Standby) timers(out []Action) []Action {
	if s.state != SSyncing && s.state != SReady {
		return out
	}
	if s.stalledAt != 0 && s.lastHeard-s.stalledAt > s.cfg.Timeout {
		s.stalledAt = 0 // the primary streamed on for a Timeout after the stall
	}
	if s.now-s.lastHeard > s.cfg.Timeout && s.stalledAt != 0 {
		// This standby stalled, then the primary fell silent: without an
		// arbiter it cannot tell a dead primary from one that declared it
		// dead during the stall and ran unprotected. Activating could
		// make two active copies and forget replies the primary gave
		// since; giving the replica up loses no acknowledged output.
		out = append(out, s.discardStaging()...)
		out = s.dropFallback(out)
		s.state = SWaiting
		s.connected = false
		s.stalledAt = 0
		return append(out, Action{Kind: ActDisconnect, Reason: "standby stalled, then the primary fell silent"},
			Action{Kind: ActDestroyReplica}, notify("this standby stalled longer than the primary may wait, then lost the primary: replica discarded, not activated (no arbiter)"))
	}
	if s.now-s.lastHeard > s.cfg.Timeout {
		if s.state == SReady {
			// Resume at the last acknowledged checkpoint. (I3)
			return s.failover("primary silent for the timeout", out)
		}
		if s.fallback != 0 {
			// Lost while rebuilding: the fallback is the last checkpoint
			// acknowledged. (I3)
			return s.failover("primary silent for the timeout while the replica was rebuilt; resuming the previous replica", s.useFallback(out))
		}
		// No complete checkpoint: nothing consistent to resume.
		out = append(out, s.discardStaging()...)
		s.state = SWaiting
		s.connected = false
		return append(out, Action{Kind: ActDisconnect, Reason: "primary lost during initial sync"},
			Action{Kind: ActDestroyReplica}, notify("primary lost before the first checkpoint; replica discarded"))
	}
	if s.connected && s.now >= s.lastHB+s.cfg.Heartbeat {
		s.lastHB = s.now
		out = append(out, Action{Kind: ActHeartbeat})
	}
	return out
}
