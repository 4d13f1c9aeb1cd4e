package checkpoint_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/xl-kemari/xl-kemari/checkpoint"
	"github.com/xl-kemari/xl-kemari/checkpoint/wire"
	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/sim"
)

// These tests play a primary by hand (rawPrimary), record by record, to a
// standby on the simulator: what a hostile or broken primary can send.
// Reference: docs/protocol.md §9 (limits), §7.2 (the receiver).

// rawPrimary is the primary's end of one connection, written record by
// record; what the standby sends back is summarised in replies.
type rawPrimary struct {
	w    *wire.Writer
	c    checkpoint.Conn
	mu   sync.Mutex
	rep  []string
	done chan struct{} // closed when the standby's direction ends
}

func dialRaw(t *testing.T, n *checkpoint.PipeNetwork) *rawPrimary {
	t.Helper()
	c, err := n.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	p := &rawPrimary{w: wire.NewWriter(c), c: c, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		r := wire.NewReader(c, wire.DefaultLimits())
		if _, _, err := r.ReadHeader(); err != nil {
			return
		}
		for {
			rec, err := r.Next()
			if err != nil {
				return
			}
			var s string
			switch x := rec.(type) {
			case *wire.Hello:
				s = "HELLO"
			case *wire.Ack:
				s = fmt.Sprintf("ACK %d", x.Epoch)
			case *wire.Nack:
				s = fmt.Sprintf("NACK %d code=%d %s", x.Epoch, x.Code, x.Message)
			case *wire.Goodbye:
				s = fmt.Sprintf("GOODBYE code=%d %s", x.Code, x.Message)
			default:
				continue // heartbeats
			}
			p.mu.Lock()
			p.rep = append(p.rep, s)
			p.mu.Unlock()
		}
	}()
	if err := p.w.WriteHeader(0); err != nil {
		t.Fatal(err)
	}
	return p
}

// send writes recs and flushes; it reports the first error (the standby
// closed the connection).
func (p *rawPrimary) send(recs ...wire.Record) error {
	for _, r := range recs {
		if err := p.w.Write(r); err != nil {
			return err
		}
	}
	return p.w.Flush()
}

func (p *rawPrimary) replies() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.rep...)
}

func (p *rawPrimary) has(prefix string) bool {
	for _, r := range p.replies() {
		if strings.HasPrefix(r, prefix) {
			return true
		}
	}
	return false
}

func hello(d wire.DomainDesc, session byte) *wire.Hello {
	return &wire.Hello{Version: wire.Version, Role: wire.RolePrimary, Session: [16]byte{session}, Domain: d, Inflight: 1}
}

// smallDomain is a replica the simulator builds from its description.
func smallDomain(pages uint64, disks ...uint64) wire.DomainDesc {
	d := wire.DomainDesc{Name: "g", Type: "pvh", Pages: pages, VCPUs: 1, Workload: sim.WorkloadIdle}
	for _, sectors := range disks {
		d.Disks = append(d.Disks, wire.DiskDesc{Sectors: sectors, Writable: true})
	}
	return d
}

// standbyRig runs a standby on a sim host in the caller's bubble.
type standbyRig struct {
	hv   *sim.Hypervisor
	net  *checkpoint.PipeNetwork
	s    *checkpoint.Standby
	done chan error
	errs []string // ObsError messages
	mu   sync.Mutex
}

func newStandbyRig(t *testing.T, once bool) *standbyRig {
	t.Helper()
	hv, err := sim.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &standbyRig{hv: hv, net: checkpoint.NewPipeNetwork(), done: make(chan error, 1)}
	r.s, err = checkpoint.NewStandby(checkpoint.StandbyConfig{Epoch: fuzzEpoch, Once: once,
		Observer: func(o checkpoint.Observation) {
			if o.Kind == checkpoint.ObsError {
				r.mu.Lock()
				r.errs = append(r.errs, o.Msg)
				r.mu.Unlock()
			}
		}}, hv, r.net, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { r.done <- r.s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-r.done
		hv.DestroyAll()
		hv.Close()
	})
	return r
}

// running reports whether Run has not returned (call after synctest.Wait).
func (r *standbyRig) running(t *testing.T) bool {
	select {
	case err := <-r.done:
		t.Logf("Run returned: %v", err)
		r.done <- err
		return false
	default:
		return true
	}
}

