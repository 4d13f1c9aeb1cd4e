package checkpoint

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/xl-kemari/xl-kemari/checkpoint/epoch"
	"github.com/xl-kemari/xl-kemari/checkpoint/wire"
	"github.com/xl-kemari/xl-kemari/diskbuf"
	"github.com/xl-kemari/xl-kemari/libxl"
	"golang.org/x/sync/semaphore"
)

type itemKind uint8

const (
	itemBegin itemKind = iota + 1
	itemPages
	itemWrites
	itemEnd
	itemHeartbeat
	itemGoodbye
	itemTimeout // epoch: the timeout to announce, in nanoseconds
)

// sendItem is one unit of work for a connection's sender goroutine.
type sendItem struct {
	kind   itemKind
	epoch  uint64
	flags  uint32
	pfns   []libxl.PFN
	data   []byte
	states []libxl.State
	writes []diskbuf.Write
	digest uint64
	stage  []byte // itemEnd: the epoch's staging buffer, free once sent
	// reserved: bytes of syncBudget this item holds until it is sent.
	reserved int64
}

// syncBudget bounds the page data the initial sync may have queued for
// the sender. Without it the queue's 80 slots held up to 320 MiB of
// freshly read pages whenever the link was slower than reading (always,
// under Xen with compression): in the lab, a primary of a 192 MiB guest
// was OOM-killed at 520 MB RSS. 32 MiB (8 full records) keeps the link
// busy.
const syncBudget = 32 << 20

// pconn is the primary's end of one connection: a sender goroutine that
// alone writes to it, and a reader goroutine that turns the standby's
// records into events.
type pconn struct {
	gen    uint64
	c      Conn
	w      *wire.Writer
	r      *wire.Reader
	enc    *wire.PageEncoder
	q      chan sendItem
	closed chan struct{}
	budget *semaphore.Weighted // syncBudget
	ctx    context.Context     // done when closed, for budget
	cancel context.CancelFunc
	once   sync.Once
	hbSeq  uint64
	// hb is the heartbeat lane: one pending heartbeat, written by the
	// sender before the next record whatever the queue holds, and
	// between the records of a long item (preempt), so that a heartbeat
	// never waits behind more than one record of at most preemptPages
	// pages (docs/protocol.md §8.1).
	hb chan sendItem

	mu sync.Mutex
	// Protected by mu.
	cstats wire.CodecStats
}

func newPConn(gen uint64, c Conn, codec wire.Codec, cacheBytes, inflight int) *pconn {
	ctx, cancel := context.WithCancel(context.Background())
	return &pconn{gen: gen, c: c, w: wire.NewWriter(c), r: wire.NewReader(c, wire.DefaultLimits()),
		enc: wire.NewPageEncoder(codec, cacheBytes), q: make(chan sendItem, 64+inflight*16),
		hb: make(chan sendItem, 1), closed: make(chan struct{}), budget: semaphore.NewWeighted(syncBudget), ctx: ctx, cancel: cancel}
}

// reserve takes n bytes of syncBudget for an item about to be read and
// queued, blocking while the sender is behind. It returns false once the
// connection is closed.
func (pc *pconn) reserve(n int64) bool {
	return pc.budget.Acquire(pc.ctx, min(n, syncBudget)) == nil
}

func (pc *pconn) start(p *Primary) {
	p.wg.Add(2)
	go func() { defer p.wg.Done(); pc.sender(p) }()
	go func() { defer p.wg.Done(); pc.reader(p) }()
}

func (pc *pconn) close() {
	pc.once.Do(func() {
		close(pc.closed)
		pc.cancel()
		pc.c.Close()
	})
}

func (pc *pconn) stats() wire.CodecStats {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.cstats
}

// preemptPages bounds the pages of one PAGES record the sender writes:
// a larger batch is sent as several records, with a pending heartbeat
// written between them. 64 pages is 256 KiB: at 100 Mbit/s a heartbeat
// waits at most ~20 ms for the record ahead of it (plus what the kernel
// holds unsent, bounded by tuneTCP's TCP_NOTSENT_LOWAT).
const preemptPages = 64

// preemptBytes bounds a DISK record's data likewise (a multiple of the
// sector size, below wire.MaxDiskWrite).
const preemptBytes = preemptPages * wire.PageSize

// send queues it for the sender, blocking while the queue is full (back-
// pressure). Heartbeats never block and never queue behind checkpoint
// records: they take the heartbeat lane, and one still pending there
// when the next comes is replaced by nothing (a skipped heartbeat is
// harmless, the pending one carries the same news). It returns false
// once the connection is closed.
func (pc *pconn) send(it sendItem) bool {
	if it.kind == itemHeartbeat {
		select {
		case pc.hb <- it:
		default:
		}
		return true
	}
	select {
	case pc.q <- it:
		return true
	case <-pc.closed:
		return false
	}
}

func (pc *pconn) fail(p *Primary, err error) {
	select {
	case <-pc.closed:
		return // closed on purpose
	default:
	}
	pc.close()
	p.post(pevent{gen: pc.gen, ev: epoch.Event{Kind: epoch.EvDisconnected}, why: err.Error()})
}

