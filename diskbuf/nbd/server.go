package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sync/semaphore"
)

// Op is the kind of a Change.
type Op uint8

// Changes an Observer sees.
const (
	OpWrite Op = iota + 1 // Data written at Offset
	OpTrim                // Length bytes at Offset now read as zeroes
	OpZero                // Length bytes at Offset now read as zeroes (WRITE_ZEROES)
	OpFlush               // every earlier Change is durable on the local backend
)

func (o Op) String() string {
	switch o {
	case OpWrite:
		return "write"
	case OpTrim:
		return "trim"
	case OpZero:
		return "zero"
	case OpFlush:
		return "flush"
	}
	return fmt.Sprintf("op %d", uint8(o))
}

// Change is one completed change of the export, as an Observer sees it.
type Change struct {
	Op     Op
	Offset int64
	Length int64
	// Data is what was written (OpWrite). It is valid only during the
	// Observer call: copy it to keep it.
	Data []byte
	// Epoch is the epoch the request was admitted in (see Quiesce).
	Epoch uint64
	// Seq numbers changes server-wide from 1 in the order they reached
	// the backend; applying them in Seq order reproduces the backend.
	Seq uint64
	// Handle is the client's handle, for logs.
	Handle uint64
}

// Observer sees every change after the backend made it and before the
// client is answered. Calls are serialised, in Seq order. An error fails
// the request with EIO (the backend may hold the data nevertheless): the
// replication layer must treat it as a loss of protection.
type Observer func(Change) error

// Config describes the one export a Server serves.
type Config struct {
	// Name is the export's name; the empty name (default export) is
	// accepted too.
	Name        string
	Description string
	Backend     Backend
	ReadOnly    bool
	// MaxPayload bounds READ and WRITE lengths (default and upper bound
	// MaxPayload, 32 MiB).
	MaxPayload uint32
	// Workers is how many requests of one connection run at once
	// (default 16).
	Workers int
	// MaxInflightBytes bounds the payload buffers one connection holds
	// (default 2*MaxPayload; at least MaxPayload).
	MaxInflightBytes int64
	// Observer, if set, sees every change; see Observer.
	Observer Observer
	// FirstEpoch is the epoch requests are tagged with until the first
	// Quiesce/Resume.
	FirstEpoch uint64
	// IOFlusher makes every serving goroutine run on a locked OS thread
	// marked PR_SET_IO_FLUSHER (needed when the server backs a local
	// /dev/nbdN; see attach.go).
	IOFlusher bool
	// Logf receives request errors (nil: silent).
	Logf func(format string, args ...any)
}

// Server serves one export over NBD to any number of connections.
type Server struct {
	cfg   Config
	flags uint16
	gate  *gate

	orderMu sync.Mutex // with an Observer: orders mutations and their Seq
	seq     uint64     // protected by orderMu

	answered   atomic.Uint64
	flusherErr atomic.Pointer[error]
}

// NewServer checks cfg and returns a server.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Backend == nil {
		return nil, errors.New("nbd: config: no backend")
	}
	if cfg.Backend.Size() < 0 {
		return nil, fmt.Errorf("nbd: config: backend size %d", cfg.Backend.Size())
	}
	if len(cfg.Name) > maxNameLen || len(cfg.Description) > maxNameLen {
		return nil, fmt.Errorf("nbd: config: export name or description longer than %d bytes", maxNameLen)
	}
	if cfg.MaxPayload == 0 || cfg.MaxPayload > MaxPayload {
		cfg.MaxPayload = MaxPayload
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 16
	}
	if cfg.MaxInflightBytes == 0 {
		cfg.MaxInflightBytes = 2 * int64(cfg.MaxPayload)
	}
	if cfg.MaxInflightBytes < int64(cfg.MaxPayload) {
		return nil, fmt.Errorf("nbd: config: MaxInflightBytes %d below MaxPayload %d", cfg.MaxInflightBytes, cfg.MaxPayload)
	}
	s := &Server{cfg: cfg, gate: newGate(cfg.FirstEpoch)}
	// CAN_MULTI_CONN is correct: every connection shares the Backend, whose
	// Flush covers the writes of all connections, and one gate.
	s.flags = FlagHasFlags | FlagSendFlush | FlagSendFUA | FlagCanMultiConn
	if cfg.ReadOnly {
		s.flags |= FlagReadOnly
	} else {
		s.flags |= FlagSendTrim | FlagSendWriteZeroes
	}
	return s, nil
}

