package netns

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// ErrCommit: a reply reached the client without a commit between its
// request and its arrival (invariant I1 broken), or was never answered.
var ErrCommit = errors.New("netns: output released before its epoch was committed")

// Exchange is one request the client sent and the reply it captured.
type Exchange struct {
	Key     string    // protocol and tag, e.g. "icmp/7"
	Sent    time.Time // first copy of the request on the client's wire
	Arrived time.Time // first reply on the client's wire; zero: none
}

// CheckCommit returns every exchange whose reply arrived with no commit
// in (Sent, Arrived), and every one not answered, each wrapping ErrCommit.
// commits are the standby's commit times (any order).
//
// Why this is the right test from outside: a reply is produced after its
// request arrived, so it belongs to an epoch whose barrier is later than
// Sent; that epoch is committed (and logged, before the ack leaves) after
// the barrier, and released only after the ack. So a held reply always
// has such a commit before it, and one that leaked has one only if an
// unrelated commit happened to fall in its round trip.
func CheckCommit(xs []Exchange, commits []time.Time) error {
	cs := slices.Clone(commits)
	slices.SortFunc(cs, func(a, b time.Time) int { return a.Compare(b) })
	var errs []error
	for _, x := range xs {
		if x.Arrived.IsZero() {
			errs = append(errs, fmt.Errorf("%w: %s sent at %s never answered", ErrCommit, x.Key, x.Sent.Format(stamp)))
			continue
		}
		// The first commit after Sent must come before Arrived.
		i, _ := slices.BinarySearchFunc(cs, x.Sent, func(c, t time.Time) int {
			if !c.After(t) {
				return -1
			}
			return 1
		})
		if i == len(cs) || !cs[i].Before(x.Arrived) {
			next := "none"
			if i < len(cs) {
				next = cs[i].Format(stamp)
			}
			errs = append(errs, fmt.Errorf("%w: %s sent %s, answered %s after %v, next commit %s",
				ErrCommit, x.Key, x.Sent.Format(stamp), x.Arrived.Format(stamp), x.Arrived.Sub(x.Sent), next))
		}
	}
	return errors.Join(errs...)
}

const stamp = "15:04:05.000000"
