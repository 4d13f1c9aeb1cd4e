package checkpointtest

import (
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xl-kemari/xl-kemari/checkpoint"
	"github.com/zeebo/xxh3"
)

// Fault is what happens to one record crossing the link.
type Fault uint8

// Faults, injected per record at every phase of the protocol.
const (
	Pass      Fault = iota
	Drop            // the record vanishes
	Duplicate       // the record arrives twice
	Corrupt         // one bit of the record flips (the CRC sees it)
	Truncate        // part of the record arrives, then the link is cut
	Cut             // the link is cut before the record
	Delay           // the record arrives late (and everything after it)
	// Garble flips a bit of an epoch record's body and fixes its CRC:
	// corruption the record check cannot see, which the epoch frame's
	// digest must (protocol §5.7).
	Garble
	// Forge flips a bit of a PAGES record's page data and fixes its CRC
	// and the frame digest in EPOCH_END: a consistent stream whose pages
	// are wrong, which only the memory digest catches (protocol §5.7).
	Forge
	// DelayLong holds a record (a goodbye) for twice the timeout.
	DelayLong
)

var faultNames = [...]string{"pass", "drop", "duplicate", "corrupt", "truncate", "cut", "delay", "garble", "forge", "delay-long"}

func (f Fault) String() string { return faultNames[f] }

// Record types the link looks at (docs/protocol.md §4.2).
const (
	recEpochBegin = 0x02
	recPages      = 0x03
	recEpochEnd   = 0x06
	recAck        = 0x07
	recHeartbeat  = 0x08
	recGoodbye    = 0x09
	recNack       = 0x0a
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// link models one direction of a network path: a propagation latency and
// a bandwidth (serialisation time per byte), in virtual time. Records are
// queued as in a socket buffer and delivered in order.
type link struct {
	Latency   time.Duration
	Bandwidth float64 // bytes per second; 0: unlimited
}

type chunk struct {
	at   time.Time
	b    []byte
	kind uint32 // record type, 0 for the stream header or a torn record
	ep   uint64
	cut  bool // cut the link after this chunk
}

// faultConn interposes on the writes of one end of a connection. It splits
// the byte stream into the protocol's records (docs/protocol.md §3: a
// 16-byte stream header, then records of a 16-byte header and a body
// padded to 8 bytes), decides each record's fate with its own seeded RNG,
// and delivers what passes through the modelled link.
type faultConn struct {
	checkpoint.Conn
	name string
	side string // "p" (primary's end) or "s"
	rng  *rand.Rand
	prob float64       // per-record probability of a fault
	menu []Fault       // the faults this run injects
	bye  Fault         // the fate of goodbyes (Stop scenarios)
	byeN int           // goodbyes it applies to (0: all)
	byes *atomic.Int64 // goodbyes sent this way in the run, over all connections
	v    *verifier
	link link

	mu sync.Mutex // serialises writers; not held by kill
	// Protected by mu.
	buf     []byte
	hdr     bool      // stream header passed
	n       int       // records seen
	free    time.Time // the link is busy sending until then
	last    time.Time // the last chunk's delivery time (order)
	frame   *xxh3.Hasher
	inEpoch bool
	forged  bool

	q        chan chunk
	closing  chan struct{} // closed by Close: deliver what is queued, then close
	done     chan struct{} // closed by kill: the link is cut, nothing more arrives
	dead     atomic.Bool
	closeOne sync.Once
	killOne  sync.Once
}

func newFaultConn(c checkpoint.Conn, name, side string, rng *rand.Rand, prob float64, menu []Fault, l link, v *verifier) *faultConn {
	fc := &faultConn{Conn: c, name: name, side: side, rng: rng, prob: prob, menu: menu, link: l, v: v,
		frame: xxh3.New(), q: make(chan chunk, 256), closing: make(chan struct{}), done: make(chan struct{}), byes: new(atomic.Int64)}
	go fc.deliver()
	return fc
}

// deliver writes each chunk to the pipe at its delivery time.
func (c *faultConn) deliver() {
	for {
		var ch chunk
		select {
		case ch = <-c.q:
		case <-c.closing:
			// A close, as TCP's: what was written still arrives, then
			// the end of the stream.
			select {
			case ch = <-c.q:
			default:
				c.kill()
				return
			}
		case <-c.done:
			return
		}
		if d := time.Until(ch.at); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-c.done:
				t.Stop()
				return
			}
		}
		// Logged as it reaches the pipe, before the peer can act on it.
		switch ch.kind {
		case recGoodbye:
			c.v.logf("%s: GOODBYE arrives", c.name)
		case recAck:
			c.v.logf("%s: ACK %d arrives", c.name, ch.ep)
		}
		if _, err := c.Conn.Write(ch.b); err != nil {
			c.kill()
			return
		}
		if ch.cut {
			c.kill()
			return
		}
	}
}

