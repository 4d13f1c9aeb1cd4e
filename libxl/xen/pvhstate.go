package xen

import (
	"encoding/binary"
	"fmt"

	"github.com/xl-kemari/xl-kemari/libxl"
)

// Route (b)'s state of a PVH (and, later, HVM) guest is what libxc's HVM
// save writes at each checkpoint's end (xg_sr_save_x86_hvm.c): the TSC
// info, the HVM context (hvmctx.go: one platform blob, one per vCPU) and
// the HVM params. The TSC info and the params travel in one more
// StatePlatform blob, index hvmParamsIndex, laid out here (little
// endian):
//
//	"KXP1"  magic
//	u32     tsc mode      (xc_domain_get_tsc_info)
//	u32     gtsc_khz
//	u32     incarnation
//	u64     elapsed_nsec
//	u32     count
//	count × { u32 index; u64 value }   the non-zero params of hvmSavedParams

// hvmParamsIndex is the Index of the StatePlatform blob with the TSC info
// and the HVM params.
const hvmParamsIndex = 1

const hvmParamsMagic = "KXP1"

// HVM params (xen/hvm/params.h) the toolstack moves with a guest.
const (
	hvmParamStorePFN           = 1
	hvmParamStoreEvtchn        = 2
	hvmParamIOReqPFN           = 5
	hvmParamBufIOReqPFN        = 6
	hvmParamViridian           = 9
	hvmParamIdentPT            = 12
	hvmParamConsolePFN         = 17
	hvmParamConsoleEvtchn      = 18
	hvmParamACPIIOPorts        = 19
	hvmParamPagingRingPFN      = 27
	hvmParamMonitorRingPFN     = 28
	hvmParamSharingRingPFN     = 29
	hvmParamIOReqServerPFN     = 32
	hvmParamNrIOReqServerPages = 33
	hvmParamVMGenerationIDAddr = 34
	hvmParamX87FIPWidth        = 36
	hvmParamVM86TSSSized       = 37
	hvmParamMCACap             = 38
)

// hvmSavedParams are the params libxc's HVM save sends when non-zero
// (write_hvm_params in xg_sr_save_x86_hvm.c of Xen 4.17), in its order.
var hvmSavedParams = []uint32{
	hvmParamStorePFN, hvmParamIOReqPFN, hvmParamBufIOReqPFN,
	hvmParamPagingRingPFN, hvmParamMonitorRingPFN, hvmParamSharingRingPFN,
	hvmParamVM86TSSSized, hvmParamConsolePFN, hvmParamACPIIOPorts,
	hvmParamViridian, hvmParamIdentPT, hvmParamVMGenerationIDAddr,
	hvmParamIOReqServerPFN, hvmParamNrIOReqServerPages, hvmParamX87FIPWidth,
	hvmParamMCACap,
}

// hvmClearedParams name pages a restore zeroes before it sets the param
// (handle_hvm_params in xg_sr_restore_x86_hvm.c): the xenstore and console
// rings, whose indexes belong to the backends of the host the guest left
// (the guest fixes its side up when it resumes), and the ioreq pages.
var hvmClearedParams = map[uint32]bool{
	hvmParamStorePFN: true, hvmParamConsolePFN: true,
	hvmParamIOReqPFN: true, hvmParamBufIOReqPFN: true,
}

// TSCInfo is a domain's TSC configuration and progress
// (xc_domain_get_tsc_info / xc_domain_set_tsc_info).
type TSCInfo struct {
	Mode        uint32
	KHz         uint32
	Incarnation uint32
	ElapsedNsec uint64
}

// HVMParam is one HVM param and its value.
type HVMParam struct {
	Index uint32
	Value uint64
}

// hvmParamsState is the blob's content.
type hvmParamsState struct {
	TSC    TSCInfo
	Params []HVMParam
}

