package checkpoint

import (
	"errors"
	"fmt"

	"github.com/xl-kemari/xl-kemari/checkpoint/wire"
	"github.com/xl-kemari/xl-kemari/diskbuf"
	"github.com/xl-kemari/xl-kemari/libxl"
)

// ErrLimit: the primary declared or sent more than this standby holds
// (docs/protocol.md §9). The session ends; the standby goes on.
var ErrLimit = errors.New("checkpoint: over a standby limit")

// ErrSession: a one-shot standby's session ended on an error with nothing
// left to hold (StandbyConfig.Once).
var ErrSession = errors.New("checkpoint: session failed")

// Defaults of StandbyLimits (docs/protocol.md §9).
const (
	// DefaultMaxPages is 1 TiB of guest memory: the standby's own
	// bookkeeping (the memory digest, 8 octets a page) is then at most
	// 2 GiB, and the host must still have room for the replica itself
	// (libxl.ReplicaRoom).
	DefaultMaxPages uint64 = 1 << 28
	// DefaultMaxVCPUs is above what Xen 4.17 gives any guest.
	DefaultMaxVCPUs = 4096
	// DefaultMaxDiskSectors is 64 PiB per disk; it keeps sector arithmetic
	// in octets far from overflowing an int64.
	DefaultMaxDiskSectors uint64 = 1 << 47
	// DefaultEpochStateBytes is the STATE data one epoch may stage beyond
	// 8 octets per guest page (a PV stream capture's page-type record
	// grows with the guest); vCPU, platform and device blobs are KiB each.
	DefaultEpochStateBytes int64 = 64 << 20
	// DefaultEpochDiskBytes is the DISK data one epoch may stage (and the
	// most a resync carries for the epochs it covers).
	DefaultEpochDiskBytes int64 = 256 << 20
)

// StandbyLimits bound what a primary can make a standby allocate: the
// domain its HELLO declares, checked before anything is created for it,
// and what one epoch may stage until its EPOCH_END, derived from that
// domain. A zero field takes its default.
type StandbyLimits struct {
	MaxPages        uint64 // HELLO domain.pages
	MaxVCPUs        int    // HELLO domain.vcpus
	MaxDiskSectors  uint64 // HELLO domain.disks[i].sectors
	EpochStateBytes int64  // STATE data per epoch, beyond 8 octets per guest page
	EpochDiskBytes  int64  // DISK data per epoch
}

func (l StandbyLimits) withDefaults() StandbyLimits {
	if l.MaxPages == 0 {
		l.MaxPages = DefaultMaxPages
	}
	if l.MaxVCPUs == 0 {
		l.MaxVCPUs = DefaultMaxVCPUs
	}
	if l.MaxDiskSectors == 0 {
		l.MaxDiskSectors = DefaultMaxDiskSectors
	}
	if l.EpochStateBytes == 0 {
		l.EpochStateBytes = DefaultEpochStateBytes
	}
	if l.EpochDiskBytes == 0 {
		l.EpochDiskBytes = DefaultEpochDiskBytes
	}
	return l
}

// checkDomain refuses a declared domain this standby must not try to
// hold, naming the HELLO field. It allocates nothing.
func (l StandbyLimits) checkDomain(d libxl.DomainInfo) error {
	var errs []error
	switch {
	case d.Pages == 0:
		errs = append(errs, fmt.Errorf("%w: HELLO domain.pages is 0", ErrLimit))
	case d.Pages > l.MaxPages:
		errs = append(errs, fmt.Errorf("%w: HELLO domain.pages %d above this standby's %d (%d MiB)",
			ErrLimit, d.Pages, l.MaxPages, l.MaxPages*libxl.PageSize>>20))
	}
	if d.VCPUs <= 0 || d.VCPUs > l.MaxVCPUs {
		errs = append(errs, fmt.Errorf("%w: HELLO domain.vcpus %d not in 1..%d", ErrLimit, d.VCPUs, l.MaxVCPUs))
	}
	for i, k := range d.Disks {
		if k.Sectors > l.MaxDiskSectors {
			errs = append(errs, fmt.Errorf("%w: HELLO domain.disks[%d].sectors %d above this standby's %d",
				ErrLimit, i, k.Sectors, l.MaxDiskSectors))
		}
	}
	return errors.Join(errs...)
}

// epochBudget is what one epoch of domain d may stage.
type epochBudget struct {
	pages      uint64 // PAGES entries (each page once; twice for slack)
	states     int    // STATE records
	stateBytes int64
	diskBytes  int64
	disks      int // DISK records: each carries at least one sector
}

func (l StandbyLimits) budget(d libxl.DomainInfo) epochBudget {
	// A PV stream capture sends some records per vCPU and some dozen for
	// the platform; the simulator and HVM one per vCPU, device and the
	// platform.
	states := 64 + 16*d.VCPUs + len(d.NICs) + len(d.Disks)
	diskBytes := l.EpochDiskBytes
	var size int64
	for _, k := range d.Disks {
		size += int64(k.Sectors) * diskbuf.SectorSize
	}
	diskBytes = min(diskBytes, size) // no more than the disks hold
	return epochBudget{
		pages:      2 * d.Pages,
		states:     states,
		stateBytes: l.EpochStateBytes + 8*int64(d.Pages),
		diskBytes:  diskBytes,
		disks:      int(diskBytes / diskbuf.SectorSize),
	}
}

// epochUse is what the open epoch has staged so far.
type epochUse struct {
	pages      uint64
	states     int
	stateBytes int64
	diskBytes  int64
	disks      int
}

// charge adds rec to u and reports the first limit of b it passes, naming
// the record and the epoch.
func (u *epochUse) charge(b epochBudget, e uint64, rec wire.Record) error {
	switch r := rec.(type) {
	case *wire.Pages:
		u.pages += uint64(len(r.PFNs))
		if u.pages > b.pages {
			return fmt.Errorf("%w: epoch %d: PAGES: %d page entries, above the %d the domain allows", ErrLimit, e, u.pages, b.pages)
		}
	case *wire.State:
		u.states++
		u.stateBytes += int64(len(r.Data))
		switch {
		case u.states > b.states:
			return fmt.Errorf("%w: epoch %d: STATE: %d records, above the %d the domain allows", ErrLimit, e, u.states, b.states)
		case u.stateBytes > b.stateBytes:
			return fmt.Errorf("%w: epoch %d: STATE: %d octets, above the %d the domain allows", ErrLimit, e, u.stateBytes, b.stateBytes)
		}
	case *wire.Disk:
		u.disks++
		u.diskBytes += int64(len(r.Data))
		switch {
		case u.disks > b.disks:
			return fmt.Errorf("%w: epoch %d: DISK: %d records, above the %d the domain allows", ErrLimit, e, u.disks, b.disks)
		case u.diskBytes > b.diskBytes:
			return fmt.Errorf("%w: epoch %d: DISK: %d octets, above the %d the domain's disks allow", ErrLimit, e, u.diskBytes, b.diskBytes)
		}
	}
	return nil
}