// Flags returns the transmission flags the server advertises (also the
// kernel's NBD_ATTR_SERVER_FLAGS).
func (s *Server) Flags() uint16 { return s.flags }

// Size returns the export's size.
func (s *Server) Size() int64 { return s.cfg.Backend.Size() }

// Quiesce is the disk side of an epoch boundary. It stops admitting
// requests (on every connection; those that arrive wait), waits until
// every admitted request has been answered, and returns the epoch that
// closed: every Change of that epoch has been observed, and no request is
// answered until Resume. Call it after the guest is suspended.
//
// If ctx ends first, the server reopens the same epoch and returns ctx's
// error. Quiesce while quiesced returns ErrQuiesced.
func (s *Server) Quiesce(ctx context.Context) (uint64, error) { return s.gate.quiesce(ctx) }

// Resume opens the next epoch and lets waiting requests in. It does
// nothing unless a Quiesce has returned and no Resume followed.
func (s *Server) Resume() { s.gate.resumeNext() }

// Epoch returns the current epoch.
func (s *Server) Epoch() uint64 { e, _, _, _ := s.gate.state(); return e }

// Stats is a snapshot of the server's counters.
type Stats struct {
	Epoch    uint64
	Quiesced bool
	InFlight int    // admitted, not yet answered
	Waiting  int    // held by a quiesce
	Answered uint64 // replies written since start
}

// Stats returns a snapshot.
func (s *Server) Stats() Stats {
	e, q, in, w := s.gate.state()
	return Stats{Epoch: e, Quiesced: q, InFlight: in, Waiting: w, Answered: s.answered.Load()}
}

// IOFlusherError returns the error of the first failed PR_SET_IO_FLUSHER,
// or nil.
func (s *Server) IOFlusherError() error {
	if p := s.flusherErr.Load(); p != nil {
		return *p
	}
	return nil
}

func (s *Server) logf(format string, args ...any) {
	if s.cfg.Logf != nil {
		s.cfg.Logf(format, args...)
	}
}

// Serve accepts connections on l until ctx ends or Accept fails, serving
// each (handshake then transmission) in its own goroutine.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("nbd: accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.ServeConn(ctx, c); err != nil {
				s.logf("nbd: connection %v: %v", c.RemoteAddr(), err)
			}
		}()
	}
}

// ErrConnLost is returned by ServeTransmission when the stream ended
// between requests without NBD_CMD_DISC: for a kernel socket, the kernel
// gave up on it (request timeout) or the peer died.
var ErrConnLost = errors.New("nbd: connection ended without NBD_CMD_DISC")

// errAbort ends a connection whose client sent NBD_OPT_ABORT.
var errAbort = errors.New("nbd: client aborted negotiation")

// ServeConn runs the fixed-newstyle handshake on c, then the transmission
// phase, until the client disconnects, ctx ends or the peer violates the
// protocol. It closes c. A clean end (DISC, ABORT, EOF between requests)
// returns nil.
func (s *Server) ServeConn(ctx context.Context, c io.ReadWriteCloser) error {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	br := bufio.NewReaderSize(c, 64<<10)
	if err := s.negotiate(br, c); err != nil {
		if errors.Is(err, errAbort) {
			return nil
		}
		return err
	}
	if err := s.transmit(ctx, br, c); !errors.Is(err, ErrConnLost) {
		return err
	}
	return nil // a userspace client may just close
}

// ServeTransmission serves c in the transmission phase directly, as the
// kernel expects of a socket handed over netlink (the handshake's result
// is passed to the kernel as attributes instead). It closes c. It returns
// nil after NBD_CMD_DISC or when ctx ends, ErrConnLost if the stream
// ended without DISC.
func (s *Server) ServeTransmission(ctx context.Context, c io.ReadWriteCloser) error {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	return s.transmit(ctx, bufio.NewReaderSize(c, 64<<10), c)
}

