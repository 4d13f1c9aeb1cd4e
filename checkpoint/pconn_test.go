package checkpoint

import (
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/xl-kemari/xl-kemari/checkpoint/wire"
	"github.com/xl-kemari/xl-kemari/libxl"
)

// gatedConn is a link whose bandwidth the test hands out: each Write
// passes at most one grant of bytes at a time (a grant is taken only by
// a writer that wants one, so the test knows the sender is blocked on
// the link whenever its grant is taken).
type gatedConn struct {
	net.Conn
	grants chan int
}

func (g *gatedConn) Write(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k := min(<-g.grants, len(b)-n)
		m, err := g.Conn.Write(b[n : n+k])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// TestHeartbeatPreemptsCheckpoint: with a 16 MiB initial-sync round
// queued for a link the test throttles, a heartbeat asked for while the
// sender is blocked on the link reaches the standby after at most one
// more PAGES record (preemptPages pages) of checkpoint data, not behind
// the queue: counted in bytes the link let through and in the order of
// the records the standby read, never in time.
func TestHeartbeatPreemptsCheckpoint(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	g := &gatedConn{Conn: a, grants: make(chan int)}
	pc := newPConn(1, g, wire.CodecNone, 0, 1)
	p := &Primary{events: make(chan pevent, 64), done: make(chan struct{}), stages: make(chan []byte, 4),
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	defer close(p.done)
	defer pc.close()

	type seen struct {
		typ   wire.Type
		pages int
		seq   uint64
	}
	recs := make(chan seen, 4096)
	// The reader outlives the test on its failure paths; it reports its
	// end through rerr, never through t, which it may not touch then.
	rerr := make(chan error, 1)
	go func() {
		r := wire.NewReader(b, wire.DefaultLimits())
		for {
			rec, err := r.Next()
			if err != nil {
				rerr <- err
				close(recs)
				return
			}
			s := seen{typ: rec.Type()}
			switch r := rec.(type) {
			case *wire.Pages:
				s.pages = len(r.PFNs)
			case *wire.Heartbeat:
				s.seq = r.Seq
			}
			recs <- s
		}
	}()

	const items, perItem = 4, wire.MaxPagesPerRecord
	rng := rand.New(rand.NewPCG(1, 2))
	hdone := make(chan error, 1)
	go func() {
		err := pc.w.WriteHeader(0)
		if err == nil {
			err = pc.w.Write(&wire.Hello{Version: 1, Role: wire.RolePrimary, Codec: wire.CodecNone, Inflight: 1,
				Domain: wire.DomainDesc{Name: "g", Type: "pv", Pages: 1 << 14, VCPUs: 1}})
		}
		if err == nil {
			err = pc.w.Flush()
		}
		hdone <- err
	}()
	go func() { g.grants <- 4096 }()
	if err := <-hdone; err != nil {
		t.Fatal(err)
	}
	pc.send(sendItem{kind: itemBegin, epoch: 0, flags: wire.EpochInitial})
	for i := range items {
		pfns := make([]libxl.PFN, perItem)
		data := make([]byte, perItem*wire.PageSize)
		for j := range pfns {
			pfns[j] = libxl.PFN(i*perItem + j)
		}
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		pc.send(sendItem{kind: itemPages, pfns: pfns, data: data})
	}
	go pc.sender(p)

	const grant = 16 << 10
	// What the link may pass between the request and the heartbeat: the
	// rest of the record being written, the writer's buffer, and one
	// grant of slack for the reader still parsing.
	slack := int64(preemptPages*wire.PageSize + 64<<10 + 2*grant + 4096)
	pages, beats := 0, 0
	var given int64 // bytes the link was allowed to pass
	var order []seen
	for beats < 8 {
		g.grants <- grant // the sender is blocked on the link, mid-checkpoint
		given += grant
		if !pc.send(sendItem{kind: itemHeartbeat, epoch: 7}) {
			t.Fatal("connection closed")
		}
		at, pagesAt := given, pages
	wait:
		for {
			select {
			case s, ok := <-recs:
				if !ok {
					e := <-p.events
					t.Fatalf("stream ended: %s (standby's reader: %v)", e.why, <-rerr)
				}
				order = append(order, s)
				pages += s.pages
				if s.typ == wire.TypeHeartbeat {
					break wait
				}
			case g.grants <- grant:
				given += grant
				if given-at > slack {
					t.Fatalf("heartbeat %d: the link passed up to %d bytes (%d pages) after it was asked for and it has not arrived (bound %d)",
						beats+1, given-at, pages-pagesAt, slack)
				}
			}
		}
		beats++
		if got := pages - pagesAt; got > 2*preemptPages {
			t.Errorf("heartbeat %d arrived after %d more pages, want at most %d", beats, got, 2*preemptPages)
		}
	}
	if pages >= items*perItem {
		t.Fatalf("all %d pages were sent before the 8th heartbeat: nothing was preempted", pages)
	}
	// The rest flows; every page arrives, each PAGES record is within
	// preemptPages, and the heartbeats carry consecutive sequence numbers.
	go func() {
		for {
			select {
			case g.grants <- 1 << 20:
			case <-p.done:
				return
			}
		}
	}()
	for pages < items*perItem {
		s, ok := <-recs
		if !ok {
			t.Fatalf("stream ended early (standby's reader: %v)", <-rerr)
		}
		order = append(order, s)
		pages += s.pages
	}
	var seq uint64
	for i, s := range order {
		switch s.typ {
		case wire.TypePages:
			if s.pages > preemptPages {
				t.Errorf("record %d: PAGES of %d pages, want at most %d", i, s.pages, preemptPages)
			}
		case wire.TypeHeartbeat:
			if s.seq != seq+1 {
				t.Errorf("record %d: heartbeat seq %d after %d", i, s.seq, seq)
			}
			seq = s.seq
		}
	}
	if seq != 8 {
		t.Errorf("%d heartbeats in the stream, want 8", seq)
	}
}
