package checkpoint_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/xl-kemari/xl-kemari/checkpoint"
	"github.com/xl-kemari/xl-kemari/checkpoint/epoch"
	"github.com/xl-kemari/xl-kemari/checkpoint/wire"
	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/sim"
	"github.com/zeebo/xxh3"
)

// fuzzLimits keep one fuzzed session's memory small whatever it declares:
// 16 MiB of guest, 1 MiB of STATE and of DISK per epoch.
var fuzzLimits = checkpoint.StandbyLimits{MaxPages: 1 << 12, MaxVCPUs: 64, MaxDiskSectors: 1 << 12,
	EpochStateBytes: 1 << 20, EpochDiskBytes: 1 << 20}

// fuzzEpoch is the standby's epoch configuration in the fuzz target: the
// bubble's clock makes its timeout free.
var fuzzEpoch = epoch.Config{Mode: epoch.ModeEpoch, Interval: epoch.Duration(20 * time.Millisecond),
	Timeout: epoch.Duration(200 * time.Millisecond)}

// FuzzStandbyStream feeds its input as the primary's side of a replication
// connection into a one-shot standby on the simulator: the whole receive
// path (framing, records, staging, the epoch machine, commits, the
// failover when the stream ends). It checks I2, I3 and I6: no panic, the
// session ends (no hang: a real-time watchdog of 10 s), nothing allocated
// beyond fuzzLimits (measured from outside: see docs/protocol.md §9), and
// an activation only at the last commit, of an epoch a reference reader
// found whole in the input, with the replica's memory equal to the
// committed digest.
//
// The first octet of an input says how much of the framing the harness
// repairs after mutation (reframe), so that mutations get past the CRC to
// the parsers, and past the epoch digests to staging and commits; the rest
// is the stream. The seeds are streams captured from a real primary
// (captureStream) and a hand-built one with a disk, in each mode.
func FuzzStandbyStream(f *testing.F) {
	var seeds [][]byte
	for _, codec := range []wire.Codec{wire.CodecNone, wire.CodecLZ4, wire.CodecZstd} {
		if s := captureStream(f, codec, 2); s != nil {
			// Also cut before the GOODBYE: the standby fails over at the
			// timeout.
			seeds = append(seeds, s, s[:lastEpochEnd(s)])
		}
	}
	seeds = append(seeds, diskStream(f))
	for _, s := range seeds {
		for _, mode := range []byte{0, fixCRC, fixCRC | fixEpoch} {
			f.Add(append([]byte{mode}, s...))
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		data := reframe(in[1:], in[0])
		watchdog := time.AfterFunc(10*time.Second, func() { panic("FuzzStandbyStream: a session ran 10 s") })
		defer watchdog.Stop()
		t0 := time.Now()
		synctest.Test(t, func(t *testing.T) { runFuzzSession(t, data) })
		fuzzStats.add(time.Since(t0))
	})
}

// fuzzStats counts executions and the longest one for a campaign, into
// the file $KEMARI_FUZZ_STATS (one line per worker every few seconds),
// independent of what the fuzzing engine reports.
var fuzzStats execStats

type execStats struct {
	sync.Mutex
	execs   uint64
	longest time.Duration
	last    time.Time
}

func (s *execStats) add(d time.Duration) {
	path := os.Getenv("KEMARI_FUZZ_STATS")
	if path == "" {
		return
	}
	s.Lock()
	defer s.Unlock()
	s.execs++
	s.longest = max(s.longest, d)
	if time.Since(s.last) < 5*time.Second {
		return
	}
	s.last = time.Now()
	if f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
		fmt.Fprintf(f, "%s pid=%d execs=%d longest=%v\n", s.last.UTC().Format(time.TimeOnly), os.Getpid(), s.execs, s.longest)
		f.Close()
	}
}

// reframe modes.
const (
	fixCRC   = 1 << 0 // recompute every record's seq and CRC
	fixEpoch = 1 << 1 // recompute every EPOCH_END's counts and frame digest
)

