package svc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultTryTimeout is how long Do waits for a reply before it sends the
// same request again.
const DefaultTryTimeout = 100 * time.Millisecond

// Client is a real UDP client of the service. It sends each request from
// one unconnected socket (so a dead server's ICMP errors cannot abort a
// retry loop) and retries with the same sequence number until it is
// answered, which is what makes a failover invisible to it: the replica
// answers a retry from its dedup table if the request was applied before
// the failover, and applies it otherwise.
//
// Concurrency: Do serialises callers; one request is outstanding at a time,
// as the per-client sequence numbers require.
type Client struct {
	id     uint64
	server netip.AddrPort
	conn   *net.UDPConn

	tryTimeout atomic.Int64  // nanoseconds
	seq        atomic.Uint64 // last sequence number used; written under mu

	mu sync.Mutex
	// Protected by mu.
	rec    *Recorder
	closed bool
	buf    [512]byte
}

// NewClient returns a client with identity id talking to the service at
// addr ("host:port", UDP). Ids must be unique among the service's clients.
func NewClient(addr string, id uint64) (*Client, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("svc: client for %q: %w", addr, err)
	}
	server := ua.AddrPort()
	server = netip.AddrPortFrom(server.Addr().Unmap(), server.Port())
	var local *net.UDPAddr
	if server.Addr().IsLoopback() {
		// Stay on loopback: the reply comes back from the same address.
		local = &net.UDPAddr{IP: net.IP(server.Addr().AsSlice())}
	}
	conn, err := net.ListenUDP("udp", local)
	if err != nil {
		return nil, fmt.Errorf("svc: client socket: %w", err)
	}
	c := &Client{id: id, server: server, conn: conn}
	c.tryTimeout.Store(int64(DefaultTryTimeout))
	return c, nil
}

// ID returns the client's identity.
func (c *Client) ID() uint64 { return c.id }

// SetTryTimeout sets how long each try waits for its reply (d <= 0 restores
// DefaultTryTimeout).
func (c *Client) SetTryTimeout(d time.Duration) {
	if d <= 0 {
		d = DefaultTryTimeout
	}
	c.tryTimeout.Store(int64(d))
}

// SetRecorder makes Do log every request it finishes, acknowledged or not.
func (c *Client) SetRecorder(r *Recorder) {
	c.mu.Lock()
	c.rec = r
	c.mu.Unlock()
}

// Seq returns the last sequence number used (that of the request in
// flight, during Do).
func (c *Client) Seq() uint64 { return c.seq.Load() }

// SetSeq makes the next automatically numbered request use seq+1, for a
// client restarted under an id the service already knows.
func (c *Client) SetSeq(seq uint64) {
	c.mu.Lock()
	c.seq.Store(seq)
	c.mu.Unlock()
}

// Close releases the socket; Do then fails with ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	return c.conn.Close()
}

// Do sends req and waits for its reply, resending the same request every
// try timeout until a reply with the same client id and sequence number
// arrives or ctx ends. req.Client is set to the client's id; a zero
// req.Seq is replaced by the next sequence number.
//
// Success: the reply (whatever its Status, except StatusStale).
// Failure: ctx's error, ErrStale, ErrClosed, ErrMalformed (invalid req),
// or a socket error. Cancellation is noticed within one try timeout.
func (c *Client) Do(ctx context.Context, req Request) (Reply, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return Reply{}, ErrClosed
	}
	req.Client = c.id
	if req.Seq == 0 {
		req.Seq = c.seq.Load() + 1
	}
	c.seq.Store(max(c.seq.Load(), req.Seq))
	msg, err := EncodeRequest(req)
	if err != nil {
		return Reply{}, err
	}
	rec := Record{Req: req, Sent: time.Now()}
	rep, err := c.exchange(ctx, msg, req, &rec.Tries)
	rec.Done = time.Now()
	if err == nil {
		rec.Acked, rec.Reply = true, rep
	} else {
		rec.Err = err.Error()
	}
	if c.rec != nil {
		if rerr := c.rec.Add(rec); rerr != nil && err == nil {
			err = rerr
		}
	}
	return rep, err
}

// exchange runs the retry loop. Preconditions: c.mu held.
func (c *Client) exchange(ctx context.Context, msg []byte, req Request, tries *int) (Reply, error) {
	// Wake a blocked read when ctx ends rather than waiting out the try.
	stop := context.AfterFunc(ctx, func() { c.conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	for {
		if err := ctx.Err(); err != nil {
			return Reply{}, fmt.Errorf("svc: client %d seq %d after %d tries: %w", req.Client, req.Seq, *tries, err)
		}
		*tries++
		// A send error (e.g. no route yet) counts as a lost datagram.
		_, _ = c.conn.WriteToUDPAddrPort(msg, c.server)
		deadline := time.Now().Add(time.Duration(c.tryTimeout.Load()))
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		if err := c.conn.SetReadDeadline(deadline); err != nil {
			return Reply{}, fmt.Errorf("svc: client: %w", err)
		}
		// ctx may have ended since the check above, its AfterFunc's
		// deadline then overwritten by this try's: look again, now that
		// a later end can only move the deadline into the past.
		if err := ctx.Err(); err != nil {
			return Reply{}, fmt.Errorf("svc: client %d seq %d after %d tries: %w", req.Client, req.Seq, *tries, err)
		}
		for {
			n, _, err := c.conn.ReadFromUDPAddrPort(c.buf[:])
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				if errors.Is(err, net.ErrClosed) {
					return Reply{}, ErrClosed
				}
				return Reply{}, fmt.Errorf("svc: client %d seq %d: %w", req.Client, req.Seq, err)
			}
			rep, err := DecodeReply(c.buf[:n])
			if err != nil || rep.Client != req.Client || rep.Seq != req.Seq {
				continue // stray or a late answer to an earlier try
			}
			if rep.Status == StatusStale {
				return rep, fmt.Errorf("%w: client %d seq %d", ErrStale, req.Client, req.Seq)
			}
			return rep, nil
		}
	}
}
