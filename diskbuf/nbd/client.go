package nbd

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Client is a userspace NBD client (simple replies only). It drives the
// server in tests and can check an export from a tool. Requests may be
// issued from several goroutines at once; replies are matched by handle.
type Client struct {
	rw    io.ReadWriteCloser
	br    *bufio.Reader
	size  int64
	flags uint16
	// Block sizes from NBD_INFO_BLOCK_SIZE (zero if not sent).
	MinBlock, PrefBlock, MaxBlock uint32

	wmu sync.Mutex // serialises request frames

	mu sync.Mutex
	// Protected by mu.
	pending map[uint64]*call
	next    uint64
	err     error // set once the connection is broken
	done    chan struct{}
}

type call struct {
	req  Request
	buf  []byte // READ destination
	errc chan error
}

// ServerError is an error reply.
type ServerError struct {
	Cmd    uint16
	Handle uint64
	Offset uint64
	Length uint32
	Errno  uint32
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("nbd: server answered %s handle %#x offset %d length %d with errno %d", CmdName(e.Cmd), e.Handle, e.Offset, e.Length, e.Errno)
}

// OptionError is an error reply to an option.
type OptionError struct {
	Option, Reply uint32
	Message       string
}

func (e *OptionError) Error() string {
	return fmt.Sprintf("nbd: option %d answered %#x %q", e.Option, e.Reply, e.Message)
}

// Size is the export's size.
func (c *Client) Size() int64 { return c.size }

// Flags are the export's transmission flags.
func (c *Client) Flags() uint16 { return c.flags }

// greet reads the server greeting and sends client flags.
func greet(br *bufio.Reader, w io.Writer) error {
	var b [18]byte
	if err := readFull(br, b[:], "greeting"); err != nil {
		return err
	}
	if binary.BigEndian.Uint64(b[:]) != magicInit || binary.BigEndian.Uint64(b[8:]) != magicOpt {
		return fmt.Errorf("%w: greeting magic % x", ErrProtocol, b[:16])
	}
	hf := binary.BigEndian.Uint16(b[16:])
	if hf&flagFixedNewstyle == 0 {
		return fmt.Errorf("%w: server is not fixed newstyle (flags %#x)", ErrProtocol, hf)
	}
	cf := flagCFixedNewstyle
	if hf&flagNoZeroes != 0 {
		cf |= flagCNoZeroes
	}
	_, err := w.Write(binary.BigEndian.AppendUint32(nil, cf))
	return err
}

type optReply struct {
	typ  uint32
	data []byte
}

func readOptReply(br *bufio.Reader, opt uint32) (optReply, error) {
	var h [20]byte
	if err := readFull(br, h[:], "option reply header"); err != nil {
		return optReply{}, err
	}
	if m := binary.BigEndian.Uint64(h[:]); m != magicOptReply {
		return optReply{}, fmt.Errorf("%w: option reply magic %#x", ErrProtocol, m)
	}
	if o := binary.BigEndian.Uint32(h[8:]); o != opt {
		return optReply{}, fmt.Errorf("%w: reply to option %d, want %d", ErrProtocol, o, opt)
	}
	n := binary.BigEndian.Uint32(h[16:])
	if n > 64<<10 {
		return optReply{}, fmt.Errorf("%w: option %d reply of %d bytes", ErrProtocol, opt, n)
	}
	r := optReply{typ: binary.BigEndian.Uint32(h[12:]), data: make([]byte, n)}
	return r, readFull(br, r.data, "option reply data")
}

