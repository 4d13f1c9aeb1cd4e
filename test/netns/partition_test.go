package netns

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xl-kemari/xl-kemari/libxl/sim/svc"
	"github.com/xl-kemari/xl-kemari/netbuf/auto/host"
	"github.com/xl-kemari/xl-kemari/netbuf/netbuftest"
)

// The partition and stall suites (issue 14, point 5). Each trial is a
// fresh topology (partTopo) with a primary and a standby driver, an
// arbiter (none, file: on a directory both share, or a real etcd in its
// own namespace), and a svc client on each side of the LAN's cut point
// doing INCRs without pause. At a seeded random moment one fault is
// injected for a seeded random time, then healed:
//
//   - cut-ps: the replication link and the LAN trunk between the two
//     halves go down (each client stays with its host);
//   - cut-pa, cut-sa: the primary's or the standby's path to the arbiter
//     (etcd: its veth is set down; file: every operation fails while a
//     marker exists, through the backend's fault hook, the file being on
//     no network); in half of them (seeded) the primary/standby cut
//     follows part way through, so that only one side can ask;
//   - cut-all: all three at once;
//   - stop-p, stop-s: SIGSTOP of the primary or the standby process for
//     2 to 5 timeouts, then SIGCONT.
//
// Each trial then requires the service to answer both clients again, and
// checks three things, any one failing the trial:
//
//   - two hosts answering: a service reply of the guest's MAC leaves the
//     primary's host (captured on its switch port) after one has left the
//     standby's (the standby's vif is down until it activates);
//   - I4, from the drivers' own observations: once the standby reports
//     "activate", the primary neither releases held output nor is in
//     state "unprotected" (its output flowing) — the wall-clock form of
//     the harness's continuous check (checkpoint/checkpointtest's
//     verifier), both drivers running on this one clock;
//   - no acknowledged write lost: svc.Check over both clients' records.
//
// Every trial's seed derives from KEMARI_PARTITION_SEED (random if
// unset, printed) and the trial's name; a failing trial prints the
// command that reruns it alone with the same seed.

const (
	partInterval = 50 * time.Millisecond
	partTimeout  = 200 * time.Millisecond
	// partTrials per arbiter kind in TestPartition (≥ 50, a multiple of
	// the four cuts); stallTrials per arbiter setting in TestStall.
	partTrials  = 52
	stallTrials = 50
)

var (
	clientMACp = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0xff, 0x01}
	clientMACs = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0xff, 0x02}
)

// parallelTrials bounds the trials in flight: each runs two drivers and
// two clients, and the machine has few cores.
var parallelTrials = make(chan struct{}, 4)

// baseSeed is KEMARI_PARTITION_SEED, or a random one, logged once.
var baseSeed = sync.OnceValue(func() uint64 {
	if s := os.Getenv("KEMARI_PARTITION_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			panic(fmt.Sprintf("KEMARI_PARTITION_SEED=%q: %v", s, err))
		}
		return v
	}
	return rand.Uint64()
})

func trialSeed(name string) uint64 {
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], baseSeed())
	h.Write(b[:])
	h.Write([]byte(name))
	return h.Sum64()
}

// partTopo is the topology of one trial: the package's, with the LAN in
// two halves joined by a trunk, a client on each half, and, for etcd, a
// link from the primary's dom0 and the standby's driver to the arbiter's
// namespace.
//
//	cP ── lanP ══ trunk ══ lanS ── cS
//	       │                │
//	       P ── rep0 ────── S
//	       └ arbP ─ arbiter ─ arbS ┘ (etcd only)
type partTopo struct {
	sw, p, s, gp, gs, cp, cs string
	arb                      string // the arbiter's namespace, "" for none
	arbP, arbS               string // their ports in arb
	arbAddrP, arbAddrS       string
}

var partSeq atomic.Int32

