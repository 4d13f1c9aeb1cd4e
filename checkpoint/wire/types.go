package wire

import (
	"fmt"
	"net/netip"
)

// Protocol constants (docs/protocol.md §3, §9).
const (
	// Magic opens every stream.
	Magic = "XLKEMARI"
	// Version is the protocol version this package writes.
	Version uint32 = 1
	// MinVersion is the oldest version this package reads (Version and
	// Version-1, but there is no version 0).
	MinVersion uint32 = 1
	// HeaderSize is the size of the stream header.
	HeaderSize = 16
	// RecordHeaderSize is the size of a record header.
	RecordHeaderSize = 16
	// PageSize is the guest page size.
	PageSize = 4096
	// SectorSize is the disk sector size of DISK records.
	SectorSize = 512
	// MaxPagesPerRecord bounds PAGES.count; writers never exceed it.
	MaxPagesPerRecord = 1024
	// DefaultMaxRecord is the default bound on a record body.
	DefaultMaxRecord = 8 << 20
	// MaxString bounds every string a writer sends.
	MaxString = 4096
	// MaxDiskWrite bounds DISK.data.
	MaxDiskWrite = 1 << 20
)

// Type is a record type. Types with bit 31 set are skippable.
type Type uint32

// Record types (docs/protocol.md §4.1).
const (
	TypeHello      Type = 0x01
	TypeEpochBegin Type = 0x02
	TypePages      Type = 0x03
	TypeState      Type = 0x04
	TypeDisk       Type = 0x05
	TypeEpochEnd   Type = 0x06
	TypeAck        Type = 0x07
	TypeHeartbeat  Type = 0x08
	TypeGoodbye    Type = 0x09
	TypeNack       Type = 0x0A

	// TypeSkippable is the bit that makes a type skippable by readers that
	// do not know it.
	TypeSkippable Type = 0x80000000

	// TypeTimeout (P→S, skippable: a reader that predates it keeps its
	// own timeout) announces the failure-detection timeout P uses and
	// asks S to use (docs/protocol.md §5.13).
	TypeTimeout Type = TypeSkippable | 0x01
)

// Skippable reports whether a reader that does not know t may skip it.
func (t Type) Skippable() bool { return t&TypeSkippable != 0 }

// known reports whether t is a record type of this version.
func (t Type) known() bool { return t >= TypeHello && t <= TypeNack || t == TypeTimeout }

// control reports whether records of type t stay outside epoch frames.
func (t Type) control() bool {
	return t == TypeAck || t == TypeNack || t == TypeHeartbeat || t == TypeGoodbye
}

var typeNames = [...]string{"", "Hello", "EpochBegin", "Pages", "State", "Disk", "EpochEnd", "Ack", "Heartbeat", "Goodbye", "Nack"}

// String names the type as the Go record does.
func (t Type) String() string {
	if t == TypeTimeout {
		return "Timeout"
	}
	if t.known() {
		return typeNames[t]
	}
	return fmt.Sprintf("Type(%#x)", uint32(t))
}

// Record is one decoded record body. It is implemented by *Hello,
// *EpochBegin, *Pages, *State, *Disk, *EpochEnd, *Ack, *Heartbeat, *Goodbye,
// *Nack, *Timeout and *Opaque.
type Record interface {
	Type() Type
}

// Role says which end of a replication a HELLO comes from.
type Role uint8

// Roles.
const (
	RolePrimary Role = 1
	RoleStandby Role = 2
)

// Codec is the general compressor applied to PAGES data areas.
type Codec uint8

// Codecs (docs/protocol.md §5.4).
const (
	CodecNone Codec = 0
	CodecLZ4  Codec = 1 // LZ4 block format, one block per chunk
	CodecZstd Codec = 2 // zstd at its fastest level, one frame per chunk
)

// DefaultCodec is the codec chosen by measurement (docs/protocol.md §10.2):
// the best encode-plus-transmit time on links from 1 to 10 Gbit/s.
const DefaultCodec = CodecLZ4

// String names the codec.
func (c Codec) String() string {
	switch c {
	case CodecNone:
		return "none"
	case CodecLZ4:
		return "lz4"
	case CodecZstd:
		return "zstd"
	}
	return fmt.Sprintf("Codec(%d)", uint8(c))
}

// PageEnc is how one page of a PAGES record is encoded.
type PageEnc uint8

// Page encodings.
const (
	EncZero PageEnc = 1 // all zeros, no data
	EncRaw  PageEnc = 2 // 4096 octets
	EncXOR  PageEnc = 3 // zero-run-length encoded XOR against the base copy
)

