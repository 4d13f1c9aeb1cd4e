package epoch

import "fmt"

// PrimaryState is where the primary machine is.
type PrimaryState uint8

// Primary states.
const (
	PIdle         PrimaryState = iota // not started
	PConnecting                       // first connection not yet made; guest runs unprotected
	PSyncing                          // initial sync or resync under way
	PProtected                        // checkpointing; output held until acked
	PReconnecting                     // connection broke; output held; within Timeout
	PArbitrating                      // standby lost; waiting for the arbiter before releasing
	PUnprotected                      // standby lost; output flows; reconnecting if Reprotect
	PStopping                         // stop requested: saying goodbye to the standby; output held
	PStopped                          // protection ended: the standby confirmed, or was lost (and the arbiter granted)
	PFenced                           // the arbiter gave the guest to the standby, or the standby took over; guest destroyed
	PStalled                          // the standby was lost after this machine itself stalled: output held, reconnecting; never unprotected on its own authority
)

var pstateNames = [...]string{"idle", "connecting", "syncing", "protected", "reconnecting",
	"arbitrating", "unprotected", "stopping", "stopped", "fenced", "stalled"}

func (s PrimaryState) String() string { return pstateNames[s] }

// Primary is the primary side's machine. It is not safe for concurrent use:
// one goroutine owns it.
type Primary struct {
	cfg   Config
	state PrimaryState

	next     uint64   // next epoch number to issue
	acked    uint64   // highest acknowledged epoch
	inflight []uint64 // issued, unacknowledged checkpoints, ascending

	connected  bool // a connection with hellos exchanged exists
	connecting bool // an ActConnect is outstanding
	everSynced bool // a checkpoint of this session was acked at least once
	stopping   bool // a stop was requested; it ends in PStopped or PFenced, never forgotten

	lastHeard   Duration
	lastHB      Duration
	lastAttempt Duration
	lastCk      Duration // when the last checkpoint was taken
	due         Duration // epoch mode: next slot on the grid
	pending     bool     // event mode: output waiting
	stopAt      Duration // when the stop was requested (PStopping)
	byeAt       Duration // when the goodbye was last sent on the live connection
	now         Duration
	// stalled: this machine ran more than Timeout/2 after a deadline it
	// asked for while the standby could be counting its silence, so the
	// standby may have declared it dead and activated. A loss after that
	// is not a dead standby on this machine's authority (issue 14, point 2).
	stalled bool
	// stallNext: p.next when the stall was seen. An ack of an epoch at or
	// after it (taken after the stall) shows the standby stayed standby.
	stallNext uint64
	// leaseUntil: the validity of the arbiter lease (Config.Lease), from
	// the last event; released: the highest epoch released while
	// protected, so that acks held back for want of a valid lease go out
	// once there is one.
	leaseUntil Duration
	released   uint64
}

// NewPrimary returns a machine in PIdle; feed it EvStart.
func NewPrimary(cfg Config) *Primary {
	return &Primary{cfg: cfg.withDefaults(), next: 1}
}

// State returns the current state.
func (p *Primary) State() PrimaryState { return p.state }

// Acked returns the highest acknowledged epoch.
func (p *Primary) Acked() uint64 { return p.acked }

// Inflight returns the number of unacknowledged checkpoints.
func (p *Primary) Inflight() int { return len(p.inflight) }

// Deadline returns when the machine next needs an EvTick, or -1 if it
// needs none (it waits for events only).
func (p *Primary) Deadline() Duration {
	d := Duration(-1)
	at := func(t Duration) {
		if d < 0 || t < d {
			d = t
		}
	}
	switch p.state {
	case PProtected:
		if len(p.inflight) < p.cfg.Inflight {
			at(p.nextCheckpoint())
		}
		fallthrough
	case PSyncing, PReconnecting:
		at(p.lastHeard + p.cfg.Timeout + 1)
		if p.state == PReconnecting && !p.connecting {
			at(p.lastAttempt + p.cfg.Heartbeat)
		}
		if p.connected {
			at(p.lastHB + p.cfg.Heartbeat)
		}
	case PStalled:
		if !p.connecting {
			at(p.lastAttempt + p.cfg.Retry)
		}
	case PConnecting, PUnprotected:
		if !p.connecting && (p.state == PConnecting || p.cfg.Reprotect) {
			at(p.lastAttempt + p.cfg.Retry)
		}
	case PStopping:
		at(p.stopAt + p.cfg.Timeout)
		switch {
		case p.connected:
			at(p.byeAt + p.cfg.Heartbeat)
		case !p.connecting:
			at(p.lastAttempt + p.cfg.Heartbeat)
		}
	}
	return d
}

