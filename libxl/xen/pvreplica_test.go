package xen

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/xen/libxcstream"
)

// fakeRestore plays libxl_domain_create_restore (REMUS): it reads the
// stream to its end and builds the domain from the last whole checkpoint
// (libxc's CHECKPOINT followed by libxl's CHECKPOINT_END), or fails if
// there is none.
type fakeRestore struct {
	mu          sync.Mutex
	mem         map[uint64][]byte // the built domain's memory
	checkpoints int
	name        string
	paused      bool
	destroyed   []libxl.DomID
	failEarly   bool
	gate        chan struct{}       // if set, the restore reads nothing until it is closed
	states      []map[uint64][]byte // the domain's memory after each whole checkpoint
	calls       int                 // CreateRestore calls
}

const fakeDomid libxl.DomID = 42

func (f *fakeRestore) CreateRestore(cfg []byte, name string, r *os.File) (libxl.DomID, error) {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	if f.failEarly {
		return libxl.DomIDInvalid, errors.New("fake: bad config")
	}
	if f.gate != nil {
		<-f.gate
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return libxl.DomIDInvalid, err
	}
	mem, n, states := decodeRemus(b)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checkpoints, f.states = n, states
	if n == 0 {
		return libxl.DomIDInvalid, errors.New("fake: no complete checkpoint")
	}
	f.mem, f.name, f.paused = mem, name, true
	return fakeDomid, nil
}

// decodeRemus applies the whole checkpoints of a libxl REMUS stream, and
// returns the memory after each.
func decodeRemus(b []byte) (mem map[uint64][]byte, count int, states []map[uint64][]byte) {
	mem = map[uint64][]byte{}
	if libxcstream.ParseLibxlHeader(b) != nil {
		return mem, 0, nil
	}
	off := libxcstream.LibxlHeaderLen
	r, n, err := libxcstream.ParseRecord(b[off:])
	if err != nil || r.Type != libxcstream.LibxlLibxcContext {
		return mem, 0, nil
	}
	off += n
	if _, err := libxcstream.ParseHeader(b[off:]); err != nil {
		return mem, 0, nil
	}
	off += libxcstream.ImageHeaderLen + libxcstream.DomainHeaderLen
	pending := map[uint64][]byte{}
	end := false
	for off < len(b) {
		r, n, err := libxcstream.ParseRecord(b[off:])
		if err != nil {
			break
		}
		off += n
		switch {
		case end:
			if r.Type != libxcstream.LibxlCheckpointEnd {
				return mem, count, states
			}
			for p, d := range pending {
				mem[p] = d
			}
			clear(pending)
			count++
			states = append(states, maps.Clone(mem))
			end = false
		case r.Type == libxcstream.RecCheckpoint:
			end = true
		case r.Type == libxcstream.RecPageData:
			pd, err := libxcstream.ParsePageData(r.Body)
			if err != nil {
				return mem, count, states
			}
			i := 0
			for _, p := range pd.Pages {
				d := make([]byte, libxl.PageSize)
				if p.Type.HasData() {
					copy(d, pd.Data[i*libxl.PageSize:])
					i++
				}
				pending[p.PFN] = d
			}
		}
	}
	return mem, count, states
}

func (f *fakeRestore) Rename(id libxl.DomID, o, n string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id != fakeDomid || o != f.name {
		return fmt.Errorf("fake: rename %d %q: no such domain", id, o)
	}
	f.name = n
	return nil
}

func (f *fakeRestore) Unpause(id libxl.DomID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.paused = false
	return nil
}

func (f *fakeRestore) Destroy(id libxl.DomID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.destroyed = append(f.destroyed, id)
	return nil
}

func (f *fakeRestore) NameToID(name string) (libxl.DomID, error) {
	return libxl.DomIDInvalid, errors.New("fake: no such name")
}

