//go:build xen && integration

package kemari_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xl-kemari/xl-kemari/checkpoint"
	"github.com/xl-kemari/xl-kemari/checkpoint/epoch"
	"github.com/xl-kemari/xl-kemari/checkpoint/wire"
	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/xen"
)

// guestStatus asks the lab guest's port-7 service for its status line.
func guestStatus(t *testing.T) (boot string, tick int, line string) {
	t.Helper()
	re := regexp.MustCompile(`boot=(\S+) tick=(\d+)`)
	for range 40 {
		out, _ := exec.Command("nc", "-w", "3", "192.0.2.100", "7").CombinedOutput()
		if m := re.FindStringSubmatch(string(out)); m != nil {
			fmt.Sscan(m[2], &tick)
			return m[1], tick, strings.TrimSpace(string(out))
		}
		<-time.After(500 * time.Millisecond)
	}
	t.Fatal("the guest's service on 192.0.2.100:7 does not answer")
	return "", 0, ""
}

// cuttableNetwork is an in-memory transport and a function that breaks
// every connection made on it so far (the link fails).
func cuttableNetwork() (*checkpoint.PipeNetwork, func()) {
	net := checkpoint.NewPipeNetwork()
	var mu sync.Mutex
	var live []checkpoint.Conn
	net.Wrap = func(c checkpoint.Conn) checkpoint.Conn {
		mu.Lock()
		live = append(live, c)
		mu.Unlock()
		return c
	}
	return net, func() {
		mu.Lock()
		for _, c := range live {
			c.Close()
		}
		live = nil
		mu.Unlock()
	}
}

// createGuest starts a PV guest from KEMARI_XEN_CFG and waits until its
// network is up and its workload runs.
func createGuest(t *testing.T, hv libxl.Hypervisor) (libxl.DomID, string) {
	return createGuestEnv(t, hv, "KEMARI_XEN_CFG")
}

// createGuestEnv starts a guest from the xl config the environment
// variable env names, as createGuest does.
func createGuestEnv(t *testing.T, hv libxl.Hypervisor, env string) (libxl.DomID, string) {
	t.Helper()
	cfg := os.Getenv(env)
	if cfg == "" {
		t.Skip(env + " (an xl config of a guest that writes its memory) is not set")
	}
	name := fmt.Sprintf("engine-%d", os.Getpid())
	out, err := exec.Command("xl", "create", "-q", cfg, `name="`+name+`"`).CombinedOutput()
	if err != nil {
		t.Fatalf("xl create %s: %v\n%s", cfg, err, out)
	}
	t.Cleanup(func() { exec.Command("xl", "destroy", name).Run() })
	dom, err := hv.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
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
	<-time.After(3 * time.Second)
	return dom, name
}

// TestEnginePV protects a running PV guest with the engine (primary and
// standby drivers in this process, joined by an in-memory transport, the
// xen backend on both sides), lets it commit checkpoints, kills the
// primary (its driver and its domain, as a host failure would) and checks
// that the standby's replica resumes the guest from the last committed
// checkpoint: same boot id, its tick counter not reset and not ahead of
// the primary's.
func TestEnginePV(t *testing.T) { testEngine(t, "KEMARI_XEN_CFG", nil) }

// TestEnginePVH is TestEnginePV on the lab's guest as a PVH domain
// (KEMARI_XEN_PVH_CFG): route (b), the replica a paused domain written
// as epochs commit and started at activation from the last checkpoint's
// HVM context. The link cut is then a resync into the replica the
// standby holds (no stream).
func TestEnginePVH(t *testing.T) { testEngine(t, "KEMARI_XEN_PVH_CFG", libxl.Options{"pvh": "on"}) }

