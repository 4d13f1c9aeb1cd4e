package libxl

import (
	"fmt"
	"math/bits"
	"net"
	"net/netip"
)

// PageSize is the size in bytes of one guest page (x86 4 KiB pages).
const PageSize = 4096

// DomID identifies a domain on one host, like Xen's domid_t.
type DomID uint32

// DomIDInvalid is the zero value no real domain has in this contract.
const DomIDInvalid DomID = 0xFFFFFFFF

// PFN is a guest page frame number: byte address / PageSize.
type PFN uint64

// DomainType is the virtualisation mode of a domain.
type DomainType string

// Domain types, named as in xl.cfg's type= key.
const (
	TypePV  DomainType = "pv"
	TypePVH DomainType = "pvh"
	TypeHVM DomainType = "hvm"
)

// DomainInfo describes a domain well enough for a standby to create a
// replica of the same shape. It travels in the replication HELLO.
type DomainInfo struct {
	Name  string
	UUID  [16]byte
	Type  DomainType
	Pages uint64 // guest memory size in pages
	VCPUs int
	NICs  []NIC
	Disks []Disk
	// Workload names the simulated guest program (sim only; empty on Xen).
	Workload string
	// Config is the backend's own description of the domain, opaque to the
	// engine (libxl JSON on Xen, workload parameters on sim).
	Config []byte
}

// NIC is one virtual network interface of a domain.
type NIC struct {
	Index   int
	MAC     net.HardwareAddr
	Addrs   []netip.Addr // guest addresses, announced on failover
	Bridge  string       // dom0 bridge the backend device is a port of
	Backend string       // dom0 backend device, e.g. "vif3.0"
}

// Disk is one virtual disk of a domain.
type Disk struct {
	Index    int
	Target   string // backing path on the host
	Sectors  uint64 // size in 512-byte sectors
	Writable bool
	// Script is the disk's hotplug script as xl.cfg names it
	// ("block-kemari" for the NBD disk front; "" for none).
	Script string
}

// SectorSize is the unit of disk offsets in this contract.
const SectorSize = 512

// StateKind says what a state blob holds.
type StateKind uint32

// State blob kinds. The engine ships them opaquely; only the backend that
// produced a blob interprets it.
const (
	StateVCPU     StateKind = 1 // one vCPU's registers; Index is the vCPU
	StatePlatform StateKind = 2 // timers, interrupt controllers, p2m shape
	StateDevice   StateKind = 3 // one device's backend state; Index is the device
)

// State is one opaque blob of vCPU, platform or device state.
type State struct {
	Kind  StateKind
	Index uint32
	Data  []byte
}

// Bitmap is a dense bitmap of PFNs, as Xen's log-dirty bitmap.
type Bitmap struct {
	words []uint64
	n     uint64
}

// NewBitmap returns a cleared bitmap able to hold n bits.
func NewBitmap(n uint64) *Bitmap {
	return &Bitmap{words: make([]uint64, (n+63)/64), n: n}
}

// Len is the number of bits the bitmap holds.
func (b *Bitmap) Len() uint64 { return b.n }

// Words exposes the backing words, for backends that fill the bitmap in bulk.
func (b *Bitmap) Words() []uint64 { return b.words }

// Set sets bit p.
func (b *Bitmap) Set(p PFN) { b.words[p/64] |= 1 << (p % 64) }

// Clear clears bit p.
func (b *Bitmap) Clear(p PFN) { b.words[p/64] &^= 1 << (p % 64) }

// Test reports whether bit p is set.
func (b *Bitmap) Test(p PFN) bool {
	return uint64(p) < b.n && b.words[p/64]&(1<<(p%64)) != 0
}

// Reset clears every bit.
func (b *Bitmap) Reset() { clear(b.words) }

// Or sets every bit that is set in o. Both must have the same length.
func (b *Bitmap) Or(o *Bitmap) {
	for i, w := range o.words {
		b.words[i] |= w
	}
}

// Count returns the number of set bits.
func (b *Bitmap) Count() uint64 {
	var c int
	for _, w := range b.words {
		c += bits.OnesCount64(w)
	}
	return uint64(c)
}

// AppendSet appends the set bits, in ascending order, to dst.
func (b *Bitmap) AppendSet(dst []PFN) []PFN {
	for i, w := range b.words {
		for w != 0 {
			t := bits.TrailingZeros64(w)
			dst = append(dst, PFN(uint64(i)*64+uint64(t)))
			w &= w - 1
		}
	}
	return dst
}

// String summarises the bitmap for logs.
func (b *Bitmap) String() string { return fmt.Sprintf("bitmap(%d/%d)", b.Count(), b.n) }