// nextCheckpoint is when the next checkpoint is due in PProtected.
func (p *Primary) nextCheckpoint() Duration {
	if p.cfg.Mode == ModeEvent {
		if p.pending {
			return p.lastCk + p.cfg.MinInterval
		}
		return p.lastCk + p.cfg.Interval
	}
	return p.due
}

// Step feeds one event and returns the actions to carry out, in order.
func (p *Primary) Step(ev Event) []Action {
	if d := p.Deadline(); d >= 0 && ev.Now-d > p.cfg.Timeout/2 {
		switch p.state {
		case PSyncing, PProtected, PReconnecting, PStopping:
			p.stalled = true
			p.stallNext = p.next
		}
	}
	if ev.Now > p.now {
		p.now = ev.Now
	}
	if p.cfg.Lease {
		p.leaseUntil = ev.LeaseUntil
	}
	var out []Action
	switch ev.Kind {
	case EvStart:
		if p.state == PIdle {
			p.state = PConnecting
			out = p.connect(out)
			out = append(out, notify("connecting to standby"))
		}
	case EvConnected:
		out = p.onConnected(ev, out)
	case EvConnectFailed:
		p.connecting = false
	case EvSyncDone:
		if p.state == PSyncing {
			// A full sync numbers its pre-copy rounds after the epoch it
			// was given and ends with checkpoint ev.Epoch.
			if ev.Epoch >= p.next {
				p.next = ev.Epoch + 1
			}
			p.inflight = append(p.inflight, ev.Epoch)
			p.state = PProtected
			p.lastCk = p.now
			p.due = p.now + p.cfg.Interval
			out = append(out, notify("protected"))
		}
	case EvAck:
		out = p.onAck(ev.Epoch, out)
	case EvNack:
		if p.connected {
			out = p.onBroken("standby discarded epoch", out)
		}
	case EvFrame:
		if p.connected {
			p.lastHeard = p.now
		}
	case EvOutputWaiting:
		p.pending = true
	case EvDisconnected:
		if p.connected {
			out = p.onBroken("connection lost", out)
		}
	case EvGranted:
		if p.state == PArbitrating && p.stopping {
			// The pending stop: the standby cannot activate now. (I4)
			out = append(out, notify("standby lost; arbiter granted"))
			out = p.stopped(out)
		} else if p.state == PArbitrating {
			p.state = PUnprotected
			// Told before it happens: an observer's log then bounds the
			// time from which output is no longer held.
			out = append(out, notify("standby lost; arbiter granted; running unprotected"), Action{Kind: ActUnprotect})
		}
	case EvDenied:
		if p.state == PArbitrating {
			p.state = PFenced
			out = append(out, Action{Kind: ActFence}, notify("arbiter gave the domain to the standby; fenced"))
		}
	case EvTakenOver:
		out = p.takenOver(ev.Epoch, out)
	case EvLeaseLost:
		switch {
		case !p.everSynced && (p.state == PSyncing || p.state == PReconnecting):
			// No checkpoint acknowledged yet: the standby has nothing it
			// could take over with, and the output is not held. The
			// driver takes a new lease.
		case p.state == PSyncing, p.state == PProtected, p.state == PReconnecting, p.state == PStopping:
			// Output is bound to the lease: without it, this is a
			// standby loss, and the arbiter decides. (I4)
			out = p.lost("arbiter lease lost", out)
		}
	case EvStop:
		out = p.onStop(out)
	case EvStopConfirmed:
		if p.state == PStopping && p.connected {
			// The standby discarded its replica: nothing can take over
			// from it, so all held output may go.
			out = p.stopped(out)
		}
	}
	return p.timers(p.releaseHeld(out))
}