// TestStandbyRefusesHugeHello: a HELLO declaring 2^33 pages (32 TiB) is
// refused before anything is allocated for it, with a GOODBYE naming the
// field; the standby stays up and serves the next primary. On main it
// ended the process: fatal error: out of memory.
func TestStandbyRefusesHugeHello(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newStandbyRig(t, false)
		p := dialRaw(t, r.net)
		p.send(hello(smallDomain(1<<33), 1))
		<-p.done
		if !p.has("GOODBYE code=4") || !strings.Contains(strings.Join(p.replies(), "\n"), "domain.pages 8589934592") {
			t.Fatalf("replies %q: want a GOODBYE naming HELLO domain.pages", p.replies())
		}
		if doms := r.hv.Domains(); len(doms) != 0 {
			t.Fatalf("replica created for a refused hello: %v", doms)
		}
		synctest.Wait()
		if !r.running(t) {
			t.Fatal("the standby ended with the refused session")
		}
		q := dialRaw(t, r.net)
		q.send(hello(smallDomain(16), 2), &wire.EpochBegin{Epoch: 1}, &wire.EpochEnd{Epoch: 1})
		synctest.Wait()
		if !q.has("ACK 1") {
			t.Fatalf("next primary: replies %q, want ACK 1", q.replies())
		}
	})
}

// TestStandbyHelloFields: every declared size is checked, and the error
// names its field; a one-shot standby returns it.
func TestStandbyHelloFields(t *testing.T) {
	for _, c := range []struct {
		name  string
		d     wire.DomainDesc
		field string
	}{
		{"pages", smallDomain(1 << 40), "HELLO domain.pages"},
		{"zero pages", smallDomain(0), "HELLO domain.pages is 0"},
		{"vcpus", func() wire.DomainDesc { d := smallDomain(16); d.VCPUs = 1 << 20; return d }(), "HELLO domain.vcpus"},
		{"disk", smallDomain(16, 1<<60), "HELLO domain.disks[0].sectors"},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newStandbyRig(t, true)
				p := dialRaw(t, r.net)
				p.send(hello(c.d, 1))
				err := <-r.done
				r.done <- err
				if !errors.Is(err, checkpoint.ErrSession) || !errors.Is(err, checkpoint.ErrLimit) || !strings.Contains(err.Error(), c.field) {
					t.Fatalf("Run: %v; want ErrSession, ErrLimit, naming %s", err, c.field)
				}
			})
		})
	}
}

// TestStandbyEpochBudget: the staging bomb. One epoch may stage only what
// the declared domain allows (protocol §9); the record past it ends the
// session, reported and NACKed, and the epoch is never committed. On main
// every record was kept until EPOCH_END (1.5 GB in seconds).
func TestStandbyEpochBudget(t *testing.T) {
	const vcpus = 1
	big := make([]byte, wire.DefaultMaxRecord-8) // the largest STATE body
	for _, c := range []struct {
		name   string
		d      wire.DomainDesc
		record func(i int) wire.Record
		n      int    // records sent, one more than the limit allows
		what   string // in the error
	}{
		{"state records", smallDomain(16), func(i int) wire.Record {
			return &wire.State{Kind: 3, Index: uint32(i), Data: []byte{1}}
		}, 64 + 16*vcpus + 1, "STATE: 81 records"},
		{"state octets", smallDomain(16), func(i int) wire.Record {
			return &wire.State{Kind: 3, Index: uint32(i), Data: big}
		}, 9, "STATE: 75497400 octets"},
		{"disk octets", smallDomain(16, 4096), func(i int) wire.Record {
			return &wire.Disk{Disk: 0, Sector: 0, Data: make([]byte, wire.MaxDiskWrite)}
		}, 3, "DISK: 3145728 octets"},
		{"page entries", smallDomain(16), func(i int) wire.Record {
			return &wire.Pages{PFNs: []uint64{0}, Enc: []wire.PageEnc{wire.EncZero}}
		}, 33, "PAGES: 33 page entries"},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newStandbyRig(t, true)
				p := dialRaw(t, r.net)
				err := p.send(hello(c.d, 1), &wire.EpochBegin{Epoch: 1})
				for i := 0; i < c.n && err == nil; i++ {
					err = p.send(c.record(i))
				}
				if err == nil {
					p.send(&wire.EpochEnd{Epoch: 1})
				}
				// The verdict, then what the standby sent until it hung up.
				err = <-r.done
				r.done <- err
				<-p.done
				p.c.Close()
				if !errors.Is(err, checkpoint.ErrLimit) || !strings.Contains(err.Error(), c.what) || !strings.Contains(err.Error(), "epoch 1") {
					t.Fatalf("Run: %v; want ErrLimit naming epoch 1 and %q", err, c.what)
				}
				if p.has("ACK") || !p.has("NACK 1 code=4") {
					t.Fatalf("replies %q: want NACK 1 (could not stage), no ACK", p.replies())
				}
			})
		})
	}
}