// negotiate runs the handshake: greeting, client flags, option haggling
// until NBD_OPT_GO or NBD_OPT_EXPORT_NAME (nil), NBD_OPT_ABORT (errAbort)
// or an error.
func (s *Server) negotiate(r *bufio.Reader, w io.Writer) error {
	hello := binary.BigEndian.AppendUint64(nil, magicInit)
	hello = binary.BigEndian.AppendUint64(hello, magicOpt)
	hello = binary.BigEndian.AppendUint16(hello, flagFixedNewstyle|flagNoZeroes)
	if _, err := w.Write(hello); err != nil {
		return fmt.Errorf("nbd: handshake: write greeting: %w", err)
	}
	var b [16]byte
	if err := readFull(r, b[:4], "client flags"); err != nil {
		return err
	}
	cflags := binary.BigEndian.Uint32(b[:4])
	if cflags&^(flagCFixedNewstyle|flagCNoZeroes) != 0 {
		return fmt.Errorf("%w: unknown client flags %#x", ErrProtocol, cflags)
	}
	noZeroes := cflags&flagCNoZeroes != 0
	for n := 0; ; n++ {
		if n == maxOptions {
			return fmt.Errorf("%w: more than %d options", ErrProtocol, maxOptions)
		}
		if err := readFull(r, b[:16], "option header"); err != nil {
			return err
		}
		if m := binary.BigEndian.Uint64(b[:8]); m != magicOpt {
			return fmt.Errorf("%w: option magic %#016x, want %#016x", ErrProtocol, m, magicOpt)
		}
		opt := binary.BigEndian.Uint32(b[8:12])
		length := binary.BigEndian.Uint32(b[12:16])
		if length > maxOptLen {
			if opt == optExportName || length > 1<<20 {
				return fmt.Errorf("%w: option %d declares %d bytes of data (at most %d)", ErrProtocol, opt, length, maxOptLen)
			}
			if _, err := r.Discard(int(length)); err != nil {
				return fmt.Errorf("nbd: discard option %d data of %d bytes: %w", opt, length, err)
			}
			if err := s.optReply(w, opt, repErrTooBig, "option data too long"); err != nil {
				return err
			}
			continue
		}
		data := make([]byte, length)
		if err := readFull(r, data, fmt.Sprintf("option %d data", opt)); err != nil {
			return err
		}
		done, err := s.option(w, opt, data, noZeroes)
		if err != nil || done {
			return err
		}
	}
}

func (s *Server) nameOK(name string) bool { return name == s.cfg.Name || name == "" }

// option answers one option; done reports the start of transmission.
func (s *Server) option(w io.Writer, opt uint32, data []byte, noZeroes bool) (done bool, err error) {
	switch opt {
	case optExportName:
		if !s.nameOK(string(data)) {
			return false, fmt.Errorf("nbd: NBD_OPT_EXPORT_NAME: no export %q", data)
		}
		out := binary.BigEndian.AppendUint64(nil, uint64(s.Size()))
		out = binary.BigEndian.AppendUint16(out, s.flags)
		if !noZeroes {
			out = append(out, make([]byte, 124)...)
		}
		if _, err := w.Write(out); err != nil {
			return false, fmt.Errorf("nbd: NBD_OPT_EXPORT_NAME: write export info: %w", err)
		}
		return true, nil
	case optAbort:
		// The client may not wait for the ACK: a failed write is fine.
		_ = s.optReply(w, opt, repAck, "")
		return false, errAbort
	case optList:
		if len(data) != 0 {
			return false, s.optReply(w, opt, repErrInvalid, "NBD_OPT_LIST takes no data")
		}
		srv := binary.BigEndian.AppendUint32(nil, uint32(len(s.cfg.Name)))
		srv = append(srv, s.cfg.Name...)
		out := appendOptReply(nil, opt, repServer, srv)
		out = appendOptReply(out, opt, repAck, nil)
		if _, err := w.Write(out); err != nil {
			return false, fmt.Errorf("nbd: NBD_OPT_LIST: write reply: %w", err)
		}
		return false, nil
	case optInfo, optGo:
		return s.info(w, opt, data)
	}
	return false, s.optReply(w, opt, repErrUnsup, "")
}

