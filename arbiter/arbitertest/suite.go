package arbitertest

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/xl-kemari/xl-kemari/arbiter"
)

// Pair is one backing store seen from both sides, as a backend's test
// builds it for each case.
type Pair struct {
	// P and S are the primary's and the standby's arbiter: one value,
	// two clients, or two processes.
	P, S arbiter.Leaser
	// Clock is the fake clock P's and S's leases run on, or nil for real
	// time (the suite then waits for real time to pass, polling under a
	// deadline).
	Clock *FakeClock
	// TTL for the lease cases: long enough that a Hold or renewal round
	// trip takes well under a tenth of it on a loaded machine.
	TTL time.Duration
	// Stall makes P's lease renewals hang (a stuck keep-alive) until
	// resume is called.
	Stall func() (resume func())
	// Hang makes every operation of P hang (a hung mount, a stopped
	// server) until resume is called.
	Hang func() (resume func())
	// FastLapse: a lease whose holder ends without Release (abandoned,
	// its process killed) is seen lapsed by the peer at once, not after
	// its ttl (file:, through the holder's lock).
	FastLapse bool
	// Kill kills S's process, and Freeze stops it (SIGSTOP) until resume;
	// nil when S is not a process of its own.
	Kill   func()
	Freeze func() (resume func())
}

// long bounds every wait of the suite: far more than any case needs, so
// that only a hang fails it.
const long = 60 * time.Second

// Run runs the contract cases, each on a Pair from newPair.
func Run(t *testing.T, newPair func(t *testing.T) *Pair) {
	cases := []struct {
		name string
		run  func(t *testing.T, p *Pair)
	}{
		{"AcquireRaceOneWinnerStable", acquireRace},
		{"DistinctSessionsIndependent", distinctSessions},
		{"HoldExcludesOthers", holdExcludes},
		{"HoldRespectsOwner", holdRespectsOwner},
		{"WaitLapsedNoLease", waitLapsedNoLease},
		{"LeaseRenewed", leaseRenewed},
		{"LeaseExpiresWhenRenewalsStall", leaseExpires},
		{"HungBackendHonoursContext", hungBackend},
		{"AbandonedLeaseLapses", abandonedLapses},
		{"KilledHolderLeaseLapses", killedHolder},
		{"StoppedHolderKeepsLease", stoppedHolder},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t, newPair(t)) })
	}
}

func session(t *testing.T) [16]byte {
	var s [16]byte
	if _, err := rand.Read(s[:]); err != nil {
		t.Fatal(err)
	}
	return s
}

func ctxLong(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), long)
	t.Cleanup(cancel)
	return ctx
}

func (p *Pair) now() time.Time {
	if p.Clock != nil {
		return p.Clock.Now()
	}
	return time.Now()
}

// eventually polls cond until it holds, failing after long.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(long)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", long, what)
		}
		<-time.After(5 * time.Millisecond)
	}
}

func acquire(t *testing.T, a arbiter.Arbiter, s [16]byte, r arbiter.Role) bool {
	t.Helper()
	ok, err := a.Acquire(ctxLong(t), s, r)
	if err != nil {
		t.Fatalf("Acquire(%s): %v", r, err)
	}
	return ok
}

func hold(t *testing.T, a arbiter.Leaser, s [16]byte, r arbiter.Role, ttl time.Duration) arbiter.Lease {
	t.Helper()
	l, err := a.Hold(ctxLong(t), s, r, ttl)
	if err != nil {
		t.Fatalf("Hold(%s): %v", r, err)
	}
	t.Cleanup(func() { l.Release(context.Background()) })
	return l
}

func release(t *testing.T, l arbiter.Lease) {
	t.Helper()
	if err := l.Release(ctxLong(t)); err != nil {
		t.Fatalf("Release: %v", err)
	}
	select {
	case <-l.Done():
	default:
		t.Fatal("Done not closed after Release")
	}
	if !errors.Is(l.Err(), arbiter.ErrReleased) {
		t.Fatalf("Err after Release = %v, want ErrReleased", l.Err())
	}
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: err = %v, want %v", what, err, want)
	}
}

