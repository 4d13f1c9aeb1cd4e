package main

import (
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"

	"github.com/xl-kemari/xl-kemari/libxl"
)

// The Go heap of a protector or standby holds about one guest's worth of
// pages at its peak (the initial sync, the replica's pages), and with the
// default GOGC the heap may grow to twice its live size before a
// collection. In a dom0 of a few hundred megabytes that is the difference
// between running and the OOM killer (measured in the lab: a primary of a
// 192 MiB PV guest peaked at 521 MB RSS without a limit, 385 MB with
// one). So, unless the administrator set GOMEMLIMIT, the command sets a
// soft memory limit of memBase plus memPerGuest times the memory of the
// guests it holds. The limit only makes the collector work harder near
// it; it never fails an allocation.
const (
	memBase     = 96 << 20
	memPerGuest = 1.25
)

// memBudget is the limit's bookkeeping; one per process.
var memBudget struct {
	sync.Mutex
	guests map[string]int64 // guest memory in bytes, by domain name
}

// reserveGuestMemory sets the soft memory limit for the guests this
// process holds, domain's now being of pages pages (a protected domain,
// or a replica: `listen` holds several), unless GOMEMLIMIT is set. A new
// replica of the same domain replaces the old one's reservation.
func reserveGuestMemory(domain string, pages uint64) {
	if _, set := os.LookupEnv("GOMEMLIMIT"); set || pages == 0 {
		return
	}
	memBudget.Lock()
	defer memBudget.Unlock()
	if memBudget.guests == nil {
		memBudget.guests = map[string]int64{}
	}
	memBudget.guests[domain] = int64(pages) * 4096
	var sum int64
	for _, g := range memBudget.guests {
		sum += g
	}
	debug.SetMemoryLimit(memBase + int64(float64(sum)*memPerGuest))
}

// budgetSink reserves memory for every replica a Sink creates.
type budgetSink struct{ libxl.Sink }

// CreateReplica implements libxl.Sink.
func (s budgetSink) CreateReplica(info libxl.DomainInfo) (libxl.DomID, error) {
	reserveGuestMemory(info.Name, info.Pages)
	return s.Sink.CreateReplica(info)
}

// RoomFor implements libxl.ReplicaRoom: this process keeps a replica's
// pages (about the guest's memory again, with headroom) beside those it
// holds, so the host must have that much available; then the backend's
// own answer, if it has one.
func (s budgetSink) RoomFor(info libxl.DomainInfo) error {
	if avail, ok := memAvailable(); ok {
		need := uint64(float64(info.Pages*libxl.PageSize) * memPerGuest)
		if avail < need {
			return fmt.Errorf("%d MiB available in this host's memory for a replica of %q that needs %d MiB", avail>>20, info.Name, need>>20)
		}
	}
	if r, ok := s.Sink.(libxl.ReplicaRoom); ok {
		return r.RoomFor(info)
	}
	return nil
}

// memAvailable returns MemAvailable from /proc/meminfo, in bytes.
func memAvailable() (uint64, bool) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err == nil
		}
	}
	return 0, false
}

// StreamCaptured forwards libxl.StreamCapture, which the engine asks of its
// Sink by type assertion.
func (s budgetSink) StreamCaptured(t libxl.DomainType) bool {
	sc, ok := s.Sink.(libxl.StreamCapture)
	return ok && sc.StreamCaptured(t)
}

// PrepareActivate forwards libxl.ActivationPreparer, which the standby asks
// of its Sink by type assertion; a Sink without it has nothing to prepare.
func (s budgetSink) PrepareActivate(dom libxl.DomID) error {
	if p, ok := s.Sink.(libxl.ActivationPreparer); ok {
		return p.PrepareActivate(dom)
	}
	return nil
}
