package checkpoint

import (
	"testing"
	"time"
)

func TestByteRate(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var r byteRate
	if got := r.add(t0, 100); got != 0 {
		t.Fatalf("one sample: %v, want 0", got)
	}
	if got := r.add(t0.Add(time.Second), 1100); got != 1000 {
		t.Fatalf("1000 bytes in 1 s: %v", got)
	}
	if got := r.add(t0.Add(2*time.Second), 5100); got != 2500 {
		t.Fatalf("5000 bytes in 2 s: %v", got)
	}
	// The window keeps 5 s: samples older than that drop out.
	if got := r.add(t0.Add(10*time.Second), 5100); got != 0 {
		t.Fatalf("idle window: %v, want 0", got)
	}
	// A new connection restarts its counter: the window starts again
	// instead of reporting a negative or wrapped rate.
	if got := r.add(t0.Add(11*time.Second), 10); got != 0 {
		t.Fatalf("after a counter reset: %v, want 0", got)
	}
	if got := r.add(t0.Add(12*time.Second), 210); got != 200 {
		t.Fatalf("200 bytes in 1 s after the reset: %v", got)
	}
}