// reframe returns a copy of stream with the framing repaired as mode says,
// as far as the record lengths let it walk the records; the rest is left
// as it is.
func reframe(stream []byte, mode byte) []byte {
	out := bytes.Clone(stream)
	if mode&(fixCRC|fixEpoch) == 0 || len(out) < wire.HeaderSize {
		return out
	}
	le := binary.LittleEndian
	crcTab := crc32.MakeTable(crc32.Castagnoli)
	var seq uint32
	var inEpoch bool
	var pages, states, disks uint64
	h := xxh3.New()
	for off := wire.HeaderSize; off+wire.RecordHeaderSize <= len(out); seq++ {
		hdr := out[off : off+wire.RecordHeaderSize]
		t, n := wire.Type(le.Uint32(hdr[0:])), int(le.Uint32(hdr[4:]))
		end := off + wire.RecordHeaderSize + n
		if n < 0 || end > len(out) {
			break
		}
		body := out[off+wire.RecordHeaderSize : end]
		if mode&fixEpoch != 0 {
			switch t {
			case wire.TypeEpochBegin:
				inEpoch, pages, states, disks = true, 0, 0, 0
				h.Reset()
			case wire.TypeEpochEnd:
				if inEpoch && len(body) >= 40 {
					le.PutUint64(body[8:], pages)
					le.PutUint64(body[16:], states)
					le.PutUint64(body[24:], disks)
					le.PutUint64(body[32:], h.Sum64())
				}
				inEpoch = false
			case wire.TypePages:
				if len(body) >= 4 {
					pages += uint64(le.Uint32(body))
				}
			case wire.TypeState:
				states++
			case wire.TypeDisk:
				disks++
			case wire.TypeGoodbye:
				inEpoch = false
			}
			switch t {
			case wire.TypeEpochEnd, wire.TypeAck, wire.TypeHeartbeat, wire.TypeGoodbye, wire.TypeNack:
			default:
				if inEpoch {
					var tb [4]byte
					le.PutUint32(tb[:], uint32(t))
					h.Write(tb[:])
					h.Write(body)
				}
			}
		}
		le.PutUint32(hdr[8:], seq)
		crc := crc32.Update(0, crcTab, hdr[:12])
		le.PutUint32(hdr[12:], crc32.Update(crc, crcTab, body))
		off = end + (8-n%8)%8
	}
	return out
}

var errStuck = errors.New("stuck")

// activationSink is the simulator with Activate recorded, not carried out
// (an activated sim guest would run and bind its NICs' host sockets).
type activationSink struct {
	*sim.Hypervisor
	mu        sync.Mutex
	activated []libxl.DomID
}

func (a *activationSink) Activate(dom libxl.DomID) error {
	a.mu.Lock()
	a.activated = append(a.activated, dom)
	a.mu.Unlock()
	return nil
}

