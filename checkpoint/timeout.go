package checkpoint

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/xl-kemari/xl-kemari/checkpoint/epoch"
	"github.com/xl-kemari/xl-kemari/checkpoint/wire"
)

// A derived timeout (PrimaryConfig.DeriveTimeout: no timeout configured).
//
// A peer is declared lost after Timeout without a frame from it. What a
// healthy peer's silence is made of, as the primary measures it:
//
//   - the pause: the loop is busy capturing a checkpoint (its p99);
//   - the jitter of the standby's frames (its heartbeats and acks): the
//     99th percentile of the gaps between two frames less their median
//     (scheduling on either host, the standby's commits, the link);
//   - the round trip of a checkpoint: from its barrier to its ack (the
//     link's latency and bandwidth, the standby's commit); not of a
//     sync's checkpoint, which waits behind the pre-copy's last round
//     (heartbeats do not: they preempt).
//
// X = pause p99 + jitter p99 + round trip p99 is then a bound on a healthy
// silence beyond the heartbeat period (Timeout/5). The derived timeout is
//
//	T = max(TimeoutFloor, 3 × interval (epoch mode), 3.5 × X), rounded up to 10 ms, at most TimeoutCeiling
//
// so that the longest healthy silence, T/5 + X, stays under T/2: a margin
// of two over what was measured. Until DeriveSamples of each measure
// exist (the sync's checkpoint and the first epochs) the timeout is the
// configured one, DefaultTimeout unless told otherwise. It is derived
// again every DeriveSamples acks, over the last 256 samples of each, and
// changed when it rises, or falls by more than a fifth (hysteresis). The
// primary announces each value to the standby (a TIMEOUT record,
// docs/protocol.md §5.13), which uses it too unless it was given its own.
const (
	DefaultTimeout = time.Second
	TimeoutFloor   = 100 * time.Millisecond
	TimeoutCeiling = 10 * time.Second
	DeriveSamples  = 32
	deriveWindow   = 256
	// announceMin and announceMax bound an announced timeout a standby
	// takes (the range of the timeout setting, xl-kemari.cfg(5)).
	announceMin = 10 * time.Millisecond
	announceMax = time.Hour
)

// TimeoutInputs are the measures a timeout is derived from.
type TimeoutInputs struct {
	PauseP99  time.Duration
	JitterP99 time.Duration
	RTTP99    time.Duration
	Interval  time.Duration // epoch mode: the checkpoint period; 0 in event mode
}

// DeriveTimeout returns the timeout for in, and why, in words.
func DeriveTimeout(in TimeoutInputs) (time.Duration, string) {
	x := in.PauseP99 + in.JitterP99 + in.RTTP99
	t := time.Duration(3.5 * float64(x))
	bound := "3.5 × their sum"
	if f := 3 * in.Interval; f > t {
		t, bound = f, "floor 3 × interval"
	}
	if t < TimeoutFloor {
		t, bound = TimeoutFloor, fmt.Sprintf("floor %s", TimeoutFloor)
	}
	if r := t % (10 * time.Millisecond); r != 0 {
		t += 10*time.Millisecond - r
	}
	if t > TimeoutCeiling {
		t, bound = TimeoutCeiling, fmt.Sprintf("ceiling %s", TimeoutCeiling)
	}
	return t, fmt.Sprintf("derived: pause p99 %s + heartbeat jitter p99 %s + checkpoint round trip p99 %s, %s",
		roundDur(in.PauseP99), roundDur(in.JitterP99), roundDur(in.RTTP99), bound)
}

// p99 returns the 99th percentile of d (nearest rank), 0 for none.
func p99(d []time.Duration) time.Duration { return percentile(d, 99) }

// percentile returns the q-th percentile of d (nearest rank), 0 for none.
func percentile(d []time.Duration, q int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (q*len(s) + 99) / 100
	return s[max(min(i, len(s)), 1)-1]
}

// window keeps the last deriveWindow samples.
type window struct{ d []time.Duration }

func (w *window) add(d time.Duration) {
	if len(w.d) == deriveWindow {
		w.d = append(w.d[:0], w.d[1:]...)
	}
	w.d = append(w.d, d)
}

// timeoutTuner measures and derives the primary's timeout. frame,
// restart, current and announced are safe from any goroutine (and on a
// nil tuner: a Primary built by hand in a test), the rest are the loop's.
type timeoutTuner struct {
	derive   bool
	interval time.Duration
	pauses   window
	rtts     window
	acks     int
	syncCk   uint64 // the last sync's checkpoint: its round trip is not a sample

	mu sync.Mutex
	// Protected by mu.
	gaps      window
	lastFrame time.Time
	cur       time.Duration // the timeout in use; announced on every connection once derived
	derived   bool          // cur was derived (not the configured default)
}

func newTimeoutTuner(cfg PrimaryConfig) *timeoutTuner {
	t := &timeoutTuner{derive: cfg.DeriveTimeout, cur: time.Duration(cfg.Epoch.Timeout)}
	if cfg.Epoch.Mode == epoch.ModeEpoch {
		t.interval = time.Duration(cfg.Epoch.Interval)
	}
	return t
}

