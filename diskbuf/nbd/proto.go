package nbd

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Wire constants of the NBD protocol, from the protocol specification
// (NetworkBlockDevice/nbd doc/proto.md: "Values", "Option types", "Option
// reply types", "Request types", "Error values") and the INFO and
// WRITE_ZEROES extensions it refers to. Every integer on the wire is
// big-endian ("network byte order").
const (
	magicInit       uint64 = 0x4e42444d41474943 // "NBDMAGIC"
	magicOpt        uint64 = 0x49484156454f5054 // "IHAVEOPT"
	magicOptReply   uint64 = 0x0003e889045565a9
	magicRequest    uint32 = 0x25609513
	magicReply      uint32 = 0x67446698 // NBD_SIMPLE_REPLY_MAGIC
	magicStructured uint32 = 0x668e33ef // never sent: structured replies are not negotiated
)

// Handshake flags (server, 16 bits) and client flags (32 bits).
const (
	flagFixedNewstyle  uint16 = 1 << 0
	flagNoZeroes       uint16 = 1 << 1
	flagCFixedNewstyle uint32 = 1 << 0
	flagCNoZeroes      uint32 = 1 << 1
)

// Transmission flags (16 bits), sent after option haggling and passed to
// the kernel as NBD_ATTR_SERVER_FLAGS.
const (
	FlagHasFlags        uint16 = 1 << 0
	FlagReadOnly        uint16 = 1 << 1
	FlagSendFlush       uint16 = 1 << 2
	FlagSendFUA         uint16 = 1 << 3
	FlagRotational      uint16 = 1 << 4
	FlagSendTrim        uint16 = 1 << 5
	FlagSendWriteZeroes uint16 = 1 << 6
	FlagSendDF          uint16 = 1 << 7
	FlagCanMultiConn    uint16 = 1 << 8
)

// Options.
const (
	optExportName       uint32 = 1
	optAbort            uint32 = 2
	optList             uint32 = 3
	optPeekExport       uint32 = 4
	optStartTLS         uint32 = 5
	optInfo             uint32 = 6
	optGo               uint32 = 7
	optStructuredReply  uint32 = 8
	optListMetaContext  uint32 = 9
	optSetMetaContext   uint32 = 10
	optExtendedHeaders  uint32 = 11
	repAck              uint32 = 1
	repServer           uint32 = 2
	repInfo             uint32 = 3
	repErrUnsup         uint32 = 1<<31 + 1
	repErrPolicy        uint32 = 1<<31 + 2
	repErrInvalid       uint32 = 1<<31 + 3
	repErrPlatform      uint32 = 1<<31 + 4
	repErrTLSReqd       uint32 = 1<<31 + 5
	repErrUnknown       uint32 = 1<<31 + 6
	repErrShutdown      uint32 = 1<<31 + 7
	repErrBlockSizeReqd uint32 = 1<<31 + 8
	repErrTooBig        uint32 = 1<<31 + 9
	infoExport          uint16 = 0
	infoName            uint16 = 1
	infoDescription     uint16 = 2
	infoBlockSize       uint16 = 3
)

// Commands and command flags.
const (
	CmdRead        uint16 = 0
	CmdWrite       uint16 = 1
	CmdDisc        uint16 = 2
	CmdFlush       uint16 = 3
	CmdTrim        uint16 = 4
	CmdCache       uint16 = 5
	CmdWriteZeroes uint16 = 6
	CmdBlockStatus uint16 = 7

	CmdFlagFUA    uint16 = 1 << 0
	CmdFlagNoHole uint16 = 1 << 1
	CmdFlagDF     uint16 = 1 << 2
	CmdFlagReqOne uint16 = 1 << 3
)

// Errno values allowed in a reply ("Error values"), plus ENOTSUP from the
// current spec.
const (
	EPERM     uint32 = 1
	EIO       uint32 = 5
	ENOMEM    uint32 = 12
	EINVAL    uint32 = 22
	ENOSPC    uint32 = 28
	EOVERFLOW uint32 = 75
	ENOTSUP   uint32 = 95
	ESHUTDOWN uint32 = 108
)

// Bounds the server enforces on what a peer declares.
const (
	// MaxPayload is the default bound of a READ or WRITE length: 32 MiB,
	// which is also Linux nbd's max_hw_sectors (65536 sectors).
	MaxPayload = 32 << 20
	// maxOptLen bounds option data: a name (<= 4096 bytes by the spec),
	// its length, and a list of info requests.
	maxOptLen = 4096 + 4 + 2 + 2*64
	// maxOptions bounds the options one connection may haggle.
	maxOptions = 128
	// maxNameLen is the spec's bound on a string.
	maxNameLen = 4096
)

