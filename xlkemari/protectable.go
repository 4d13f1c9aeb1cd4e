package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/xl-kemari/xl-kemari/arbiter"
	"github.com/xl-kemari/xl-kemari/conf"
	"github.com/xl-kemari/xl-kemari/libxl"
)

// protectTarget is what the refusals of start look at in a domain: on a
// running domain what the hypervisor describes, in `config` what its
// xl.cfg says.
type protectTarget struct {
	Name  string
	Type  libxl.DomainType
	Disks []libxl.Disk
}

// Errors of checkProtectable, for the exit code and, in `config`, the
// position to blame.
var (
	// errDomainType: the backend does not protect domains of this type.
	errDomainType = errors.New("domain type")
	// errWritableDisk: a domain with a writable disk cannot be protected
	// on a backend that does not replicate disks.
	errWritableDisk = errors.New("writable disk")
	// errArbiter: the arbiter setting cannot be served by this build.
	errArbiter = errors.New("arbiter")
)

// checkProtectable is every refusal of start that the configuration
// alone does not decide, in one place so that `config` reports exactly
// what `start` would refuse, with the same words: the domain's type
// against the types backend protects (types), its writable disks, and
// the arbiter. Each problem is an error wrapping errDomainType,
// errWritableDisk or errArbiter; they are joined.
func checkProtectable(d protectTarget, backend string, types []libxl.DomainType, prot conf.Protection) error {
	var errs []error
	if !typeProtected(types, d.Type) {
		why := ""
		if d.Type == libxl.TypeHVM && backend == xenBackendName {
			why = ": an HVM guest's device model (QEMU) is neither checkpointed nor its emulated NIC's output held"
		}
		errs = append(errs, refusal{errDomainType, fmt.Errorf("%s is a %s domain; the %s backend of this release protects %s domains only%s (see xl-kemari(1), GUESTS)",
			d.Name, d.Type, backend, typeList(types), why)})
	}
	if err := checkDisks(d.Name, d.Disks, prot); err != nil {
		errs = append(errs, err)
	}
	if _, err := arbiter.Open(prot.Arbiter); err != nil {
		errs = append(errs, refusal{errArbiter, err})
	}
	return errors.Join(errs...)
}

// refusal is err, classified as kind for errors.Is without kind's text.
type refusal struct{ kind, err error }

func (r refusal) Error() string   { return r.err.Error() }
func (r refusal) Unwrap() []error { return []error{r.kind, r.err} }

// typeProtected says whether t is among the types a backend protects
// end to end.
func typeProtected(types []libxl.DomainType, t libxl.DomainType) bool {
	for _, c := range types {
		if c == t {
			return true
		}
	}
	return false
}

func typeList(ts []libxl.DomainType) string {
	if len(ts) == 0 {
		return "no"
	}
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = string(t)
	}
	return strings.Join(s, " and ")
}

// checkDisks refuses a domain with a writable disk that xl-kemari does
// not replicate, unless its protection says disk=none, unsafe=1. A disk
// is replicated when it is served by the NBD disk front (script=
// block-kemari, target=NAME: docs/disk.md) and the mode is replicate;
// any other writable disk would, after a failover, meet the replica's
// memory with writes missing (a copy on the standby) or with writes of
// epochs that were never acknowledged (shared storage), which can
// corrupt the guest's file systems. Shared mode on Xen is not built yet.
// Read-only disks and CD-ROMs are fine: the standby attaches the same
// paths.
func checkDisks(name string, disks []libxl.Disk, prot conf.Protection) error {
	if prot.Disk == "none" && prot.Unsafe {
		return nil
	}
	var rw, bad []string
	for _, d := range disks {
		if !d.Writable {
			continue
		}
		rw = append(rw, d.Target)
		if !frontDisk(d) {
			bad = append(bad, d.Target)
		} else if _, err := frontName(d.Target); err != nil {
			bad = append(bad, d.Target)
		}
	}
	if len(rw) == 0 {
		return nil
	}
	if len(bad) == 0 && (prot.Disk == "replicate" || prot.Disk == "") {
		return nil
	}
	if len(bad) == 0 {
		return fmt.Errorf("%w: %s: disk=%s is not implemented on Xen yet; its disks (%s) are served by block-kemari, which replicates them with disk=replicate. "+
			"Or, if losing or mixing their writes is acceptable, disk=none, unsafe=1",
			errWritableDisk, name, prot.Disk, strings.Join(rw, ", "))
	}
	return fmt.Errorf("%w: %s writes to %s, which xl-kemari does not replicate: after a failover the replica's memory would meet a disk that does not match it (writes missing, or writes of unacknowledged epochs present), which can corrupt its file systems. "+
		"Serve each writable disk through the disk front (xl.cfg: 'format=raw, vdev=xvda, access=rw, script=block-kemari, target=NAME'; see xl-kemari(1), DISKS), "+
		"or, if losing or mixing those writes is acceptable (scratch disks, or a guest that keeps its state in memory), say so in its kemari entry: disk=none, unsafe=1 (now disk=%s)",
		errWritableDisk, name, strings.Join(bad, ", "), prot.Disk)
}

// frontDisk says whether d is served by the NBD disk front.
func frontDisk(d libxl.Disk) bool {
	return filepath.Base(d.Script) == "block-kemari"
}

// configTarget is the protectTarget of a domain as its xl.cfg describes
// it, with the position of each disk entry (for `config`'s messages).
func configTarget(d *conf.Domain) (protectTarget, []conf.Pos) {
	t := protectTarget{Name: d.Name, Type: libxl.DomainType(d.Type)}
	var pos []conf.Pos
	var entries []*conf.Value
	if v := d.File.Get("disk"); v != nil {
		entries = v.List
	}
	for i, spec := range d.Disks {
		a := conf.ParseDiskAccess(spec)
		t.Disks = append(t.Disks, libxl.Disk{Index: i, Target: a.Target, Writable: a.Writable, Script: a.Script})
		if i < len(entries) {
			pos = append(pos, entries[i].Pos)
		}
	}
	return t, pos
}

// xenBackendName is the name of the real Xen backend (libxl/xen).
const xenBackendName = "xen"