// TestPVRouteA chains both halves of route (a) as the engine does, with
// fakes for libxc and libxl: the stream's pre-copy rounds go straight
// into the replica, each checkpoint is committed (WritePages, then
// RestoreState), and Activate ends the restore, whose domain must hold the
// guest's memory of the last committed checkpoint.
func TestPVRouteA(t *testing.T) {
	const pages = 1500
	xc := newFakeXC(pages)
	xc.hot = 40 // every checkpoint rewrites pages of the ones still queued
	s, err := startStream(xc, 7, pages)
	if err != nil {
		t.Fatal(err)
	}
	defer s.end()
	// The restore reads nothing until activation: the writer blocks on the
	// full pipe inside the first checkpoint while the engine commits the
	// others, rewriting pages that checkpoint still has to send. Each
	// checkpoint must still reach the restore as it was committed, and no
	// commit may wait for the writer (this test would hang).
	xl := &fakeRestore{gate: make(chan struct{})}
	info := libxl.DomainInfo{Name: "guest", Type: libxl.TypePV, Pages: pages, Config: []byte(`{"c_info":{}}`)}
	rp, err := newReplica(xl, replicaBase, info)
	if err != nil {
		t.Fatal(err)
	}
	if err := rp.restoreState(nil); err == nil {
		t.Error("RestoreState without the stream's headers accepted")
	}
	bm := libxl.NewBitmap(pages)
	for range 3 {
		pfns, data := readAll(t, s, bm, nil)
		if err := rp.writePages(pfns, data); err != nil {
			t.Fatal(err)
		}
	}
	var want [][]byte
	var wants [][][]byte // the guest's memory at each committed checkpoint
	for ck := 1; ck <= 6; ck++ {
		if err := s.suspend(); err != nil {
			t.Fatal(err)
		}
		pfns, data := readAll(t, s, bm, nil)
		states, err := s.captureState(nil)
		if err != nil {
			t.Fatal(err)
		}
		xc.mu.Lock()
		snap := xc.snap
		xc.mu.Unlock()
		if err := s.resume(); err != nil {
			t.Fatal(err)
		}
		xc.run(25) // the guest runs on
		if ck == 6 {
			break // captured, never committed: the replica must not have it
		}
		if err := rp.writePages(pfns, data); err != nil {
			t.Fatal(err)
		}
		// The XOR base of the next epoch's pages is what was committed.
		got := make([]byte, len(data))
		if err := rp.readPages(pfns, got); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("checkpoint %d: ReadPages after WritePages: %v", ck, err)
		}
		if err := rp.restoreState(states); err != nil {
			t.Fatalf("checkpoint %d: RestoreState: %v", ck, err)
		}
		want = snap
		wants = append(wants, snap)
	}
	close(xl.gate)
	if err := rp.writePages([]libxl.PFN{pages}, make([]byte, libxl.PageSize)); !errors.Is(err, libxl.ErrRange) {
		t.Errorf("WritePages beyond the domain: %v, want ErrRange", err)
	}
	// At the decision the standby prepares (the restore ends, the domain
	// is built, paused, under its temporary name) while it reads the
	// replica's pages for the digest; Activate then renames and unpauses.
	if err := rp.prepare(); err != nil {
		t.Fatalf("PrepareActivate: %v", err)
	}
	if xl.name != rp.tmp || !xl.paused {
		t.Errorf("after PrepareActivate: domain %q paused=%v; want %q paused", xl.name, xl.paused, rp.tmp)
	}
	if err := rp.readPages([]libxl.PFN{0}, make([]byte, libxl.PageSize)); err != nil {
		t.Errorf("ReadPages after PrepareActivate: %v", err)
	}
	id, err := rp.activate()
	if err != nil {
		t.Fatalf("Activate: %v", err)
	}
	if id != fakeDomid || xl.name != "guest" || xl.paused || xl.checkpoints != 5 {
		t.Errorf("activated domain %d %q paused=%v after %d checkpoints; want %d %q running after 5",
			id, xl.name, xl.paused, xl.checkpoints, fakeDomid, "guest")
	}
	for p, m := range want {
		if !bytes.Equal(xl.mem[uint64(p)], m) {
			t.Fatalf("restored pfn %d differs from the guest's at the last committed checkpoint", p)
		}
	}
	for k, w := range wants {
		for p, m := range w {
			if !bytes.Equal(xl.states[k][uint64(p)], m) {
				t.Fatalf("checkpoint %d as restored: pfn %d differs from the guest's at that checkpoint (torn by a later commit)", k+1, p)
			}
		}
	}
	if err := rp.writePages(nil, nil); !errors.Is(err, libxl.ErrBadState) {
		t.Errorf("WritePages after Activate: %v, want ErrBadState", err)
	}
}