// leaseValid reports whether output may be released now as far as the
// arbiter lease goes (Config.Lease): only while the lease is valid by
// this host's clock, which ends before any peer can see it lapse.
func (p *Primary) leaseValid() bool { return !p.cfg.Lease || p.now < p.leaseUntil }

// releaseHeld releases acknowledged output held back for want of a valid
// lease, once there is one.
func (p *Primary) releaseHeld(out []Action) []Action {
	if !p.cfg.Lease || p.released >= p.acked || p.stalled || !p.leaseValid() {
		return out
	}
	switch p.state {
	case PSyncing, PProtected, PReconnecting, PStopping:
		p.released = p.acked
		return append(out, Action{Kind: ActRelease, Epoch: p.acked})
	}
	return out
}

func (p *Primary) connect(out []Action) []Action {
	p.connecting = true
	p.lastAttempt = p.now
	return append(out, Action{Kind: ActConnect})
}

func (p *Primary) onConnected(ev Event, out []Action) []Action {
	p.connecting = false
	if p.state == PStopping {
		// A new connection only to say goodbye on.
		p.connected = true
		p.lastHeard = p.now
		return p.goodbye(out)
	}
	if p.state == PStalled {
		resumable := ev.HasReplica && p.everSynced
		if !resumable && !ev.Fences {
			// The standby no longer holds this session's replica and
			// does not say whether it activated one. Stay held.
			return append(out, Action{Kind: ActDisconnect, Reason: "stalled: standby holds no replica of this session"},
				notify("stalled; the standby holds no replica; output held, not running unprotected"))
		}
		// It answers as the standby of this session: it has not taken
		// over (one that did answers TAKEN_OVER, which fences), and
		// resyncing keeps it from doing so. Without this session's
		// replica (it discarded it, or the first sync never committed)
		// the sync below is a full one; the output held since the stall
		// stays held until that sync's checkpoint is acknowledged.
		p.stalled = false
		if p.stopping {
			p.state = PStopping
			p.stopAt = p.now
			p.connected = true
			p.lastHeard = p.now
			return p.goodbye(append(out, notify("stalled; the standby answered; stopping")))
		}
		p.state = PReconnecting
	}
	switch p.state {
	case PConnecting, PReconnecting, PUnprotected:
	default:
		// A late connection (e.g. after stop): not wanted.
		return append(out, Action{Kind: ActDisconnect, Reason: "not reconnecting"})
	}
	p.connected = true
	p.lastHeard = p.now
	p.lastHB = p.now
	resync := p.state == PReconnecting && ev.HasReplica && p.everSynced
	if resync {
		// The standby committed through ev.Epoch (its acks may have been
		// lost with the connection): that output may go now.
		if ev.Epoch > p.acked {
			out = p.onAck(ev.Epoch, out)
		}
		p.inflight = p.inflight[:0]
		e := p.next
		p.next++
		out = append(out, Action{Kind: ActSync, Epoch: e, Since: p.acked})
	} else {
		// Nothing to build on: full pre-copy. Output held so far (if any)
		// stays held until this sync's checkpoint is acked.
		p.inflight = p.inflight[:0]
		p.everSynced = false
		e := p.next
		p.next++
		out = append(out, Action{Kind: ActSync, Epoch: e, Full: true})
	}
	p.state = PSyncing
	return append(out, notify("synchronising"))
}

