package checkpoint

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/xl-kemari/xl-kemari/arbiter"
	"github.com/xl-kemari/xl-kemari/checkpoint/epoch"
)

// askArbiter asks arb for session on behalf of role until it answers,
// retrying every second while it is unreachable (the caller keeps what
// the answer decides about — held output, a paused replica — as it is,
// which held says in the log). It returns EvGranted or EvDenied, or false
// once ctx ends or done closes.
func askArbiter(ctx context.Context, done <-chan struct{}, arb arbiter.Arbiter, session [16]byte,
	role arbiter.Role, log *slog.Logger, held string) (epoch.EventKind, bool) {
	for {
		ok, err := arb.Acquire(ctx, session, role)
		if err == nil {
			if ok {
				return epoch.EvGranted, true
			}
			return epoch.EvDenied, true
		}
		if l, ok := arb.(arbiter.Leaser); ok && errors.Is(err, arbiter.ErrHeld) {
			// The other side's lease is live: ask again as soon as it
			// is gone, not a second later.
			log.Info("the other side holds a lease on the session; waiting for it to lapse; "+held, "err", err)
			if werr := l.WaitLapsed(ctx, session, otherRole(role)); werr == nil {
				continue
			}
		}
		log.Warn("arbiter unreachable; "+held, "err", err)
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return 0, false
		case <-done:
			return 0, false
		}
	}
}

// leaseTTL is the ttl of the primary's lease: the timeout, so that a hung
// primary's lease lapses, for a standby observing it, about when the
// standby would give it up anyway (and its holder stops releasing output
// ttl/10 before that, arbiter.Margin).
func leaseTTL(cfg epoch.Config) time.Duration { return time.Duration(cfg.Timeout) }

// holdLease holds a lease of role on session until it is granted (sent on
// got), the session is the other role's (denied), or ctx ends / done
// closes. It retries while the arbiter is unreachable or another lease is
// live.
func holdLease(ctx context.Context, done <-chan struct{}, l arbiter.Leaser, session [16]byte, role arbiter.Role,
	ttl time.Duration, log *slog.Logger) (arbiter.Lease, error) {
	for {
		lease, err := l.Hold(ctx, session, role, ttl)
		if err == nil {
			return lease, nil
		}
		if errors.Is(err, arbiter.ErrDenied) {
			return nil, err
		}
		if errors.Is(err, arbiter.ErrHeld) {
			// An earlier lease (of either role) is live: hold once it is
			// gone.
			werr := l.WaitLapsed(ctx, session, role)
			if werr == nil {
				werr = l.WaitLapsed(ctx, session, otherRole(role))
			}
			if werr == nil {
				continue
			}
		}
		log.Warn("cannot take the arbiter lease; output stays held", "err", err)
		select {
		case <-time.After(min(ttl/3, time.Second)):
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-done:
			return nil, context.Canceled
		}
	}
}

func otherRole(r arbiter.Role) arbiter.Role {
	if r == arbiter.Primary {
		return arbiter.Standby
	}
	return arbiter.Primary
}