// Dial negotiates export name on rw with NBD_OPT_GO and returns a client
// in the transmission phase.
func Dial(rw io.ReadWriteCloser, name string) (*Client, error) {
	br := bufio.NewReader(rw)
	if err := greet(br, rw); err != nil {
		return nil, err
	}
	if _, err := rw.Write(appendOption(nil, optGo, appendInfoRequest(nil, name, infoBlockSize))); err != nil {
		return nil, err
	}
	c := &Client{rw: rw, br: br}
	gotExport := false
	for {
		r, err := readOptReply(br, optGo)
		if err != nil {
			return nil, err
		}
		switch {
		case r.typ == repAck:
			if !gotExport {
				return nil, fmt.Errorf("%w: NBD_OPT_GO acknowledged without NBD_INFO_EXPORT", ErrProtocol)
			}
			c.start()
			return c, nil
		case r.typ == repInfo:
			if len(r.data) < 2 {
				return nil, fmt.Errorf("%w: short NBD_REP_INFO", ErrProtocol)
			}
			switch binary.BigEndian.Uint16(r.data) {
			case infoExport:
				if len(r.data) != 12 {
					return nil, fmt.Errorf("%w: NBD_INFO_EXPORT of %d bytes", ErrProtocol, len(r.data))
				}
				c.size = int64(binary.BigEndian.Uint64(r.data[2:]))
				c.flags = binary.BigEndian.Uint16(r.data[10:])
				gotExport = true
			case infoBlockSize:
				if len(r.data) != 14 {
					return nil, fmt.Errorf("%w: NBD_INFO_BLOCK_SIZE of %d bytes", ErrProtocol, len(r.data))
				}
				c.MinBlock = binary.BigEndian.Uint32(r.data[2:])
				c.PrefBlock = binary.BigEndian.Uint32(r.data[6:])
				c.MaxBlock = binary.BigEndian.Uint32(r.data[10:])
			}
		case r.typ&(1<<31) != 0:
			return nil, &OptionError{Option: optGo, Reply: r.typ, Message: string(r.data)}
		default:
			return nil, fmt.Errorf("%w: NBD_OPT_GO reply type %d", ErrProtocol, r.typ)
		}
	}
}

// DialExportName negotiates with the old NBD_OPT_EXPORT_NAME.
func DialExportName(rw io.ReadWriteCloser, name string) (*Client, error) {
	br := bufio.NewReader(rw)
	if err := greet(br, rw); err != nil {
		return nil, err
	}
	if _, err := rw.Write(appendOption(nil, optExportName, []byte(name))); err != nil {
		return nil, err
	}
	var b [10]byte // NO_ZEROES was negotiated by greet with this server
	if err := readFull(br, b[:], "export info"); err != nil {
		return nil, err
	}
	c := &Client{rw: rw, br: br, size: int64(binary.BigEndian.Uint64(b[:])), flags: binary.BigEndian.Uint16(b[8:])}
	c.start()
	return c, nil
}

// List returns the server's exports (NBD_OPT_LIST), then aborts.
func List(rw io.ReadWriteCloser) ([]string, error) {
	defer rw.Close()
	br := bufio.NewReader(rw)
	if err := greet(br, rw); err != nil {
		return nil, err
	}
	if _, err := rw.Write(appendOption(nil, optList, nil)); err != nil {
		return nil, err
	}
	var names []string
	for {
		r, err := readOptReply(br, optList)
		if err != nil {
			return nil, err
		}
		switch {
		case r.typ == repAck:
			_, _ = rw.Write(appendOption(nil, optAbort, nil))
			return names, nil
		case r.typ == repServer:
			if len(r.data) < 4 || uint64(binary.BigEndian.Uint32(r.data))+4 > uint64(len(r.data)) {
				return nil, fmt.Errorf("%w: bad NBD_REP_SERVER", ErrProtocol)
			}
			names = append(names, string(r.data[4:4+binary.BigEndian.Uint32(r.data)]))
		case r.typ&(1<<31) != 0:
			return nil, &OptionError{Option: optList, Reply: r.typ, Message: string(r.data)}
		}
	}
}

// NewTransmissionClient returns a client already in the transmission
// phase (the kernel's view of a socket handed over netlink).
func NewTransmissionClient(rw io.ReadWriteCloser, size int64, flags uint16) *Client {
	c := &Client{rw: rw, br: bufio.NewReader(rw), size: size, flags: flags}
	c.start()
	return c
}

func (c *Client) start() {
	c.pending = map[uint64]*call{}
	c.done = make(chan struct{})
	go c.receive()
}

