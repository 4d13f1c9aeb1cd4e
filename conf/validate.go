package conf

// Validate checks that the fields of p make sense together; each field on
// its own was checked when it was set. Every conflict is reported, joined,
// each a *PosError wrapping ErrConflict and placed at the value that was
// set most specifically (a default never conflicts with a default).
func (p Protection) Validate() error {
	var errs errorList
	p.validate(&errs)
	return errs.err()
}

// blame returns the position of whichever of fields was set by the layer
// with the highest precedence.
func (p Protection) blame(fields ...Field) Pos {
	best := p.Origins[fields[0]]
	for _, f := range fields[1:] {
		if o := p.Origins[f]; o.Source > best.Source {
			best = o
		}
	}
	return best.Pos
}

func (p Protection) validate(errs *errorList) {
	if p.Netbuf == "none" && !p.Unsafe {
		errs.add(p.blame(FieldNetbuf, FieldUnsafe), ErrConflict,
			"netbuf=none lets the guest's packets out before the standby has acknowledged them (no output commit); add unsafe=1 to accept losing that guarantee")
	}
	if p.Mode == "event" && p.MinInterval > p.Interval {
		errs.add(p.blame(FieldMinInterval, FieldInterval), ErrConflict,
			"min-interval %s is larger than interval %s: in event mode interval is the longest gap between checkpoints and min-interval the shortest", p.MinInterval, p.Interval)
	}
	if p.Timeout < TimeoutFactor*p.Interval {
		errs.add(p.blame(FieldTimeout, FieldInterval), ErrConflict,
			"timeout %s is not comfortably larger than interval %s: a peer would be declared dead after fewer than %d missed checkpoints; use timeout=%s or more",
			p.Timeout, p.Interval, TimeoutFactor, TimeoutFactor*p.Interval)
	}
}