// TestStandbyCommitFailureEndsItsSession: a commit the hypervisor fails
// ends that session (NACK, no ACK, the torn replica destroyed), not the
// standby, which then serves the next primary. On main Standby.Run
// returned the error and the receiver was gone.
func TestStandbyCommitFailureEndsItsSession(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newStandbyRig(t, false)
		var fails atomic.Int32
		r.hv.SetFaults(sim.Faults{RestoreState: func(dom libxl.DomID) error {
			if fails.Add(1) == 1 {
				return errors.New("restore refused")
			}
			return nil
		}})
		p := dialRaw(t, r.net)
		p.send(hello(smallDomain(16), 1), &wire.EpochBegin{Epoch: 1},
			&wire.State{Kind: 3, Data: []byte("blob")}, &wire.EpochEnd{Epoch: 1})
		<-p.done
		synctest.Wait()
		if p.has("ACK") || !p.has("NACK 1") {
			t.Fatalf("replies %q: want NACK 1 and no ACK", p.replies())
		}
		if !r.running(t) {
			t.Fatal("a commit failure ended the standby")
		}
		if doms := r.hv.Domains(); len(doms) != 0 {
			t.Fatalf("torn replica kept: %v", doms)
		}
		q := dialRaw(t, r.net)
		q.send(hello(smallDomain(16), 2), &wire.EpochBegin{Epoch: 1}, &wire.EpochEnd{Epoch: 1})
		synctest.Wait()
		if !q.has("ACK 1") {
			t.Fatalf("next primary: replies %q, want ACK 1", q.replies())
		}
	})
}

// TestStandbyOnceCommitFailure: a one-shot standby (receive --stdio, each
// session of listen) whose commit failed holds nothing: Run returns the
// failure at once.
func TestStandbyOnceCommitFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newStandbyRig(t, true)
		r.hv.SetFaults(sim.Faults{RestoreState: func(libxl.DomID) error { return errors.New("restore refused") }})
		p := dialRaw(t, r.net)
		p.send(hello(smallDomain(16), 1), &wire.EpochBegin{Epoch: 1},
			&wire.State{Kind: 3, Data: []byte("blob")}, &wire.EpochEnd{Epoch: 1})
		err := <-r.done
		r.done <- err
		if !errors.Is(err, checkpoint.ErrSession) || !strings.Contains(err.Error(), "epoch 1: commit") {
			t.Fatalf("Run: %v; want ErrSession for the commit of epoch 1", err)
		}
	})
}

// TestStandbyOnceBadFrame: a one-shot standby whose stream breaks (a bad
// CRC) before it holds a checkpoint returns at once: nothing is worth
// waiting out the timeout for (issue 12: receive --stdio waited forever).
func TestStandbyOnceBadFrame(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newStandbyRig(t, true)
		p := dialRaw(t, r.net)
		p.send(hello(smallDomain(16), 1))
		p.c.Write([]byte{0x02, 0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef})
		p.c.Write(make([]byte, 16))
		err := <-r.done
		r.done <- err
		if !errors.Is(err, checkpoint.ErrSession) || !errors.Is(err, wire.ErrCRC) {
			t.Fatalf("Run: %v; want ErrSession for the CRC error", err)
		}
	})
}

// TestStandbyHeartbeatInsideEpoch: the primary's sender writes a
// heartbeat between the records of an epoch (protocol §5.9); the standby
// takes it in any position and the epoch still commits. A control
// without the heartbeats proves the epoch alone is ACKed the same way,
// so the heartbeats are what this exercises.
func TestStandbyHeartbeatInsideEpoch(t *testing.T) {
	for _, beats := range []bool{false, true} {
		t.Run(fmt.Sprintf("heartbeats=%v", beats), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newStandbyRig(t, false)
				p := dialRaw(t, r.net)
				recs := []wire.Record{hello(smallDomain(16), 1), &wire.EpochBegin{Epoch: 1}}
				if beats {
					recs = append(recs, &wire.Heartbeat{Seq: 1, Epoch: 0})
				}
				if beats {
					recs = append(recs, &wire.Heartbeat{Seq: 2, Epoch: 0})
				}
				recs = append(recs, &wire.EpochEnd{Epoch: 1})
				if err := p.send(recs...); err != nil {
					t.Fatal(err)
				}
				synctest.Wait()
				if !p.has("ACK 1") || p.has("NACK") || p.has("GOODBYE") {
					t.Fatalf("replies %q: want ACK 1 and no NACK or GOODBYE", p.replies())
				}
				if !r.running(t) {
					t.Fatal("the standby ended")
				}
			})
		})
	}
}