// acquireRace: both roles ask at once, on many sessions; exactly one is
// granted each, and every later ask by either gets the same answer.
func acquireRace(t *testing.T, p *Pair) {
	for i := 0; i < 20; i++ {
		s := session(t)
		var (
			wg     sync.WaitGroup
			go1    = make(chan struct{})
			gp, gs bool
			ep, es error
		)
		wg.Add(2)
		go func() { defer wg.Done(); <-go1; gp, ep = p.P.Acquire(ctxLong(t), s, arbiter.Primary) }()
		go func() { defer wg.Done(); <-go1; gs, es = p.S.Acquire(ctxLong(t), s, arbiter.Standby) }()
		close(go1)
		wg.Wait()
		if ep != nil || es != nil {
			t.Fatalf("session %d: Acquire errors: primary %v, standby %v", i, ep, es)
		}
		if gp == gs {
			t.Fatalf("session %d: primary granted %v, standby granted %v: want exactly one", i, gp, gs)
		}
		for j := 0; j < 2; j++ {
			if acquire(t, p.P, s, arbiter.Primary) != gp || acquire(t, p.S, s, arbiter.Standby) != gs {
				t.Fatalf("session %d: answers changed on asking again", i)
			}
		}
	}
}

// distinctSessions: winning one session says nothing about another.
func distinctSessions(t *testing.T, p *Pair) {
	a, b := session(t), session(t)
	if !acquire(t, p.P, a, arbiter.Primary) || !acquire(t, p.S, b, arbiter.Standby) {
		t.Fatal("first asks of two fresh sessions not granted")
	}
	if acquire(t, p.S, a, arbiter.Standby) || acquire(t, p.P, b, arbiter.Primary) {
		t.Fatal("the loser of a session was granted it")
	}
	if !acquire(t, p.P, a, arbiter.Primary) || !acquire(t, p.S, b, arbiter.Standby) {
		t.Fatal("an owner was refused its session on asking again")
	}
}

// holdExcludes: one live lease per session; Acquire by the other role
// waits (ErrHeld) while it lives; after Release the peer sees it gone at
// once, and the session's owner decides Hold.
func holdExcludes(t *testing.T, p *Pair) {
	s := session(t)
	l := hold(t, p.P, s, arbiter.Primary, p.TTL)
	if !l.Valid(p.now()) {
		t.Fatal("a lease just granted is not Valid")
	}
	if l.Err() != nil {
		t.Fatalf("Err of a live lease = %v", l.Err())
	}
	_, err := p.S.Hold(ctxLong(t), s, arbiter.Standby, p.TTL)
	wantErr(t, "standby Hold while the primary holds", err, arbiter.ErrHeld)
	_, err = p.P.Hold(ctxLong(t), s, arbiter.Primary, p.TTL)
	wantErr(t, "second primary Hold", err, arbiter.ErrHeld)
	ok, err := p.S.Acquire(ctxLong(t), s, arbiter.Standby)
	wantErr(t, "standby Acquire while the primary holds", err, arbiter.ErrHeld)
	if ok {
		t.Fatal("standby granted while the primary holds a lease")
	}
	if !acquire(t, p.P, s, arbiter.Primary) {
		t.Fatal("the lease holder was refused Acquire")
	}
	release(t, l)
	if l.Valid(p.now()) {
		t.Fatal("Valid after Release")
	}
	if err := p.S.WaitLapsed(ctxLong(t), s, arbiter.Primary); err != nil {
		t.Fatalf("WaitLapsed after Release: %v", err)
	}
	_, err = p.S.Hold(ctxLong(t), s, arbiter.Standby, p.TTL)
	wantErr(t, "standby Hold of the primary's session", err, arbiter.ErrDenied)
	if acquire(t, p.S, s, arbiter.Standby) {
		t.Fatal("standby granted the primary's session")
	}
	release(t, hold(t, p.P, s, arbiter.Primary, p.TTL))
}

// holdRespectsOwner: the session's owner (Acquire) may Hold; the other
// role is denied for good.
func holdRespectsOwner(t *testing.T, p *Pair) {
	s := session(t)
	if !acquire(t, p.S, s, arbiter.Standby) {
		t.Fatal("fresh session refused")
	}
	_, err := p.P.Hold(ctxLong(t), s, arbiter.Primary, p.TTL)
	wantErr(t, "primary Hold of the standby's session", err, arbiter.ErrDenied)
	l := hold(t, p.S, s, arbiter.Standby, p.TTL)
	if !acquire(t, p.P, s, arbiter.Standby) {
		t.Fatal("the owner's Acquire refused through the other client")
	}
	release(t, l)
}