// HELLO flags.
const (
	// HelloSharedDisk says the domain's disks are shared storage.
	HelloSharedDisk uint32 = 1 << 0
	// HelloTakenOver (standby only) says the standby activated its
	// replica of the domain: it holds none, the domain runs there, and the
	// primary must fence its copy (docs/protocol.md §7.7). A HEARTBEAT
	// with the epoch it resumed at and a GOODBYE(GoodbyeTakenOver) follow.
	HelloTakenOver uint32 = 1 << 1
	// HelloFences (standby only, in the HELLO that accepts a session)
	// says the standby answers TAKEN_OVER to every HELLO of the domain
	// once it has activated a replica of it, so a HELLO without
	// TAKEN_OVER shows that no copy of the domain runs there from it: a
	// stalled primary may then rebuild the replica rather than hold its
	// output for good (docs/protocol.md §7.6).
	HelloFences uint32 = 1 << 2
)

// EPOCH_BEGIN flags.
const (
	// EpochInitial marks a pre-copy round of the initial synchronisation.
	EpochInitial uint32 = 1 << 0
	// EpochResync marks an epoch that carries every change since the
	// standby's last committed epoch and may follow a gap.
	EpochResync uint32 = 1 << 1
)

// GOODBYE codes.
const (
	GoodbyeUnspecified  uint32 = 0
	GoodbyeStop         uint32 = 1
	GoodbyeGuestGone    uint32 = 2
	GoodbyeProtocol     uint32 = 3
	GoodbyeIncompatible uint32 = 4
	GoodbyeReplaced     uint32 = 5
	// GoodbyeTakenOver: the standby activated the replica (protocol
	// §7.7); the primary that reads it fences its copy at once.
	GoodbyeTakenOver uint32 = 6
)

// NACK codes.
const (
	NackUnspecified uint32 = 0
	NackDigest      uint32 = 1
	NackCount       uint32 = 2
	NackOrder       uint32 = 3
	NackApply       uint32 = 4
	NackBase        uint32 = 5
)

// Hello is the first record of each direction (docs/protocol.md §5.1).
type Hello struct {
	Version   uint32   // highest protocol version the sender implements
	Role      Role     // RolePrimary or RoleStandby
	Session   [16]byte // chosen by the primary, kept across reconnects
	Domain    DomainDesc
	Codec     Codec  // primary: codec of its PAGES records
	Inflight  uint32 // most unacknowledged (primary) or staged (standby) epochs
	Committed uint64 // standby: last committed epoch of Session, 0 none
	MemDigest uint64 // standby: digest of its replica memory, 0 none
	Flags     uint32 // HelloSharedDisk, HelloTakenOver, HelloFences
}

// DomainDesc describes the protected domain.
type DomainDesc struct {
	Name     string
	UUID     [16]byte
	Type     string // "pv", "pvh" or "hvm"
	Pages    uint64
	VCPUs    uint32
	NICs     []NICDesc
	Disks    []DiskDesc
	Workload string
	Config   []byte
}

// NICDesc describes one guest network interface.
type NICDesc struct {
	MAC     [6]byte
	Addrs   []netip.Addr
	Bridge  string
	Backend string
}

// DiskDesc describes one guest disk.
type DiskDesc struct {
	Sectors  uint64
	Writable bool
	Target   string
}

// EpochBegin opens an epoch frame (docs/protocol.md §5.3).
type EpochBegin struct {
	Epoch uint64
	Flags uint32 // EpochInitial, EpochResync
}

// Pages is a batch of up to 1024 encoded pages as on the wire
// (docs/protocol.md §5.4). Build one with a PageEncoder and read one with
// DecodePages; the fields are exported for tests and tools.
type Pages struct {
	PFNs       []uint64
	Enc        []PageEnc // one per PFN
	Codec      Codec     // how Data is stored
	ChunkShift uint8     // log2 of the chunk size; 0 with CodecNone
	RawLen     uint32    // length of the data area after decompression
	Chunks     []uint32  // per-chunk wire length, ChunkStored bit; nil with CodecNone
	Data       []byte    // the data area as on the wire
}

// ChunkStored marks a chunk of a compressed data area that is stored as is.
const ChunkStored uint32 = 1 << 31

// State is an opaque vCPU, platform or device state blob.
type State struct {
	Kind  uint32
	Index uint32
	Data  []byte
}

