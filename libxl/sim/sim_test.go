package sim_test

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/sim"
	"github.com/xl-kemari/xl-kemari/libxl/sim/svc"
)

func newHV(t *testing.T, opts libxl.Options) *sim.Hypervisor {
	t.Helper()
	h, err := sim.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.DestroyAll)
	return h
}

func create(t *testing.T, h *sim.Hypervisor, cfg sim.DomainConfig) (libxl.DomID, *sim.Domain) {
	t.Helper()
	dom, err := h.CreateDomain(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d, err := h.Domain(dom)
	if err != nil {
		t.Fatal(err)
	}
	return dom, d
}

func pfnRange(n uint64) []libxl.PFN {
	p := make([]libxl.PFN, n)
	for i := range p {
		p[i] = libxl.PFN(i)
	}
	return p
}

// replicate builds on dst a paused replica of src's domain at its current
// (stopped) point: pages, disks and state, as a committed epoch would.
func replicate(t *testing.T, src, dst *sim.Hypervisor, dom libxl.DomID) (libxl.DomID, *sim.Domain) {
	t.Helper()
	info, err := src.Describe(dom)
	if err != nil {
		t.Fatal(err)
	}
	pfns := pfnRange(info.Pages)
	mem := make([]byte, len(pfns)*libxl.PageSize)
	if err := src.ReadPages(dom, pfns, mem); err != nil {
		t.Fatal(err)
	}
	st, err := src.CaptureState(dom, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := dst.CreateReplica(info)
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.WritePages(r, pfns, mem); err != nil {
		t.Fatal(err)
	}
	if err := dst.RestoreState(r, st); err != nil {
		t.Fatal(err)
	}
	sd, _ := src.Domain(dom)
	rd, err := dst.Domain(r)
	if err != nil {
		t.Fatal(err)
	}
	for i := range len(info.Disks) {
		b := make([]byte, sd.Disk(i).Sectors()*libxl.SectorSize)
		if _, err := sd.Disk(i).ReadAt(b, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := rd.Disk(i).Backend().WriteAt(b, 0); err != nil {
			t.Fatal(err)
		}
	}
	return r, rd
}

func diskBytes(t *testing.T, k *sim.Disk) []byte {
	t.Helper()
	b := make([]byte, k.Sectors()*libxl.SectorSize)
	if _, err := k.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

type frames struct{ got [][]byte }

func (f *frames) send(fr []byte) { f.got = append(f.got, slices.Clone(fr)) }

// TestReplicaContinuesExactly: a replica built from a checkpoint at step N
// and fed the same input runs the same M steps as its primary, to the byte:
// memory, state blobs, disk and transmitted frames.
func TestReplicaContinuesExactly(t *testing.T) {
	const n, m = 40, 120
	client := netip.MustParseAddrPort("127.0.0.1:40000")
	input := func(step int) []byte {
		// Every third step a request; some retries, some garbage.
		var req svc.Request
		switch step % 9 {
		case 0:
			req = svc.Request{Client: 1, Seq: uint64(step + 1), Op: svc.OpIncr}
		case 3:
			req = svc.Request{Client: 2, Seq: uint64(step), Op: svc.OpPut, Key: uint64(step % 5), Value: uint64(step)}
		case 6:
			if step%18 == 6 {
				return []byte("not a request")
			}
			req = svc.Request{Client: 2, Seq: uint64(step - 3), Op: svc.OpPut, Key: uint64((step - 3) % 5), Value: uint64(step - 3)}
		default:
			return nil
		}
		b, err := svc.EncodeRequest(req)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, w := range sim.Workloads {
		t.Run(w, func(t *testing.T) {
			p, s := newHV(t, nil), newHV(t, nil)
			cfg := sim.DomainConfig{Pages: 512, Workload: w, Rate: 30000, HotPages: 64, Seed: 99, VCPUs: 2, Paused: true}
			if w == sim.WorkloadService {
				cfg.NICs = []sim.NICConfig{{}}
				cfg.Disks = []sim.DiskConfig{{Sectors: 64}}
			}
			dom, pd := create(t, p, cfg)
			var pf, rf frames
			if w == sim.WorkloadService {
				pd.NIC(0).SetEgress(pf.send)
			}
			drive := func(d *sim.Domain, step int) {
				if w == sim.WorkloadService {
					if b := input(step); b != nil {
						if err := d.NIC(0).Inject(client, b); err != nil {
							t.Fatal(err)
						}
					}
				}
				if err := d.Step(1); err != nil {
					t.Fatal(err)
				}
			}
			for i := range n {
				drive(pd, i)
			}
			pf.got = nil
			r, rd := replicate(t, p, s, dom)
			if w == sim.WorkloadService {
				rd.NIC(0).SetEgress(rf.send)
			}
			for i := n; i < n+m; i++ {
				drive(pd, i)
				drive(rd, i)
			}
			if pd.Steps() != n+m || rd.Steps() != n+m {
				t.Fatalf("steps: primary %d replica %d, want %d", pd.Steps(), rd.Steps(), n+m)
			}
			a, err := pd.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			b, err := rd.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b) {
				for i := 0; i < len(a); i += libxl.PageSize {
					if !bytes.Equal(a[i:i+libxl.PageSize], b[i:i+libxl.PageSize]) {
						t.Errorf("page %d differs", i/libxl.PageSize)
					}
				}
				t.Fatal("replica memory diverged from the primary")
			}
			ps, _ := p.CaptureState(dom, nil)
			rs, _ := s.CaptureState(r, nil)
			if fmt.Sprint(ps) != fmt.Sprint(rs) {
				t.Errorf("state blobs differ:\n%v\n%v", ps, rs)
			}
			if w == sim.WorkloadService {
				if len(pf.got) == 0 || fmt.Sprint(pf.got) != fmt.Sprint(rf.got) {
					t.Errorf("frames differ: primary %d, replica %d", len(pf.got), len(rf.got))
				}
				if !bytes.Equal(diskBytes(t, pd.Disk(0)), diskBytes(t, rd.Disk(0))) {
					t.Error("journal disks differ")
				}
				st, _ := pd.Service()
				if st.Applied == 0 || st.Duplicates == 0 || st.Malformed == 0 || st.Journal != st.Applied {
					t.Errorf("service stats %+v: want applied, duplicate and malformed requests, a journal entry per applied", st)
				}
			} else if w != sim.WorkloadIdle {
				var zero [libxl.PageSize]byte
				changed := 0
				for i := libxl.PageSize; i < len(a); i += libxl.PageSize {
					if !bytes.Equal(a[i:i+libxl.PageSize], zero[:]) {
						changed++
					}
				}
				if changed == 0 {
					t.Error("writer workload wrote nothing")
				}
			}
		})
	}
}

// TestSparse: an untouched 4 GiB guest costs no guest-sized memory, its
// initial sync reads zeros, and its replica stays sparse too.
func TestSparse(t *testing.T) {
	const pages = 1 << 20 // 4 GiB
	h, s := newHV(t, nil), newHV(t, nil)
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	dom, d := create(t, h, sim.DomainConfig{Pages: pages, Workload: sim.WorkloadIdle, Paused: true})
	if err := h.SetLogDirty(dom, true); err != nil {
		t.Fatal(err)
	}
	bm := libxl.NewBitmap(pages)
	if err := h.ReadAndClearDirty(dom, bm); err != nil {
		t.Fatal(err)
	}
	if bm.Count() != pages {
		t.Fatalf("initial dirty set %v, want all", bm)
	}
	info, _ := h.Describe(dom)
	r, err := s.CreateReplica(info)
	if err != nil {
		t.Fatal(err)
	}
	rd, _ := s.Domain(r)
	// Initial sync in batches, as the engine would.
	const batch = 4096
	buf := make([]byte, batch*libxl.PageSize)
	pfns := make([]libxl.PFN, batch)
	for base := uint64(0); base < pages; base += batch {
		for i := range pfns {
			pfns[i] = libxl.PFN(base + uint64(i))
		}
		if err := h.ReadPages(dom, pfns, buf); err != nil {
			t.Fatal(err)
		}
		if err := s.WritePages(r, pfns, buf); err != nil {
			t.Fatal(err)
		}
	}
	grown := int64(heap()) - int64(before) - int64(len(buf))
	t.Logf("4 GiB guest + replica after initial sync: heap +%d KiB, populated %d + %d pages", grown>>10, d.Populated(), rd.Populated())
	if grown > 4<<20 {
		t.Errorf("heap grew by %d MiB for an untouched 4 GiB guest and its replica", grown>>20)
	}
	if d.Populated() > 1 || rd.Populated() > 1 {
		t.Errorf("populated pages: primary %d, replica %d; want at most the header page", d.Populated(), rd.Populated())
	}
	runtime.KeepAlive(buf)
}

// TestGuestLoop runs a guest in virtual time: it steps once per quantum,
// stops at Suspend, goes on at Resume, and leaves no goroutine behind.
// Every sleep here moves the bubble's clock (no wall-clock time passes);
// the synctest.Wait after it returns once the guest has run the step due
// at that instant, so the counts are exact.
func TestGuestLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHV(t, nil)
		dom, d := create(t, h, sim.DomainConfig{Pages: 128, Workload: sim.WorkloadStream, Rate: 1000, Quantum: 2 * time.Millisecond})
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		// A step as it starts, then one per quantum: at 2, 4, ... 100 ms.
		if got := d.Steps(); got != 51 {
			t.Errorf("after 100ms of 2ms quanta: %d steps, want 51", got)
		}
		if err := h.Suspend(dom); err != nil {
			t.Fatal(err)
		}
		at := d.Steps()
		time.Sleep(time.Second)
		synctest.Wait()
		if d.Steps() != at {
			t.Errorf("suspended guest stepped from %d to %d", at, d.Steps())
		}
		if err := d.Step(3); err != nil {
			t.Fatal(err)
		}
		if d.Steps() != at+3 {
			t.Errorf("Step(3) from %d gave %d", at, d.Steps())
		}
		if err := h.Resume(dom); err != nil {
			t.Fatal(err)
		}
		if err := d.Step(1); !errors.Is(err, libxl.ErrBadState) {
			t.Errorf("Step on a running guest: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
		synctest.Wait()
		// A step at Resume, then one per quantum for 20ms.
		if got := d.Steps(); got != at+3+11 {
			t.Errorf("resumed guest: %d steps 20ms after Resume at %d, want %d", got, at+3, at+3+11)
		}
		if err := h.Destroy(dom); err != nil {
			t.Fatal(err)
		}
		if !errors.Is(d.Touch([]libxl.PFN{0}), libxl.ErrNoDomain) {
			t.Error("Touch on a destroyed domain did not fail with ErrNoDomain")
		}
	})
}

func TestFaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHV(t, nil)
		dom, d := create(t, h, sim.DomainConfig{Pages: 64, Workload: sim.WorkloadIdle})
		boom := errors.New("guest did not answer")
		h.SetFaults(sim.Faults{
			Suspend:   func(libxl.DomID) error { return boom },
			ReadDirty: func(libxl.DomID) error { return fmt.Errorf("already: %w", libxl.ErrInjected) },
		})
		err := h.Suspend(dom)
		if !errors.Is(err, libxl.ErrInjected) || !errors.Is(err, boom) {
			t.Errorf("Suspend with fault: %v", err)
		}
		if !d.Running() {
			t.Error("failed Suspend left the domain stopped")
		}
		if err := h.SetLogDirty(dom, true); err != nil {
			t.Fatal(err)
		}
		if err := h.ReadAndClearDirty(dom, libxl.NewBitmap(64)); !errors.Is(err, libxl.ErrInjected) {
			t.Errorf("ReadAndClearDirty with fault: %v", err)
		}
		h.SetFaults(sim.Faults{})
		bm := libxl.NewBitmap(64)
		if err := h.ReadAndClearDirty(dom, bm); err != nil || bm.Count() != 64 {
			t.Errorf("after a failed read the log lost pages: %v %v", bm, err)
		}
		if err := h.Suspend(dom); err != nil {
			t.Fatal(err)
		}
	})
}

