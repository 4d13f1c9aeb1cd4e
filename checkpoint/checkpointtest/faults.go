package checkpointtest

import (
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xl-kemari/xl-kemari/checkpoint"
)

// Fault is what happens to one record crossing the link.
type Fault uint8

// Faults, injected per record at every phase of the protocol.
const (
	Pass      Fault = iota
	Drop            // the record vanishes
	Duplicate       // the record arrives twice
	Corrupt         // one bit of the record flips
	Truncate        // part of the record arrives, then the link is cut
	Cut             // the link is cut before the record
	Delay           // the record arrives late
)

var faultNames = [...]string{"pass", "drop", "duplicate", "corrupt", "truncate", "cut", "delay"}

func (f Fault) String() string { return faultNames[f] }

// FaultLog records every fault injected, for the failure report.
type FaultLog struct {
	mu sync.Mutex
	// Protected by mu.
	entries []string
}

func (l *FaultLog) add(s string) {
	l.mu.Lock()
	l.entries = append(l.entries, s)
	l.mu.Unlock()
}

// Entries returns the faults injected so far.
func (l *FaultLog) Entries() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.entries...)
}

// faultConn interposes on the writes of one end of a connection. It splits
// the byte stream into the protocol's records (docs/protocol.md §3: a
// 16-byte stream header, then records of a 16-byte header and a body
// padded to 8 bytes) and decides each record's fate with a seeded RNG.
type faultConn struct {
	checkpoint.Conn
	name string
	rng  *rand.Rand
	prob float64 // per-record probability of a fault
	log  *FaultLog
	mu   sync.Mutex // serialises writers; not held by kill
	buf  []byte
	hdr  bool // stream header passed
	n    int  // records seen
	dead atomic.Bool
}

func (c *faultConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead.Load() {
		return 0, errCut
	}
	c.buf = append(c.buf, b...)
	for {
		if !c.hdr {
			if len(c.buf) < 16 {
				return len(b), nil
			}
			if err := c.out(c.buf[:16]); err != nil {
				return 0, err
			}
			c.buf = c.buf[16:]
			c.hdr = true
		}
		if len(c.buf) < 16 {
			return len(b), nil
		}
		body := int(binary.LittleEndian.Uint32(c.buf[4:8]))
		n := 16 + body + (-body & 7)
		if len(c.buf) < n {
			return len(b), nil
		}
		rec := c.buf[:n]
		if err := c.record(rec); err != nil {
			return 0, err
		}
		c.buf = c.buf[n:]
	}
}

func (c *faultConn) out(b []byte) error {
	_, err := c.Conn.Write(b)
	return err
}

func (c *faultConn) record(rec []byte) error {
	c.n++
	f := Pass
	if c.rng.Float64() < c.prob {
		f = Fault(1 + c.rng.IntN(int(Delay)))
	}
	if f != Pass {
		c.log.add(c.name + " record " + itoa(c.n) + ": " + f.String())
	}
	switch f {
	case Drop:
		return nil
	case Duplicate:
		if err := c.out(rec); err != nil {
			return err
		}
		return c.out(rec)
	case Corrupt:
		cp := append([]byte(nil), rec...)
		i := c.rng.IntN(len(cp))
		cp[i] ^= 1 << c.rng.IntN(8)
		return c.out(cp)
	case Truncate:
		c.out(rec[:c.rng.IntN(len(rec))])
		c.kill()
		return errCut
	case Cut:
		c.kill()
		return errCut
	case Delay:
		time.Sleep(time.Duration(1+c.rng.IntN(50)) * time.Millisecond)
	}
	return c.out(rec)
}

// kill cuts the link; safe from any goroutine.
func (c *faultConn) kill() {
	c.dead.Store(true)
	c.Conn.Close()
}

type cutError struct{}

func (cutError) Error() string { return "checkpointtest: link cut by fault injection" }

var errCut error = cutError{}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}