// info answers NBD_OPT_INFO and NBD_OPT_GO.
func (s *Server) info(w io.Writer, opt uint32, data []byte) (bool, error) {
	if len(data) < 6 {
		return false, s.optReply(w, opt, repErrInvalid, "option data shorter than 6 bytes")
	}
	nlen := binary.BigEndian.Uint32(data)
	if uint64(nlen)+6 > uint64(len(data)) {
		return false, s.optReply(w, opt, repErrInvalid, "name length past option data")
	}
	name := string(data[4 : 4+nlen])
	rest := data[4+nlen:]
	nreq := int(binary.BigEndian.Uint16(rest))
	if len(rest) != 2+2*nreq {
		return false, s.optReply(w, opt, repErrInvalid, "information request count does not match option length")
	}
	var wantName, wantDesc bool
	for i := 0; i < nreq; i++ {
		switch binary.BigEndian.Uint16(rest[2+2*i:]) {
		case infoName:
			wantName = true
		case infoDescription:
			wantDesc = true
		}
	}
	if !s.nameOK(name) {
		return false, s.optReply(w, opt, repErrUnknown, "no such export")
	}
	ex := binary.BigEndian.AppendUint16(nil, infoExport)
	ex = binary.BigEndian.AppendUint64(ex, uint64(s.Size()))
	ex = binary.BigEndian.AppendUint16(ex, s.flags)
	out := appendOptReply(nil, opt, repInfo, ex)
	if wantName {
		out = appendOptReply(out, opt, repInfo, append(binary.BigEndian.AppendUint16(nil, infoName), s.cfg.Name...))
	}
	if wantDesc && s.cfg.Description != "" {
		out = appendOptReply(out, opt, repInfo, append(binary.BigEndian.AppendUint16(nil, infoDescription), s.cfg.Description...))
	}
	// Always sent (as qemu does): byte-granular, 4 KiB preferred, the
	// payload bound as maximum.
	bs := binary.BigEndian.AppendUint16(nil, infoBlockSize)
	bs = binary.BigEndian.AppendUint32(bs, 1)
	bs = binary.BigEndian.AppendUint32(bs, 4096)
	bs = binary.BigEndian.AppendUint32(bs, s.cfg.MaxPayload)
	out = appendOptReply(out, opt, repInfo, bs)
	out = appendOptReply(out, opt, repAck, nil)
	if _, err := w.Write(out); err != nil {
		return false, fmt.Errorf("nbd: option %d: write reply: %w", opt, err)
	}
	return opt == optGo, nil
}

func (s *Server) optReply(w io.Writer, opt, typ uint32, msg string) error {
	if _, err := w.Write(appendOptReply(nil, opt, typ, []byte(msg))); err != nil {
		return fmt.Errorf("nbd: option %d: write reply %#x: %w", opt, typ, err)
	}
	return nil
}

// job is one admitted request.
type job struct {
	req    Request
	epoch  uint64
	data   []byte // WRITE payload
	errno  uint32 // set when validation failed: answered without running
	budget int64  // bytes of the connection's budget held
}

type conn struct {
	s      *Server
	w      io.WriteCloser
	wmu    sync.Mutex
	budget *semaphore.Weighted
}

// check validates a request header against the export; it returns 0 or
// the NBD error to answer.
func (s *Server) check(r Request) uint32 {
	allowed := uint16(0)
	switch r.Type {
	case CmdRead, CmdWrite, CmdFlush, CmdTrim:
		allowed = CmdFlagFUA
	case CmdWriteZeroes:
		allowed = CmdFlagFUA | CmdFlagNoHole
	default:
		return EINVAL
	}
	if r.Flags&^allowed != 0 {
		return EINVAL
	}
	if r.Type == CmdFlush {
		if r.Offset != 0 || r.Length != 0 {
			return EINVAL
		}
		return 0
	}
	if (r.Type == CmdRead || r.Type == CmdWrite) && r.Length > s.cfg.MaxPayload {
		return EOVERFLOW
	}
	if r.Type != CmdRead && s.cfg.ReadOnly {
		return EPERM
	}
	size := uint64(s.Size())
	if r.Offset > size || uint64(r.Length) > size-r.Offset {
		if r.Type == CmdWrite || r.Type == CmdWriteZeroes {
			return ENOSPC
		}
		return EINVAL
	}
	return 0
}