// Close implements io.Closer: the end's owner closes it. Like a TCP
// close, the records already written are still delivered (on the link's
// schedule), then the peer reads the end of the stream; nothing written
// after it goes out.
func (c *faultConn) Close() error {
	c.closeOne.Do(func() {
		c.dead.Store(true)
		close(c.closing)
		// A peer that does not read (it is gone, or stopped reading) does
		// not hold the connection open for ever: as a kernel gives up on
		// unacknowledged data, the link is cut after closeLinger.
		time.AfterFunc(closeLinger, c.kill)
	})
	return nil
}

// closeLinger bounds how long a closed end keeps delivering what was
// written before its close.
const closeLinger = 500 * time.Millisecond

// kill cuts the link: what is queued is lost. Safe from any goroutine.
func (c *faultConn) kill() {
	c.killOne.Do(func() {
		c.dead.Store(true)
		close(c.done)
		c.Conn.Close()
	})
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
			if err := c.out(chunk{b: append([]byte(nil), c.buf[:16]...)}, 0); err != nil {
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
		rec := append([]byte(nil), c.buf[:n]...)
		c.buf = c.buf[n:]
		if err := c.record(rec); err != nil {
			return 0, err
		}
	}
}

// out queues a chunk on the link; extra delays it (and, the stream being
// ordered, everything after it).
func (c *faultConn) out(ch chunk, extra time.Duration) error {
	now := time.Now()
	if c.free.Before(now) {
		c.free = now
	}
	if c.link.Bandwidth > 0 {
		c.free = c.free.Add(time.Duration(float64(len(ch.b)) / c.link.Bandwidth * float64(time.Second)))
	}
	ch.at = c.free.Add(c.link.Latency + extra)
	if ch.at.Before(c.last) {
		ch.at = c.last
	}
	c.last = ch.at
	select {
	case c.q <- ch:
		return nil
	case <-c.done:
		return errCut
	}
}

func (c *faultConn) pick() Fault {
	if c.prob <= 0 || len(c.menu) == 0 || c.rng.Float64() >= c.prob {
		return Pass
	}
	return c.menu[c.rng.IntN(len(c.menu))]
}

