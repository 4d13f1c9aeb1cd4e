package libxcstream

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Sentinel errors of this package, wrapped with %w and the details of
// where the stream went wrong.
var (
	// ErrFormat: the bytes are not a well-formed stream of the expected
	// kind (bad marker, version, alignment, length or field).
	ErrFormat = errors.New("libxcstream: malformed stream")
	// ErrTooLong: a record claims a body longer than MaxRecordLength.
	ErrTooLong = errors.New("libxcstream: record too long")
	// ErrOrder: records arrived in an order the format forbids (a page
	// before the headers, a record after END, ...).
	ErrOrder = errors.New("libxcstream: records out of order")
)

// RecordType is the type field of a libxc stream record
// (REC_TYPE_* in xg_sr_stream_format.h).
type RecordType uint32

// libxc record types, as in docs/specs/libxc-migration-stream.pandoc
// revision 3 (Xen 4.17).
const (
	RecEnd                    RecordType = 0x00
	RecPageData               RecordType = 0x01
	RecX86PVInfo              RecordType = 0x02
	RecX86PVP2MFrames         RecordType = 0x03
	RecX86PVVCPUBasic         RecordType = 0x04
	RecX86PVVCPUExtended      RecordType = 0x05
	RecX86PVVCPUXSave         RecordType = 0x06
	RecSharedInfo             RecordType = 0x07
	RecX86TSCInfo             RecordType = 0x08
	RecHVMContext             RecordType = 0x09
	RecHVMParams              RecordType = 0x0a
	RecToolstack              RecordType = 0x0b
	RecX86PVVCPUMSRs          RecordType = 0x0c
	RecVerify                 RecordType = 0x0d
	RecCheckpoint             RecordType = 0x0e
	RecCheckpointDirtyPFNList RecordType = 0x0f
	RecStaticDataEnd          RecordType = 0x10
	RecX86CPUIDPolicy         RecordType = 0x11
	RecX86MSRPolicy           RecordType = 0x12

	// RecOptional is the bit that makes a record type optional: a
	// restorer may skip records it does not know only if it is set.
	RecOptional RecordType = 0x80000000
)

var recNames = map[RecordType]string{
	RecEnd: "END", RecPageData: "PAGE_DATA", RecX86PVInfo: "X86_PV_INFO",
	RecX86PVP2MFrames: "X86_PV_P2M_FRAMES", RecX86PVVCPUBasic: "X86_PV_VCPU_BASIC",
	RecX86PVVCPUExtended: "X86_PV_VCPU_EXTENDED", RecX86PVVCPUXSave: "X86_PV_VCPU_XSAVE",
	RecSharedInfo: "SHARED_INFO", RecX86TSCInfo: "X86_TSC_INFO", RecHVMContext: "HVM_CONTEXT",
	RecHVMParams: "HVM_PARAMS", RecToolstack: "TOOLSTACK", RecX86PVVCPUMSRs: "X86_PV_VCPU_MSRS",
	RecVerify: "VERIFY", RecCheckpoint: "CHECKPOINT", RecCheckpointDirtyPFNList: "CHECKPOINT_DIRTY_PFN_LIST",
	RecStaticDataEnd: "STATIC_DATA_END", RecX86CPUIDPolicy: "X86_CPUID_POLICY", RecX86MSRPolicy: "X86_MSR_POLICY",
	RecKemariPageTypes: "KEMARI_PAGE_TYPES", RecKemariPagesHere: "KEMARI_PAGES_HERE",
	RecKemariHeader: "KEMARI_HEADER", RecKemariRoundEnd: "KEMARI_ROUND_END",
}

// String names the type as the spec does.
func (t RecordType) String() string {
	if s, ok := recNames[t]; ok {
		return s
	}
	return "record-0x" + strconv.FormatUint(uint64(t), 16)
}

// IsVCPU reports whether records of this type carry one vCPU's state
// with its id in the first four bytes of the body.
func (t RecordType) IsVCPU() bool {
	switch t {
	case RecX86PVVCPUBasic, RecX86PVVCPUExtended, RecX86PVVCPUXSave, RecX86PVVCPUMSRs:
		return true
	}
	return false
}

// MaxRecordLength is libxc's REC_LENGTH_MAX: a restorer refuses longer
// bodies, so a reader does too rather than allocate what a corrupt length
// asks for.
const MaxRecordLength = 128 << 20

// Record is one record of a libxc or libxl stream: its type and its body
// without the padding.
type Record struct {
	Type RecordType
	Body []byte
}

// recHdrLen is the size of {u32 type; u32 body_length}.
const recHdrLen = 8