// TestPVReplicaEnds: a replica destroyed before its first checkpoint
// leaves nothing behind, and one whose restore failed refuses epochs.
func TestPVReplicaEnds(t *testing.T) {
	info := libxl.DomainInfo{Name: "guest", Type: libxl.TypePV, Pages: 16, Config: []byte(`{}`)}
	xl := &fakeRestore{}
	rp, err := newReplica(xl, replicaBase, info)
	if err != nil {
		t.Fatal(err)
	}
	if err := rp.writePages([]libxl.PFN{3}, make([]byte, libxl.PageSize)); err != nil {
		t.Fatal(err)
	}
	if _, err := rp.activate(); !errors.Is(err, libxl.ErrBadState) {
		t.Errorf("Activate before any checkpoint: %v, want ErrBadState", err)
	}
	if err := rp.destroy(); err != nil || len(xl.destroyed) != 0 {
		t.Errorf("destroy: %v, destroyed %v", err, xl.destroyed)
	}
	// libxl never saw a stream without its header: on real Xen 4.17 that
	// crashes the process (the lab's TestContract/ReplicaErrors).
	if xl.calls != 0 {
		t.Errorf("the restore ran %d times for a replica without a checkpoint", xl.calls)
	}

	bad := &fakeRestore{failEarly: true}
	rp, _ = newReplica(bad, replicaBase+1, info)
	c := libxcstream.NewCapture()
	c.SetHeader(libxcstream.Header{Version: 3, Type: libxcstream.DomainX86PV, PageShift: 12})
	c.Add(libxcstream.Record{Type: libxcstream.RecCheckpoint})
	if err := rp.restoreState(slices.Clip(c.AppendStates(nil))); err != nil {
		t.Fatalf("first RestoreState: %v", err)
	}
	<-rp.restoreDone
	if err := rp.restoreState(slices.Clip(c.AppendStates(nil))); err == nil {
		t.Error("RestoreState after the restore failed: accepted")
	}
	rp.destroy()
}

// TestPVReplicaNoInfo: a description without the libxl configuration
// cannot be restored.
func TestPVReplicaNoInfo(t *testing.T) {
	if _, err := newReplica(&fakeRestore{}, replicaBase, libxl.DomainInfo{Name: "g", Pages: 1}); err == nil {
		t.Error("replica without a configuration accepted")
	}
}

// TestNewReplicaSize: the page count is the primary's (its HELLO); one no
// Xen host holds is refused before the replica's arrays are allocated for
// it (issue 12: 2^33 pages took the standby down with out of memory).
func TestNewReplicaSize(t *testing.T) {
	for _, pages := range []uint64{0, 1 << 33, 1 << 52} {
		info := libxl.DomainInfo{Name: "guest", Type: libxl.TypePV, Pages: pages, Config: []byte(`{"c_info":{}}`)}
		if rp, err := newReplica(&fakeRestore{}, replicaBase, info); !errors.Is(err, libxl.ErrRange) {
			if rp != nil {
				rp.destroy()
			}
			t.Errorf("%d pages: %v, want ErrRange", pages, err)
		}
	}
}
