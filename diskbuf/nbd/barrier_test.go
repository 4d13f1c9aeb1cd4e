package nbd

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

// TestQuiesceBarrier drives the server from several connections, each
// with two goroutines issuing writes and reads, and takes epoch
// boundaries under the load. After Quiesce returns: nothing is in
// flight, every change of the closed epoch has been observed, and no
// request is answered — checked once every connection has a request
// held at the gate — until Resume. At the end no request was lost: every
// call returned, and each goroutine's region reads back as written.
func TestQuiesceBarrier(t *testing.T) {
	const (
		conns   = 4
		perConn = 2
		region  = 4096
		rounds  = 20
	)
	mem := NewMemBackend(conns * perConn * region)
	var log changeLog
	srv := newServer(t, Config{Backend: mem, Observer: log.observe, FirstEpoch: 1, Workers: 4})
	var stop atomic.Bool
	var wg sync.WaitGroup
	var ops atomic.Int64
	progress := make(chan struct{}, 1024)
	refs := make([][]byte, conns*perConn)
	for ci := 0; ci < conns; ci++ {
		c := dial(t, srv)
		for g := 0; g < perConn; g++ {
			id := ci*perConn + g
			refs[id] = make([]byte, region)
			wg.Add(1)
			go func() {
				defer wg.Done()
				base := int64(id * region)
				buf := make([]byte, 512)
				for i := 0; !stop.Load(); i++ {
					off := int64(i*512) % region
					if i%3 == 2 {
						if err := c.ReadAt(buf, base+off); err != nil {
							t.Errorf("client %d read: %v", id, err)
							return
						}
						if !bytes.Equal(buf, refs[id][off:off+512]) {
							t.Errorf("client %d: read at %d differs from what it wrote", id, off)
							return
						}
						continue
					}
					p := bytes.Repeat([]byte{byte(id<<4 | i&15)}, 512)
					if err := c.WriteAt(p, base+off, i%5 == 0); err != nil {
						t.Errorf("client %d write: %v", id, err)
						return
					}
					copy(refs[id][off:], p)
					ops.Add(1)
					select {
					case progress <- struct{}{}:
					default:
					}
				}
			}()
		}
	}
	observedAt := map[uint64]int{} // epoch -> number of changes observed when it closed
	for r := 0; r < rounds; r++ {
		epoch, err := srv.Quiesce(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		st := srv.Stats()
		if st.InFlight != 0 || !st.Quiesced || st.Epoch != epoch {
			t.Fatalf("round %d: after Quiesce: %+v", r, st)
		}
		observedAt[epoch] = len(log.all())
		// Hold until every connection's reader has a request waiting at
		// the gate: the clients are pushing, and nothing may get through.
		srv.gate.waitFor(func(_ bool, _, waiting int) bool { return waiting == conns })
		st2 := srv.Stats()
		if st2.Answered != st.Answered || st2.InFlight != 0 {
			t.Fatalf("round %d: answered %d -> %d, in flight %d while quiesced", r, st.Answered, st2.Answered, st2.InFlight)
		}
		if n := len(log.all()); n != observedAt[epoch] {
			t.Fatalf("round %d: %d changes observed while quiesced", r, n-observedAt[epoch])
		}
		if _, err := srv.Quiesce(context.Background()); !errors.Is(err, ErrQuiesced) {
			t.Fatalf("second Quiesce: %v", err)
		}
		srv.Resume()
		for i := 0; i < 32; i++ { // let the epoch see some load
			<-progress
		}
	}
	stop.Store(true)
	wg.Wait()
	if srv.Epoch() != 1+rounds {
		t.Fatalf("epoch %d, want %d", srv.Epoch(), 1+rounds)
	}
	// Epochs are non-decreasing in Seq order, and each closed epoch's
	// changes are exactly those observed before its Quiesce returned.
	all := log.all()
	count := map[uint64]int{}
	var last uint64
	for _, ch := range all {
		if ch.Epoch < last {
			t.Fatalf("seq %d in epoch %d after epoch %d", ch.Seq, ch.Epoch, last)
		}
		last = ch.Epoch
		count[ch.Epoch]++
	}
	cum := 0
	for e := uint64(1); e <= rounds; e++ {
		cum += count[e]
		if cum != observedAt[e] {
			t.Fatalf("epoch %d: %d changes up to it, %d observed when it closed", e, cum, observedAt[e])
		}
	}
	got := mem.Bytes()
	for id, ref := range refs {
		if !bytes.Equal(got[id*region:(id+1)*region], ref) {
			t.Fatalf("client %d: region lost writes", id)
		}
	}
	if ops.Load() == 0 {
		t.Fatal("no writes")
	}
	t.Logf("%d writes over %d epochs", ops.Load(), rounds)
}

// TestQuiesceCancel: a request stuck in the backend keeps Quiesce
// waiting; when its context ends the same epoch reopens and the request
// completes.
func TestQuiesceCancel(t *testing.T) {
	bb := newBlocking(1 << 16)
	srv := newServer(t, Config{Backend: bb, FirstEpoch: 3})
	c := dial(t, srv)
	done := make(chan error, 1)
	go func() { done <- c.WriteAt([]byte{9}, 0, false) }()
	<-bb.entered
	ctx, cancel := context.WithCancel(context.Background())
	qerr := make(chan error, 1)
	go func() { _, err := srv.Quiesce(ctx); qerr <- err }()
	srv.gate.waitFor(func(q bool, _, _ int) bool { return q })
	cancel()
	if err := <-qerr; !errors.Is(err, context.Canceled) {
		t.Fatalf("Quiesce: %v", err)
	}
	if st := srv.Stats(); st.Quiesced || st.Epoch != 3 || st.InFlight != 1 {
		t.Fatalf("after a cancelled Quiesce: %+v", st)
	}
	close(bb.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The next Quiesce works and closes epoch 3.
	if e, err := srv.Quiesce(context.Background()); err != nil || e != 3 {
		t.Fatalf("Quiesce = %d, %v", e, err)
	}
	srv.Resume()
	if err := c.ReadAt(make([]byte, 1), 0); err != nil {
		t.Fatal(err)
	}
}

// TestQuiesceWaitsForInFlight: Quiesce does not return while a request
// admitted before it is unanswered.
func TestQuiesceWaitsForInFlight(t *testing.T) {
	bb := newBlocking(1 << 16)
	srv := newServer(t, Config{Backend: bb})
	c := dial(t, srv)
	wdone := make(chan error, 1)
	go func() { wdone <- c.WriteAt([]byte{1}, 0, false) }()
	<-bb.entered
	qdone := make(chan uint64, 1)
	go func() { e, _ := srv.Quiesce(context.Background()); qdone <- e }()
	srv.gate.waitFor(func(q bool, _, _ int) bool { return q })
	select {
	case <-qdone:
		t.Fatal("Quiesce returned with a request in flight")
	default:
	}
	close(bb.release)
	<-qdone
	if st := srv.Stats(); st.Answered != 1 || st.InFlight != 0 {
		t.Fatalf("after Quiesce: %+v", st)
	}
	if err := <-wdone; err != nil {
		t.Fatal(err)
	}
	srv.Resume()
}

// TestQuiesceConnectionDiesWhileHeld: a connection whose request waits
// at the gate can close without leaking an in-flight count.
func TestQuiesceConnectionDiesWhileHeld(t *testing.T) {
	srv := newServer(t, Config{})
	s := serveOn(t, srv, false)
	if _, err := srv.Quiesce(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.c.Write(hx(`25609513 0000 0000 0000000000000001 0000000000000000 00000001`))
	srv.gate.waitFor(func(_ bool, _, waiting int) bool { return waiting == 1 })
	s.c.Close()
	// The server closes its end only via ctx or a read error; the held
	// reader is released by Resume, then reads EOF.
	srv.Resume()
	if err := s.wait(); !errors.Is(err, ErrConnLost) {
		t.Fatalf("server: %v, want ErrConnLost", err)
	}
	if st := srv.Stats(); st.InFlight != 0 || st.Waiting != 0 {
		t.Fatalf("after the connection ended: %+v", st)
	}
}

// TestResumeDuringQuiesceIgnored: a Resume while Quiesce is still
// draining does not open the gate; the barrier holds.
func TestResumeDuringQuiesceIgnored(t *testing.T) {
	bb := newBlocking(1 << 16)
	srv := newServer(t, Config{Backend: bb})
	c := dial(t, srv)
	wdone := make(chan error, 1)
	go func() { wdone <- c.WriteAt([]byte{1}, 0, false) }()
	<-bb.entered
	qdone := make(chan error, 1)
	go func() { _, err := srv.Quiesce(context.Background()); qdone <- err }()
	srv.gate.waitFor(func(q bool, _, _ int) bool { return q })
	srv.Resume() // too early: ignored
	if st := srv.Stats(); !st.Quiesced || st.Epoch != 0 {
		t.Fatalf("after an early Resume: %+v", st)
	}
	close(bb.release)
	if err := <-qdone; err != nil {
		t.Fatal(err)
	}
	if err := <-wdone; err != nil {
		t.Fatal(err)
	}
	srv.Resume()
	if st := srv.Stats(); st.Quiesced || st.Epoch != 1 {
		t.Fatalf("after Resume: %+v", st)
	}
}