func (p *Primary) onAck(k uint64, out []Action) []Action {
	if k <= p.acked || k >= p.next {
		return out // duplicate, or an epoch never issued: ignore
	}
	switch p.state {
	case PProtected, PSyncing, PReconnecting, PStopping:
	default:
		return out
	}
	p.lastHeard = p.now
	p.acked = k
	p.everSynced = true
	if p.stalled && k >= p.stallNext {
		p.stalled = false
	}
	i := 0
	for i < len(p.inflight) && p.inflight[i] <= k {
		i++
	}
	p.inflight = append(p.inflight[:0], p.inflight[i:]...)
	if p.stalled {
		// Read after the stall, it may have been sent before the standby
		// declared this primary dead and activated: releasing now would
		// make two copies answer. The output waits for an ack of a
		// checkpoint taken after the stall, which shows the standby still
		// standby and covers this epoch too.
		return out
	}
	if !p.leaseValid() {
		// Bound to the lease (I4): held until one is valid
		// (releaseHeld), or the loss of the lease decides.
		return out
	}
	p.released = k
	// Output commit: epoch k's output leaves only now. (I1)
	return append(out, Action{Kind: ActRelease, Epoch: k})
}

// onBroken handles a broken stream while protected: reconnect at once and
// keep holding output; the liveness timeout decides when to give up.
func (p *Primary) onBroken(why string, out []Action) []Action {
	p.connected = false
	out = append(out, Action{Kind: ActDisconnect, Reason: why})
	switch p.state {
	case PProtected, PSyncing:
		p.state = PReconnecting
		out = append(out, notify(why+"; reconnecting"))
		if !p.connecting {
			out = p.connect(out)
		}
	case PStopping:
		// The goodbye may or may not have arrived: say it again on a new
		// connection; the stop's timeout decides when to give up.
		if !p.connecting {
			out = p.connect(out)
		}
	}
	return out
}

// onStop begins the stop phase (protocol §7.5). Held output is released
// only once no replica can take over from it: the standby confirmed the
// goodbye, or it was declared lost through the same path as any other loss
// (the arbiter's grant first, when one is configured).
func (p *Primary) onStop(out []Action) []Action {
	if p.stopping {
		return out
	}
	switch p.state {
	case PProtected, PSyncing, PReconnecting:
		p.stopping = true
		p.state = PStopping
		p.stopAt = p.now
		out = append(out, notify("stopping"))
		if p.connected {
			return p.goodbye(out)
		}
		if !p.connecting {
			out = p.connect(out)
		}
		return out
	case PStalled:
		// Only the standby's answer may release held output.
		p.stopping = true
		return append(out, notify("stop requested; stalled: output held until the standby answers"))
	case PArbitrating:
		// The arbiter's answer decides: granted, stop; denied, fenced.
		p.stopping = true
		return append(out, notify("stop requested; waiting for the arbiter"))
	case PStopped, PFenced:
		return out
	default:
		// Never protected, or unprotected: no output is held and no
		// replica of this session can take over.
		p.stopping = true
		if p.connected || p.connecting {
			out = append(out, Action{Kind: ActDisconnect, Reason: "stop"})
		}
		return p.stopped(out)
	}
}

// takenOver fences the guest: the standby said it activated its replica
// at epoch e (protocol §7.7), on a reconnect's HELLO or on the live
// stream. Whatever the state (reconnecting, stalled, arbitrating,
// stopping, unprotected), this copy must not run on or release anything
// held: the replica resumed at e and answers for the domain now. (I4)
func (p *Primary) takenOver(e uint64, out []Action) []Action {
	switch p.state {
	case PIdle, PStopped, PFenced:
		return out
	}
	p.state = PFenced
	p.connected, p.connecting = false, false
	p.inflight = p.inflight[:0]
	return append(out, Action{Kind: ActFence}, Action{Kind: ActDisconnect, Reason: "taken over"},
		notify(fmt.Sprintf("taken over by the standby at epoch %d; guest destroyed", e)))
}

// goodbye sends the goodbye on the live connection.
func (p *Primary) goodbye(out []Action) []Action {
	p.byeAt = p.now
	return append(out, Action{Kind: ActGoodbye})
}