// pad8 is the padding that aligns n bytes to 8.
func pad8(n int) int { return (8 - n%8) % 8 }

// FramedLen is the number of bytes r takes in a stream: header, body and
// padding.
func (r Record) FramedLen() int { return recHdrLen + len(r.Body) + pad8(len(r.Body)) }

// AppendRecord appends r framed as in a stream (little-endian header,
// body, zero padding to 8 bytes).
func AppendRecord(dst []byte, r Record) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(r.Type))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(r.Body)))
	dst = append(dst, r.Body...)
	var zero [8]byte
	return append(dst, zero[:pad8(len(r.Body))]...)
}

// ParseRecord decodes one framed record at the start of b and returns it
// (its body aliases b) and the bytes it took.
func ParseRecord(b []byte) (Record, int, error) {
	if len(b) < recHdrLen {
		return Record{}, 0, fmt.Errorf("%w: record header truncated (%d bytes)", ErrFormat, len(b))
	}
	t := RecordType(binary.LittleEndian.Uint32(b))
	n := binary.LittleEndian.Uint32(b[4:])
	if n > MaxRecordLength {
		return Record{}, 0, fmt.Errorf("%w: %v claims %d bytes", ErrTooLong, t, n)
	}
	total := recHdrLen + int(n) + pad8(int(n))
	if len(b) < total {
		return Record{}, 0, fmt.Errorf("%w: %v of %d bytes truncated to %d", ErrFormat, t, n, len(b)-recHdrLen)
	}
	for _, c := range b[recHdrLen+int(n) : total] {
		if c != 0 {
			return Record{}, 0, fmt.Errorf("%w: %v has non-zero padding", ErrFormat, t)
		}
	}
	return Record{Type: t, Body: b[recHdrLen : recHdrLen+int(n)]}, total, nil
}

// Image header constants (struct xc_sr_ihdr).
const (
	ImageMarker  = 0xFFFFFFFFFFFFFFFF
	ImageID      = 0x58454E46 // "XENF"
	ImageVersion = 3
	// ImageHeaderLen is the size of the image header.
	ImageHeaderLen = 24
	// DomainHeaderLen is the size of the domain header.
	DomainHeaderLen = 16
)

// Domain types of the domain header (DHDR_TYPE_*).
const (
	DomainX86PV  = 1
	DomainX86HVM = 2
)

// Header is the image header and the domain header that open a libxc
// stream. Only little-endian version 2 and 3 streams are accepted: the
// only ones x86 Xen writes (2 before 4.14).
type Header struct {
	Version   uint32 // image format version
	Type      uint32 // DomainX86PV or DomainX86HVM
	PageShift uint16 // 12 on x86
	XenMajor  uint32
	XenMinor  uint32
}

// Append appends the two headers as they open a stream.
func (h Header) Append(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, ImageMarker)
	dst = binary.BigEndian.AppendUint32(dst, ImageID)
	dst = binary.BigEndian.AppendUint32(dst, h.Version)
	dst = binary.BigEndian.AppendUint16(dst, 0) // little-endian
	dst = append(dst, 0, 0, 0, 0, 0, 0)
	dst = binary.LittleEndian.AppendUint32(dst, h.Type)
	dst = binary.LittleEndian.AppendUint16(dst, h.PageShift)
	dst = append(dst, 0, 0)
	dst = binary.LittleEndian.AppendUint32(dst, h.XenMajor)
	return binary.LittleEndian.AppendUint32(dst, h.XenMinor)
}

// ParseHeader decodes the image and domain headers at the start of b
// (ImageHeaderLen+DomainHeaderLen bytes).
func ParseHeader(b []byte) (Header, error) {
	if len(b) < ImageHeaderLen+DomainHeaderLen {
		return Header{}, fmt.Errorf("%w: headers truncated (%d bytes)", ErrFormat, len(b))
	}
	if m := binary.BigEndian.Uint64(b); m != ImageMarker {
		return Header{}, fmt.Errorf("%w: image marker %#x (a legacy image?)", ErrFormat, m)
	}
	if id := binary.BigEndian.Uint32(b[8:]); id != ImageID {
		return Header{}, fmt.Errorf("%w: image id %#x, want %#x (XENF)", ErrFormat, id, ImageID)
	}
	h := Header{Version: binary.BigEndian.Uint32(b[12:])}
	if h.Version != 2 && h.Version != 3 {
		return Header{}, fmt.Errorf("%w: image version %d, want 2 or 3", ErrFormat, h.Version)
	}
	if opt := binary.BigEndian.Uint16(b[16:]); opt != 0 {
		return Header{}, fmt.Errorf("%w: image options %#x (only little-endian streams are supported)", ErrFormat, opt)
	}
	d := b[ImageHeaderLen:]
	h.Type = binary.LittleEndian.Uint32(d)
	h.PageShift = binary.LittleEndian.Uint16(d[4:])
	h.XenMajor = binary.LittleEndian.Uint32(d[8:])
	h.XenMinor = binary.LittleEndian.Uint32(d[12:])
	if h.Type != DomainX86PV && h.Type != DomainX86HVM {
		return Header{}, fmt.Errorf("%w: domain type %d", ErrFormat, h.Type)
	}
	if h.PageShift != PageShift {
		return Header{}, fmt.Errorf("%w: page shift %d, want %d", ErrFormat, h.PageShift, PageShift)
	}
	return h, nil
}

