//go:build xen && integration

package xen_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/hvtest"
	"github.com/xl-kemari/xl-kemari/libxl/xen"
)

// These tests run in a Xen dom0 (the xenlab; test/xenlab/kemari/README.md)
// against PV guests they create from the xl config named by KEMARI_XEN_CFG:
// a guest that keeps writing its memory once booted, such as the lab's.
//
//	go test -c -tags 'xen integration' -o bin/xen.test ./libxl/xen
//	KEMARI_XEN_CFG=/run/xenlab/hvtest.cfg /mnt/host/xen.test -test.v

var guestSeq atomic.Int64

// openXen opens the backend with pv=direct: these tests check route (b)'s
// primitives (Xen's log-dirty, raw page reads) on the lab's PV guests,
// which the default pv=stream replaces with libxenguest's stream.
func openXen(t *testing.T) libxl.Hypervisor {
	t.Helper()
	return openXenWith(t, libxl.Options{"pv": "direct"})
}

// openXenWith opens the backend with opts, closing it at cleanup.
func openXenWith(t *testing.T, opts libxl.Options) libxl.Hypervisor {
	t.Helper()
	hvtest.RequiresXen(t)
	hvtest.RequiresRoot(t)
	hv, err := libxl.Open("xen", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := hv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return hv
}

// createGuest xl-creates a guest from KEMARI_XEN_CFG under a fresh name,
// destroying it at cleanup; see createGuestFrom.
func createGuest(t *testing.T, hv libxl.Hypervisor) libxl.DomID {
	t.Helper()
	return createGuestFrom(t, hv, os.Getenv("KEMARI_XEN_CFG"))
}

// createGuestFrom xl-creates a guest from the xl config cfg under a fresh
// name and returns once it runs: its kernel has connected its first vif
// (so it answers suspend requests) and the lab guest's port-7 service,
// which its init starts after the memory writer, answers. With another
// lab guest running (they share one address) the answer may be the
// other's; the guest is then only known to have booted its kernel.
func createGuestFrom(t *testing.T, hv libxl.Hypervisor, cfg string) libxl.DomID {
	t.Helper()
	if cfg == "" {
		t.Skip("KEMARI_XEN_CFG (an xl config of a guest that writes its memory) is not set")
	}
	t0 := time.Now()
	dom, name := spawnGuest(t, hv, cfg)
	key := fmt.Sprintf("/local/domain/0/backend/vif/%d/0/state", dom)
	deadline := time.Now().Add(240 * time.Second)
	for tick := time.NewTicker(500 * time.Millisecond); ; <-tick.C {
		st, _ := exec.Command("xenstore-read", key).Output()
		if strings.TrimSpace(string(st)) == "4" {
			tick.Stop()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("guest %s: vif backend not connected after 240 s (%s = %q)", name, key, st)
		}
	}
	tVif := time.Since(t0)
	guestStatus(t)
	t.Logf("guest %s (domain %d): vif connected after %.1f s, service answers after %.1f s", name, dom, tVif.Seconds(), time.Since(t0).Seconds())
	return dom
}

// spawnGuest xl-creates a guest from cfg under a fresh name, destroying
// it at cleanup, and returns as soon as the domain exists: its kernel
// still boots.
func spawnGuest(t *testing.T, hv libxl.Hypervisor, cfg string) (libxl.DomID, string) {
	t.Helper()
	name := fmt.Sprintf("hvtest-%d-%d", os.Getpid(), guestSeq.Add(1))
	out, err := exec.Command("xl", "create", "-q", cfg, `name="`+name+`"`).CombinedOutput()
	if err != nil {
		t.Fatalf("xl create %s: %v\n%s", cfg, err, out)
	}
	t.Cleanup(func() { exec.Command("xl", "destroy", name).Run() })
	dom, err := hv.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return dom, name
}

// cfgPages is the size in pages of the guests the xl config cfg makes,
// from its memory= line (MB): a PV guest's frames are its memory.
func cfgPages(t *testing.T, cfg string) uint64 {
	t.Helper()
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*memory\s*=\s*"?(\d+)"?`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s has no memory= line", cfg)
	}
	mb, _ := strconv.ParseUint(string(m[1]), 10, 64)
	return mb << 20 / libxl.PageSize
}

// TestContract runs the shared contract suite on the backend as the
// engine uses it (pv=stream: PV guests are captured and restored by
// libxenguest's stream, libxl.StreamCapture), on guests of their real
// size (hvtest.Factory.Pages), one guest shared by the subtests that do
// not destroy it (hvtest.Factory.Reuse: a guest boots for ~30 s under
// TCG). KEMARI_XEN_CONTRACT_CFG, if set, names the guests' xl config
// (the lab's is a smaller guest than KEMARI_XEN_CFG's, so that the
// streams of its whole memory are quicker).
func TestContract(t *testing.T) {
	hvtest.RequiresXen(t)
	hvtest.RequiresRoot(t)
	cfg := os.Getenv("KEMARI_XEN_CONTRACT_CFG")
	if cfg == "" {
		cfg = os.Getenv("KEMARI_XEN_CFG")
	}
	if cfg == "" {
		t.Skip("KEMARI_XEN_CONTRACT_CFG or KEMARI_XEN_CFG (an xl config of a guest that writes its memory) is not set")
	}
	hvtest.Run(t, hvtest.Factory{
		Open: func(t *testing.T) libxl.Hypervisor { return openXenWith(t, nil) },
		Create: func(t *testing.T, hv libxl.Hypervisor, pages uint64) libxl.DomID {
			return createGuestFrom(t, hv, cfg)
		},
		// Destroy's running domain need not have booted (~30 s).
		Spawn: func(t *testing.T, hv libxl.Hypervisor, pages uint64) libxl.DomID {
			t0 := time.Now()
			dom, name := spawnGuest(t, hv, cfg)
			t.Logf("guest %s (domain %d) created in %.1f s, left to boot", name, dom, time.Since(t0).Seconds())
			return dom
		},
		NoTouch: "the xen backend's guests are real Linux kernels: writing chosen pages of one from dom0 would corrupt it",
		Advance: func(t *testing.T) { <-time.After(time.Second) },
		Reuse:   true,
		Pages:   cfgPages(t, cfg),
		// The lab guest's boot id, from its port-7 service (one guest at
		// a time: Replica's primary is destroyed before its replica runs).
		Boot: func(t *testing.T, hv libxl.Hypervisor, dom libxl.DomID) string {
			boot, _, _ := guestStatus(t)
			return boot
		},
	})
}

// TestContractPVH runs the shared contract suite on PVH guests (route
// (b): Xen's log-dirty, foreign mapping, HVM context and params; a
// replica built paused by libxl and written frame by frame) from the xl
// config KEMARI_XEN_PVH_CFG, the lab's guest with type="pvh". A PVH
// guest's frames run up to its special pages below 4 GiB, so the size the
// suite expects is what Describe says of a domain of that config, created
// paused for the purpose.
func TestContractPVH(t *testing.T) {
	hvtest.RequiresXen(t)
	hvtest.RequiresRoot(t)
	cfg := os.Getenv("KEMARI_XEN_PVH_CFG")
	if cfg == "" {
		t.Skip("KEMARI_XEN_PVH_CFG (an xl config of a PVH guest that writes its memory) is not set")
	}
	open := func(t *testing.T) libxl.Hypervisor { return openXenWith(t, libxl.Options{"pvh": "on"}) }
	hv := open(t)
	name := fmt.Sprintf("hvtest-%d-size", os.Getpid())
	if out, err := exec.Command("xl", "create", "-p", "-q", cfg, `name="`+name+`"`).CombinedOutput(); err != nil {
		t.Fatalf("xl create -p %s: %v\n%s", cfg, err, out)
	}
	dom, err := hv.Lookup(name)
	if err != nil {
		exec.Command("xl", "destroy", name).Run()
		t.Fatal(err)
	}
	info, err := hv.Source().Describe(dom)
	exec.Command("xl", "destroy", name).Run()
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != libxl.TypePVH {
		t.Fatalf("%s makes a %s domain, want pvh", cfg, info.Type)
	}
	t.Logf("a domain of %s: %d frames (highest gfn %#x), %d vCPUs", cfg, info.Pages, info.Pages-1, info.VCPUs)
	hvtest.Run(t, hvtest.Factory{
		Open: open,
		Create: func(t *testing.T, hv libxl.Hypervisor, pages uint64) libxl.DomID {
			return createGuestFrom(t, hv, cfg)
		},
		Spawn: func(t *testing.T, hv libxl.Hypervisor, pages uint64) libxl.DomID {
			dom, _ := spawnGuest(t, hv, cfg)
			return dom
		},
		NoTouch: "the xen backend's guests are real Linux kernels: writing chosen pages of one from dom0 would corrupt it",
		Advance: func(t *testing.T) { <-time.After(time.Second) },
		Reuse:   true,
		Pages:   info.Pages,
		Boot: func(t *testing.T, hv libxl.Hypervisor, dom libxl.DomID) string {
			boot, _, _ := guestStatus(t)
			return boot
		},
	})
}

// TestPrimitives checks the Source operations that work on a PV guest, at
// the guest's real size, and logs what they cost.
func TestPrimitives(t *testing.T) {
	hv := openXen(t)
	dom := createGuest(t, hv)
	src := hv.Source()

	info, err := src.Describe(dom)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Describe: name %q type %s pages %d vcpus %d nics %+v disks %+v", info.Name, info.Type, info.Pages, info.VCPUs, info.NICs, info.Disks)
	t.Logf("libxl config JSON: %s", info.Config)
	if info.Type != libxl.TypePV || info.Pages < 1024 || info.VCPUs < 1 || len(info.Config) == 0 {
		t.Fatalf("Describe = %+v", info)
	}
	pages := info.Pages

	t0 := time.Now()
	if err := src.Suspend(dom); err != nil {
		t.Fatal(err)
	}
	t.Logf("Suspend (libxl_domain_suspend_only): %v", time.Since(t0))
	if err := src.Suspend(dom); !errors.Is(err, libxl.ErrBadState) {
		t.Errorf("Suspend(suspended) = %v, want ErrBadState", err)
	}
	t0 = time.Now()
	if err := src.Resume(dom); err != nil {
		t.Fatal(err)
	}
	t.Logf("Resume (libxl_domain_resume, suspend_cancel): %v", time.Since(t0))
	if err := src.Resume(dom); !errors.Is(err, libxl.ErrBadState) {
		t.Errorf("Resume(running) = %v, want ErrBadState", err)
	}

	bm := libxl.NewBitmap(pages)
	if err := src.ReadAndClearDirty(dom, bm); !errors.Is(err, libxl.ErrBadState) {
		t.Errorf("ReadAndClearDirty(log-dirty off) = %v, want ErrBadState", err)
	}
	if err := src.SetLogDirty(dom, true); err != nil {
		t.Fatal(err)
	}
	defer src.SetLogDirty(dom, false)
	if err := src.ReadAndClearDirty(dom, libxl.NewBitmap(pages-1)); !errors.Is(err, libxl.ErrRange) {
		t.Errorf("ReadAndClearDirty(short bitmap) = %v, want ErrRange", err)
	}
	if err := src.Suspend(dom); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	if err := src.ReadAndClearDirty(dom, bm); err != nil {
		t.Fatal(err)
	}
	t.Logf("first ReadAndClearDirty: %v in %v", bm, time.Since(t0))
	if bm.Count() != pages {
		t.Errorf("first read after SetLogDirty(true) = %v, want all %d", bm, pages)
	}
	bm.Reset()
	if err := src.ReadAndClearDirty(dom, bm); err != nil {
		t.Fatal(err)
	}
	if bm.Count() != 0 {
		t.Errorf("second read while suspended = %v, want empty", bm)
	}

	all := make([]libxl.PFN, pages)
	for i := range all {
		all[i] = libxl.PFN(i)
	}
	mem := make([]byte, pages*libxl.PageSize)
	t0 = time.Now()
	if err := src.ReadPages(dom, all, mem); err != nil {
		t.Fatal(err)
	}
	d := time.Since(t0)
	t.Logf("ReadPages(all %d pages, p2m walk included): %v, %.0f MB/s", pages, d, float64(len(mem))/d.Seconds()/1e6)
	again := make([]byte, len(mem))
	if err := src.ReadPages(dom, all, again); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mem, again) {
		// Name the pages, and whether the log saw the writes: Xen and the
		// dom0 backends may still write into a suspended guest.
		var diff []libxl.PFN
		for p := range pages {
			o := p * libxl.PageSize
			if !bytes.Equal(mem[o:o+libxl.PageSize], again[o:o+libxl.PageSize]) {
				diff = append(diff, libxl.PFN(p))
			}
		}
		bm.Reset()
		if err := src.ReadAndClearDirty(dom, bm); err != nil {
			t.Fatal(err)
		}
		var frames []string
		for _, p := range diff {
			f, err := hv.(*xen.Hypervisor).Frame(dom, p)
			frames = append(frames, fmt.Sprintf("pfn %d = mfn %#x (%v)", p, f, err))
		}
		rings := map[string]string{}
		for _, k := range []string{"store/ring-ref", "console/ring-ref"} {
			v, _ := exec.Command("xenstore-read", fmt.Sprintf("/local/domain/%d/%s", dom, k)).Output()
			rings[k] = strings.TrimSpace(string(v))
		}
		t.Errorf("two reads of a suspended guest's memory differ: %v; dirty log since: %v %v; rings %v", frames, bm, bm.AppendSet(nil), rings)
		copy(mem, again) // the diagnostic read consumed the log: new baseline
	}
	if err := src.ReadPages(dom, []libxl.PFN{libxl.PFN(pages)}, again); !errors.Is(err, libxl.ErrRange) {
		t.Errorf("ReadPages(pfn == pages) = %v, want ErrRange", err)
	}
	if _, err := src.CaptureState(dom, nil); !errors.Is(err, libxl.ErrUnsupported) {
		t.Errorf("CaptureState(PV) = %v, want ErrUnsupported", err)
	}
	if _, err := hv.Sink().CreateReplica(info); !errors.Is(err, libxl.ErrUnsupported) {
		t.Errorf("CreateReplica = %v, want ErrUnsupported", err)
	}

	// The engine's property: every page whose content changed between two
	// checkpoints was reported dirty in between.
	for round := range 3 {
		if err := src.Resume(dom); err != nil {
			t.Fatal(err)
		}
		seen := libxl.NewBitmap(pages)
		<-time.After(time.Second)
		if err := src.ReadAndClearDirty(dom, seen); err != nil {
			t.Fatal(err)
		}
		running := seen.Count()
		<-time.After(time.Second)
		t0 = time.Now()
		if err := src.Suspend(dom); err != nil {
			t.Fatal(err)
		}
		ts := time.Since(t0)
		t0 = time.Now()
		if err := src.ReadAndClearDirty(dom, seen); err != nil {
			t.Fatal(err)
		}
		tr := time.Since(t0)
		if err := src.ReadPages(dom, all, again); err != nil {
			t.Fatal(err)
		}
		changed, missed := 0, 0
		for p := range pages {
			o := p * libxl.PageSize
			if !bytes.Equal(mem[o:o+libxl.PageSize], again[o:o+libxl.PageSize]) {
				changed++
				if !seen.Test(libxl.PFN(p)) {
					missed++
					if missed <= 5 {
						t.Errorf("round %d: pfn %d changed but was never reported dirty", round, p)
					}
				}
			}
		}
		t.Logf("round %d: dirty %d (running read %d), changed %d, missed %d; suspend %v, read-and-clear %v", round, seen.Count(), running, changed, missed, ts, tr)
		if changed == 0 {
			t.Errorf("round %d: the guest changed no page in 2 s", round)
		}
		mem, again = again, mem
	}
	if err := src.Resume(dom); err != nil {
		t.Fatal(err)
	}
	if err := src.SetLogDirty(dom, false); err != nil {
		t.Fatal(err)
	}
	if err := src.ReadAndClearDirty(dom, bm); !errors.Is(err, libxl.ErrBadState) {
		t.Errorf("ReadAndClearDirty after SetLogDirty(false) = %v, want ErrBadState", err)
	}
	if err := src.Destroy(dom); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Describe(dom); !errors.Is(err, libxl.ErrNoDomain) {
		t.Errorf("Describe(destroyed) = %v, want ErrNoDomain", err)
	}
}
