package checkpoint

import (
	"context"
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