// Disk is one guest disk write of the epoch.
type Disk struct {
	Disk   uint32
	Sector uint64
	Data   []byte // a non-zero multiple of 512 octets, at most 1 MiB
}

// EpochEnd closes an epoch frame. A Writer fills Pages, States, DiskWrites
// and Digest itself; a Reader checks them.
type EpochEnd struct {
	Epoch      uint64
	Pages      uint64 // pages in the frame's PAGES records
	States     uint64 // STATE records in the frame
	DiskWrites uint64 // DISK records in the frame
	Digest     uint64 // xxh3-64 of the frame
	MemDigest  uint64 // optional digest of the primary's memory, 0 none
}

// Ack says the standby committed Epoch and everything before it.
type Ack struct {
	Epoch     uint64
	MemDigest uint64
}

// Heartbeat keeps a quiet direction alive.
type Heartbeat struct {
	Seq       uint64
	SentNanos int64
	Epoch     uint64 // primary: last acked; standby: last committed
	Flushed   uint64 // shared disk: last epoch flushed by the primary
}

// Goodbye ends a direction.
type Goodbye struct {
	Code    uint32
	Message string
}

// Nack says the standby discarded Epoch.
type Nack struct {
	Epoch   uint64
	Code    uint32
	Message string
}

// Timeout announces the failure-detection timeout the primary uses, for
// the standby to use too (protocol §5.13).
type Timeout struct {
	Nanos uint64 // the timeout in nanoseconds; 0 is malformed
}

// Opaque is a record of a type this version does not define. A Writer sends
// it (so that tests and later extensions can emit skippable records); a
// Reader never returns one: it skips skippable types and rejects the others.
type Opaque struct {
	T    Type
	Body []byte
}

// Type implements Record.
func (*Hello) Type() Type { return TypeHello }

// Type implements Record.
func (*EpochBegin) Type() Type { return TypeEpochBegin }

// Type implements Record.
func (*Pages) Type() Type { return TypePages }

// Type implements Record.
func (*State) Type() Type { return TypeState }

// Type implements Record.
func (*Disk) Type() Type { return TypeDisk }

// Type implements Record.
func (*EpochEnd) Type() Type { return TypeEpochEnd }

// Type implements Record.
func (*Ack) Type() Type { return TypeAck }

// Type implements Record.
func (*Heartbeat) Type() Type { return TypeHeartbeat }

// Type implements Record.
func (*Goodbye) Type() Type { return TypeGoodbye }

// Type implements Record.
func (*Nack) Type() Type { return TypeNack }

// Type implements Record.
func (*Timeout) Type() Type { return TypeTimeout }

// Type implements Record.
func (o *Opaque) Type() Type { return o.T }

// Limits bound what a Reader accepts, so that a hostile peer cannot make it
// allocate more. A zero field means its default.
type Limits struct {
	MaxRecord    uint32 // record body octets; default 8 MiB
	MaxString    int    // octets of any string; default 4096
	MaxPages     int    // pages per PAGES record; default 1024
	MaxNICs      int    // default 64
	MaxAddrs     int    // addresses per NIC; default 64
	MaxDisks     int    // default 64
	MaxConfig    int    // HELLO domain config octets; default 1 MiB
	MaxDiskWrite int    // DISK data octets; default 1 MiB
}

// DefaultLimits returns the limits of docs/protocol.md §9.
func DefaultLimits() Limits {
	return Limits{
		MaxRecord:    DefaultMaxRecord,
		MaxString:    MaxString,
		MaxPages:     MaxPagesPerRecord,
		MaxNICs:      64,
		MaxAddrs:     64,
		MaxDisks:     64,
		MaxConfig:    1 << 20,
		MaxDiskWrite: MaxDiskWrite,
	}
}

// withDefaults fills zero fields.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxRecord == 0 {
		l.MaxRecord = d.MaxRecord
	}
	if l.MaxString == 0 {
		l.MaxString = d.MaxString
	}
	if l.MaxPages == 0 {
		l.MaxPages = d.MaxPages
	}
	if l.MaxNICs == 0 {
		l.MaxNICs = d.MaxNICs
	}
	if l.MaxAddrs == 0 {
		l.MaxAddrs = d.MaxAddrs
	}
	if l.MaxDisks == 0 {
		l.MaxDisks = d.MaxDisks
	}
	if l.MaxConfig == 0 {
		l.MaxConfig = d.MaxConfig
	}
	if l.MaxDiskWrite == 0 {
		l.MaxDiskWrite = d.MaxDiskWrite
	}
	return l
}