func newPartTopo(t *testing.T, arbNS string) *partTopo {
	t.Helper()
	n := partSeq.Add(1)
	pre := fmt.Sprintf("xlkp%d-%d", os.Getpid(), n)
	tp := &partTopo{sw: pre + "sw", p: pre + "p", s: pre + "s", gp: pre + "gp", gs: pre + "gs", cp: pre + "cp", cs: pre + "cs", arb: arbNS}
	addNamespaces(t, tp.sw, tp.p, tp.s, tp.gp, tp.gs, tp.cp, tp.cs)
	// The switch forgets a MAC after 1 s unheard, as a real one does
	// after minutes: once a cut between its halves heals, the half where
	// the guest was last heard floods to it again, rather than keeping it
	// behind the fenced primary's port until the replica talks across.
	for _, br := range []string{"lanP", "lanS"} {
		ip(t, tp.sw, "link", "add", br, "type", "bridge", "ageing_time", "100")
		ip(t, tp.sw, "link", "set", br, "up")
	}
	ip(t, tp.sw, "link", "add", "tkP", "type", "veth", "peer", "name", "tkS")
	ip(t, tp.sw, "link", "set", "tkP", "master", "lanP", "up")
	ip(t, tp.sw, "link", "set", "tkS", "master", "lanS", "up")
	dom0Pair(t, tp.sw, "lanP", "lanS", tp.p, tp.s, tp.gp, tp.gs)
	addClient(t, tp.sw, "lanP", "toCp", tp.cp, clientMACp, "192.0.2.100/24", "2001:db8::100/64")
	addClient(t, tp.sw, "lanS", "toCs", tp.cs, clientMACs, "192.0.2.101/24", "2001:db8::101/64")
	if arbNS != "" {
		// The standby's driver runs in its guest's namespace (see
		// internal/driver), so its arbiter link ends there; the primary's
		// in its dom0.
		tp.arbP, tp.arbS = fmt.Sprintf("a%dp", n), fmt.Sprintf("a%ds", n)
		// At most a few trials at once: addresses may repeat after 100.
		tp.arbAddrP = fmt.Sprintf("203.0.113.%d", 10+2*(n%100))
		tp.arbAddrS = fmt.Sprintf("203.0.113.%d", 11+2*(n%100))
		for _, l := range [][3]string{{tp.p, tp.arbP, tp.arbAddrP}, {tp.gs, tp.arbS, tp.arbAddrS}} {
			ip(t, arbNS, "link", "add", l[1], "type", "veth", "peer", "name", "arb0", "netns", l[0])
			t.Cleanup(func() { _, _ = host.Run("", "ip", "-n", arbNS, "link", "del", l[1]) })
			ip(t, arbNS, "link", "set", l[1], "master", "arbbr", "up")
			ip(t, l[0], "addr", "add", l[2]+"/24", "dev", "arb0")
			ip(t, l[0], "link", "set", "arb0", "up")
		}
		netbuftest.WaitOperUp(t, tp.p, "arb0")
	}
	netbuftest.WaitOperUp(t, tp.sw, "lanP", "lanS", "tkP", "tkS", "toP", "toS", "toCp", "toCs")
	waitDom0Pair(t, tp.p, tp.s, tp.gp)
	netbuftest.WaitOperUp(t, tp.cp, "eth0")
	netbuftest.WaitOperUp(t, tp.cs, "eth0")
	return tp
}

// etcdNS is a namespace with one etcd member listening on 203.0.113.1,
// the arbiter of every etcd trial of a test.
type etcdNS struct {
	ns       string
	endpoint string
}