// Reader reads a libxc stream record by record from an io.Reader (the
// pipe xc_domain_save writes to).
type Reader struct {
	r   io.Reader
	hdr [recHdrLen]byte
	off int64 // bytes consumed, for error messages
}

// NewReader returns a Reader of r.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// Offset is the number of bytes consumed so far.
func (r *Reader) Offset() int64 { return r.off }

// ReadHeader reads the image and domain headers. It must be called once,
// first.
func (r *Reader) ReadHeader() (Header, error) {
	var b [ImageHeaderLen + DomainHeaderLen]byte
	if _, err := io.ReadFull(r.r, b[:]); err != nil {
		return Header{}, fmt.Errorf("libxcstream: reading headers: %w", err)
	}
	r.off += int64(len(b))
	return ParseHeader(b[:])
}

// Next reads one record into a new body buffer. At a clean end of input
// between records it returns io.EOF; inside a record,
// io.ErrUnexpectedEOF.
func (r *Reader) Next() (Record, error) {
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		if err == io.EOF {
			return Record{}, io.EOF
		}
		return Record{}, fmt.Errorf("libxcstream: record header at offset %d: %w", r.off, err)
	}
	t := RecordType(binary.LittleEndian.Uint32(r.hdr[:]))
	n := binary.LittleEndian.Uint32(r.hdr[4:])
	if n > MaxRecordLength {
		return Record{}, fmt.Errorf("%w: %v at offset %d claims %d bytes", ErrTooLong, t, r.off, n)
	}
	buf := make([]byte, int(n)+pad8(int(n)))
	if _, err := io.ReadFull(r.r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Record{}, fmt.Errorf("libxcstream: %v body at offset %d: %w", t, r.off, err)
	}
	for _, c := range buf[n:] {
		if c != 0 {
			return Record{}, fmt.Errorf("%w: %v at offset %d has non-zero padding", ErrFormat, t, r.off)
		}
	}
	r.off += int64(recHdrLen + len(buf))
	return Record{Type: t, Body: buf[:n]}, nil
}

// libxl stream constants (docs/specs/libxl-migration-stream.pandoc v2).
const (
	LibxlIdent   = 0x4c6962786c466d74 // "LibxlFmt"
	LibxlVersion = 2
	// LibxlHeaderLen is the size of the libxl stream header.
	LibxlHeaderLen = 16
)

// libxl record types (REC_TYPE_* in libxl_sr_stream_format.h).
const (
	LibxlEnd                  RecordType = 0
	LibxlLibxcContext         RecordType = 1
	LibxlEmulatorXenstoreData RecordType = 2
	LibxlEmulatorContext      RecordType = 3
	LibxlCheckpointEnd        RecordType = 4
	LibxlCheckpointState      RecordType = 5
)

// AppendLibxlHeader appends the header of a little-endian libxl stream.
func AppendLibxlHeader(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, LibxlIdent)
	dst = binary.BigEndian.AppendUint32(dst, LibxlVersion)
	return binary.BigEndian.AppendUint32(dst, 0)
}

// ParseLibxlHeader checks the libxl stream header at the start of b.
func ParseLibxlHeader(b []byte) error {
	if len(b) < LibxlHeaderLen {
		return fmt.Errorf("%w: libxl header truncated (%d bytes)", ErrFormat, len(b))
	}
	if id := binary.BigEndian.Uint64(b); id != LibxlIdent {
		return fmt.Errorf("%w: libxl ident %#x", ErrFormat, id)
	}
	if v := binary.BigEndian.Uint32(b[8:]); v != LibxlVersion {
		return fmt.Errorf("%w: libxl stream version %d, want %d", ErrFormat, v, LibxlVersion)
	}
	if o := binary.BigEndian.Uint32(b[12:]); o != 0 {
		return fmt.Errorf("%w: libxl options %#x (big-endian or legacy)", ErrFormat, o)
	}
	return nil
}
