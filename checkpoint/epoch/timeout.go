package epoch

// Changing the timeout of a running machine (a timeout derived from what
// the drivers measured, or announced by the primary: docs/protocol.md
// §5.13). The deadlines the machines compute from it move at once: a
// longer timeout extends the current silence's allowance; a shorter one
// declares a silent peer lost at the earlier of the old deadline and the
// new timeout from the change, so the change itself never declares a peer
// lost, nor makes the machine look stalled (late by more than Timeout/2
// for a deadline that the change moved into the past).

// Timeout returns the machine's failure-detection timeout.
func (p *Primary) Timeout() Duration { return p.cfg.Timeout }

// SetTimeout changes the timeout to d (ignored unless positive) at now,
// the driver's clock as in Event.Now. The heartbeat and reconnect periods
// follow it where they were the defaults derived from it (Timeout/5,
// Timeout/2).
func (p *Primary) SetTimeout(d, now Duration) {
	old := p.cfg
	p.cfg = retime(p.cfg, d)
	if p.cfg.Timeout >= old.Timeout {
		return
	}
	now = max(now, p.now)
	p.lastHeard = min(p.lastHeard+old.Timeout-p.cfg.Timeout, max(p.lastHeard, now))
	p.lastHB = max(p.lastHB, now-p.cfg.Heartbeat)
	p.lastAttempt = max(p.lastAttempt, now-min(p.cfg.Retry, p.cfg.Heartbeat))
	p.stopAt = max(p.stopAt, now-p.cfg.Timeout)
	p.byeAt = max(p.byeAt, now-p.cfg.Heartbeat)
}

// Timeout returns the machine's failure-detection timeout.
func (s *Standby) Timeout() Duration { return s.cfg.Timeout }

// SetTimeout changes the timeout to d at now, as Primary.SetTimeout does.
func (s *Standby) SetTimeout(d, now Duration) {
	old := s.cfg
	s.cfg = retime(s.cfg, d)
	if s.cfg.Timeout >= old.Timeout {
		return
	}
	now = max(now, s.now)
	if s.stalledAt == 0 {
		// (A stalled standby's mark is cleared by frames heard for a
		// timeout after the stall: its lastHeard stays what was heard.)
		s.lastHeard = min(s.lastHeard+old.Timeout-s.cfg.Timeout, max(s.lastHeard, now))
	}
	s.lastHB = max(s.lastHB, now-s.cfg.Heartbeat)
}

func retime(c Config, d Duration) Config {
	if d <= 0 || d == c.Timeout {
		return c
	}
	if c.Heartbeat == c.Timeout/5 {
		c.Heartbeat = d / 5
	}
	if c.Retry == c.Timeout/2 {
		c.Retry = d / 2
	}
	c.Timeout = d
	return c
}