// waitLapsedNoLease: no lease, no wait; a live lease of the asked role
// keeps WaitLapsed waiting until ctx ends (well within the ttl).
func waitLapsedNoLease(t *testing.T, p *Pair) {
	s := session(t)
	if err := p.S.WaitLapsed(ctxLong(t), s, arbiter.Primary); err != nil {
		t.Fatalf("WaitLapsed without a lease: %v", err)
	}
	l := hold(t, p.P, s, arbiter.Primary, p.TTL)
	if err := p.S.WaitLapsed(ctxLong(t), s, arbiter.Standby); err != nil {
		t.Fatalf("WaitLapsed(standby) while the primary holds: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(p.TTL/10, 200*time.Millisecond))
	defer cancel()
	err := p.S.WaitLapsed(ctx, s, arbiter.Primary)
	wantErr(t, "WaitLapsed on a live lease", err, context.DeadlineExceeded)
	release(t, l)
}

// leaseRenewed: a holder that can reach the arbiter keeps its lease past
// its first validity.
func leaseRenewed(t *testing.T, p *Pair) {
	s := session(t)
	l := hold(t, p.P, s, arbiter.Primary, p.TTL)
	u0 := l.Until()
	if p.Clock != nil {
		// The renewer and the expirer wait on the clock; a third of
		// the ttl later the renewer renews.
		if err := p.Clock.WaitTimers(ctxLong(t), 2); err != nil {
			t.Fatal(err)
		}
		p.Clock.Advance(p.TTL / 2)
	}
	eventually(t, "the lease renewed", func() bool { return l.Until().After(u0) })
	if p.Clock == nil {
		eventually(t, "real time past the first validity", func() bool { return time.Now().After(u0) })
	}
	if !l.Valid(p.now()) {
		t.Fatalf("renewed lease not Valid (err %v)", l.Err())
	}
	if err := l.Err(); err != nil {
		t.Fatalf("renewed lease ended: %v", err)
	}
	release(t, l)
}

// leaseExpires: renewals hang; Valid is false ttl-margin after Hold
// returned whatever the keep-alive does, Done closes, the peer sees the
// lease lapse and takes the session, and the old holder is denied.
func leaseExpires(t *testing.T, p *Pair) {
	s := session(t)
	resume := p.Stall()
	t.Cleanup(resume)
	l := hold(t, p.P, s, arbiter.Primary, p.TTL)
	t1 := p.now()
	if !l.Valid(t1) {
		t.Fatal("a lease just granted is not Valid")
	}
	if end := t1.Add(p.TTL - arbiter.Margin(p.TTL)); l.Valid(end) {
		t.Fatalf("Valid at Hold's return + ttl - margin (until %v, asked %v)", l.Until(), end)
	}
	if p.Clock != nil {
		p.Clock.Advance(p.TTL)
	}
	select {
	case <-l.Done():
	case <-time.After(long):
		t.Fatal("Done not closed after the lease ran out")
	}
	wantErr(t, "Err of a lapsed lease", l.Err(), arbiter.ErrLeaseLost)
	if l.Valid(p.now()) {
		t.Fatal("Valid after Done")
	}
	if err := p.S.WaitLapsed(ctxLong(t), s, arbiter.Primary); err != nil {
		t.Fatalf("WaitLapsed: %v", err)
	}
	if !acquire(t, p.S, s, arbiter.Standby) {
		t.Fatal("standby refused after the primary's lease lapsed")
	}
	resume()
	_, err := p.P.Hold(ctxLong(t), s, arbiter.Primary, p.TTL)
	wantErr(t, "old holder's Hold after the standby took over", err, arbiter.ErrDenied)
}

// hungBackend: every operation on a hung backend returns by its ctx's
// deadline with an error wrapping it; a lease held across the hang is
// invalid by its own clock; after the hang the backend answers again.
func hungBackend(t *testing.T, p *Pair) {
	s := session(t)
	l := hold(t, p.P, s, arbiter.Primary, p.TTL)
	resume := p.Hang()
	t.Cleanup(resume)
	t1 := p.now()
	other := session(t)
	ops := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"Acquire", func(ctx context.Context) error { _, err := p.P.Acquire(ctx, s, arbiter.Primary); return err }},
		{"Hold", func(ctx context.Context) error { _, err := p.P.Hold(ctx, other, arbiter.Primary, p.TTL); return err }},
		{"WaitLapsed", func(ctx context.Context) error { return p.P.WaitLapsed(ctx, s, arbiter.Primary) }},
	}
	for _, op := range ops {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		res := make(chan error, 1)
		go func() { res <- op.call(ctx) }()
		select {
		case err := <-res:
			wantErr(t, op.name+" on a hung backend", err, context.DeadlineExceeded)
		case <-time.After(long):
			t.Fatalf("%s on a hung backend did not return by its ctx's deadline", op.name)
		}
		cancel()
	}
	if l.Valid(t1.Add(p.TTL)) {
		t.Fatal("a lease is Valid a ttl into a hang of its backend")
	}
	resume()
	eventually(t, "the backend answers after the hang", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := p.P.Acquire(ctx, session(t), arbiter.Primary)
		return err == nil
	})
}

