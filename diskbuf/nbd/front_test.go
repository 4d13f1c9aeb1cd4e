package nbd

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/xl-kemari/xl-kemari/diskbuf"
)

// TestReplicatedFront is the disk front's data path in one process: NBD
// clients (as the kernel's nbd driver would be, under blkback) write to a
// server whose backend is a replicate-mode diskbuf.Primary over a file,
// with the server as the Primary's gate; an epoch loop takes Barrier,
// ships what it returns to a diskbuf.Replica over another file, commits
// and Opens. It checks, at every epoch e:
//
//   - every write answered before Barrier(e) was called is on the
//     replica's file after Commit(e) (the disk is never behind the
//     memory that saw the answer);
//   - no write is answered between Barrier(e) and Open (what the captured
//     memory can hold is bounded by the cut);
//
// and at the end that the replica's file is byte-equal to the primary's.
func TestReplicatedFront(t *testing.T) {
	const (
		size    = 4 << 20
		clients = 4
		perCli  = 200 // sectors each client writes, one request each
	)
	dir := t.TempDir()
	open := func(name string) *os.File {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	pf, rf := open("primary.img"), open("replica.img")
	prim := diskbuf.NewPrimary(diskbuf.Replicate, []diskbuf.Store{pf})
	srv := newServer(t, Config{Backend: StoreBackend{S: prim.Device(0), Bytes: size}})
	prim.SetGate(srv)
	rep := diskbuf.NewReplica(diskbuf.Replicate, []diskbuf.Store{rf})

	type rec struct {
		off  int64
		data []byte
	}
	var (
		mu    sync.Mutex
		acked []rec // in the order the answers arrived
	)
	ackedLen := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	// progress paces the epoch loop: an epoch is cut once some write was
	// answered since the last one (or the writers are done).
	progress := make(chan struct{}, 1)

	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := 0; c < clients; c++ {
		cli := dial(t, srv)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perCli; i++ {
				off := int64(c*perCli+i) * diskbuf.SectorSize
				data := bytes.Repeat([]byte{byte(c + 1), byte(i)}, diskbuf.SectorSize/2)
				if err := cli.WriteAt(data, off, i%7 == 0); err != nil {
					errs <- fmt.Errorf("client %d write %d: %w", c, i, err)
					return
				}
				mu.Lock()
				acked = append(acked, rec{off, data})
				mu.Unlock()
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	checkEpoch := func(e uint64, before int) {
		ws := prim.Barrier(e)
		// The server's count, not the clients': a reply already written
		// may reach its client's goroutine after the cut.
		during := srv.Stats().Answered
		for _, w := range ws {
			if err := rep.Stage(w); err != nil {
				t.Fatal(err)
			}
		}
		if err := rep.Commit(e); err != nil {
			t.Fatal(err)
		}
		if n := srv.Stats().Answered; n != during {
			t.Fatalf("epoch %d: %d requests answered between Barrier and Open", e, n-during)
		}
		prim.Open()
		mu.Lock()
		must := append([]rec(nil), acked[:before]...)
		mu.Unlock()
		got := make([]byte, diskbuf.SectorSize)
		for _, r := range must {
			if _, err := rf.ReadAt(got, r.off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, r.data) {
				t.Fatalf("epoch %d: the write answered at offset %d before the barrier is not on the replica", e, r.off)
			}
		}
	}
	e := uint64(1)
	for running := true; running; e++ {
		select {
		case <-done:
			running = false
		case <-progress:
		}
		checkEpoch(e, ackedLen())
	}
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	checkEpoch(e, ackedLen())
	if n := ackedLen(); n != clients*perCli {
		t.Fatalf("%d writes answered, want %d", n, clients*perCli)
	}
	pb, rb := make([]byte, size), make([]byte, size)
	if _, err := pf.ReadAt(pb, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := rf.ReadAt(rb, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pb, rb) {
		t.Fatal("replica's file differs from the primary's after the last epoch")
	}
	t.Logf("%d writes over %d epochs", clients*perCli, e)
}

// TestFrontFlushSyncs: a FLUSH through the front reaches the store's Sync.
func TestFrontFlushSyncs(t *testing.T) {
	st := &countingStore{MemStore: diskbuf.NewMemStore(1 << 20)}
	prim := diskbuf.NewPrimary(diskbuf.Replicate, []diskbuf.Store{st})
	srv := newServer(t, Config{Backend: StoreBackend{S: prim.Device(0), Bytes: 1 << 20}})
	prim.SetGate(srv)
	cli := dial(t, srv)
	if err := cli.WriteAt(make([]byte, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := cli.Flush(); err != nil {
		t.Fatal(err)
	}
	st.mu.Lock()
	n := st.syncs
	st.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d syncs of the store after one FLUSH, want 1", n)
	}
}

type countingStore struct {
	*diskbuf.MemStore
	mu    sync.Mutex
	syncs int
}

func (s *countingStore) Sync() error {
	s.mu.Lock()
	s.syncs++
	s.mu.Unlock()
	return nil
}