func runFuzzSession(t *testing.T, data []byte) {
	hv, err := sim.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer hv.Close()
	defer hv.DestroyAll()
	sink := &activationSink{Hypervisor: hv}
	ln := checkpoint.NewPipeNetwork()
	// On the bubble's clock: a session that neither ends nor fails over
	// within a few timeouts of its stream's end is stuck.
	ctx, cancel := context.WithTimeoutCause(context.Background(), time.Minute, errStuck)
	defer cancel()
	var mu sync.Mutex
	var commits []uint64
	var acts []checkpoint.Observation
	s, err := checkpoint.NewStandby(checkpoint.StandbyConfig{Epoch: fuzzEpoch, Once: true, Verify: true, Limits: fuzzLimits,
		Observer: func(o checkpoint.Observation) {
			mu.Lock()
			defer mu.Unlock()
			switch o.Kind {
			case checkpoint.ObsCommit:
				commits = append(commits, o.Epoch)
			case checkpoint.ObsActivate:
				acts = append(acts, o)
			case checkpoint.ObsState:
				if o.State == "waiting" {
					// Nothing held and no primary: what receive's
					// endWithStream ends a one-shot receiver on.
					cancel()
				}
			}
		}}, sink, ln, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ln.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, c)
	go func() {
		c.Write(data)
		c.Close()
	}()
	runErr := s.Run(ctx)
	if context.Cause(ctx) == errStuck {
		t.Fatalf("the session did not end: %+v", s.Status())
	}
	if runErr != nil && !errors.Is(runErr, context.Canceled) && !errors.Is(runErr, checkpoint.ErrSession) {
		t.Fatalf("Run: %v", runErr)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d octets: Run %v; commits %v; activations %+v", len(data), runErr, commits, acts)
	if len(acts) != len(sink.activated) || len(acts) > 1 {
		t.Fatalf("%d activations observed, %d carried out", len(acts), len(sink.activated))
	}
	if len(acts) == 0 {
		return
	}
	a := acts[0]
	if len(commits) == 0 || a.Epoch != commits[len(commits)-1] {
		t.Fatalf("activated at epoch %d; commits %v", a.Epoch, commits)
	}
	if a.Msg != "verified" {
		t.Fatalf("activated at epoch %d: %s", a.Epoch, a.Msg)
	}
	if !wholeEpochs(data)[a.Epoch] {
		t.Fatalf("activated at epoch %d, which the reference reader did not find whole in the stream", a.Epoch)
	}
}

// wholeEpochs is the reference: the epochs (not pre-copy rounds) whose
// frames a fresh reader reads through EPOCH_END without an error.
func wholeEpochs(data []byte) map[uint64]bool {
	ok := map[uint64]bool{}
	r := wire.NewReader(bytes.NewReader(data), wire.DefaultLimits())
	if _, _, err := r.ReadHeader(); err != nil {
		return ok
	}
	for {
		rec, err := r.Next()
		if err != nil {
			if !errors.Is(err, wire.ErrEpochCount) && !errors.Is(err, wire.ErrEpochDigest) {
				return ok
			}
			continue
		}
		if e, isEnd := rec.(*wire.EpochEnd); isEnd && e.Epoch != 0 {
			ok[e.Epoch] = true
		}
	}
}

// lastEpochEnd returns the offset just after the stream's last EPOCH_END.
func lastEpochEnd(data []byte) int {
	r := wire.NewReader(bytes.NewReader(data), wire.DefaultLimits())
	end := 0
	if _, _, err := r.ReadHeader(); err != nil {
		return len(data)
	}
	for {
		rec, err := r.Next()
		if err != nil {
			if end == 0 {
				return len(data)
			}
			return end
		}
		if _, ok := rec.(*wire.EpochEnd); ok {
			end = int(r.Offset())
		}
	}
}

// teeConn copies what is written through it to w.
type teeConn struct {
	checkpoint.Conn
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (c teeConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.w.Write(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// captureEpoch is the capture's configuration: on the real clock (a
// testing.F has no bubble), with a timeout no loaded machine reaches, so
// neither side gives up on the other while the capture runs.
var captureEpoch = epoch.Config{Mode: epoch.ModeEpoch, Interval: epoch.Duration(20 * time.Millisecond),
	Timeout: epoch.Duration(20 * time.Second)}

// captureStream protects a small sim guest with a real primary and
// standby until commits checkpoints are acknowledged, stops, and returns
// what the primary sent; nil if that did not happen within a minute (a
// seed less, not a fuzzing worker stuck at its start).
func captureStream(tb testing.TB, codec wire.Codec, commits int) []byte {
	var out []byte
	run := func() {
		hp, _ := sim.New(nil)
		hs, _ := sim.New(nil)
		defer func() {
			hp.DestroyAll()
			hs.DestroyAll()
			hp.Close()
			hs.Close()
		}()
		dom, err := hp.CreateDomain(sim.DomainConfig{Name: "fz", Pages: 24, VCPUs: 2, Workload: sim.WorkloadUniform,
			Rate: 500, Seed: 7, Quantum: time.Millisecond, NICs: []sim.NICConfig{{}}})
		if err != nil {
			tb.Fatal(err)
		}
		var mu sync.Mutex
		var buf bytes.Buffer
		n := checkpoint.NewPipeNetwork()
		n.Wrap = func(c checkpoint.Conn) checkpoint.Conn { return teeConn{Conn: c, mu: &mu, w: &buf} }
		acked := make(chan struct{}, 64)
		var unconfirmed atomic.Bool
		p, err := checkpoint.NewPrimary(checkpoint.PrimaryConfig{Epoch: captureEpoch, Domain: dom, Codec: codec, SyncStopPages: 8,
			Observer: func(o checkpoint.Observation) {
				if o.Kind == checkpoint.ObsState && strings.Contains(o.Msg, "goodbye not confirmed") {
					// The one-shot standby's answer to the goodbye must
					// reach the primary before its connection closes.
					unconfirmed.Store(true)
				}
				if o.Kind == checkpoint.ObsRelease {
					select {
					case acked <- struct{}{}:
					default:
					}
				}
			}}, hp, n, nil, nil, nil)
		if err != nil {
			tb.Fatal(err)
		}
		s, err := checkpoint.NewStandby(checkpoint.StandbyConfig{Epoch: captureEpoch, Once: true}, hs, n, nil)
		if err != nil {
			tb.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		pdone, sdone := make(chan error, 1), make(chan error, 1)
		go func() { pdone <- p.Run(ctx) }()
		go func() { sdone <- s.Run(ctx) }()
		for i := 0; i < commits; i++ {
			select {
			case <-acked:
			case <-ctx.Done():
				tb.Logf("capture (%v): %d of %d checkpoints acknowledged in a minute; seed left out", codec, i, commits)
				<-pdone
				<-sdone
				return
			}
		}
		p.Stop()
		if err := <-pdone; err != nil {
			tb.Fatalf("capture: primary: %v", err)
		}
		if err := <-sdone; err != nil {
			tb.Fatalf("capture: standby: %v", err)
		}
		if unconfirmed.Load() {
			tb.Fatalf("capture (%v): the standby's answer to the goodbye never reached the primary", codec)
		}
		mu.Lock()
		out = bytes.Clone(buf.Bytes())
		mu.Unlock()
	}
	run()
	return out
}

// diskStream is a hand-built stream of a domain with a disk: one epoch
// with a DISK write, then the end of the stream.
func diskStream(tb testing.TB) []byte {
	var b bytes.Buffer
	w := wire.NewWriter(&b)
	d := wire.DomainDesc{Name: "dk", Type: "pvh", Pages: 32, VCPUs: 1, Workload: sim.WorkloadIdle,
		Disks: []wire.DiskDesc{{Sectors: 64, Writable: true}}}
	recs := []wire.Record{
		&wire.Hello{Version: wire.Version, Role: wire.RolePrimary, Session: [16]byte{1}, Domain: d, Inflight: 1},
		&wire.EpochBegin{Epoch: 1},
		&wire.Disk{Disk: 0, Sector: 8, Data: bytes.Repeat([]byte{0xd1}, 1024)},
		&wire.EpochEnd{Epoch: 1},
	}
	if err := w.WriteHeader(0); err != nil {
		tb.Fatal(err)
	}
	for _, r := range recs {
		if err := w.Write(r); err != nil {
			tb.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}
