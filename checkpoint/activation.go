package checkpoint

import (
	"fmt"
	"strings"
	"time"

	"github.com/xl-kemari/xl-kemari/checkpoint/epoch"
)

// The standby's activation as the operator sees it: from the decision
// (ActActivate: the primary silent for the timeout, the arbiter's grant,
// a failover by hand) until the replica runs, status says "activating";
// the log and the observers stamp the decision and, in activate, the
// completion with its time from the decision.

// activationReason is why the machine's actions acts activate the
// replica: the reason of their notification.
func activationReason(acts []epoch.Action) string {
	for _, a := range acts {
		if a.Kind == epoch.ActNotify {
			return strings.TrimSuffix(a.Reason, "; activated")
		}
	}
	return "activation"
}

// noteActivating makes the decision to activate visible before the
// replica is resumed, which can take seconds on Xen: status says
// "activating" (why, at which epoch), the log and the observers are told
// how long the primary had been silent. It returns the decision's time.
func (s *Standby) noteActivating(reason string) time.Time {
	t := time.Now()
	e := s.m.Committed()
	silent := time.Duration(s.now() - s.m.LastHeard())
	s.status.update(func(st *Status) {
		st.State, st.StateSince, st.Reason, st.LastHeard = "activating", t, reason, Dur(silent)
		st.Epoch = e
	})
	s.log.Warn(fmt.Sprintf("activating the replica at epoch %d", e), "epoch", e, "reason", reason,
		"last_heard", fmt.Sprintf("%s ago", roundDur(silent)))
	s.observe(Observation{Kind: ObsActivating, Epoch: e, State: "activating",
		Msg: fmt.Sprintf("activating at epoch %d: reason=%s; primary last heard %s ago", e, reason, roundDur(silent))})
	return t
}

// roundDur rounds d for people: microseconds below a millisecond, then
// tenths of milliseconds.
func roundDur(d time.Duration) time.Duration {
	if d < time.Millisecond {
		return d.Round(time.Microsecond)
	}
	return d.Round(100 * time.Microsecond)
}
