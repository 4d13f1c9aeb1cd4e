package wire

import (
	"bufio"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/zeebo/xxh3"
)

const (
	readerBufSize = 64 << 10
	// firstBodyAlloc is the most a Reader allocates for a body before any of
	// it has arrived; it grows the buffer as octets come in, so a peer that
	// announces a large record and sends nothing costs little.
	firstBodyAlloc = 64 << 10
)

// Reader reads one direction of a replication stream and checks it as
// docs/protocol.md §4.2 says: CRC, sequence, padding, order, body layout,
// limits, and every epoch frame's counts and digest.
//
// Records returned by Next alias the Reader's buffers and are valid only
// until the next call to Next: the *Pages, *State and *Disk data slices point
// into the record body, and the same record values are reused. A *Pages
// stays decodable with DecodePages until then. Copy what must outlive it.
//
// A Reader is not safe for concurrent use.
type Reader struct {
	br  *bufio.Reader
	lim Limits
	off int64
	seq uint32
	err error

	header         bool
	version, flags uint32
	hello, bye     bool

	inEpoch bool
	epoch   uint64
	pages   uint64
	states  uint64
	disks   uint64
	digest  *xxh3.Hasher
	tbuf    [4]byte
	hdr     [RecordHeaderSize]byte
	body    []byte
	skipped uint64

	helloRec   Hello
	epochBegin EpochBegin
	pagesRec   Pages
	state      State
	disk       Disk
	epochEnd   EpochEnd
	ack        Ack
	heartbeat  Heartbeat
	goodbye    Goodbye
	nack       Nack
	timeout    Timeout
}

// NewReader returns a Reader of r that enforces lim (zero fields take their
// defaults).
func NewReader(r io.Reader, lim Limits) *Reader {
	return &Reader{
		br:     bufio.NewReaderSize(r, readerBufSize),
		lim:    lim.withDefaults(),
		digest: xxh3.New(),
	}
}

// Offset returns the number of stream octets consumed so far.
func (r *Reader) Offset() int64 { return r.off }

// Skipped returns how many skippable records of unknown type were skipped.
func (r *Reader) Skipped() uint64 { return r.skipped }

// ReadHeader reads and checks the stream header. Next calls it if it has
// not been called.
func (r *Reader) ReadHeader() (version, flags uint32, err error) {
	if r.header {
		return r.version, r.flags, r.err
	}
	r.header = true
	var h [HeaderSize]byte
	n, err := io.ReadFull(r.br, h[:])
	r.off += int64(n)
	switch {
	case err != nil && n < HeaderSize:
		r.err = &FrameError{Err: fmt.Errorf("%w: stream header has %d of %d octets: %v", ErrTruncated, n, HeaderSize, err)}
	case string(h[:8]) != Magic:
		r.err = &FrameError{Err: fmt.Errorf("%w: %q", ErrBadMagic, h[:8])}
	default:
		r.version, r.flags = le.Uint32(h[8:]), le.Uint32(h[12:])
		switch {
		case r.version < MinVersion || r.version > Version:
			r.err = &FrameError{Offset: 8, Err: fmt.Errorf("%w: version %d, this reader reads %d to %d", ErrVersion, r.version, MinVersion, Version)}
		case r.flags&0xFFFF != 0:
			r.err = &FrameError{Offset: 12, Err: fmt.Errorf("%w: unknown mandatory stream flags %#x", ErrVersion, r.flags&0xFFFF)}
		}
	}
	return r.version, r.flags, r.err
}

// Next returns the next record. It returns io.EOF when the stream ends
// cleanly between records outside an epoch frame. Every other error is a
// *FrameError wrapping a sentinel; all are final (later calls return the
// same error) except those for which EpochError is true: then the frame is
// condemned but the stream is in step and Next may be called again.
func (r *Reader) Next() (Record, error) {
	if !r.header {
		if _, _, err := r.ReadHeader(); err != nil {
			return nil, err
		}
	}
	for {
		if r.err != nil {
			return nil, r.err
		}
		rec, err := r.next()
		if err != nil {
			if !EpochError(err) {
				r.err = err
			}
			return nil, err
		}
		if rec != nil {
			return rec, nil
		}
	}
}