func (pc *pconn) sender(p *Primary) {
	u64 := make([]uint64, 0, wire.MaxPagesPerRecord)
	if d := p.tune.announced(); d > 0 {
		// The timeout in use, first on a new connection: a standby not
		// given its own takes it (docs/protocol.md §5.13).
		if err := pc.announce(d); err != nil {
			pc.fail(p, err)
			return
		}
	}
	for {
		var it sendItem
		select {
		case it = <-pc.hb: // the lane first, whatever q holds
		default:
			select {
			case it = <-pc.hb:
			case it = <-pc.q:
			case <-pc.closed:
				return
			}
		}
		var err error
		switch it.kind {
		case itemBegin:
			err = pc.w.Write(&wire.EpochBegin{Epoch: it.epoch, Flags: it.flags})
		case itemPages:
			u64 = toU64(u64, it.pfns)
			for off := 0; off < len(u64) && err == nil; off += preemptPages {
				end := min(off+preemptPages, len(u64))
				if off > 0 {
					if err = pc.preempt(); err != nil {
						break
					}
				}
				var rec *wire.Pages
				if rec, err = pc.enc.Encode(u64[off:end], it.data[off*wire.PageSize:end*wire.PageSize]); err == nil {
					err = pc.w.Write(rec)
				}
			}
			pc.mu.Lock()
			pc.cstats = pc.enc.Stats()
			pc.mu.Unlock()
		case itemWrites:
			err = pc.writeDisk(it.writes)
		case itemEnd:
			for _, s := range it.states {
				if err = pc.preempt(); err != nil {
					break
				}
				if err = pc.w.Write(&wire.State{Kind: uint32(s.Kind), Index: s.Index, Data: s.Data}); err != nil {
					break
				}
			}
			if err == nil {
				err = pc.writeDisk(it.writes)
			}
			if err == nil {
				err = pc.w.Write(&wire.EpochEnd{Epoch: it.epoch, MemDigest: it.digest})
			}
			if err == nil {
				err = pc.w.Flush()
			}
			if it.stage != nil && err == nil {
				p.unstage(it.stage)
			}
		case itemHeartbeat:
			err = pc.heartbeat(it)
		case itemTimeout:
			err = pc.announce(time.Duration(it.epoch))
		case itemGoodbye:
			err = pc.w.Write(&wire.Goodbye{Code: wire.GoodbyeStop, Message: "protection stopped"})
			if err == nil {
				err = pc.w.Flush()
			}
		}
		if it.reserved > 0 {
			pc.budget.Release(it.reserved)
		}
		if err != nil {
			pc.fail(p, err)
			return
		}
	}
}

// heartbeat writes one HEARTBEAT and flushes it (with whatever the
// writer buffered before it: the stream's order is kept).
func (pc *pconn) heartbeat(it sendItem) error {
	pc.hbSeq++
	if err := pc.w.Write(&wire.Heartbeat{Seq: pc.hbSeq, SentNanos: time.Now().UnixNano(), Epoch: it.epoch, Flushed: it.epoch}); err != nil {
		return err
	}
	return pc.w.Flush()
}

// announce writes a TIMEOUT record and flushes it.
func (pc *pconn) announce(d time.Duration) error {
	if err := pc.w.Write(&wire.Timeout{Nanos: uint64(d)}); err != nil {
		return err
	}
	return pc.w.Flush()
}

// preempt writes the pending heartbeat, if any, between two records of
// an item (control records may sit anywhere in a stream, inside an
// epoch frame too: docs/protocol.md §5.2).
func (pc *pconn) preempt() error {
	select {
	case it := <-pc.hb:
		return pc.heartbeat(it)
	default:
		return nil
	}
}

// writeDisk ships writes as DISK records of at most preemptBytes,
// a pending heartbeat between any two.
func (pc *pconn) writeDisk(ws []diskbuf.Write) error {
	for _, w := range ws {
		for off := 0; off < len(w.Data); off += preemptBytes {
			if err := pc.preempt(); err != nil {
				return err
			}
			end := min(off+preemptBytes, len(w.Data))
			if err := pc.w.Write(&wire.Disk{Disk: w.Disk, Sector: w.Sector + uint64(off/diskbuf.SectorSize), Data: w.Data[off:end]}); err != nil {
				return err
			}
		}
	}
	return nil
}

func (pc *pconn) reader(p *Primary) {
	p.tune.restart()
	var committed uint64 // the standby's last committed epoch, from its heartbeats
	for {
		rec, err := pc.r.Next()
		if err != nil {
			pc.fail(p, err)
			return
		}
		p.tune.frame(time.Now())
		var ev epoch.Event
		switch r := rec.(type) {
		case *wire.Ack:
			ev = epoch.Event{Kind: epoch.EvAck, Epoch: r.Epoch}
		case *wire.Heartbeat:
			committed = max(committed, r.Epoch)
			ev = epoch.Event{Kind: epoch.EvFrame}
		case *wire.Nack:
			p.log.Warn("standby discarded an epoch", "epoch", r.Epoch, "code", r.Code, "why", r.Message)
			ev = epoch.Event{Kind: epoch.EvNack, Epoch: r.Epoch}
		case *wire.Goodbye:
			if r.Code == wire.GoodbyeTakenOver {
				// The standby decided a failover with this stream still
				// up (protocol §7.7): fence, whatever else is queued.
				p.post(pevent{gen: pc.gen, ev: epoch.Event{Kind: epoch.EvTakenOver, Epoch: committed}, why: r.Message})
				return
			}
			if r.Code != wire.GoodbyeStop {
				// Not an answer to ours: the stream ends here.
				pc.fail(p, fmt.Errorf("%w: standby said goodbye (code %d: %s)", ErrPeer, r.Code, r.Message))
				return
			}
			ev = epoch.Event{Kind: epoch.EvStopConfirmed}
		default:
			pc.fail(p, &wire.FrameError{Type: rec.Type(), Err: ErrPeer})
			return
		}
		p.post(pevent{gen: pc.gen, ev: ev})
	}
}
