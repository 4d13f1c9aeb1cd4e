package xen

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/xl-kemari/xl-kemari/libxl"
)

// An HVM or PVH domain's Xen-side state comes out of
// xc_domain_hvm_getcontext as one record stream (xen/hvm/save.h): each record
// is struct hvm_save_descriptor {u16 typecode; u16 instance; u32 length}
// followed by length bytes, starting with HEADER and ending with END. The
// contract wants one blob per vCPU plus platform blobs, so the stream is
// split by record type and joined back, in Xen's own order, on restore.

// hvmRecord is one record of an HVM context stream.
type hvmRecord struct {
	Type, Instance uint16
	Data           []byte
}

const (
	hvmEnd    = 0 // END: the last record
	hvmHeader = 1 // HEADER: must be the first record
	hvmDescSz = 8
)

// hvmPerVCPU are the record types whose instance is a vCPU id
// (xen/arch-x86/hvm/save.h in 4.17).
var hvmPerVCPU = map[uint16]bool{
	2:  true, // CPU
	5:  true, // LAPIC
	6:  true, // LAPIC_REGS
	14: true, // MTRR
	16: true, // CPU_XSAVE
	17: true, // VIRIDIAN_VCPU
	18: true, // VMCE_VCPU
	19: true, // TSC_ADJUST
	20: true, // CPU_MSR
}

func parseHVM(b []byte) ([]hvmRecord, error) {
	var recs []hvmRecord
	for off := 0; off < len(b); {
		if len(b)-off < hvmDescSz {
			return nil, fmt.Errorf("%w: truncated descriptor at offset %d", ErrHVMContext, off)
		}
		r := hvmRecord{
			Type:     binary.LittleEndian.Uint16(b[off:]),
			Instance: binary.LittleEndian.Uint16(b[off+2:]),
		}
		n := int(binary.LittleEndian.Uint32(b[off+4:]))
		off += hvmDescSz
		if n < 0 || n > len(b)-off {
			return nil, fmt.Errorf("%w: record type %d at offset %d claims %d bytes, %d left", ErrHVMContext, r.Type, off-hvmDescSz, n, len(b)-off)
		}
		r.Data = b[off : off+n]
		off += n
		recs = append(recs, r)
	}
	return recs, nil
}

func appendHVM(dst []byte, recs []hvmRecord) []byte {
	for _, r := range recs {
		dst = binary.LittleEndian.AppendUint16(dst, r.Type)
		dst = binary.LittleEndian.AppendUint16(dst, r.Instance)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(r.Data)))
		dst = append(dst, r.Data...)
	}
	return dst
}

// hvmPlatformIndex is the Index of the StatePlatform blob with the
// context's domain-wide records.
const hvmPlatformIndex = 0

// splitHVM appends to dst one StatePlatform blob (index 0) with the
// domain-wide records and one StateVCPU blob per vCPU 0..vcpus-1 with that
// vCPU's records.
func splitHVM(ctx []byte, vcpus int, dst []libxl.State) ([]libxl.State, error) {
	recs, err := parseHVM(ctx)
	if err != nil {
		return dst, err
	}
	if len(recs) == 0 || recs[0].Type != hvmHeader || recs[len(recs)-1].Type != hvmEnd {
		return dst, fmt.Errorf("%w: stream does not run from HEADER to END", ErrHVMContext)
	}
	var platform []hvmRecord
	per := make([][]hvmRecord, vcpus)
	for _, r := range recs {
		if !hvmPerVCPU[r.Type] {
			platform = append(platform, r)
			continue
		}
		if int(r.Instance) >= vcpus {
			return dst, fmt.Errorf("%w: record type %d for vCPU %d of %d", ErrHVMContext, r.Type, r.Instance, vcpus)
		}
		per[r.Instance] = append(per[r.Instance], r)
	}
	dst = append(dst, libxl.State{Kind: libxl.StatePlatform, Index: hvmPlatformIndex, Data: appendHVM(nil, platform)})
	for i, rs := range per {
		dst = append(dst, libxl.State{Kind: libxl.StateVCPU, Index: uint32(i), Data: appendHVM(nil, rs)})
	}
	return dst, nil
}

// joinHVM rebuilds the stream xc_domain_hvm_setcontext takes from the blobs
// splitHVM made: records ordered by type then instance, as Xen saves them,
// HEADER first and END last. Blobs of other kinds are ignored (they belong
// to the device model), and so are platform blobs of another index than
// hvmPlatformIndex (the HVM params and TSC blob, pvhstate.go).
func joinHVM(st []libxl.State) ([]byte, error) {
	var recs []hvmRecord
	platform := false
	for _, s := range st {
		if s.Kind != libxl.StatePlatform && s.Kind != libxl.StateVCPU {
			continue
		}
		if s.Kind == libxl.StatePlatform && s.Index != hvmPlatformIndex {
			continue
		}
		rs, err := parseHVM(s.Data)
		if err != nil {
			return nil, fmt.Errorf("state blob kind %d index %d: %w", s.Kind, s.Index, err)
		}
		for _, r := range rs {
			if hvmPerVCPU[r.Type] != (s.Kind == libxl.StateVCPU) || (s.Kind == libxl.StateVCPU && uint32(r.Instance) != s.Index) {
				return nil, fmt.Errorf("%w: record type %d instance %d in blob kind %d index %d", ErrHVMContext, r.Type, r.Instance, s.Kind, s.Index)
			}
		}
		platform = platform || s.Kind == libxl.StatePlatform
		recs = append(recs, rs...)
	}
	if !platform {
		return nil, fmt.Errorf("%w: no platform blob", ErrHVMContext)
	}
	slices.SortStableFunc(recs, func(a, b hvmRecord) int {
		ka, kb := uint32(a.Type), uint32(b.Type)
		if a.Type == hvmEnd {
			ka = 1 << 16
		}
		if b.Type == hvmEnd {
			kb = 1 << 16
		}
		if ka != kb {
			return int(ka) - int(kb)
		}
		return int(a.Instance) - int(b.Instance)
	})
	if recs[0].Type != hvmHeader || recs[len(recs)-1].Type != hvmEnd {
		return nil, fmt.Errorf("%w: blobs lack HEADER or END", ErrHVMContext)
	}
	return appendHVM(nil, recs), nil
}