// transmit reads requests until DISC, EOF or an error, runs them on
// workers, and returns once every admitted request has been answered.
func (s *Server) transmit(ctx context.Context, r *bufio.Reader, w io.WriteCloser) error {
	if s.cfg.IOFlusher {
		// Read on a goroutine of its own, locked to a flagged thread that
		// ends with it, so the caller's thread is left as it was.
		errc := make(chan error, 1)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
			s.setFlusher()
			errc <- s.transmitOn(ctx, r, w)
		}()
		return <-errc
	}
	return s.transmitOn(ctx, r, w)
}

func (s *Server) transmitOn(ctx context.Context, r *bufio.Reader, w io.WriteCloser) error {
	c := &conn{s: s, w: w, budget: semaphore.NewWeighted(s.cfg.MaxInflightBytes)}
	work := make(chan *job)
	var wg sync.WaitGroup
	for i := 0; i < s.cfg.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s.cfg.IOFlusher {
				runtime.LockOSThread()
				s.setFlusher()
			}
			for j := range work {
				c.run(j)
			}
		}()
	}
	err := c.read(ctx, r, work)
	close(work)
	wg.Wait()
	if err != nil {
		w.Close()
	}
	return err
}

func (s *Server) setFlusher() {
	if err := setIOFlusher(); err != nil {
		e := fmt.Errorf("nbd: PR_SET_IO_FLUSHER: %w", err)
		if s.flusherErr.CompareAndSwap(nil, &e) {
			s.logf("%v", e)
		}
	}
}

func (c *conn) read(ctx context.Context, r *bufio.Reader, work chan<- *job) error {
	s := c.s
	var hdr [requestHeaderLen]byte
	for {
		if _, err := io.ReadFull(r, hdr[:1]); err != nil {
			if ctx.Err() != nil {
				return nil // we are shutting down
			}
			if err == io.EOF || errors.Is(err, net.ErrClosed) {
				return ErrConnLost // closed between requests, without DISC
			}
			return fmt.Errorf("nbd: read request: %w", err)
		}
		if err := readFull(r, hdr[1:], "request header"); err != nil {
			return err
		}
		req, err := ParseRequest(hdr[:])
		if err != nil {
			return err
		}
		if req.Type == CmdDisc {
			return nil
		}
		j := &job{req: req, errno: s.check(req)}
		if req.Type == CmdWrite {
			if j.errno == 0 {
				j.budget = int64(req.Length)
				if err := c.budget.Acquire(ctx, j.budget); err != nil {
					return nil
				}
				j.data = make([]byte, req.Length)
				if err := readFull(r, j.data, fmt.Sprintf("WRITE payload handle %#x offset %d length %d", req.Handle, req.Offset, req.Length)); err != nil {
					c.budget.Release(j.budget)
					return err
				}
			} else if _, err := r.Discard(int(req.Length)); err != nil {
				return fmt.Errorf("nbd: discard refused WRITE payload handle %#x offset %d length %d: %w", req.Handle, req.Offset, req.Length, err)
			}
		} else if req.Type == CmdRead && j.errno == 0 {
			j.budget = int64(req.Length)
			if err := c.budget.Acquire(ctx, j.budget); err != nil {
				return nil
			}
		}
		epoch, ok := s.gate.admit(ctx.Done())
		if !ok {
			c.budget.Release(j.budget)
			return nil
		}
		j.epoch = epoch
		work <- j
	}
}

