package checkpoint

import (
	"sync"
	"time"
)

// ObsKind says what an Observation reports.
type ObsKind uint8

// Observation kinds.
const (
	ObsState      ObsKind = iota + 1 // the machine changed state; Msg says why
	ObsCheckpoint                    // primary: checkpoint Epoch captured (Pause, Pages)
	ObsRelease                       // primary: output through Epoch released
	ObsCommit                        // standby: Epoch committed and acknowledged
	ObsSync                          // primary: initial sync progress (Percent, Round; Msg: what is not yet protected)
	ObsActivate                      // standby: the replica was activated at Epoch
	ObsError                         // something failed; Msg says what
	ObsWarning                       // a condition the operator must know of; Msg says what
	// ObsActivating: the standby decided to activate its replica at Epoch
	// (Msg: why, and when the primary was last heard); ObsActivate follows
	// once the replica runs, Took after this decision.
	ObsActivating
	// ObsTimeout: the failure-detection timeout changed (derived, or
	// announced by the primary); Msg says to what and why.
	ObsTimeout
)

// FailStopWarning is given at start when no arbiter is configured (I4).
const FailStopWarning = "no arbiter configured: a standby that loses contact takes over; this is safe only if a silent primary is a dead one (fail-stop)"

// Observation is one event in a driver's life, published to the
// Observer (tests, logs, `xl kemari status`).
type Observation struct {
	Kind    ObsKind
	Time    time.Time
	Epoch   uint64
	State   string
	Pause   time.Duration
	Pages   int
	Bytes   uint64
	Percent float64
	Round   int           // ObsSync: the pre-copy round, from 1
	Took    time.Duration // ObsActivate: from the decision (ObsActivating) until the replica ran
	Digest  uint64        // ObsCheckpoint: memory digest at the checkpoint; ObsActivate: recomputed from the replica
	Msg     string
}

// Status is a snapshot of one protection, as `xl kemari status` shows it.
type Status struct {
	Role            string    `json:"role"`
	Domain          string    `json:"domain"`
	Peer            string    `json:"peer"`
	State           string    `json:"state"`
	StateSince      time.Time `json:"state_since"`
	SyncPercent     float64   `json:"sync_percent"`
	DiskSyncPercent float64   `json:"disk_sync_percent,omitempty"` // the initial copy of the disks (replicate mode)
	// NotYetProtected (primary): no checkpoint of this protection has been
	// acknowledged since it started or since the standby was lost. Output
	// produced before the sync's checkpoint leaves unheld (it is never
	// held during the pre-copy: see checkpoint/sync.go), and until the ack
	// a failure of this host leaves no replica to resume. Protection says
	// where the sync is, in words; SyncRound (from 1) and SyncSent (guest
	// memory sent in this sync, per cent, over 100 once rounds resend
	// dirtied pages) are its numbers.
	NotYetProtected  bool      `json:"not_yet_protected,omitempty"`
	Protection       string    `json:"protection,omitempty"`
	SyncRound        int       `json:"sync_round,omitempty"`
	SyncSent         float64   `json:"sync_memory_sent_percent,omitempty"`
	UnprotectedSince time.Time `json:"unprotected_since,omitzero"`
	Epoch            uint64    `json:"epoch"` // primary: acked; standby: committed
	Checkpoints      uint64    `json:"checkpoints"`
	EpochRate        float64   `json:"epoch_rate_hz"`
	LastPause        Dur       `json:"last_pause"`
	AvgPause         Dur       `json:"avg_pause"`
	MaxPause         Dur       `json:"max_pause"`
	LastDirty        int       `json:"last_dirty_pages"`
	AvgDirty         float64   `json:"avg_dirty_pages"`
	BytesRaw         uint64    `json:"bytes_raw"`
	BytesWire        uint64    `json:"bytes_wire"`
	Bandwidth        float64   `json:"bandwidth_bytes_per_s"`
	Compression      float64   `json:"compression_ratio"`
	CommitLatency    Dur       `json:"avg_commit_latency"` // barrier → release
	OutputHeld       uint64    `json:"output_held_frames"`
	Released         uint64    `json:"output_released_frames"`
	Discarded        uint64    `json:"epochs_discarded"`
	FallbackEpoch    uint64    `json:"fallback_epoch,omitempty"` // standby: the previous replica's, kept while a new one is built
	ActivatedEpoch   uint64    `json:"activated_epoch,omitempty"`
	// Activation is how long the replica took to run after the standby
	// decided to activate it (the primary's timeout, the arbiter's grant,
	// a failover by hand): the decision is at StateSince of "activating".
	Activation Dur `json:"activation_time,omitempty"`
	// Reason says why the standby is activating, or activated, its
	// replica (state "activating"/"active"); LastHeard is how long the
	// primary had been silent at that decision.
	Reason string `json:"reason,omitempty"`
	// Timeout is the failure-detection timeout in use; TimeoutWhy says
	// where it comes from ("timeout 412ms, derived: pause p99 ...").
	Timeout    Dur    `json:"timeout,omitempty"`
	TimeoutWhy string `json:"timeout_why,omitempty"`
	LastHeard  Dur    `json:"last_heard,omitempty"`
}

// Dur is a duration that marshals as a string ("1.5ms").
type Dur time.Duration

// MarshalText implements encoding.TextMarshaler.
func (d Dur) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler, so a Status read
// back from its JSON (the control socket) round-trips.
func (d *Dur) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Dur(v)
	return err
}

// statusBox publishes a Status across goroutines.
type statusBox struct {
	mu sync.Mutex
	// Protected by mu.
	st Status
}

func (b *statusBox) get() Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.st
}

func (b *statusBox) update(f func(*Status)) {
	b.mu.Lock()
	f(&b.st)
	b.mu.Unlock()
}

// rateWindow measures an event rate over a sliding window of timestamps.
type rateWindow struct {
	t []time.Time
}

func (r *rateWindow) add(t time.Time) float64 {
	r.t = append(r.t, t)
	for len(r.t) > 2 && t.Sub(r.t[0]) > 5*time.Second {
		r.t = r.t[1:]
	}
	if len(r.t) < 2 {
		return 0
	}
	return float64(len(r.t)-1) / t.Sub(r.t[0]).Seconds()
}

// byteRate measures a byte rate over a sliding window of samples of a
// cumulative counter (a connection's wire bytes). A counter that goes
// back (a new connection) starts the window again.
type byteRate struct {
	t []time.Time
	n []uint64
}

func (r *byteRate) add(t time.Time, total uint64) float64 {
	if k := len(r.n); k > 0 && total < r.n[k-1] {
		r.t, r.n = r.t[:0], r.n[:0]
	}
	r.t, r.n = append(r.t, t), append(r.n, total)
	for len(r.t) > 2 && t.Sub(r.t[0]) > 5*time.Second {
		r.t, r.n = r.t[1:], r.n[1:]
	}
	d := t.Sub(r.t[0])
	if len(r.t) < 2 || d <= 0 {
		return 0
	}
	return float64(total-r.n[0]) / d.Seconds()
}
