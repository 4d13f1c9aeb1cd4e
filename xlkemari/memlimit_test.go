package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/sim"
)

// roomSink is a Sink whose backend answers libxl.ReplicaRoom with err.
type roomSink struct {
	libxl.Sink
	err error
}

func (r roomSink) RoomFor(libxl.DomainInfo) error { return r.err }

// TestBudgetSinkRoomFor: a replica the host's memory cannot hold is
// refused with the sizes; one that fits is left to the backend's answer.
func TestBudgetSinkRoomFor(t *testing.T) {
	avail, ok := memAvailable()
	if !ok || avail == 0 {
		t.Fatal("no MemAvailable in /proc/meminfo")
	}
	h, err := sim.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	huge := libxl.DomainInfo{Name: "big", Pages: 2 * avail / libxl.PageSize}
	if err := (budgetSink{h}).RoomFor(huge); err == nil || !strings.Contains(err.Error(), `replica of "big"`) {
		t.Fatalf("RoomFor a guest twice the host's available memory: %v", err)
	}
	small := libxl.DomainInfo{Name: "small", Pages: 16}
	if err := (budgetSink{h}).RoomFor(small); err != nil {
		t.Fatalf("RoomFor a 64 KiB guest: %v", err)
	}
	short := errors.New("backend short")
	if err := (budgetSink{roomSink{h, short}}).RoomFor(small); !errors.Is(err, short) {
		t.Fatalf("the backend's answer was not passed on: %v", err)
	}
}