func startEtcdNS(t *testing.T) *etcdNS {
	t.Helper()
	bin := os.Getenv("ETCD")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("etcd"); err != nil {
			t.Skip("no etcd binary (install Debian's etcd-server package, or set ETCD): the etcd partition trials are not run")
		}
	}
	e := &etcdNS{ns: fmt.Sprintf("xlkp%d-arb", os.Getpid()), endpoint: "203.0.113.1:2379"}
	t.Cleanup(func() { _, _ = host.Run("", "ip", "netns", "del", e.ns) })
	for _, argv := range [][]string{
		{"ip", "netns", "add", e.ns},
		{"ip", "-n", e.ns, "link", "set", "lo", "up"},
		{"ip", "-n", e.ns, "link", "add", "arbbr", "type", "bridge"},
		{"ip", "-n", e.ns, "addr", "add", "203.0.113.1/24", "dev", "arbbr"},
		{"ip", "-n", e.ns, "link", "set", "arbbr", "up"},
	} {
		if _, err := host.Run("", argv...); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	logf, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	client, peer := "http://"+e.endpoint, "http://127.0.0.1:2380"
	cmd := exec.Command("ip", "netns", "exec", e.ns, bin, "--name=kemari-part", "--data-dir="+filepath.Join(dir, "data"),
		"--listen-client-urls="+client, "--advertise-client-urls="+client,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
		"--initial-cluster=kemari-part="+peer, "--initial-cluster-state=new",
		"--heartbeat-interval=50", "--election-timeout=250", "--logger=zap", "--log-level=warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM) // ip netns exec execs etcd: this is etcd's pid
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("etcd log:\n%s", b)
		}
	})
	// Ready when /health answers, asked from inside the namespace.
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := host.InNetNS(path(e.ns), func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := hc.Get(client + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return e
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("etcd exited:\n%s", b)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd not healthy at %s: %v", client, err)
		}
	}
}

// trial is one seeded fault injection.
type trial struct {
	arb   string // "none", "file", "etcd"
	fault string // cut-ps, cut-pa, cut-sa, cut-all, stop-p, stop-s
	etcd  *etcdNS
}

// loadClient is a svc client in one client namespace, INCRing until
// stopped.
type loadClient struct {
	name string
	cl   *svc.Client
	rec  *svc.Recorder
	wg   sync.WaitGroup
}