func (p hvmParamsState) encode() libxl.State {
	b := make([]byte, 0, 28+12*len(p.Params))
	b = append(b, hvmParamsMagic...)
	b = binary.LittleEndian.AppendUint32(b, p.TSC.Mode)
	b = binary.LittleEndian.AppendUint32(b, p.TSC.KHz)
	b = binary.LittleEndian.AppendUint32(b, p.TSC.Incarnation)
	b = binary.LittleEndian.AppendUint64(b, p.TSC.ElapsedNsec)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(p.Params)))
	for _, e := range p.Params {
		b = binary.LittleEndian.AppendUint32(b, e.Index)
		b = binary.LittleEndian.AppendUint64(b, e.Value)
	}
	return libxl.State{Kind: libxl.StatePlatform, Index: hvmParamsIndex, Data: b}
}

// decodeHVMParams parses the blob; a param outside hvmSavedParams is
// refused, so a blob cannot set what a restore would not.
func decodeHVMParams(b []byte) (hvmParamsState, error) {
	var p hvmParamsState
	if len(b) < 28 || string(b[:4]) != hvmParamsMagic {
		return p, fmt.Errorf("%w: params blob of %d bytes without magic %q", ErrHVMContext, len(b), hvmParamsMagic)
	}
	le := binary.LittleEndian
	p.TSC = TSCInfo{Mode: le.Uint32(b[4:]), KHz: le.Uint32(b[8:]), Incarnation: le.Uint32(b[12:]), ElapsedNsec: le.Uint64(b[16:])}
	n := le.Uint32(b[24:])
	if uint64(len(b)-28) != uint64(n)*12 {
		return p, fmt.Errorf("%w: params blob claims %d params in %d bytes", ErrHVMContext, n, len(b)-28)
	}
	for off := 28; off < len(b); off += 12 {
		e := HVMParam{Index: le.Uint32(b[off:]), Value: le.Uint64(b[off+4:])}
		known := false
		for _, i := range hvmSavedParams {
			known = known || i == e.Index
		}
		if !known {
			return p, fmt.Errorf("%w: params blob sets HVM param %d, which a restore does not", ErrHVMContext, e.Index)
		}
		p.Params = append(p.Params, e)
	}
	return p, nil
}

// pvhState is one checkpoint's state of a PVH guest, ready for the
// replica: the HVM context stream xc_domain_hvm_setcontext takes, and the
// params and TSC info.
type pvhState struct {
	ctx    []byte
	params hvmParamsState
}

// parsePVHState checks the blobs of one checkpoint (those CaptureState
// made for a PVH guest) and joins them: exactly one params blob, the HVM
// context's platform blob and one blob per vCPU 0..vcpus-1. Anything
// else is an error naming the blob.
func parsePVHState(st []libxl.State, vcpus int) (pvhState, error) {
	var out pvhState
	var haveParams bool
	seen := make([]bool, vcpus)
	for _, s := range st {
		switch {
		case s.Kind == libxl.StatePlatform && s.Index == hvmParamsIndex:
			if haveParams {
				return out, fmt.Errorf("%w: two params blobs", ErrHVMContext)
			}
			p, err := decodeHVMParams(s.Data)
			if err != nil {
				return out, err
			}
			out.params, haveParams = p, true
		case s.Kind == libxl.StatePlatform && s.Index == hvmPlatformIndex:
		case s.Kind == libxl.StateVCPU && int64(s.Index) < int64(vcpus):
			if seen[s.Index] {
				return out, fmt.Errorf("%w: two blobs for vCPU %d", ErrHVMContext, s.Index)
			}
			seen[s.Index] = true
		default:
			return out, fmt.Errorf("%w: state blob kind %d index %d is not a PVH guest's of %d vCPUs", ErrHVMContext, s.Kind, s.Index, vcpus)
		}
	}
	if !haveParams {
		return out, fmt.Errorf("%w: no params blob", ErrHVMContext)
	}
	for i, ok := range seen {
		if !ok {
			return out, fmt.Errorf("%w: no blob for vCPU %d", ErrHVMContext, i)
		}
	}
	ctx, err := joinHVM(st)
	if err != nil {
		return out, err
	}
	out.ctx = ctx
	return out, nil
}
