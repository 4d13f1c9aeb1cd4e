package sim

import (
	"encoding/binary"
	"fmt"
	"net"

	"github.com/xl-kemari/xl-kemari/libxl"
)

// State blobs, little endian, each opening with a magic and a version:
//
//	platform (Index 0): "SIMP" v1, steps, touches, pages, vcpus, nics, disks
//	vcpu     (Index i): "SIMV" v1, rng, acc, cursor, ticks
//	device   (Index j): "SIMD" v1, kind (1 NIC, 2 disk), then
//	                    NIC:  mac[6] pad[2], rx, rxDropped, tx, txErrors
//	                    disk: sectors, writes
//
// Device indices number the NICs first, then the disks.
const (
	blobPlatform = 0x504d4953 // "SIMP"
	blobVCPU     = 0x564d4953 // "SIMV"
	blobDevice   = 0x444d4953 // "SIMD"
	blobVersion  = 1
	devNIC       = 1
	devDisk      = 2
)

type platform struct {
	steps   uint64
	touches uint64
}

type blobWriter struct{ b []byte }

func (w *blobWriter) u32(v uint32) { w.b = binary.LittleEndian.AppendUint32(w.b, v) }
func (w *blobWriter) u64(v uint64) { w.b = binary.LittleEndian.AppendUint64(w.b, v) }

type blobReader struct {
	b   []byte
	err error
}

func (r *blobReader) take(n int) []byte {
	if r.err != nil || len(r.b) < n {
		if r.err == nil {
			r.err = fmt.Errorf("truncated")
		}
		return make([]byte, n)
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}
func (r *blobReader) u32() uint32 { return binary.LittleEndian.Uint32(r.take(4)) }
func (r *blobReader) u64() uint64 { return binary.LittleEndian.Uint64(r.take(8)) }

func (r *blobReader) header(magic uint32) {
	if m := r.u32(); r.err == nil && m != magic {
		r.err = fmt.Errorf("magic %#x, want %#x", m, magic)
	}
	if v := r.u32(); r.err == nil && v != blobVersion {
		r.err = fmt.Errorf("version %d, want %d", v, blobVersion)
	}
}

func (r *blobReader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%d trailing bytes", len(r.b))
	}
	return r.err
}

// captureState appends the domain's blobs. Preconditions: d.mu held.
func (d *Domain) captureState(dst []libxl.State) []libxl.State {
	w := blobWriter{}
	w.u32(blobPlatform)
	w.u32(blobVersion)
	w.u64(d.plat.steps)
	w.u64(d.plat.touches)
	w.u64(d.cfg.Pages)
	w.u32(uint32(len(d.vcpus)))
	w.u32(uint32(len(d.nics)))
	w.u32(uint32(len(d.disks)))
	dst = append(dst, libxl.State{Kind: libxl.StatePlatform, Index: 0, Data: w.b})
	for i, v := range d.vcpus {
		w := blobWriter{}
		w.u32(blobVCPU)
		w.u32(blobVersion)
		w.u64(v.rng)
		w.u64(v.acc)
		w.u64(v.cursor)
		w.u64(v.ticks)
		dst = append(dst, libxl.State{Kind: libxl.StateVCPU, Index: uint32(i), Data: w.b})
	}
	for i, n := range d.nics {
		w := blobWriter{}
		w.u32(blobDevice)
		w.u32(blobVersion)
		w.u32(devNIC)
		w.b = append(w.b, n.mac...)
		w.b = append(w.b, 0, 0)
		w.u64(n.rxFrames.Load())
		w.u64(n.rxDropped.Load())
		w.u64(n.txFrames.Load())
		w.u64(n.txErrors.Load())
		dst = append(dst, libxl.State{Kind: libxl.StateDevice, Index: uint32(i), Data: w.b})
	}
	for i, k := range d.disks {
		w := blobWriter{}
		w.u32(blobDevice)
		w.u32(blobVersion)
		w.u32(devDisk)
		w.u64(k.sectors)
		w.u64(k.writes.Load())
		dst = append(dst, libxl.State{Kind: libxl.StateDevice, Index: uint32(len(d.nics) + i), Data: w.b})
	}
	return dst
}

type nicState struct{ rx, rxDropped, tx, txErrors uint64 }

// parsedState is a validated set of blobs, applied only once all parse.
type parsedState struct {
	plat  platform
	vcpus []vcpu
	nics  []nicState
	disks []uint64 // writes
}