// receive reads replies and completes their calls until the connection
// breaks.
func (c *Client) receive() {
	defer close(c.done)
	var h [replyHeaderLen]byte
	for {
		err := readFull(c.br, h[:], "reply header")
		var rep Reply
		if err == nil {
			rep, err = ParseReply(h[:])
		}
		var cl *call
		if err == nil {
			c.mu.Lock()
			cl = c.pending[rep.Handle]
			delete(c.pending, rep.Handle)
			c.mu.Unlock()
			if cl == nil {
				err = fmt.Errorf("%w: reply for unknown handle %#x", ErrProtocol, rep.Handle)
			}
		}
		if err != nil {
			c.fail(err)
			return
		}
		if rep.Error != 0 {
			cl.errc <- &ServerError{Cmd: cl.req.Type, Handle: rep.Handle, Offset: cl.req.Offset, Length: cl.req.Length, Errno: rep.Error}
			continue
		}
		if cl.req.Type == CmdRead {
			if err := readFull(c.br, cl.buf, fmt.Sprintf("READ data handle %#x", rep.Handle)); err != nil {
				cl.errc <- err
				c.fail(err)
				return
			}
		}
		cl.errc <- nil
	}
}

// ErrClosed is returned for calls on a closed or broken client.
var ErrClosed = errors.New("nbd: client connection closed")

func (c *Client) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = fmt.Errorf("%w: %v", ErrClosed, err)
	}
	for h, cl := range c.pending {
		cl.errc <- c.err
		delete(c.pending, h)
	}
}

// Do sends one request (with payload for WRITE) and waits for its reply;
// for READ, buf receives the data and must be req.Length bytes. The
// handle is assigned by the client. Tests use it to send requests the
// typed methods refuse to build.
func (c *Client) Do(req Request, payload, buf []byte) error {
	cl := &call{req: req, buf: buf, errc: make(chan error, 1)}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return c.err
	}
	c.next++
	cl.req.Handle = c.next
	c.pending[cl.req.Handle] = cl
	c.mu.Unlock()
	frame := AppendRequest(make([]byte, 0, requestHeaderLen+len(payload)), cl.req)
	frame = append(frame, payload...)
	c.wmu.Lock()
	_, err := c.rw.Write(frame)
	c.wmu.Unlock()
	if err != nil {
		c.fail(err)
	}
	return <-cl.errc
}

// ReadAt reads len(p) bytes at off.
func (c *Client) ReadAt(p []byte, off int64) error {
	return c.Do(Request{Type: CmdRead, Offset: uint64(off), Length: uint32(len(p))}, nil, p)
}

// WriteAt writes p at off; with fua the reply means durable.
func (c *Client) WriteAt(p []byte, off int64, fua bool) error {
	return c.Do(Request{Type: CmdWrite, Flags: fuaFlag(fua), Offset: uint64(off), Length: uint32(len(p))}, p, nil)
}

// Flush sends NBD_CMD_FLUSH.
func (c *Client) Flush() error { return c.Do(Request{Type: CmdFlush}, nil, nil) }

// Trim sends NBD_CMD_TRIM.
func (c *Client) Trim(off, length int64, fua bool) error {
	return c.Do(Request{Type: CmdTrim, Flags: fuaFlag(fua), Offset: uint64(off), Length: uint32(length)}, nil, nil)
}

// WriteZeroes sends NBD_CMD_WRITE_ZEROES.
func (c *Client) WriteZeroes(off, length int64, noHole, fua bool) error {
	f := fuaFlag(fua)
	if noHole {
		f |= CmdFlagNoHole
	}
	return c.Do(Request{Type: CmdWriteZeroes, Flags: f, Offset: uint64(off), Length: uint32(length)}, nil, nil)
}

func fuaFlag(fua bool) uint16 {
	if fua {
		return CmdFlagFUA
	}
	return 0
}

// Close sends NBD_CMD_DISC (after the caller's requests are answered),
// waits for the server to close, and closes the connection.
func (c *Client) Close() error {
	c.wmu.Lock()
	_, err := c.rw.Write(AppendRequest(nil, Request{Type: CmdDisc}))
	c.wmu.Unlock()
	if err == nil {
		<-c.done // the server closes after its in-flight replies
	}
	cerr := c.rw.Close()
	<-c.done
	if err != nil {
		return fmt.Errorf("nbd: send DISC: %w", err)
	}
	return cerr
}
