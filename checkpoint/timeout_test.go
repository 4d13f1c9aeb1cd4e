package checkpoint

import (
	"strings"
	"testing"
	"time"
)

// TestDeriveTimeout pins the documented formula: T = max(floor, 3 ×
// interval, 3.5 × (pause p99 + jitter p99 + round trip p99)), rounded up
// to 10 ms, at most the ceiling; and the reason names each measure.
func TestDeriveTimeout(t *testing.T) {
	ms := time.Millisecond
	for _, c := range []struct {
		in    TimeoutInputs
		want  time.Duration
		bound string
	}{
		{TimeoutInputs{PauseP99: 38 * ms, JitterP99: 12 * ms, RTTP99: 67 * ms}, 410 * ms, "3.5 × their sum"}, // 3.5 × 117 = 409.5
		{TimeoutInputs{PauseP99: ms, JitterP99: ms, RTTP99: ms}, TimeoutFloor, "floor 100ms"},
		{TimeoutInputs{PauseP99: ms, JitterP99: ms, RTTP99: ms, Interval: 100 * ms}, 300 * ms, "floor 3 × interval"},
		{TimeoutInputs{PauseP99: 2 * time.Second, JitterP99: time.Second, RTTP99: time.Second}, TimeoutCeiling, "ceiling 10s"},
		{TimeoutInputs{PauseP99: 20 * ms, JitterP99: 10 * ms, RTTP99: 2 * ms}, 120 * ms, "3.5 × their sum"}, // 112 → 120
	} {
		got, why := DeriveTimeout(c.in)
		if got != c.want || !strings.HasSuffix(why, c.bound) {
			t.Errorf("%+v: %v (%s), want %v (%s)", c.in, got, why, c.want, c.bound)
		}
		if !strings.HasPrefix(why, "derived: pause p99 ") || !strings.Contains(why, "heartbeat jitter p99") || !strings.Contains(why, "round trip p99") {
			t.Errorf("reason %q does not name the measures", why)
		}
	}
}

// TestTunerWaitsAndHysteresis: nothing is derived before DeriveSamples of
// every measure; then the timeout follows the measures up at once, and
// down only when it falls by more than a fifth.
func TestTunerWaitsAndHysteresis(t *testing.T) {
	ms := time.Millisecond
	tu := newTimeoutTuner(PrimaryConfig{DeriveTimeout: true})
	tu.cur = DefaultTimeout
	t0 := time.Unix(1000, 0)
	tu.frame(t0) // the connection's first frame: no gap yet
	feed := func(n int, pause, gap, rtt time.Duration) (time.Duration, string) {
		var d time.Duration
		var why string
		for i := 0; i < n; i++ {
			tu.pauses.add(pause)
			t0 = t0.Add(gap)
			tu.frame(t0)
			if x, w := tu.ack(p99(tu.pauses.d), rtt); x != 0 {
				d, why = x, w
			}
		}
		return d, why
	}
	if d, _ := feed(DeriveSamples-1, 10*ms, 20*ms, 20*ms); d != 0 || tu.announced() != DefaultTimeout {
		t.Fatalf("derived %v from %d samples", d, DeriveSamples-1)
	}
	d, why := feed(1, 10*ms, 20*ms, 20*ms)
	if d != 110*ms || tu.announced() != 110*ms { // 3.5 × (10 + 0 + 20) ms = 105 → 110
		t.Fatalf("after %d samples: %v (%s), announced %v", DeriveSamples, d, why, tu.announced())
	}
	// Slightly better measures: within a fifth, kept.
	if d, _ := feed(256, 10*ms, 20*ms, 14*ms); d != 0 { // 3.5 × 24 ms → 100 ms, within a fifth of 110
		t.Fatalf("a fall within a fifth changed the timeout to %v", d)
	}
	// Worse: raised at once.
	if d, _ := feed(DeriveSamples, 10*ms, 20*ms, 200*ms); d < 500*ms {
		t.Fatalf("round trips of 200 ms: timeout %v", d)
	}
	// Jitter: one gap in ten 30 ms longer than the rest.
	tu = newTimeoutTuner(PrimaryConfig{DeriveTimeout: true})
	tu.cur = DefaultTimeout
	t0 = time.Unix(2000, 0)
	tu.frame(t0)
	for i := 0; i < DeriveSamples; i++ {
		tu.pauses.add(ms)
		gap := 20 * ms
		if i%10 == 9 {
			gap += 30 * ms
		}
		t0 = t0.Add(gap)
		tu.frame(t0)
		d, why = tu.ack(p99(tu.pauses.d), 10*ms)
	}
	if d != 150*ms || !strings.Contains(why, "heartbeat jitter p99 30ms") { // 3.5 × (1 + 30 + 10) = 143.5 → 150
		t.Fatalf("with jitter: %v (%s)", d, why)
	}
}