func TestConfigErrors(t *testing.T) {
	h := newHV(t, nil)
	_, err := h.CreateDomain(sim.DomainConfig{
		Pages: 4, Workload: "nope", VCPUs: -1,
		NICs:  []sim.NICConfig{{MAC: "zz", Listen: "localhost"}},
		Disks: []sim.DiskConfig{{}},
	})
	if !errors.Is(err, sim.ErrConfig) {
		t.Fatalf("bad config: %v", err)
	}
	for _, want := range []string{"workload", "vcpus", "mac", "listen", "disk 0"} {
		if !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if _, err := h.CreateDomain(sim.DomainConfig{Pages: 8, Workload: sim.WorkloadService, NICs: []sim.NICConfig{{}}}); !errors.Is(err, sim.ErrConfig) {
		t.Errorf("service in 8 pages: %v", err)
	}
	if _, err := sim.New(libxl.Options{"bogus": "1", "quantum": "x"}); !errors.Is(err, sim.ErrConfig) {
		t.Errorf("New with bad options: %v", err)
	}
	cfg, err := sim.DomainConfigFromOptions(libxl.Options{"name": "svc", "memory_mib": "64", "workload": "service", "listen": "127.0.0.1:7777,-", "disks": "2048", "quantum": "2ms", "seed": "5"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Pages != 16384 || len(cfg.NICs) != 2 || cfg.NICs[1].Listen != "" || cfg.Disks[0].Sectors != 2048 || cfg.Quantum != 2*time.Millisecond {
		t.Errorf("DomainConfigFromOptions = %+v", cfg)
	}
	if _, err := sim.DomainConfigFromOptions(libxl.Options{"pages": "lots"}); !errors.Is(err, sim.ErrConfig) {
		t.Errorf("pages=lots: %v", err)
	}
	// Names are unique.
	if _, err := h.CreateDomain(sim.DomainConfig{Name: "a", Pages: 16, Paused: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.CreateDomain(sim.DomainConfig{Name: "a", Pages: 16}); !errors.Is(err, sim.ErrExists) {
		t.Errorf("duplicate name: %v", err)
	}
	h.Close()
	if _, err := h.CreateDomain(sim.DomainConfig{Pages: 16}); !errors.Is(err, sim.ErrClosed) {
		t.Errorf("create after Close: %v", err)
	}
}

// TestReplicaFromGenericInfo: a DomainInfo without the sim's Config (as a
// hand-written one would be) still yields a replica of the right shape.
func TestReplicaFromGenericInfo(t *testing.T) {
	h := newHV(t, nil)
	r, err := h.CreateReplica(libxl.DomainInfo{Name: "g", Pages: 100, VCPUs: 1, Workload: "idle",
		Disks: []libxl.Disk{{Sectors: 8}}})
	if err != nil {
		t.Fatal(err)
	}
	info, _ := h.Describe(r)
	if info.Pages != 100 || len(info.Disks) != 1 || info.Name != "g" {
		t.Errorf("replica info %+v", info)
	}
	if _, err := h.CreateReplica(libxl.DomainInfo{Name: "x", Pages: 100, VCPUs: 1, Workload: "idle", Config: []byte(`{"pages":5}`)}); !errors.Is(err, sim.ErrConfig) {
		t.Errorf("inconsistent config: %v", err)
	}
	if _, err := h.CreateReplica(libxl.DomainInfo{Name: "x", Config: []byte(`{"bogus":1}`)}); !errors.Is(err, sim.ErrConfig) {
		t.Errorf("unknown config field: %v", err)
	}
}

func TestFrame(t *testing.T) {
	for _, to := range []string{"127.0.0.1:7777", "[::1]:53"} {
		ap := netip.MustParseAddrPort(to)
		f := sim.AppendFrame(nil, ap, []byte("hello"))
		got, p, err := sim.ParseFrame(f)
		if err != nil || got != ap || string(p) != "hello" {
			t.Errorf("%s: round trip gave %v %q %v", to, got, p, err)
		}
	}
	for _, bad := range [][]byte{nil, {4, 0, 0}, {5, 0, 0, 0}, {4, 1, 0, 0, 1, 2, 3, 4}, {6, 0, 0, 1, 1}} {
		if _, _, err := sim.ParseFrame(bad); !errors.Is(err, sim.ErrFrame) {
			t.Errorf("ParseFrame(%v) = %v", bad, err)
		}
	}
}

func TestMemDisk(t *testing.T) {
	m := sim.NewMemDisk(16)
	if _, err := m.WriteAt(bytes.Repeat([]byte{7}, 1024), 4000); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 8192)
	if n, err := m.ReadAt(b, 0); n != 8192 || err != nil {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	if b[3999] != 0 || b[4000] != 7 || b[5023] != 7 || b[5024] != 0 {
		t.Error("MemDisk lost or misplaced bytes across a block boundary")
	}
	if _, err := m.WriteAt(b[:1], 8192); !errors.Is(err, libxl.ErrRange) {
		t.Errorf("write past end: %v", err)
	}
	if n, err := m.ReadAt(b[:100], 8150); n != 42 || err == nil {
		t.Errorf("short read at end = %d, %v", n, err)
	}
}