func testEngine(t *testing.T, cfgEnv string, opts libxl.Options) {
	if os.Geteuid() != 0 {
		t.Skip("needs root in a Xen dom0")
	}
	hvi, err := libxl.Open("xen", opts)
	if err != nil {
		t.Skipf("no Xen here: %v", err)
	}
	hv := hvi.(*xen.Hypervisor)
	defer func() {
		if err := hv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	dom, name := createGuestEnv(t, hv, cfgEnv)
	boot0, tick0, line := guestStatus(t)
	t.Logf("primary %s (domain %d): %s", name, dom, line)

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ecfg := epoch.Config{Mode: epoch.ModeEpoch, Interval: epoch.Duration(200 * time.Millisecond),
		Timeout: epoch.Duration(10 * time.Second), Heartbeat: epoch.Duration(time.Second), Inflight: 1}
	net, cutLink := cuttableNetwork()

	var (
		mu        sync.Mutex
		commits   int
		first     time.Time
		pauses    []time.Duration
		pages     []int
		activated = make(chan libxl.DomID, 1)
		synced    = make(chan struct{}, 1)
	)
	scfg := checkpoint.StandbyConfig{Epoch: ecfg, Verify: true, Logger: logger.With("side", "standby"),
		Observer: func(o checkpoint.Observation) {
			switch o.Kind {
			case checkpoint.ObsCommit:
				mu.Lock()
				commits++
				if commits == 1 {
					first = time.Now()
				}
				mu.Unlock()
			case checkpoint.ObsActivate:
				t.Logf("standby: activated at epoch %d (%s)", o.Epoch, o.Msg)
			}
		},
		OnActivate: func(d libxl.DomID, _ libxl.DomainInfo) { activated <- d }}
	standby, err := checkpoint.NewStandby(scfg, hv.Sink(), net, nil)
	if err != nil {
		t.Fatal(err)
	}
	pcfg := checkpoint.PrimaryConfig{Epoch: ecfg, Domain: dom, Codec: wire.CodecLZ4, Logger: logger.With("side", "primary"),
		Observer: func(o checkpoint.Observation) {
			if o.Kind == checkpoint.ObsCheckpoint {
				mu.Lock()
				pauses = append(pauses, o.Pause)
				pages = append(pages, o.Pages)
				mu.Unlock()
			}
			if o.Kind == checkpoint.ObsState && o.State == "protected" {
				select {
				case synced <- struct{}{}:
				default:
				}
			}
		}}
	primary, err := checkpoint.NewPrimary(pcfg, hv.Source(), net, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithCancel(context.Background())
	defer scancel()
	pctx, pcancel := context.WithCancel(context.Background())
	defer pcancel()
	sdone := make(chan error, 1)
	pdone := make(chan error, 1)
	t0 := time.Now()
	go func() { sdone <- standby.Run(sctx) }()
	go func() { pdone <- primary.Run(pctx) }()

	select {
	case <-synced:
		t.Logf("protected after %v (initial sync)", time.Since(t0))
	case err := <-pdone:
		t.Fatalf("primary ended during the sync: %v", err)
	case err := <-sdone:
		t.Fatalf("standby ended during the sync: %v", err)
	case <-time.After(5 * time.Minute):
		t.Fatalf("not protected after 5 minutes: %+v", primary.Status())
	}
	waitCommits := func(want int) {
		t.Helper()
		for deadline := time.Now().Add(3 * time.Minute); ; <-time.After(200 * time.Millisecond) {
			mu.Lock()
			n := commits
			mu.Unlock()
			if n >= want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d checkpoints committed in 3 minutes: %+v", n, primary.Status())
			}
		}
	}
	waitCommits(10)
	// The link breaks: a stream cannot be resumed, so the primary must
	// start a new one into a fresh replica (libxl.StreamCapture).
	cutLink()
	mu.Lock()
	before := commits
	mu.Unlock()
	tCut := time.Now()
	select {
	case <-synced:
		t.Logf("link cut after %d commits: protected again after %v", before, time.Since(tCut))
	case <-time.After(5 * time.Minute):
		t.Fatalf("not protected again 5 minutes after the cut: %+v", primary.Status())
	}
	waitCommits(before + 20)
	out, _ := exec.Command("xl", "list").CombinedOutput()
	t.Logf("xl list after the re-protection (the replica under restore has a new name):\n%s", out)
	ps := primary.Status()
	ss := standby.Status()
	mu.Lock()
	rate := float64(commits-1) / time.Since(first).Seconds()
	mu.Unlock()
	t.Logf("primary: %d checkpoints, pause avg %v max %v last %v, dirty avg %.0f pages, compression %.2f, commit latency %v",
		ps.Checkpoints, ps.AvgPause, ps.MaxPause, ps.LastPause, ps.AvgDirty, ps.Compression, ps.CommitLatency)
	t.Logf("standby: epoch %d, %d checkpoints committed, %.1f/s", ss.Epoch, ss.Checkpoints, rate)

	mu.Lock()
	ps2 := slices.Clone(pauses[1:]) // the sync's checkpoint carries the last pre-copy round
	pg := slices.Clone(pages[1:])
	t.Logf("sync checkpoint: pause %v, %d pages", pauses[0], pages[0])
	mu.Unlock()
	slices.Sort(ps2)
	slices.Sort(pg)
	q := func(f float64) int { return int(f * float64(len(ps2)-1)) }
	t.Logf("pauses of %d later checkpoints: p50 %v p90 %v max %v; pages p50 %d p90 %d max %d",
		len(ps2), ps2[q(.5)], ps2[q(.9)], ps2[len(ps2)-1], pg[q(.5)], pg[q(.9)], pg[len(pg)-1])
	_, tick1, line := guestStatus(t)
	t.Logf("primary before the failure: %s", line)
	// The primary host fails: its driver dies (no goodbye), then its
	// domain. (Destroying the domain under a running driver would leave
	// the driver in libxl's suspend, which waits a minute for a guest
	// that is gone.)
	tFail := time.Now()
	pcancel()
	t.Logf("primary driver: %v", <-pdone)
	if err := hv.Source().Destroy(dom); err != nil {
		t.Fatalf("destroying the primary: %v", err)
	}

	var rep libxl.DomID
	select {
	case rep = <-activated:
	case <-time.After(3 * time.Minute):
		t.Fatalf("replica not activated 3 minutes after the failure: %+v", standby.Status())
	}
	took := time.Since(tFail)
	id, ok := hv.ReplicaDomid(rep)
	t.Logf("replica activated %v after the failure (%v after the timeout): domain %d (%v), status %+v",
		took, took-time.Duration(ecfg.Timeout), id, ok, standby.Status())
	t.Logf("activation (digest check, then Sink.Activate): %v", time.Duration(standby.Status().Activation))
	if err := <-sdone; err != nil {
		t.Errorf("standby: %v", err)
	}
	boot2, tick2, line := guestStatus(t)
	t.Logf("replica: %s", line)
	if boot2 != boot0 {
		t.Errorf("replica boot id %s, primary's %s: it rebooted instead of resuming", boot2, boot0)
	}
	if tick2 < tick0 || tick2 > tick1+5 {
		t.Errorf("replica tick %d, primary's were %d (first) and %d (last): not resumed from a checkpoint", tick2, tick0, tick1)
	}
	out, _ = exec.Command("xl", "list").CombinedOutput()
	t.Logf("xl list:\n%s", out)
}

// TestFallbackPV: the link breaks, the primary starts rebuilding the
// stream-fed replica with a full sync, and its host fails during that
// sync. The standby kept the replica it held before the break (its
// fallback, protocol §7.4) and must resume it: the guest's boot id, its
// tick not reset and at least what it was two commits before the break.
// Without the fallback the standby would have nothing to resume.
func TestFallbackPV(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root in a Xen dom0")
	}
	hvi, err := libxl.Open("xen", nil)
	if err != nil {
		t.Skipf("no Xen here: %v", err)
	}
	hv := hvi.(*xen.Hypervisor)
	defer hv.Close()
	dom, name := createGuest(t, hv)

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ecfg := epoch.Config{Mode: epoch.ModeEpoch, Interval: epoch.Duration(200 * time.Millisecond),
		Timeout: epoch.Duration(10 * time.Second), Heartbeat: epoch.Duration(time.Second), Inflight: 1}
	net, cutLink := cuttableNetwork()
	commits := make(chan uint64, 1024)
	activated := make(chan libxl.DomID, 1)
	var actMsg string
	scfg := checkpoint.StandbyConfig{Epoch: ecfg, Verify: true, Logger: logger.With("side", "standby"),
		Observer: func(o checkpoint.Observation) {
			switch o.Kind {
			case checkpoint.ObsCommit:
				commits <- o.Epoch
			case checkpoint.ObsActivate:
				actMsg = o.Msg
			}
		},
		OnActivate: func(d libxl.DomID, _ libxl.DomainInfo) { activated <- d }}
	standby, err := checkpoint.NewStandby(scfg, hv.Sink(), net, nil)
	if err != nil {
		t.Fatal(err)
	}
	primary, err := checkpoint.NewPrimary(checkpoint.PrimaryConfig{Epoch: ecfg, Domain: dom, Codec: wire.CodecLZ4,
		Logger: logger.With("side", "primary")}, hv.Source(), net, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithCancel(context.Background())
	defer scancel()
	pctx, pcancel := context.WithCancel(context.Background())
	defer pcancel()
	sdone := make(chan error, 1)
	pdone := make(chan error, 1)
	go func() { sdone <- standby.Run(sctx) }()
	go func() { pdone <- primary.Run(pctx) }()
	commit := func(what string) uint64 {
		t.Helper()
		select {
		case e := <-commits:
			return e
		case err := <-sdone:
			t.Fatalf("standby ended waiting for %s: %v", what, err)
		case <-time.After(5 * time.Minute):
			t.Fatalf("no commit for %s in 5 minutes: %+v", what, primary.Status())
		}
		return 0
	}
	for n := 0; n < 5; n++ {
		commit("the first checkpoints")
	}
	boot0, tick0, line := guestStatus(t)
	t.Logf("guest %s before the break: %s", name, line)
	// Two commits after the sample: the fallback holds a later state.
	commit("a checkpoint after the sample")
	commit("a second checkpoint after the sample")

	cutLink()
	tCut := time.Now()
	var fb uint64
	for tick := time.NewTicker(20 * time.Millisecond); fb == 0; <-tick.C {
		if fb = standby.Status().FallbackEpoch; fb == 0 && time.Since(tCut) > 2*time.Minute {
			t.Fatalf("no fallback kept 2 minutes after the break: %+v", standby.Status())
		}
	}
	t.Logf("fallback at epoch %d kept %v after the break; the primary's host fails during the rebuild", fb, time.Since(tCut).Round(time.Millisecond))
	select {
	case e := <-commits:
		if e > fb {
			t.Fatalf("the rebuilt replica committed epoch %d before the failure could be injected", e)
		}
	default:
	}
	pcancel()
	t.Logf("primary driver: %v", <-pdone)
	if err := hv.Source().Destroy(dom); err != nil {
		t.Fatalf("destroying the primary: %v", err)
	}
	tFail := time.Now()
	var rep libxl.DomID
	select {
	case rep = <-activated:
	case err := <-sdone:
		t.Fatalf("standby ended without activating: %v (%+v)", err, standby.Status())
	case <-time.After(3 * time.Minute):
		t.Fatalf("nothing activated 3 minutes after the failure: %+v", standby.Status())
	}
	st := standby.Status()
	id, _ := hv.ReplicaDomid(rep)
	t.Logf("activated %v after the failure: domain %d at epoch %d (%s)", time.Since(tFail).Round(time.Millisecond), id, st.ActivatedEpoch, actMsg)
	if st.ActivatedEpoch != fb {
		t.Errorf("activated at epoch %d, the fallback was at %d", st.ActivatedEpoch, fb)
	}
	if actMsg != "verified" {
		t.Errorf("activation: %q, want the replica's memory verified against the committed digest", actMsg)
	}
	if err := <-sdone; err != nil {
		t.Errorf("standby: %v", err)
	}
	boot1, tick1, line := guestStatus(t)
	t.Logf("resumed guest: %s", line)
	if boot1 != boot0 || tick1 < tick0 {
		t.Errorf("resumed guest boot %s tick %d; before the break boot %s tick %d: not the fallback checkpoint", boot1, tick1, boot0, tick0)
	}
	out, _ := exec.Command("xl", "list").CombinedOutput()
	t.Logf("xl list:\n%s", out)
	if strings.Contains(string(out), "--kemari-") {
		t.Errorf("a replica under restore was left behind:\n%s", out)
	}
}
