package wire

import (
	"fmt"
	"hash/crc32"
	"io"
	"net"

	"github.com/zeebo/xxh3"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

const (
	// writerBufSize is how much the Writer gathers before it writes.
	writerBufSize = 64 << 10
	// directThreshold is the tail size from which the Writer hands a record's
	// tail to the underlying writer instead of copying it into its buffer.
	directThreshold = 16 << 10
)

// Writer writes one direction of a replication stream. It buffers records
// until Flush, or until its buffer fills, and keeps the epoch counts and
// digest itself. It allocates nothing per record once warm, and hands large
// PAGES data areas (and large STATE and DISK blobs) to the underlying writer
// without copying them, through net.Buffers so that a net.Conn uses writev.
//
// A Writer is not safe for concurrent use. After an error from the underlying
// writer every call returns that error.
type Writer struct {
	w   io.Writer
	buf []byte
	seq uint32
	err error
	lim Limits

	header, hello, bye bool

	inEpoch bool
	epoch   uint64
	pages   uint64
	states  uint64
	disks   uint64
	digest  *xxh3.Hasher
	tbuf    [4]byte
	iov     net.Buffers
	iovArr  [3][]byte
}

// NewWriter returns a Writer that writes to w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{
		w:      w,
		buf:    make([]byte, 0, writerBufSize+RecordHeaderSize+64),
		lim:    DefaultLimits(),
		digest: xxh3.New(),
	}
}

// WriteHeader writes the stream header with version Version and the given
// flags. It must be the first call.
func (w *Writer) WriteHeader(flags uint32) error {
	if w.err != nil {
		return w.err
	}
	if w.header {
		return fmt.Errorf("%w: stream header written twice", ErrOrder)
	}
	w.header = true
	w.buf = append(w.buf, Magic...)
	w.buf = le.AppendUint32(w.buf, Version)
	w.buf = le.AppendUint32(w.buf, flags)
	return nil
}

// Seq returns the sequence number the next record will carry.
func (w *Writer) Seq() uint32 { return w.seq }

// InEpoch reports whether an epoch frame is open, and which.
func (w *Writer) InEpoch() (epoch uint64, open bool) { return w.epoch, w.inEpoch }

// Write appends rec to the stream. For an *EpochEnd it first fills Pages,
// States, DiskWrites and Digest (in the caller's struct) from the frame it
// closes. A record that breaks the rules of docs/protocol.md (§5.12 order,
// §9 limits, a malformed field) is refused with an error wrapping ErrOrder,
// ErrTooLarge or ErrMalformed and nothing is written; the Writer stays
// usable.
//
// Write keeps no reference to rec or its slices after it returns.
func (w *Writer) Write(rec Record) error {
	if w.err != nil {
		return w.err
	}
	if rec == nil {
		return fmt.Errorf("%w: nil record", ErrMalformed)
	}
	if err := w.checkOrder(rec); err != nil {
		return err
	}
	t := rec.Type()
	if e, ok := rec.(*EpochEnd); ok {
		e.Pages, e.States, e.DiskWrites = w.pages, w.states, w.disks
		e.Digest = w.digest.Sum64()
	}
	start := len(w.buf)
	w.buf = append(w.buf, make([]byte, RecordHeaderSize)...)
	buf, tail, err := appendBody(w.buf, rec, &w.lim)
	if err != nil {
		w.buf = w.buf[:start]
		return err
	}
	w.buf = buf
	body := w.buf[start+RecordHeaderSize:]
	length := len(body) + len(tail)
	if length > int(w.lim.MaxRecord) {
		w.buf = w.buf[:start]
		return fmt.Errorf("%w: %v body of %d octets, limit %d", ErrTooLarge, t, length, w.lim.MaxRecord)
	}
	h := w.buf[start : start+RecordHeaderSize]
	le.PutUint32(h[0:], uint32(t))
	le.PutUint32(h[4:], uint32(length))
	le.PutUint32(h[8:], w.seq)
	crc := crc32.Update(0, castagnoli, h[:12])
	crc = crc32.Update(crc, castagnoli, body)
	crc = crc32.Update(crc, castagnoli, tail)
	le.PutUint32(h[12:], crc)
	w.account(rec, t, body, tail)
	w.seq++

	pad := zeros[:pad8(length)]
	if len(tail) < directThreshold {
		w.buf = append(w.buf, tail...)
		w.buf = append(w.buf, pad...)
		if len(w.buf) >= writerBufSize {
			return w.Flush()
		}
		return nil
	}
	w.iov = append(w.iovArr[:0], w.buf, tail, pad)
	if _, err := w.iov.WriteTo(w.w); err != nil {
		w.err = err
		return err
	}
	w.buf = w.buf[:0]
	return nil
}

// checkOrder enforces docs/protocol.md §5.12 on the writing side.
func (w *Writer) checkOrder(rec Record) error {
	t := rec.Type()
	switch {
	case !w.header:
		return fmt.Errorf("%w: %v before the stream header", ErrOrder, t)
	case w.bye:
		return fmt.Errorf("%w: %v after goodbye", ErrOrder, t)
	case t == TypeHello:
		if w.hello {
			return fmt.Errorf("%w: second hello", ErrOrder)
		}
		return nil
	case !w.hello:
		return fmt.Errorf("%w: %v before hello", ErrOrder, t)
	case t == TypeEpochBegin:
		if w.inEpoch {
			return fmt.Errorf("%w: epoch begin inside epoch %d", ErrOrder, w.epoch)
		}
	case t == TypePages || t == TypeState || t == TypeDisk:
		if !w.inEpoch {
			return fmt.Errorf("%w: %v outside an epoch", ErrOrder, t)
		}
	case t == TypeEpochEnd:
		e := rec.(*EpochEnd)
		if !w.inEpoch || e.Epoch != w.epoch {
			return fmt.Errorf("%w: epoch end %d, open epoch %d (open %v)", ErrOrder, e.Epoch, w.epoch, w.inEpoch)
		}
	}
	return nil
}

// account updates the frame's counts and digest after rec was encoded.
func (w *Writer) account(rec Record, t Type, body, tail []byte) {
	switch t {
	case TypeHello:
		w.hello = true
		return
	case TypeGoodbye:
		w.bye = true
		w.inEpoch = false
		return
	case TypeEpochBegin:
		w.inEpoch = true
		w.epoch = rec.(*EpochBegin).Epoch
		w.pages, w.states, w.disks = 0, 0, 0
		w.digest.Reset()
	case TypeEpochEnd:
		w.inEpoch = false
		return
	case TypePages:
		w.pages += uint64(len(rec.(*Pages).PFNs))
	case TypeState:
		w.states++
	case TypeDisk:
		w.disks++
	}
	if !w.inEpoch || t.control() {
		return
	}
	le.PutUint32(w.tbuf[:], uint32(t))
	w.digest.Write(w.tbuf[:])
	w.digest.Write(body)
	w.digest.Write(tail)
}

// Flush writes everything buffered to the underlying writer.
func (w *Writer) Flush() error {
	if w.err != nil {
		return w.err
	}
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.w.Write(w.buf)
	w.buf = w.buf[:0]
	if err != nil {
		w.err = err
	}
	return err
}