// parseState checks that st describes exactly this domain's shape.
// Preconditions: d.mu held (reads the shape only).
func (d *Domain) parseState(st []libxl.State) (parsedState, error) {
	p := parsedState{
		vcpus: make([]vcpu, len(d.vcpus)),
		nics:  make([]nicState, len(d.nics)),
		disks: make([]uint64, len(d.disks)),
	}
	nDev := len(d.nics) + len(d.disks)
	seenPlat := false
	seenV := make([]bool, len(d.vcpus))
	seenD := make([]bool, nDev)
	bad := func(s libxl.State, format string, args ...any) error {
		return fmt.Errorf("%w: %s blob %d: %s", ErrStateBlob, kindName(s.Kind), s.Index, fmt.Sprintf(format, args...))
	}
	for _, s := range st {
		r := blobReader{b: s.Data}
		switch s.Kind {
		case libxl.StatePlatform:
			if s.Index != 0 || seenPlat {
				return p, bad(s, "unexpected or duplicate")
			}
			seenPlat = true
			r.header(blobPlatform)
			p.plat.steps = r.u64()
			p.plat.touches = r.u64()
			pages, nv, nn, nd := r.u64(), r.u32(), r.u32(), r.u32()
			if err := r.done(); err != nil {
				return p, bad(s, "%v", err)
			}
			if pages != d.cfg.Pages || int(nv) != len(d.vcpus) || int(nn) != len(d.nics) || int(nd) != len(d.disks) {
				return p, bad(s, "shape pages=%d vcpus=%d nics=%d disks=%d, replica has %d/%d/%d/%d",
					pages, nv, nn, nd, d.cfg.Pages, len(d.vcpus), len(d.nics), len(d.disks))
			}
		case libxl.StateVCPU:
			if int(s.Index) >= len(d.vcpus) || seenV[s.Index] {
				return p, bad(s, "out of range or duplicate")
			}
			seenV[s.Index] = true
			r.header(blobVCPU)
			v := vcpu{rng: r.u64(), acc: r.u64(), cursor: r.u64(), ticks: r.u64()}
			if err := r.done(); err != nil {
				return p, bad(s, "%v", err)
			}
			if v.rng == 0 {
				return p, bad(s, "zero rng state")
			}
			p.vcpus[s.Index] = v
		case libxl.StateDevice:
			if int(s.Index) >= nDev || seenD[s.Index] {
				return p, bad(s, "out of range or duplicate")
			}
			seenD[s.Index] = true
			r.header(blobDevice)
			kind := r.u32()
			if i := int(s.Index); i < len(d.nics) {
				mac := net.HardwareAddr(r.take(8)[:6])
				ns := nicState{rx: r.u64(), rxDropped: r.u64(), tx: r.u64(), txErrors: r.u64()}
				if err := r.done(); err != nil {
					return p, bad(s, "%v", err)
				}
				if kind != devNIC || mac.String() != d.nics[i].mac.String() {
					return p, bad(s, "kind %d mac %v, want a NIC with mac %v", kind, mac, d.nics[i].mac)
				}
				p.nics[i] = ns
			} else {
				i -= len(d.nics)
				sectors, writes := r.u64(), r.u64()
				if err := r.done(); err != nil {
					return p, bad(s, "%v", err)
				}
				if kind != devDisk || sectors != d.disks[i].sectors {
					return p, bad(s, "kind %d sectors %d, want a disk of %d sectors", kind, sectors, d.disks[i].sectors)
				}
				p.disks[i] = writes
			}
		default:
			return p, bad(s, "unknown kind")
		}
	}
	if !seenPlat {
		return p, fmt.Errorf("%w: no platform blob", ErrStateBlob)
	}
	for i, ok := range seenV {
		if !ok {
			return p, fmt.Errorf("%w: no blob for vcpu %d", ErrStateBlob, i)
		}
	}
	for i, ok := range seenD {
		if !ok {
			return p, fmt.Errorf("%w: no blob for device %d", ErrStateBlob, i)
		}
	}
	return p, nil
}

// applyState loads parsed blobs. Preconditions: d.mu held.
func (d *Domain) applyState(p parsedState) {
	d.plat = p.plat
	copy(d.vcpus, p.vcpus)
	for i, n := range d.nics {
		n.rxFrames.Store(p.nics[i].rx)
		n.rxDropped.Store(p.nics[i].rxDropped)
		n.txFrames.Store(p.nics[i].tx)
		n.txErrors.Store(p.nics[i].txErrors)
	}
	for i, k := range d.disks {
		k.writes.Store(p.disks[i])
	}
}

func kindName(k libxl.StateKind) string {
	switch k {
	case libxl.StateVCPU:
		return "vcpu"
	case libxl.StatePlatform:
		return "platform"
	case libxl.StateDevice:
		return "device"
	}
	return fmt.Sprintf("kind-%d", k)
}