func startLoad(t *testing.T, ctx context.Context, name, ns string, id uint64) *loadClient {
	lc := &loadClient{name: name, rec: svc.NewRecorder(nil)}
	if err := host.InNetNS(path(ns), func() error {
		var err error
		lc.cl, err = svc.NewClient(netip.AddrPortFrom(guest4, svcPort).String(), id)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	lc.cl.SetTryTimeout(4 * partInterval)
	lc.cl.SetRecorder(lc.rec)
	lc.wg.Add(1)
	go func() {
		defer lc.wg.Done()
		for ctx.Err() == nil {
			_, _ = lc.cl.Do(ctx, svc.Request{Op: svc.OpIncr})
		}
	}()
	t.Cleanup(func() { lc.wg.Wait(); lc.cl.Close() })
	return lc
}

// ackedAfter reports whether a request sent after t0 was acknowledged.
func (lc *loadClient) ackedAfter(t0 time.Time) bool {
	for _, r := range lc.rec.Records() {
		if r.Acked && r.Sent.After(t0) {
			return true
		}
	}
	return false
}

// svcReply reports whether f is a UDP datagram from the guest's service
// port: an answer of the service (not the guest kernel's ICMP, which a
// fenced guest's namespace may still send).
func svcReply(f []byte) bool {
	if len(f) < 14+20+8 || net.HardwareAddr(f[6:12]).String() != guestMAC.String() || binary.BigEndian.Uint16(f[12:14]) != 0x0800 {
		return false
	}
	ihl := int(f[14]&0x0f) * 4
	if f[14+9] != 17 || len(f) < 14+ihl+8 {
		return false
	}
	return binary.BigEndian.Uint16(f[14+ihl:]) == svcPort
}

func (tr trial) run(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, seed^0x6b656d617269))
	drv := buildDriver(t)
	tmp := t.TempDir()
	arbNS := ""
	if tr.arb == "etcd" {
		arbNS = tr.etcd.ns
	}
	tp := newPartTopo(t, arbNS)
	common := []string{"-interval", partInterval.String(), "-timeout", partTimeout.String(), "-vif", "vif1.0"}
	var pArb, sArb []string
	cutP, cutS := filepath.Join(tmp, "cut-primary"), filepath.Join(tmp, "cut-standby")
	switch tr.arb {
	case "file":
		dir := filepath.Join(tmp, "arbiter")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		pArb = []string{"-arbiter", "file:" + dir, "-arbiter-cut", cutP}
		sArb = []string{"-arbiter", "file:" + dir, "-arbiter-cut", cutS}
	case "etcd":
		spec := fmt.Sprintf("etcd://%s/xlk-partition/%d-%s", tr.etcd.endpoint, os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-"))
		pArb, sArb = []string{"-arbiter", spec}, []string{"-arbiter", spec}
	}
	standby := startDriver(t, "standby", tmp, append(append([]string{"ip", "netns", "exec", tp.gs, drv, "standby",
		"-dom0-ns", path(tp.s), "-guest-if", "eth0", "-listen", "198.51.100.2:7001"}, common...), sArb...)...)
	standby.await(t, "ready")
	primary := startDriver(t, "primary", tmp, append(append([]string{"ip", "netns", "exec", tp.p, drv, "primary", "-netbuf", "auto",
		"-dom0-ns", path(tp.p), "-guest-ns", path(tp.gp), "-bridge", "xenbr0", "-mac", guestMAC.String(),
		"-listen", netip.AddrPortFrom(guest4, svcPort).String(), "-peer", "198.51.100.2:7001"}, common...), pArb...)...)
	// A stopped driver takes no SIGTERM: whatever happens, continue both
	// before their cleanup runs (registered later, so it runs first).
	t.Cleanup(func() {
		_ = primary.cmd.Process.Signal(syscall.SIGCONT)
		_ = standby.cmd.Process.Signal(syscall.SIGCONT)
	})
	primary.await(t, "release")
	capP, capS := openCapture(t, path(tp.sw), "toP"), openCapture(t, path(tp.sw), "toS")
	ctx, cancel := context.WithCancel(t.Context())
	lp := startLoad(t, ctx, "client-P", tp.cp, 1)
	ls := startLoad(t, ctx, "client-S", tp.cs, 2)
	t.Cleanup(cancel)

	// The fault, at a random moment, for a random time.
	wait := time.Duration(rng.Int64N(int64(12 * partInterval)))
	var hold time.Duration
	if strings.HasPrefix(tr.fault, "stop-") {
		hold = 2*partTimeout + time.Duration(rng.Int64N(int64(3*partTimeout)))
	} else {
		// Shorter than the timeout too: a cut that heals before anyone
		// notices must not break anything either.
		hold = partTimeout/2 + time.Duration(rng.Int64N(int64(8*partTimeout)))
	}
	// Half of the arbiter cuts are joined, part way through, by a cut
	// between primary and standby: then only one of them can reach the
	// arbiter, and it must be the one that goes on.
	var then time.Duration
	if (tr.fault == "cut-pa" || tr.fault == "cut-sa") && rng.IntN(2) == 0 {
		then = time.Duration(rng.Int64N(int64(hold/2))) + 1
	}
	t.Logf("seed %d: %s, arbiter %s, fault after %v for %v; primary/standby cut too after %v (0: no)", seed, tr.fault, tr.arb, wait, hold, then)
	<-time.After(wait)
	link := func(ns, dev, state string) {
		if _, err := host.Run("", "ip", "-n", ns, "link", "set", dev, state); err != nil {
			t.Error(err)
		}
	}
	marker := func(p string, on bool) {
		if on {
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				t.Error(err)
			}
		} else if err := os.Remove(p); err != nil {
			t.Error(err)
		}
	}
	cutArb := func(side string, on bool) {
		state := map[bool]string{true: "down", false: "up"}[on]
		switch {
		case tr.arb == "etcd" && side == "p":
			link(tr.etcd.ns, tp.arbP, state)
		case tr.arb == "etcd":
			link(tr.etcd.ns, tp.arbS, state)
		case tr.arb == "file" && side == "p":
			marker(cutP, on)
		case tr.arb == "file":
			marker(cutS, on)
		}
	}
	cutPS := func(on bool) {
		state := map[bool]string{true: "down", false: "up"}[on]
		link(tp.p, "rep0", state)
		link(tp.sw, "tkP", state)
	}
	apply := func(on bool) {
		switch tr.fault {
		case "cut-ps":
			cutPS(on)
		case "cut-pa":
			cutArb("p", on)
		case "cut-sa":
			cutArb("s", on)
		case "cut-all":
			cutPS(on)
			cutArb("p", on)
			cutArb("s", on)
		case "stop-p", "stop-s":
			target := primary
			if tr.fault == "stop-s" {
				target = standby
			}
			sig := syscall.SIGSTOP
			if !on {
				sig = syscall.SIGCONT
			}
			if err := target.cmd.Process.Signal(sig); err != nil {
				t.Error(err)
			}
		}
	}
	faultAt := time.Now()
	apply(true)
	if then > 0 {
		<-time.After(then)
		cutPS(true)
		<-time.After(hold - then)
		cutPS(false)
	} else {
		<-time.After(hold)
	}
	apply(false)
	healed := time.Now()

	// Service again on both sides, within a bound far above any timeout
	// (an arbiter's retry is 1 s): not a timing assertion, a trial where
	// nobody answers after the heal proves nothing and fails.
	live := func() bool {
		deadline := time.After(20 * time.Second)
		for !lp.ackedAfter(healed) || !ls.ackedAfter(healed) {
			select {
			case <-deadline:
				return false
			case <-time.After(20 * time.Millisecond):
			}
		}
		return true
	}()
	if live {
		// A little more load after the heal, as long as the fault lasted.
		<-time.After(min(hold, 200*time.Millisecond))
	} else {
		t.Errorf("seed %d: liveness: no answer after the heal within 20 s (client-P %v, client-S %v)\n%s",
			seed, lp.ackedAfter(healed), ls.ackedAfter(healed), reproduce(t))
	}
	cancel()
	lp.wg.Wait()
	ls.wg.Wait()
	end := time.Now()

	var violations []string
	// Two hosts answering, on the wire.
	fsP, _ := capP.snapshot()
	fsS, _ := capS.snapshot()
	var sFirst time.Time
	for _, f := range fsS {
		if !f.Out && svcReply(f.Data) {
			sFirst = f.Time
			break
		}
	}
	if !sFirst.IsZero() {
		n := 0
		var first time.Time
		for _, f := range fsP {
			if !f.Out && svcReply(f.Data) && f.Time.After(sFirst) {
				if n == 0 {
					first = f.Time
				}
				n++
			}
		}
		if n > 0 {
			violations = append(violations, fmt.Sprintf("two hosts answering: %d service replies left the primary's host from %v after the standby's host first answered (%v after the fault)",
				n, first.Sub(sFirst).Round(time.Millisecond), sFirst.Sub(faultAt).Round(time.Millisecond)))
		}
	}
	// I4 from the observations.
	if act := standby.times("activate"); len(act) > 0 {
		ta := act[0]
		primary.mu.Lock()
		var rels []event
		for _, e := range primary.events {
			if e.Kind == "release" {
				rels = append(rels, e)
			}
		}
		primary.mu.Unlock()
		// Held output of an epoch the replica resumed at or after (its
		// ACK read, the release begun, before the primary stopped) is the
		// replica's own past, not a second copy answering: as in the
		// harness verifier (checkpointtest), only a later epoch counts.
		se := standbyEpoch(standby)
		for _, r := range rels {
			if t := time.Unix(0, r.T); t.After(ta) && r.Epoch > se {
				violations = append(violations, fmt.Sprintf("I4: the primary released output (epoch %d) %v after the standby activated (at epoch %d); the primary's events from 100 ms before:%s",
					r.Epoch, t.Sub(ta).Round(time.Millisecond), se, eventsFrom(primary, ta.Add(-100*time.Millisecond), ta)))
				break
			}
		}
		// The primary's states in order: was it "unprotected" at any
		// moment after ta?
		primary.mu.Lock()
		var states []event
		for _, e := range primary.events {
			if e.Kind == "state" {
				states = append(states, e)
			}
		}
		primary.mu.Unlock()
		for i, e := range states {
			if e.Msg != "unprotected" {
				continue
			}
			from, until := time.Unix(0, e.T), end
			if i+1 < len(states) {
				until = time.Unix(0, states[i+1].T)
			}
			if until.After(ta) {
				violations = append(violations, fmt.Sprintf("I4: the primary's output flowed (unprotected from %v to %v, the activation at 0) while the replica ran",
					from.Sub(ta).Round(time.Millisecond), until.Sub(ta).Round(time.Millisecond)))
				break
			}
		}
		// The replica runs: the primary's copy must be gone, fenced by
		// the arbiter's refusal or the standby's word (protocol §7.7),
		// not left alive, holding output, beside it. Still asking an
		// arbiter it cannot reach yet (output held) is on its way there:
		// the refusal fences it.
		if n := len(states); n > 0 && states[n-1].Msg != "fenced" && !(tr.arb != "none" && states[n-1].Msg == "arbitrating") {
			violations = append(violations, fmt.Sprintf("the primary's guest still lives (state %s at the end) after the standby activated: never fenced", states[n-1].Msg))
		}
	}
	// No acknowledged write lost.
	recs := append(lp.rec.Records(), ls.rec.Records()...)
	sum, err := svc.Check(recs)
	if err != nil {
		violations = append(violations, fmt.Sprintf("acknowledged writes lost or rolled back: %v", err))
	}
	outcome := "no failover"
	if act := standby.times("activate"); len(act) > 0 {
		outcome = "standby activated " + act[0].Sub(faultAt).Round(time.Millisecond).String() + " after the fault"
	}
	t.Logf("%s; %d acked, counter %d, trial %v", outcome, sum.Acked, sum.MaxCounter, end.Sub(faultAt).Round(time.Millisecond))
	tallies.add(strings.Split(t.Name(), "/")[0]+"/"+tr.arb+"/"+tr.fault, len(standby.times("activate")) > 0, len(violations) > 0)
	if len(violations) > 0 {
		t.Errorf("seed %d: %s with arbiter %s: %d violation(s):\n  %s\n%s",
			seed, tr.fault, tr.arb, len(violations), strings.Join(violations, "\n  "), reproduce(t))
	}
}

