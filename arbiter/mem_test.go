package arbiter_test

import (
	"testing"
	"time"

	"github.com/xl-kemari/xl-kemari/arbiter"
	"github.com/xl-kemari/xl-kemari/arbiter/arbitertest"
)

func TestMemContract(t *testing.T) {
	arbitertest.Run(t, func(t *testing.T) *arbitertest.Pair {
		clock := arbitertest.NewFakeClock()
		faults := &arbitertest.Faults{}
		m := &arbiter.Mem{Clock: clock, Fault: faults.Hook}
		return &arbitertest.Pair{P: m, S: m, Clock: clock, TTL: 10 * time.Second,
			Stall: func() func() { return faults.Block("renew") },
			Hang:  func() func() { return faults.Block("*") },
		}
	})
}