const requestHeaderLen = 28
const replyHeaderLen = 16

// Request is one transmission-phase request header.
type Request struct {
	Flags  uint16
	Type   uint16
	Handle uint64
	Offset uint64
	Length uint32
}

// AppendRequest appends the 28-byte header of r to b.
func AppendRequest(b []byte, r Request) []byte {
	b = binary.BigEndian.AppendUint32(b, magicRequest)
	b = binary.BigEndian.AppendUint16(b, r.Flags)
	b = binary.BigEndian.AppendUint16(b, r.Type)
	b = binary.BigEndian.AppendUint64(b, r.Handle)
	b = binary.BigEndian.AppendUint64(b, r.Offset)
	return binary.BigEndian.AppendUint32(b, r.Length)
}

// ErrProtocol is wrapped by every error that is a peer's violation of
// the protocol (bad magic, bad flags, short frames).
var ErrProtocol = fmt.Errorf("nbd: protocol violation")

// ParseRequest decodes a 28-byte request header.
func ParseRequest(b []byte) (Request, error) {
	if len(b) < requestHeaderLen {
		return Request{}, fmt.Errorf("%w: request header is %d bytes, want %d", ErrProtocol, len(b), requestHeaderLen)
	}
	if m := binary.BigEndian.Uint32(b); m != magicRequest {
		return Request{}, fmt.Errorf("%w: request magic %#08x, want %#08x", ErrProtocol, m, magicRequest)
	}
	return Request{
		Flags:  binary.BigEndian.Uint16(b[4:]),
		Type:   binary.BigEndian.Uint16(b[6:]),
		Handle: binary.BigEndian.Uint64(b[8:]),
		Offset: binary.BigEndian.Uint64(b[16:]),
		Length: binary.BigEndian.Uint32(b[24:]),
	}, nil
}

// Reply is a simple reply header.
type Reply struct {
	Error  uint32
	Handle uint64
}

// AppendReply appends the 16-byte simple reply header.
func AppendReply(b []byte, r Reply) []byte {
	b = binary.BigEndian.AppendUint32(b, magicReply)
	b = binary.BigEndian.AppendUint32(b, r.Error)
	return binary.BigEndian.AppendUint64(b, r.Handle)
}

// ParseReply decodes a 16-byte simple reply header.
func ParseReply(b []byte) (Reply, error) {
	if len(b) < replyHeaderLen {
		return Reply{}, fmt.Errorf("%w: reply header is %d bytes, want %d", ErrProtocol, len(b), replyHeaderLen)
	}
	if m := binary.BigEndian.Uint32(b); m != magicReply {
		return Reply{}, fmt.Errorf("%w: reply magic %#08x, want %#08x (simple reply)", ErrProtocol, m, magicReply)
	}
	return Reply{Error: binary.BigEndian.Uint32(b[4:]), Handle: binary.BigEndian.Uint64(b[8:])}, nil
}

func appendOption(b []byte, opt uint32, data []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, magicOpt)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func appendOptReply(b []byte, opt, typ uint32, data []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, magicOptReply)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// appendInfoRequest is the data of NBD_OPT_INFO / NBD_OPT_GO: name and
// the information types requested.
func appendInfoRequest(b []byte, name string, infos ...uint16) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	return b
}

func readFull(r io.Reader, b []byte, what string) error {
	if _, err := io.ReadFull(r, b); err != nil {
		if err == io.ErrUnexpectedEOF {
			return fmt.Errorf("%w: %s truncated", ErrProtocol, what)
		}
		return fmt.Errorf("nbd: read %s: %w", what, err)
	}
	return nil
}

// CmdName names a command for errors and logs.
func CmdName(t uint16) string {
	switch t {
	case CmdRead:
		return "READ"
	case CmdWrite:
		return "WRITE"
	case CmdDisc:
		return "DISC"
	case CmdFlush:
		return "FLUSH"
	case CmdTrim:
		return "TRIM"
	case CmdCache:
		return "CACHE"
	case CmdWriteZeroes:
		return "WRITE_ZEROES"
	case CmdBlockStatus:
		return "BLOCK_STATUS"
	}
	return fmt.Sprintf("command %d", t)
}