// reproduce is the command that reruns this trial alone, same seed.
func reproduce(t *testing.T) string {
	return fmt.Sprintf("reproduce: KEMARI_PARTITION_SEED=%d go test ./test/netns -run '^%s$' -partition -v",
		baseSeed(), strings.ReplaceAll(t.Name(), "/", "$/^"))
}

// tallies counts trials and violating trials per arbiter/fault, logged
// at the end of each suite.
type tally struct {
	sync.Mutex
	n, failover, bad map[string]int
}

var tallies = &tally{n: map[string]int{}, failover: map[string]int{}, bad: map[string]int{}}

func (tl *tally) add(k string, failover, bad bool) {
	tl.Lock()
	defer tl.Unlock()
	tl.n[k]++
	if failover {
		tl.failover[k]++
	}
	if bad {
		tl.bad[k]++
	}
}

func logTallies(t *testing.T, prefix string) {
	tallies.Lock()
	defer tallies.Unlock()
	for k, n := range tallies.n {
		if strings.HasPrefix(k, prefix) {
			t.Logf("%-28s %3d trials, %3d with the replica activated, %3d with violations", k, n, tallies.failover[k], tallies.bad[k])
		}
	}
}

// runTrials runs n trials of tr under t/ARBITER, the faults in turn, at
// most cap(parallelTrials) at once: each in its own goroutine, since
// t.Parallel would be bounded by -parallel (GOMAXPROCS, here 2) and the
// trials wait mostly on timeouts, not on a core.
func runTrials(t *testing.T, tr trial, faults []string, n int) {
	t.Run(tr.arb, func(t *testing.T) {
		t.Cleanup(func() { logTallies(t, strings.Split(t.Name(), "/")[0]+"/"+tr.arb+"/") })
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			tr := tr
			tr.fault = faults[i%len(faults)]
			name := fmt.Sprintf("%02d-%s", i, tr.fault)
			parallelTrials <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-parallelTrials }()
				t.Run(name, func(t *testing.T) { tr.run(t, trialSeed(t.Name())) })
			}()
		}
		wg.Wait()
	})
}