// lapsedSoon waits for role's lease on s to be seen lapsed by a: within
// half the ttl when the pair has FastLapse (the holder is gone, not just
// silent), else, the clock advanced past the ttl, eventually.
func lapsedSoon(t *testing.T, p *Pair, a arbiter.Leaser, s [16]byte, r arbiter.Role) {
	t.Helper()
	if p.FastLapse {
		ctx, cancel := context.WithTimeout(context.Background(), p.TTL/2)
		defer cancel()
		if err := a.WaitLapsed(ctx, s, r); err != nil {
			t.Fatalf("WaitLapsed on a lease whose holder is gone, within half its ttl: %v", err)
		}
		return
	}
	if p.Clock != nil {
		p.Clock.Advance(p.TTL)
	}
	if err := a.WaitLapsed(ctxLong(t), s, r); err != nil {
		t.Fatalf("WaitLapsed on a lease whose holder is gone: %v", err)
	}
}

// abandonedLapses: a lease its holder abandons (arbiter.Abandoner, as a
// killed holder's) is invalid at once at the holder, and the peer sees it
// lapse (at once with FastLapse) and takes the session.
func abandonedLapses(t *testing.T, p *Pair) {
	s := session(t)
	l := hold(t, p.P, s, arbiter.Primary, p.TTL)
	a, ok := l.(arbiter.Abandoner)
	if !ok {
		t.Skip("the backend's leases cannot be abandoned")
	}
	a.Abandon()
	select {
	case <-l.Done():
	default:
		t.Fatal("Done not closed after Abandon")
	}
	if l.Valid(p.now()) {
		t.Fatal("Valid after Abandon")
	}
	wantErr(t, "Err after Abandon", l.Err(), arbiter.ErrLeaseLost)
	lapsedSoon(t, p, p.S, s, arbiter.Primary)
	if !acquire(t, p.S, s, arbiter.Standby) {
		t.Fatal("standby refused after the primary abandoned its lease")
	}
}

// killedHolder: S's process holds a lease and is killed; P sees the
// lease lapse (at once with FastLapse) and takes the session.
func killedHolder(t *testing.T, p *Pair) {
	if p.Kill == nil {
		t.Skip("S is not a process of its own")
	}
	s := session(t)
	if _, err := p.S.Hold(ctxLong(t), s, arbiter.Standby, p.TTL); err != nil {
		t.Fatalf("Hold: %v", err)
	}
	p.Kill()
	lapsedSoon(t, p, p.P, s, arbiter.Standby)
	if !acquire(t, p.P, s, arbiter.Primary) {
		t.Fatal("primary refused after the standby's holder was killed")
	}
}

// stoppedHolder: S's process holds a lease and is stopped (SIGSTOP, a
// hung host): its lease stays live until its ttl, however fast a killed
// holder's lapses; the peer's Acquire is refused with ErrHeld meanwhile.
func stoppedHolder(t *testing.T, p *Pair) {
	if p.Freeze == nil {
		t.Skip("S is not a process of its own")
	}
	s := session(t)
	if _, err := p.S.Hold(ctxLong(t), s, arbiter.Standby, p.TTL); err != nil {
		t.Fatalf("Hold: %v", err)
	}
	resume := p.Freeze()
	t.Cleanup(resume)
	ctx, cancel := context.WithTimeout(context.Background(), p.TTL/4)
	defer cancel()
	err := p.P.WaitLapsed(ctx, s, arbiter.Standby)
	wantErr(t, "WaitLapsed on a stopped holder's lease", err, context.DeadlineExceeded)
	_, err = p.P.Acquire(ctxLong(t), s, arbiter.Primary)
	wantErr(t, "Acquire against a stopped holder's lease", err, arbiter.ErrHeld)
	resume()
}