// run executes one admitted job and answers it.
func (c *conn) run(j *job) {
	s := c.s
	r := j.req
	var payload []byte
	errno := j.errno
	if errno == 0 {
		var err error
		payload, err = c.exec(j)
		if err != nil {
			errno = errnoOf(err)
			s.logf("nbd: %s handle %#x offset %d length %d: %v (answered errno %d)", CmdName(r.Type), r.Handle, r.Offset, r.Length, err, errno)
		}
	} else {
		s.logf("nbd: %s handle %#x offset %d length %d flags %#x refused: errno %d", CmdName(r.Type), r.Handle, r.Offset, r.Length, r.Flags, errno)
	}
	if errno != 0 {
		payload = nil
	}
	hdr := AppendReply(make([]byte, 0, replyHeaderLen), Reply{Error: errno, Handle: r.Handle})
	c.wmu.Lock()
	bufs := net.Buffers{hdr}
	if len(payload) > 0 {
		bufs = append(bufs, payload)
	}
	_, err := bufs.WriteTo(c.w)
	c.wmu.Unlock()
	if err != nil {
		s.logf("nbd: %s handle %#x: write reply: %v", CmdName(r.Type), r.Handle, err)
		c.w.Close() // the stream is torn: end the connection
	} else {
		s.answered.Add(1)
	}
	j.data = nil
	c.budget.Release(j.budget)
	s.gate.release()
}

// exec runs a valid request on the backend; for READ it returns the data.
func (c *conn) exec(j *job) ([]byte, error) {
	s := c.s
	b := s.cfg.Backend
	r := j.req
	off, n := int64(r.Offset), int64(r.Length)
	var err error
	switch r.Type {
	case CmdRead:
		buf := make([]byte, n)
		if _, err := b.ReadAt(buf, off); err != nil {
			return nil, err
		}
		return buf, nil
	case CmdWrite:
		err = s.mutate(Change{Op: OpWrite, Offset: off, Length: n, Data: j.data, Epoch: j.epoch, Handle: r.Handle}, func() error {
			_, err := b.WriteAt(j.data, off)
			return err
		})
	case CmdTrim:
		err = s.mutate(Change{Op: OpTrim, Offset: off, Length: n, Epoch: j.epoch, Handle: r.Handle}, func() error {
			return b.Trim(off, n)
		})
	case CmdWriteZeroes:
		err = s.mutate(Change{Op: OpZero, Offset: off, Length: n, Epoch: j.epoch, Handle: r.Handle}, func() error {
			return b.WriteZeroes(off, n, r.Flags&CmdFlagNoHole != 0)
		})
	case CmdFlush:
		if err := b.Flush(); err != nil {
			return nil, err
		}
		return nil, s.observe(Change{Op: OpFlush, Epoch: j.epoch, Handle: r.Handle}, true)
	}
	if err == nil && r.Flags&CmdFlagFUA != 0 {
		err = b.Flush()
	}
	return nil, err
}

// mutate runs do on the backend and, with an Observer, observes ch under
// orderMu, so Seq order is the order the backend saw.
func (s *Server) mutate(ch Change, do func() error) error {
	if s.cfg.Observer == nil {
		return do()
	}
	s.orderMu.Lock()
	defer s.orderMu.Unlock()
	if err := do(); err != nil {
		return err
	}
	return s.observe(ch, false)
}

func (s *Server) observe(ch Change, lock bool) error {
	if s.cfg.Observer == nil {
		return nil
	}
	if lock {
		s.orderMu.Lock()
		defer s.orderMu.Unlock()
	}
	s.seq++
	ch.Seq = s.seq
	if err := s.cfg.Observer(ch); err != nil {
		return fmt.Errorf("nbd: observer refused %s seq %d offset %d length %d: %w", ch.Op, ch.Seq, ch.Offset, ch.Length, err)
	}
	return nil
}

// errnoOf maps a backend error to an NBD error value.
func errnoOf(err error) uint32 {
	var e syscall.Errno
	if !errors.As(err, &e) {
		return EIO
	}
	switch e {
	case syscall.EPERM, syscall.EROFS, syscall.EACCES:
		return EPERM
	case syscall.ENOSPC, syscall.EDQUOT, syscall.EFBIG:
		return ENOSPC
	case syscall.EINVAL:
		return EINVAL
	case syscall.EOVERFLOW:
		return EOVERFLOW
	case syscall.ENOMEM:
		return ENOMEM
	case syscall.EOPNOTSUPP:
		return ENOTSUP
	case syscall.ESHUTDOWN:
		return ESHUTDOWN
	}
	return EIO
}