// partition runs the suites: make test runs them in a go test of their
// own (-partition), not inside go test ./..., whose other packages would
// share the cores with 200 ms timeouts.
var partition = flag.Bool("partition", false, "run TestPartition and TestStall (make test does)")

func requirePartitionSuite(t *testing.T) {
	if !*partition {
		t.Skip("the partition and stall suites run with -partition (make test: go test ./test/netns -run 'TestPartition|TestStall' -partition)")
	}
	netbuftest.RequireRoot(t)
	t.Logf("KEMARI_PARTITION_SEED=%d", baseSeed())
	t.Cleanup(func() {
		if left := leftovers("xlkp"); len(left) > 0 {
			t.Errorf("namespaces left behind: %v", left)
		}
	})
}

// TestPartition: partTrials trials per arbiter kind, the four cuts in
// turn, each at a seeded moment for a seeded time. With an arbiter every
// one must end with 0 violations.
func TestPartition(t *testing.T) {
	requirePartitionSuite(t)
	cuts := []string{"cut-ps", "cut-pa", "cut-sa", "cut-all"}
	runTrials(t, trial{arb: "file"}, cuts, partTrials)
	t.Run("etcd-arbiter", func(t *testing.T) {
		e := startEtcdNS(t)
		runTrials(t, trial{arb: "etcd", etcd: e}, cuts, partTrials)
	})
}

