package main

import (
	"os"
	"runtime/debug"
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

// StreamCaptured forwards libxl.StreamCapture, which the engine asks of its
// Sink by type assertion.
func (s budgetSink) StreamCaptured(t libxl.DomainType) bool {
	sc, ok := s.Sink.(libxl.StreamCapture)
	return ok && sc.StreamCaptured(t)
}