// next reads one record; it returns (nil, nil) for a skipped one.
func (r *Reader) next() (Record, error) {
	at := r.off
	n, err := io.ReadFull(r.br, r.hdr[:])
	r.off += int64(n)
	if err != nil {
		if n == 0 && errors.Is(err, io.EOF) {
			if r.inEpoch {
				return nil, &FrameError{Offset: at, Err: fmt.Errorf("%w: stream ended inside epoch %d", ErrTruncated, r.epoch)}
			}
			return nil, io.EOF
		}
		return nil, &FrameError{Offset: at, Err: fmt.Errorf("%w: record header has %d of %d octets: %v", ErrTruncated, n, RecordHeaderSize, err)}
	}
	t := Type(le.Uint32(r.hdr[0:]))
	length := le.Uint32(r.hdr[4:])
	seq := le.Uint32(r.hdr[8:])
	fail := func(err error) (Record, error) {
		return nil, &FrameError{Offset: at, Seq: seq, Type: t, Err: err}
	}
	if t == 0 {
		return fail(fmt.Errorf("%w: record type 0", ErrMalformed))
	}
	if length > r.lim.MaxRecord {
		return fail(fmt.Errorf("%w: body of %d octets, limit %d", ErrTooLarge, length, r.lim.MaxRecord))
	}
	total := int(length) + pad8(int(length))
	if err := r.readBody(total); err != nil {
		return fail(err)
	}
	body, pad := r.body[:length], r.body[length:total]
	crc := crc32.Update(0, castagnoli, r.hdr[:12])
	crc = crc32.Update(crc, castagnoli, body)
	if want := le.Uint32(r.hdr[12:]); crc != want {
		return fail(fmt.Errorf("%w: computed %#08x, header says %#08x", ErrCRC, crc, want))
	}
	if seq != r.seq {
		return fail(fmt.Errorf("%w: seq %d, expected %d", ErrSequence, seq, r.seq))
	}
	if !allZero(pad) {
		return fail(fmt.Errorf("%w: non-zero padding", ErrMalformed))
	}
	r.seq++
	if !t.known() && !t.Skippable() {
		return fail(fmt.Errorf("%w: %v", ErrUnknownType, t))
	}
	if err := r.checkOrder(t, body); err != nil {
		return fail(err)
	}
	if !t.known() {
		r.skipped++
		r.hash(t, body)
		return nil, nil
	}
	rec, err := r.decodeBody(t, body)
	if err != nil {
		return fail(err)
	}
	if err := r.account(rec, t, body); err != nil {
		return fail(err)
	}
	return rec, nil
}

// readBody reads n octets into r.body, growing it only as octets arrive.
func (r *Reader) readBody(n int) error {
	if cap(r.body) >= n {
		r.body = r.body[:n]
		got, err := io.ReadFull(r.br, r.body)
		r.off += int64(got)
		if err != nil {
			return fmt.Errorf("%w: body has %d of %d octets: %v", ErrTruncated, got, n, err)
		}
		return nil
	}
	b := r.body[:0]
	for len(b) < n {
		if len(b) == cap(b) {
			c := min(max(2*cap(b), firstBodyAlloc), n)
			nb := make([]byte, len(b), c)
			copy(nb, b)
			b = nb
		}
		k := min(cap(b), n) - len(b)
		got, err := io.ReadFull(r.br, b[len(b):len(b)+k])
		r.off += int64(got)
		b = b[:len(b)+got]
		if err != nil {
			r.body = b
			return fmt.Errorf("%w: body has %d of %d octets: %v", ErrTruncated, len(b), n, err)
		}
	}
	r.body = b
	return nil
}

// checkOrder enforces docs/protocol.md §5.12 on the reading side.
func (r *Reader) checkOrder(t Type, body []byte) error {
	switch {
	case r.bye:
		return fmt.Errorf("%w: %v after goodbye", ErrOrder, t)
	case t == TypeHello:
		if r.hello {
			return fmt.Errorf("%w: second hello", ErrOrder)
		}
	case !r.hello:
		return fmt.Errorf("%w: %v before hello", ErrOrder, t)
	case t == TypeEpochBegin:
		if r.inEpoch {
			return fmt.Errorf("%w: epoch begin inside epoch %d", ErrOrder, r.epoch)
		}
	case t == TypePages || t == TypeState || t == TypeDisk:
		if !r.inEpoch {
			return fmt.Errorf("%w: %v outside an epoch", ErrOrder, t)
		}
	case t == TypeEpochEnd:
		if !r.inEpoch {
			return fmt.Errorf("%w: epoch end outside an epoch", ErrOrder)
		}
		if len(body) >= 8 && le.Uint64(body) != r.epoch {
			return fmt.Errorf("%w: epoch end %d closes epoch %d", ErrOrder, le.Uint64(body), r.epoch)
		}
	}
	return nil
}

func (r *Reader) hash(t Type, body []byte) {
	if !r.inEpoch || t.control() {
		return
	}
	le.PutUint32(r.tbuf[:], uint32(t))
	r.digest.Write(r.tbuf[:])
	r.digest.Write(body)
}

// account tracks the open epoch frame and checks EPOCH_END against it.
func (r *Reader) account(rec Record, t Type, body []byte) error {
	switch t {
	case TypeHello:
		r.hello = true
		return nil
	case TypeGoodbye:
		r.bye = true
		r.inEpoch = false
		return nil
	case TypeEpochBegin:
		r.inEpoch = true
		r.epoch = r.epochBegin.Epoch
		r.pages, r.states, r.disks = 0, 0, 0
		r.digest.Reset()
	case TypePages:
		r.pages += uint64(len(r.pagesRec.PFNs))
	case TypeState:
		r.states++
	case TypeDisk:
		r.disks++
	case TypeEpochEnd:
		r.inEpoch = false
		e := &r.epochEnd
		if e.Pages != r.pages || e.States != r.states || e.DiskWrites != r.disks {
			return fmt.Errorf("%w: epoch %d says %d pages, %d states, %d disk writes; frame has %d, %d, %d",
				ErrEpochCount, e.Epoch, e.Pages, e.States, e.DiskWrites, r.pages, r.states, r.disks)
		}
		if d := r.digest.Sum64(); d != e.Digest {
			return fmt.Errorf("%w: epoch %d says %#016x, frame hashes to %#016x", ErrEpochDigest, e.Epoch, e.Digest, d)
		}
		return nil
	}
	r.hash(t, body)
	return nil
}