func (c *faultConn) record(rec []byte) error {
	c.n++
	kind := binary.LittleEndian.Uint32(rec[0:4])
	length := int(binary.LittleEndian.Uint32(rec[4:8]))
	var ep uint64
	if length >= 8 {
		ep = binary.LittleEndian.Uint64(rec[16:24])
	}
	f := c.pick()
	switch kind {
	case recGoodbye:
		if n := c.byes.Add(1); c.byeN <= 0 || n <= int64(c.byeN) {
			f = c.bye
		}
		c.v.logf("%s: GOODBYE sent (%s)", c.name, f)
	case recAck:
		c.v.ackSent(ep)
	case recNack:
		c.v.logf("%s: NACK %d sent", c.name, ep)
	}
	switch f {
	case Garble, Forge:
		// Only epoch data records; others pass.
		if !c.inEpoch || kind == recEpochEnd || kind == recEpochBegin || length < 24 || (f == Forge && kind != recPages) {
			f = Pass
		}
	}
	if f != Pass {
		c.v.fault("%s record %d (type %d): %s", c.name, c.n, kind, f)
	}
	switch f {
	case Drop:
		return nil
	case Duplicate:
		c.account(kind, rec, length)
		if err := c.out(chunk{b: rec, kind: kind, ep: ep}, 0); err != nil {
			return err
		}
		return c.out(chunk{b: rec, kind: kind, ep: ep}, 0)
	case Corrupt:
		i := c.rng.IntN(len(rec))
		if !c.v.arbiter && i >= 4 && i < 8 {
			// A corrupt length stalls the reader inside a record that
			// never ends: the link looks silent for the timeout, a
			// partition, which only an arbiter makes safe.
			i = 12 + i // the CRC instead
		}
		rec[i] ^= 1 << c.rng.IntN(8)
		return c.out(chunk{b: rec}, 0)
	case Truncate:
		return c.out(chunk{b: rec[:c.rng.IntN(len(rec))], cut: true}, 0)
	case Cut:
		c.kill()
		return errCut
	case Delay:
		c.account(kind, rec, length)
		return c.out(chunk{b: rec, kind: kind, ep: ep}, time.Duration(1+c.rng.IntN(50))*time.Millisecond+time.Duration(c.rng.IntN(1000))*time.Microsecond)
	case DelayLong:
		c.account(kind, rec, length)
		return c.out(chunk{b: rec, kind: kind, ep: ep}, 2*c.v.timeout)
	case Garble:
		// Flip the last body octet (page data and writes end in literal
		// octets of the codec) and make the CRC match.
		rec[16+length-1] ^= 1 << c.rng.IntN(8)
		fixCRC(rec, length)
		c.account(kind, rec, length)
		return c.out(chunk{b: rec}, 0)
	case Forge:
		i := 16 + length - 1
		body := rec[16 : 16+length]
		if n := int(binary.LittleEndian.Uint32(body[0:4])); body[4] == 0 && n > 0 {
			// No codec: the data area follows the pfns and encodings;
			// a byte of it is page data or an XOR run.
			off := 16 + 8*n + (n+7)&^7
			if area := int(binary.LittleEndian.Uint32(body[12:16])); area > 0 && off+area <= length {
				i = 16 + off + c.rng.IntN(area)
			}
		}
		rec[i] ^= 1 << c.rng.IntN(8)
		fixCRC(rec, length)
		c.forged = true
		c.account(kind, rec, length)
		return c.out(chunk{b: rec}, 0)
	}
	if kind == recEpochEnd && c.forged && length >= 48 {
		// Make the frame digest match what was sent.
		binary.LittleEndian.PutUint64(rec[16+32:], c.frame.Sum64())
		fixCRC(rec, length)
	}
	c.account(kind, rec, length)
	return c.out(chunk{b: rec, kind: kind, ep: ep}, 0)
}

// account follows the epoch frame digest as the reader computes it
// (checkpoint/wire: type and body of every non-control record from
// EPOCH_BEGIN up to EPOCH_END).
func (c *faultConn) account(kind uint32, rec []byte, length int) {
	switch kind {
	case recEpochBegin:
		c.inEpoch, c.forged = true, false
		c.frame.Reset()
	case recEpochEnd:
		c.inEpoch = false
		return
	case recAck, recNack, recHeartbeat, recGoodbye:
		return
	}
	if !c.inEpoch {
		return
	}
	var t [4]byte
	binary.LittleEndian.PutUint32(t[:], kind)
	c.frame.Write(t[:])
	c.frame.Write(rec[16 : 16+length])
}

func fixCRC(rec []byte, length int) {
	crc := crc32.Update(0, castagnoli, rec[:12])
	crc = crc32.Update(crc, castagnoli, rec[16:16+length])
	binary.LittleEndian.PutUint32(rec[12:16], crc)
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
