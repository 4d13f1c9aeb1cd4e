package epoch

import "testing"

// protectedPrimary returns a primary that took and had acknowledged its
// sync checkpoint at 1 ms, with timeout T.
func protectedPrimary(t *testing.T, timeout Duration) *Primary {
	t.Helper()
	p := NewPrimary(Config{Mode: ModeEpoch, Interval: 10 * Millisecond, Timeout: timeout})
	p.Step(Event{Kind: EvStart})
	p.Step(Event{Kind: EvConnected})
	p.Step(Event{Kind: EvSyncDone, Epoch: 1})
	p.Step(Event{Kind: EvAck, Now: Millisecond, Epoch: 1})
	if p.State() != PProtected {
		t.Fatalf("state %v, want protected", p.State())
	}
	return p
}

// lostAt steps p with ticks (acks of every checkpoint it takes would be
// frames: none are fed, so the standby is silent from 1 ms) and returns
// when it leaves PProtected.
func lostAt(p *Primary) Duration {
	for now := 2 * Millisecond; now < 10*Second; now += Millisecond {
		p.Step(Event{Kind: EvTick, Now: now})
		if p.State() != PProtected {
			return now
		}
	}
	return -1
}

// TestSetTimeoutMovesDeadline: a timeout changed on a running primary
// moves the moment its silent standby is declared lost, both ways, and a
// shorter one counts from the change at the earliest (never declaring the
// loss, nor a stall, by itself).
// Reference: docs/protocol.md §5.13.
func TestSetTimeoutMovesDeadline(t *testing.T) {
	base := lostAt(protectedPrimary(t, 200*Millisecond))
	if base < 200*Millisecond || base > 202*Millisecond {
		t.Fatalf("with 200 ms: lost at %v", base)
	}
	p := protectedPrimary(t, 200*Millisecond)
	p.SetTimeout(500*Millisecond, Millisecond)
	if got := lostAt(p); got < 500*Millisecond || got > 502*Millisecond {
		t.Fatalf("raised to 500 ms: lost at %v", got)
	}
	if p.cfg.Heartbeat != 100*Millisecond || p.cfg.Retry != 250*Millisecond {
		t.Fatalf("heartbeat %v retry %v: want them to follow the timeout", p.cfg.Heartbeat, p.cfg.Retry)
	}
	p = protectedPrimary(t, 200*Millisecond)
	p.SetTimeout(50*Millisecond, Millisecond)
	if got := lostAt(p); got < 50*Millisecond || got > 52*Millisecond {
		t.Fatalf("lowered to 50 ms: lost at %v", got)
	}
	// Lowered late in a silence: the new timeout counts from the change.
	p = protectedPrimary(t, Second)
	for now := 2 * Millisecond; now <= 300*Millisecond; now += Millisecond {
		p.Step(Event{Kind: EvTick, Now: now})
	}
	p.SetTimeout(100*Millisecond, 300*Millisecond)
	for now := 301 * Millisecond; now <= 399*Millisecond; now += Millisecond {
		p.Step(Event{Kind: EvTick, Now: now})
		if p.State() != PProtected {
			t.Fatalf("lowered to 100 ms at 300 ms: lost at %v", now)
		}
	}
	if p.stalled {
		t.Fatal("lowering the timeout made the machine count itself stalled")
	}
	if got := lostAt(p); got > 402*Millisecond {
		t.Fatalf("lowered to 100 ms at 300 ms: lost at %v, want by 401 ms", got)
	}
}

// TestStandbySetTimeout: the standby's silent primary is declared lost
// (and the replica activated) at the changed timeout.
func TestStandbySetTimeout(t *testing.T) {
	for _, c := range []struct{ from, to, want Duration }{
		{200 * Millisecond, 200 * Millisecond, 200 * Millisecond},
		{200 * Millisecond, 600 * Millisecond, 600 * Millisecond},
		{Second, 100 * Millisecond, 100 * Millisecond},
	} {
		s := NewStandby(Config{Mode: ModeEpoch, Interval: 10 * Millisecond, Timeout: c.from})
		s.Step(Event{Kind: EvHello})
		s.Step(Event{Kind: EvEpochBegin, Epoch: 1})
		s.Step(Event{Kind: EvEpochEnd, Epoch: 1, Verified: true})
		s.SetTimeout(c.to, 0)
		var at Duration = -1
		for now := Millisecond; now < 5*Second && at < 0; now += Millisecond {
			for _, a := range s.Step(Event{Kind: EvTick, Now: now}) {
				if a.Kind == ActActivate {
					at = now
				}
			}
		}
		if at < c.want || at > c.want+2*Millisecond {
			t.Errorf("timeout %v changed to %v: activated at %v", c.from, c.to, at)
		}
	}
}
