package svc

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Sentinel errors of the package.
var (
	// ErrMalformed: a datagram is not a valid request or reply.
	ErrMalformed = errors.New("svc: malformed message")
	// ErrViolation: Check found an acknowledged reply that contradicts
	// another one, i.e. the service lost or replayed acknowledged state.
	ErrViolation = errors.New("svc: consistency violation")
	// ErrStale: the service answered that the request's sequence number is
	// older than the last one it applied for this client.
	ErrStale = errors.New("svc: stale sequence number")
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("svc: client closed")
)

// Magic numbers open every datagram, so that stray traffic on the service
// port is rejected rather than misread. The final byte is the version.
const (
	RequestMagic uint32 = 0x4b535101 // "KSQ" v1
	ReplyMagic   uint32 = 0x4b535201 // "KSR" v1
)

// Wire sizes. Both messages have a fixed length; anything else is malformed.
const (
	RequestSize = 40
	ReplySize   = 32
)

// Op is a request operation.
type Op uint8

// Operations. Zero is invalid so that a zeroed buffer never decodes.
const (
	OpIncr   Op = 1 // counter += 1; reply value = new counter
	OpGet    Op = 2 // reply value = counter
	OpPut    Op = 3 // kv[Key] = Value; reply value = Value
	OpGetKey Op = 4 // reply value = kv[Key], StatusNotFound if absent
)

// String returns the operation's name, e.g. "INCR".
func (o Op) String() string {
	switch o {
	case OpIncr:
		return "INCR"
	case OpGet:
		return "GET"
	case OpPut:
		return "PUT"
	case OpGetKey:
		return "GETK"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Status is the outcome of a request.
type Status uint8

// Statuses. Zero is invalid, as for Op.
const (
	StatusOK       Status = 1
	StatusNotFound Status = 2 // GETK of a key never PUT
	StatusStale    Status = 3 // seq below the client's last applied seq
	StatusFull     Status = 4 // KV or client table full; not applied
	StatusIOError  Status = 5 // the journal write failed; not applied
)

// String returns the status's name, e.g. "not-found".
func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusNotFound:
		return "not-found"
	case StatusStale:
		return "stale"
	case StatusFull:
		return "full"
	case StatusIOError:
		return "io-error"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Request is one client request. (Client, Seq) identifies it: the service
// applies each at most once and answers retries from its dedup table.
type Request struct {
	Client uint64
	Seq    uint64 // > 0, increasing per client
	Op     Op
	Key    uint64 // PUT, GETK
	Value  uint64 // PUT
}

// Reply answers the request with the same Client and Seq.
type Reply struct {
	Client uint64
	Seq    uint64
	Status Status
	Value  uint64
}

// Request layout (big endian):
//
//	0  magic  u32
//	4  op     u8
//	5  zero   [3]u8
//	8  client u64
//	16 seq    u64
//	24 key    u64 (0 unless PUT/GETK)
//	32 value  u64 (0 unless PUT)
//
// Reply layout:
//
//	0  magic  u32
//	4  status u8
//	5  zero   [3]u8
//	8  client u64
//	16 seq    u64
//	24 value  u64

// Validate reports whether r can be encoded.
func (r Request) Validate() error {
	if r.Seq == 0 {
		return fmt.Errorf("%w: request seq 0", ErrMalformed)
	}
	switch r.Op {
	case OpIncr, OpGet:
		if r.Key != 0 || r.Value != 0 {
			return fmt.Errorf("%w: %v takes no key or value", ErrMalformed, r.Op)
		}
	case OpGetKey:
		if r.Value != 0 {
			return fmt.Errorf("%w: GETK takes no value", ErrMalformed)
		}
	case OpPut:
	default:
		return fmt.Errorf("%w: unknown op %d", ErrMalformed, uint8(r.Op))
	}
	return nil
}

// AppendRequest appends the encoding of r to dst.
func AppendRequest(dst []byte, r Request) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return dst, err
	}
	dst = binary.BigEndian.AppendUint32(dst, RequestMagic)
	dst = append(dst, byte(r.Op), 0, 0, 0)
	dst = binary.BigEndian.AppendUint64(dst, r.Client)
	dst = binary.BigEndian.AppendUint64(dst, r.Seq)
	dst = binary.BigEndian.AppendUint64(dst, r.Key)
	dst = binary.BigEndian.AppendUint64(dst, r.Value)
	return dst, nil
}

// EncodeRequest returns the encoding of r.
func EncodeRequest(r Request) ([]byte, error) {
	return AppendRequest(make([]byte, 0, RequestSize), r)
}

// DecodeRequest parses b, which must be exactly one request.
func DecodeRequest(b []byte) (Request, error) {
	if len(b) != RequestSize {
		return Request{}, fmt.Errorf("%w: request of %d bytes, want %d", ErrMalformed, len(b), RequestSize)
	}
	if m := binary.BigEndian.Uint32(b); m != RequestMagic {
		return Request{}, fmt.Errorf("%w: request magic %#x", ErrMalformed, m)
	}
	if b[5]|b[6]|b[7] != 0 {
		return Request{}, fmt.Errorf("%w: request reserved bytes not zero", ErrMalformed)
	}
	r := Request{
		Op:     Op(b[4]),
		Client: binary.BigEndian.Uint64(b[8:]),
		Seq:    binary.BigEndian.Uint64(b[16:]),
		Key:    binary.BigEndian.Uint64(b[24:]),
		Value:  binary.BigEndian.Uint64(b[32:]),
	}
	if err := r.Validate(); err != nil {
		return Request{}, err
	}
	return r, nil
}

// Validate reports whether r can be encoded.
func (r Reply) Validate() error {
	if r.Seq == 0 {
		return fmt.Errorf("%w: reply seq 0", ErrMalformed)
	}
	if r.Status < StatusOK || r.Status > StatusIOError {
		return fmt.Errorf("%w: unknown status %d", ErrMalformed, uint8(r.Status))
	}
	return nil
}

// AppendReply appends the encoding of r to dst.
func AppendReply(dst []byte, r Reply) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return dst, err
	}
	dst = binary.BigEndian.AppendUint32(dst, ReplyMagic)
	dst = append(dst, byte(r.Status), 0, 0, 0)
	dst = binary.BigEndian.AppendUint64(dst, r.Client)
	dst = binary.BigEndian.AppendUint64(dst, r.Seq)
	dst = binary.BigEndian.AppendUint64(dst, r.Value)
	return dst, nil
}

// EncodeReply returns the encoding of r.
func EncodeReply(r Reply) ([]byte, error) {
	return AppendReply(make([]byte, 0, ReplySize), r)
}

// DecodeReply parses b, which must be exactly one reply.
func DecodeReply(b []byte) (Reply, error) {
	if len(b) != ReplySize {
		return Reply{}, fmt.Errorf("%w: reply of %d bytes, want %d", ErrMalformed, len(b), ReplySize)
	}
	if m := binary.BigEndian.Uint32(b); m != ReplyMagic {
		return Reply{}, fmt.Errorf("%w: reply magic %#x", ErrMalformed, m)
	}
	if b[5]|b[6]|b[7] != 0 {
		return Reply{}, fmt.Errorf("%w: reply reserved bytes not zero", ErrMalformed)
	}
	r := Reply{
		Status: Status(b[4]),
		Client: binary.BigEndian.Uint64(b[8:]),
		Seq:    binary.BigEndian.Uint64(b[16:]),
		Value:  binary.BigEndian.Uint64(b[24:]),
	}
	if err := r.Validate(); err != nil {
		return Reply{}, err
	}
	return r, nil
}