// frame records the arrival of a frame from the standby at now. Safe from
// any goroutine.
func (t *timeoutTuner) frame(now time.Time) {
	if t == nil || !t.derive {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.lastFrame.IsZero() {
		t.gaps.add(now.Sub(t.lastFrame))
	}
	t.lastFrame = now
}

// pause records a checkpoint's pause.
func (t *timeoutTuner) pause(d time.Duration) {
	if t != nil {
		t.pauses.add(d)
	}
}

// restart forgets the last frame's time (a new connection: the gap to its
// first frame is not a healthy silence).
func (t *timeoutTuner) restart() {
	if t == nil {
		return
	}
	t.mu.Lock()
	t.lastFrame = time.Time{}
	t.mu.Unlock()
}

// current returns the timeout in use. Safe from any goroutine.
func (t *timeoutTuner) current() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cur
}

// announced returns the timeout to announce on a new connection: the one
// in use, configured or derived (a standby not given its own, such as a
// listen service, then runs the same), 0 on a nil tuner.
func (t *timeoutTuner) announced() time.Duration {
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cur
}

// ack records a checkpoint's round trip and, every DeriveSamples acks,
// derives the timeout again. It returns the new timeout and why, or 0
// when the timeout stays.
func (t *timeoutTuner) ack(pauseP99 time.Duration, rtt time.Duration) (time.Duration, string) {
	if !t.derive || rtt <= 0 {
		return 0, ""
	}
	t.rtts.add(rtt)
	t.acks++
	if t.acks%DeriveSamples != 0 || len(t.pauses.d) < DeriveSamples || len(t.rtts.d) < DeriveSamples {
		return 0, ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.gaps.d) < DeriveSamples {
		return 0, ""
	}
	jitter := p99(t.gaps.d) - percentile(t.gaps.d, 50)
	d, why := DeriveTimeout(TimeoutInputs{PauseP99: pauseP99, JitterP99: jitter, RTTP99: p99(t.rtts.d), Interval: t.interval})
	if d == t.cur || t.derived && d < t.cur && d*5 > t.cur*4 {
		return 0, ""
	}
	t.cur, t.derived = d, true
	return d, why
}

// timeoutText is Status.TimeoutWhy for a timeout d set by why.
func timeoutText(d time.Duration, why string) string {
	return fmt.Sprintf("timeout %s, %s; set with --timeout", roundDur(d), why)
}

// initTimeout puts the primary's timeout and its origin in the status.
func (p *Primary) initTimeout() {
	p.tune = newTimeoutTuner(p.cfg)
	d := time.Duration(p.cfg.Epoch.Timeout)
	why := "configured"
	if p.cfg.DeriveTimeout {
		why = fmt.Sprintf("the conservative default until measured (derived after %d checkpoints)", DeriveSamples)
	}
	p.status.update(func(s *Status) {
		s.Timeout = Dur(d)
		s.TimeoutWhy = timeoutText(d, why)
		if !p.cfg.DeriveTimeout {
			s.TimeoutWhy = fmt.Sprintf("timeout %s, configured (--timeout or timeout=)", roundDur(d))
		}
	})
}

// retune feeds the ack of checkpoint e whose round trip (barrier to ack)
// was rtt; a newly derived timeout goes to the machine, the status, the
// log and the standby. On the loop goroutine.
func (p *Primary) retune(e uint64, rtt time.Duration) {
	if p.tune == nil {
		return
	}
	if e <= p.tune.syncCk {
		rtt = 0 // the sync's checkpoint: not a sample
	}
	d, why := p.tune.ack(p99(p.tune.pauses.d), rtt)
	if d == 0 {
		return
	}
	old := time.Duration(p.m.Timeout())
	p.m.SetTimeout(epoch.Duration(d), p.now())
	text := timeoutText(d, why)
	p.status.update(func(s *Status) { s.Timeout, s.TimeoutWhy = Dur(d), text })
	p.log.Info("timeout derived", "timeout", d, "was", old, "why", why)
	p.observe(Observation{Kind: ObsTimeout, Msg: text})
	if p.conn != nil {
		p.conn.send(sendItem{kind: itemTimeout, epoch: uint64(d)})
	}
}

// adoptTimeout takes the primary's announced timeout (a TIMEOUT record)
// unless this standby was given its own. On the loop goroutine.
func (s *Standby) adoptTimeout(r *wire.Timeout, now epoch.Duration) {
	d := time.Duration(r.Nanos)
	if !s.cfg.AdoptTimeout {
		if d != time.Duration(s.m.Timeout()) {
			s.log.Info("primary announced a timeout; keeping the configured one", "announced", d, "timeout", time.Duration(s.m.Timeout()))
		}
		return
	}
	if d < announceMin || d > announceMax {
		s.log.Warn("primary announced a timeout out of range; ignored", "announced", d)
		return
	}
	if epoch.Duration(d) == s.m.Timeout() {
		return
	}
	s.m.SetTimeout(epoch.Duration(d), now)
	s.log.Info("timeout announced by the primary", "timeout", d)
	text := fmt.Sprintf("timeout %s, announced by the primary; set with --timeout", roundDur(d))
	s.status.update(func(st *Status) { st.Timeout, st.TimeoutWhy = Dur(d), text })
	s.observe(Observation{Kind: ObsTimeout, Msg: text})
}

// initStandbyTimeout puts the standby's timeout in its status.
func (s *Standby) initStandbyTimeout() {
	d := time.Duration(s.cfg.Epoch.Timeout)
	why := "configured (--timeout or timeout=)"
	if s.cfg.AdoptTimeout {
		why = "the default, until the primary announces one"
	}
	s.status.update(func(st *Status) { st.Timeout, st.TimeoutWhy = Dur(d), fmt.Sprintf("timeout %s, %s", roundDur(d), why) })
}
