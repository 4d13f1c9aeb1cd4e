package checkpointtest

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/xl-kemari/xl-kemari/arbiter"
)

// verifier is the one invariant checker of the harness. Every part of the
// cluster reports what it does to it, in the order it happens (one lock:
// the log is a total order of the whole cluster's events, stamped with
// virtual time), and each report is checked against the invariants at
// once, not at the end:
//
//   - I1: output of epoch k leaves the primary while protected only once
//     the standby has committed k; an ACK(k) leaves the standby only once
//     it has committed k.
//   - I2: each commit equals the primary's snapshot at that checkpoint
//     (checked by the cluster, reported here).
//   - I3: the standby activates at an epoch whose checkpoint covers every
//     output the primary ever released (protected or not).
//   - I4: with an arbiter, the primary releases held output only with the
//     grant or once the standby has discarded its replica, and the standby
//     activates only with the grant; with or without, no output leaves the
//     primary's live guest once the replica runs (but held output of an
//     epoch the replica resumed at or after, acked before the takeover),
//     and the replica does not start while the primary's output flows.
//
// Without an arbiter the harness injects no partition, so the fail-stop
// assumption holds and the same checks apply; the warning must be given.
type verifier struct {
	t0      time.Time
	arbiter bool
	timeout time.Duration

	mu sync.Mutex
	// Protected by mu.
	log         []string
	violations  []string
	faults      []string
	committed   uint64 // the current standby's last commit
	everProt    bool   // the primary has protected output at least once
	unprotected bool   // the primary's output passes through
	pGrant      bool   // the primary holds the arbiter's grant since it last protected
	sGrant      bool
	replicaGone bool   // the standby discarded its replica and committed nothing since
	lastBarrier uint64 // the primary's highest barrier
	frontier    uint64 // every output released is covered by checkpoint >= frontier
	pAlive      bool   // the primary's guest exists
	sActive     bool
	sEpoch      uint64
	warned      bool
	closed      bool          // the run is over: log no more
	lease       arbiter.Lease // the primary's latest lease (leasing arbiter)
}

// primaryLease records the lease the primary holds from now on.
func (v *verifier) primaryLease(l arbiter.Lease) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.lease = l
}

func (v *verifier) close() {
	v.mu.Lock()
	v.closed = true
	v.mu.Unlock()
}

func newVerifier(arb bool, timeout time.Duration) *verifier {
	return &verifier{t0: time.Now(), arbiter: arb, timeout: timeout, pAlive: true}
}

// entry appends to the log. Preconditions: mu held.
func (v *verifier) entry(s string) {
	if v.closed {
		return
	}
	l := fmt.Sprintf("%9.3fms %s", float64(time.Since(v.t0))/float64(time.Millisecond), s)
	if debug {
		fmt.Fprintln(os.Stderr, l)
	}
	v.log = append(v.log, l)
}

// violate records a violation. Preconditions: mu held.
func (v *verifier) violate(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	if v.closed {
		return
	}
	v.entry("VIOLATION " + s)
	v.violations = append(v.violations, s)
}

func (v *verifier) logf(format string, args ...any) {
	v.mu.Lock()
	v.entry(fmt.Sprintf(format, args...))
	v.mu.Unlock()
}

func (v *verifier) fault(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	v.mu.Lock()
	v.entry("fault " + s)
	v.faults = append(v.faults, s)
	v.mu.Unlock()
}

func (v *verifier) violation(format string, args ...any) {
	v.mu.Lock()
	v.violate(format, args...)
	v.mu.Unlock()
}

func (v *verifier) barrier(k uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if k > v.lastBarrier {
		v.lastBarrier = k
	}
}

func (v *verifier) protect() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.entry("P protect")
	v.unprotected, v.everProt, v.pGrant = false, true, false
}

func (v *verifier) unprotect() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.entry("P unprotect")
	if v.arbiter && v.everProt && !v.unprotected && !v.pGrant && !v.replicaGone && v.pAlive {
		v.violate("I4: the primary released held output without the arbiter's grant while the standby held a replica")
	}
	v.unprotected = true
}

// out is one frame leaving the primary with its barrier label (0: after
// the last barrier).
func (v *verifier) out(label uint64, unprot bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	cover := label
	if label == 0 {
		cover = v.lastBarrier + 1
	}
	if !unprot && label > v.committed {
		v.violate("I1: output of epoch %d released while the standby has committed only %d", label, v.committed)
	}
	if v.arbiter && !unprot && (v.lease == nil || !v.lease.Valid(time.Now())) {
		// Bound to the lease (protocol §7.8): a primary whose lease may
		// have lapsed for the standby could be answering beside it.
		v.violate("I4: held output of epoch %d released without a valid arbiter lease", label)
	}
	if cover > v.frontier {
		v.frontier = cover
	}
	// Held output of an epoch the running replica resumed at or after
	// (an ACK in flight when the standby took over) is the replica's own
	// past: releasing it late answers nothing the replica will answer
	// again. Anything else is a second copy answering.
	if v.sActive && v.pAlive && (unprot || label == 0 || label > v.sEpoch) {
		v.violate("I4: output left the primary (epoch %d) after the replica was activated", label)
	}
}

func (v *verifier) commit(k uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.entry(fmt.Sprintf("S commit %d", k))
	v.committed = k
	if k > 0 {
		v.replicaGone = false
	}
}

func (v *verifier) ackSent(k uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.entry(fmt.Sprintf("S ACK %d sent", k))
	if k > v.committed {
		v.violate("I1: the standby acknowledged epoch %d having committed only %d", k, v.committed)
	}
}

func (v *verifier) standbyState(st string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch st {
	case "stopped", "waiting", "denied":
		v.replicaGone = true
	}
}

func (v *verifier) newStandby() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.entry("S new standby")
	v.committed = 0
	v.replicaGone = true
	v.sGrant = false
}

func (v *verifier) grant(role string, granted bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.entry(fmt.Sprintf("arbiter: %s granted=%v", role, granted))
	if granted && role == "primary" {
		v.pGrant = true
	}
	if granted && role == "standby" {
		v.sGrant = true
	}
}

func (v *verifier) activate(k uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.entry(fmt.Sprintf("S activate at %d", k))
	if v.arbiter && !v.sGrant {
		v.violate("I4: the standby activated without the arbiter's grant")
	}
	if k < v.frontier {
		v.violate("I3: replica activated at epoch %d but output covered only by checkpoint %d or later was released", k, v.frontier)
	}
	if v.pAlive && v.unprotected {
		v.violate("I4: replica activated while the primary's guest runs with its output flowing")
	}
	v.sActive, v.sEpoch = true, k
}

func (v *verifier) primaryGone(why string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.entry("P guest gone: " + why)
	v.pAlive = false
}

func (v *verifier) warning(msg string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.entry("P warning: " + msg)
	v.warned = true
}

// end runs the checks that need the whole run.
func (v *verifier) end(sc Scenario, pReturned bool, pErr error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.arbiter && !v.warned {
		v.violate("I4: no arbiter and no fail-stop warning")
	}
	if v.arbiter && v.warned {
		v.violate("fail-stop warning given with an arbiter")
	}
	if v.sActive && v.pAlive && sc != KillPrimary {
		v.violate("I4: the primary's guest still runs after the replica was activated")
	}
	if sc.stops() {
		if !pReturned {
			v.violate("stop: the primary did not return after Stop")
		} else if pErr != nil && !v.sActive {
			v.violate("stop: the primary returned %v though the standby never took over", pErr)
		}
	}
}