// stopped ends the stop: all held output goes, the driver tears down.
func (p *Primary) stopped(out []Action) []Action {
	p.state = PStopped
	p.connected = false
	p.inflight = p.inflight[:0]
	return append(out, Action{Kind: ActTeardown}, notify("stopped"))
}

// lost declares the standby lost. With an arbiter, output stays held until
// the grant (I4); without, the fail-stop assumption lets it flow.
func (p *Primary) lost(why string, out []Action) []Action {
	p.connected = false
	p.inflight = p.inflight[:0]
	out = append(out, Action{Kind: ActDisconnect, Reason: why})
	if p.stalled && !p.cfg.Arbiter {
		// The standby may have declared this machine dead while it did
		// not run: hold output, keep trying to reach it. (issue 14)
		p.state = PStalled
		return append(out, notify("standby lost ("+why+") after this primary stalled; output held, reconnecting"))
	}
	p.everSynced = false
	if p.cfg.Arbiter {
		p.state = PArbitrating
		return append(out, Action{Kind: ActAcquire}, notify("standby lost ("+why+"); asking the arbiter"))
	}
	if p.stopping {
		// Fail-stop: a silent standby is a dead one.
		return p.stopped(append(out, notify("standby lost ("+why+")")))
	}
	p.state = PUnprotected
	// Told before it happens (see EvGranted).
	return append(out, notify("standby lost ("+why+"); running unprotected"), Action{Kind: ActUnprotect})
}

// timers fires whatever is due at p.now.
func (p *Primary) timers(out []Action) []Action {
	now := p.now
	switch p.state {
	case PSyncing, PProtected, PReconnecting:
		if now-p.lastHeard > p.cfg.Timeout {
			return p.lost("no frames for the timeout", out)
		}
	case PConnecting:
		if !p.connecting && now >= p.lastAttempt+p.cfg.Retry {
			out = p.connect(out)
		}
		return out
	case PStalled:
		if !p.connecting && now >= p.lastAttempt+p.cfg.Retry {
			out = p.connect(out)
		}
		return out
	case PUnprotected:
		if p.cfg.Reprotect && !p.connecting && now >= p.lastAttempt+p.cfg.Retry {
			out = p.connect(out)
		}
		return out
	case PStopping:
		if now >= p.stopAt+p.cfg.Timeout {
			return p.lost("goodbye not confirmed within the timeout", out)
		}
		switch {
		case p.connected && now >= p.byeAt+p.cfg.Heartbeat:
			// Unanswered (lost, or late): say it again on a new
			// connection, which also keeps the standby from timing out.
			p.connected = false
			out = append(out, Action{Kind: ActDisconnect, Reason: "goodbye unanswered"})
			if !p.connecting {
				out = p.connect(out)
			}
		case !p.connected && !p.connecting && now >= p.lastAttempt+p.cfg.Heartbeat:
			out = p.connect(out)
		}
		return out
	default:
		return out
	}
	if p.state == PReconnecting && !p.connecting && now >= p.lastAttempt+p.cfg.Heartbeat {
		// Retry quickly: the standby may be back before the timeout.
		out = p.connect(out)
	}
	if p.connected && now >= p.lastHB+p.cfg.Heartbeat {
		p.lastHB = now
		out = append(out, Action{Kind: ActHeartbeat})
	}
	if p.state == PProtected && len(p.inflight) < p.cfg.Inflight && now >= p.nextCheckpoint() {
		e := p.next
		p.next++
		p.inflight = append(p.inflight, e)
		if p.cfg.Mode == ModeEpoch {
			// Hold the grid: the next slot is one interval after this
			// one's, not after now, so pause and transmit time do not
			// stretch the period. Re-anchor only when a whole interval
			// behind (back-pressure from a slow standby).
			p.due += p.cfg.Interval
			if p.due < now-p.cfg.Interval {
				p.due = now + p.cfg.Interval
			}
		}
		p.lastCk = now
		p.pending = false
		out = append(out, Action{Kind: ActCheckpoint, Epoch: e})
	}
	return out
}

func notify(why string) Action { return Action{Kind: ActNotify, Reason: why} }