// TestStall: SIGSTOP/SIGCONT of the primary or the standby for longer
// than the timeout. With an arbiter, 0 violations. Without one, every
// stall here is detectable (issue 14, point 2: the stalled process's own
// clock shows a gap longer than the timeout, and the replication link is
// whole), so it too must end with 0 violations: a resumed primary fences
// itself or resyncs, a resumed standby does not activate behind a primary
// that went on.
func TestStall(t *testing.T) {
	requirePartitionSuite(t)
	stalls := []string{"stop-p", "stop-s"}
	runTrials(t, trial{arb: "file"}, stalls, stallTrials)
	runTrials(t, trial{arb: "none"}, stalls, stallTrials)
}

// standbyEpoch is the epoch the standby activated at, from its
// observations (0: none).
func standbyEpoch(s *proc) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.events {
		if e.Kind == "activate" {
			return e.Epoch
		}
	}
	return 0
}

// eventsFrom lists p's events from t on, times relative to ref.
func eventsFrom(p *proc, t, ref time.Time) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for _, e := range p.events {
		if et := time.Unix(0, e.T); !et.Before(t) {
			fmt.Fprintf(&b, "\n    %+v %s %d %s", et.Sub(ref).Round(time.Millisecond), e.Kind, e.Epoch, e.Msg)
		}
	}
	return b.String()
}
