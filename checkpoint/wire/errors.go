package wire

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error returned by a Reader wraps one of them inside
// a *FrameError; test for them with errors.Is.
var (
	// ErrBadMagic means the stream does not start with "XLKEMARI".
	ErrBadMagic = errors.New("wire: bad magic")
	// ErrVersion means the stream header names a version or a mandatory
	// flag this implementation does not read.
	ErrVersion = errors.New("wire: unsupported version")
	// ErrTruncated means the stream ended inside a header, a record or an
	// open epoch frame.
	ErrTruncated = errors.New("wire: truncated stream")
	// ErrCRC means a record's CRC-32C does not match its header and body.
	ErrCRC = errors.New("wire: crc mismatch")
	// ErrSequence means a record's seq is not the next one: a record was
	// lost, duplicated or reordered.
	ErrSequence = errors.New("wire: sequence error")
	// ErrTooLarge means a length or count is over the reader's Limits.
	ErrTooLarge = errors.New("wire: over limit")
	// ErrUnknownType means a mandatory record type this version does not know.
	ErrUnknownType = errors.New("wire: unknown mandatory record type")
	// ErrMalformed means a record whose body does not parse.
	ErrMalformed = errors.New("wire: malformed record")
	// ErrOrder means a record that may not appear where it does
	// (docs/protocol.md §5.12).
	ErrOrder = errors.New("wire: record out of order")
	// ErrEpochCount means an EPOCH_END whose counts differ from the frame.
	// The stream is still in step; only the epoch is condemned.
	ErrEpochCount = errors.New("wire: epoch count mismatch")
	// ErrEpochDigest means an EPOCH_END whose digest differs from the frame.
	// The stream is still in step; only the epoch is condemned.
	ErrEpochDigest = errors.New("wire: epoch digest mismatch")
	// ErrClosed means a Writer or Reader used after a fatal error.
	ErrClosed = errors.New("wire: stream failed earlier")
)

// FrameError locates an error in a stream: which record and where. Offset is
// the stream offset of the record's header (or of the stream header), Seq the
// sequence number the record carried and Type its type (0 before a record
// header was read).
type FrameError struct {
	Offset int64
	Seq    uint32
	Type   Type
	Err    error
}

// Error reports the cause first and the place after it.
func (e *FrameError) Error() string {
	if e.Type == 0 {
		return fmt.Sprintf("%v (at offset %d)", e.Err, e.Offset)
	}
	return fmt.Sprintf("%v (record %v seq %d at offset %d)", e.Err, e.Type, e.Seq, e.Offset)
}

// Unwrap returns the underlying error, which wraps one of the sentinels.
func (e *FrameError) Unwrap() error { return e.Err }

// EpochError reports whether err only condemns the current epoch frame
// (ErrEpochCount, ErrEpochDigest) and leaves the stream readable.
func EpochError(err error) bool {
	return errors.Is(err, ErrEpochCount) || errors.Is(err, ErrEpochDigest)
}
