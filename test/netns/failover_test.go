package netns

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/xl-kemari/xl-kemari/libxl/sim/svc"
	"github.com/xl-kemari/xl-kemari/netbuf/announce"
	"github.com/xl-kemari/xl-kemari/netbuf/auto"
	"github.com/xl-kemari/xl-kemari/netbuf/auto/host"
	"github.com/xl-kemari/xl-kemari/netbuf/netbuftest"
)

const (
	interval = 100 * time.Millisecond // long next to a round trip here (~100 µs)
	timeout  = 500 * time.Millisecond
	rounds   = 12
	// bound is how long any reply may take: far above an epoch, far
	// below the test's budget. Not a timing assertion: a missing reply
	// fails the test either way.
	bound = 10 * time.Second
)

// event is one JSON line of a driver.
type event struct {
	T     int64  `json:"t"`
	Kind  string `json:"kind"`
	Epoch uint64 `json:"epoch"`
	Msg   string `json:"msg"`
}

// proc is a driver process and the events it printed.
type proc struct {
	name string
	cmd  *exec.Cmd

	mu     sync.Mutex
	events []event
	change chan struct{}
	exited chan struct{}
}

func startDriver(t *testing.T, name, logDir string, argv ...string) *proc {
	t.Helper()
	p := &proc{name: name, change: make(chan struct{}), exited: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	logf, err := os.Create(filepath.Join(logDir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = logf
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Only this process, by its pid.
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("%s log:\n%s", name, b)
		}
	})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var e event
			if json.Unmarshal(sc.Bytes(), &e) != nil {
				continue
			}
			p.mu.Lock()
			p.events = append(p.events, e)
			close(p.change)
			p.change = make(chan struct{})
			p.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	return p
}

// await blocks until an event of kind arrives and returns it.
func (p *proc) await(t *testing.T, kind string) event {
	t.Helper()
	return p.awaitFunc(t, fmt.Sprintf("%q", kind), func(e event) bool { return e.Kind == kind })
}

// awaitFunc blocks until an event for which match holds arrives.
func (p *proc) awaitFunc(t *testing.T, what string, match func(event) bool) event {
	t.Helper()
	timer := time.NewTimer(60 * time.Second)
	defer timer.Stop()
	for {
		p.mu.Lock()
		evs, ch := p.events, p.change
		p.mu.Unlock()
		for _, e := range evs {
			if match(e) {
				return e
			}
		}
		select {
		case <-ch:
		case <-p.exited:
			t.Fatalf("%s exited before %s", p.name, what)
		case <-timer.C:
			t.Fatalf("%s: no %s within 60s", p.name, what)
		}
	}
}

func (p *proc) times(kind string) []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []time.Time
	for _, e := range p.events {
		if e.Kind == kind {
			out = append(out, time.Unix(0, e.T))
		}
	}
	return out
}

// client is the test's side of the wire: a service client and raw probes
// in the client namespace.
type client struct {
	t     *testing.T
	ns    string
	svc   *svc.Client
	link  *packet.Conn
	icmp4 *icmp.PacketConn
	icmp6 *icmp.PacketConn
	n     int
}

func newClient(t *testing.T, ns string) *client {
	c := &client{t: t, ns: path(ns)}
	err := host.InNetNS(c.ns, func() error {
		var err error
		if c.svc, err = svc.NewClient(netip.AddrPortFrom(guest4, svcPort).String(), 1); err != nil {
			return err
		}
		if c.icmp4, err = icmp.ListenPacket("ip4:icmp", client4.String()); err != nil {
			return err
		}
		if c.icmp6, err = icmp.ListenPacket("ip6:ipv6-icmp", client6.String()); err != nil {
			return err
		}
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		c.link, err = packet.Listen(ifi, packet.Raw, 0, nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.svc.Close(); c.icmp4.Close(); c.icmp6.Close(); c.link.Close() })
	c.svc.SetTryTimeout(interval * 3)
	return c
}

// probe sends one request in each raw protocol (ARP, ICMP echo, ICMPv6
// echo, TCP SYN to a closed port) and returns the keys of their replies.
func (c *client) probe() []string {
	t := c.t
	c.n++
	n := c.n
	arp := announce.GARP(clientMAC, guest4, 1) // reshaped below into a who-has
	copy(arp[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	spa := netip.AddrFrom4([4]byte{192, 0, 2, byte(arpFirst + n)}).As4()
	copy(arp[14+14:], spa[:])
	tpa := guest4.As4()
	copy(arp[14+24:], tpa[:])
	if _, err := c.link.WriteTo(arp, &packet.Addr{HardwareAddr: arp[:6]}); err != nil {
		t.Fatal(err)
	}
	echo := func(pc *icmp.PacketConn, typ icmp.Type, dst netip.Addr) {
		m := icmp.Message{Type: typ, Body: &icmp.Echo{ID: icmpID, Seq: n, Data: []byte("xl-kemari")}}
		b, err := m.Marshal(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pc.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			t.Fatal(err)
		}
	}
	echo(c.icmp4, ipv4.ICMPTypeEcho, guest4)
	echo(c.icmp6, ipv6.ICMPTypeEchoRequest, guest6)
	var port int
	done := make(chan struct{})
	err := host.InNetNS(c.ns, func() error {
		// A non-blocking connect: the SYN leaves now; the RST comes when
		// the guest's epoch is released. The socket is closed with the
		// round.
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := syscall.Connect(fd, &syscall.SockaddrInet4{Port: tcpPort, Addr: guest4.As4()}); err != syscall.EINPROGRESS {
			syscall.Close(fd)
			return fmt.Errorf("connect: %v", err)
		}
		sa, err := syscall.Getsockname(fd)
		if err != nil {
			syscall.Close(fd)
			return err
		}
		port = sa.(*syscall.SockaddrInet4).Port
		c.t.Cleanup(func() { syscall.Close(fd) })
		close(done)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	<-done
	return []string{fmt.Sprintf("arp/%d", n), fmt.Sprintf("icmp/%d", n), fmt.Sprintf("icmp6/%d", n), fmt.Sprintf("tcp/%d", port)}
}

// request sends one INCR and returns its key once answered.
func (c *client) request(ctx context.Context) (string, error) {
	rep, err := c.svc.Do(ctx, svc.Request{Op: svc.OpIncr})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("udp/%d/%d", rep.Client, rep.Seq), nil
}

// run is one replicated guest in a fresh topology, protected and probed.
type run struct {
	tp               *topo
	standby, primary *proc
	capt, sw         *capture
	cl               *client
	rec              *svc.Recorder
	ctx              context.Context
}

// start builds the namespaces and drivers with the netbuf mode and waits
// until the guest is protected. The driver is built once per test binary.
func start(t *testing.T, mode string) *run {
	netbuftest.RequireRoot(t)
	// Registered first, so it runs after every other cleanup.
	t.Cleanup(func() {
		if left := leftovers("xlke"); len(left) > 0 {
			t.Errorf("namespaces left behind: %v", left)
		}
	})
	drv := buildDriver(t)
	tmp := t.TempDir()
	r := &run{tp: newTopo(t)}
	tp := r.tp
	if _, err := auto.Select(auto.Options{Mode: mode, Unsafe: mode == "none", NetNS: path(tp.p)}); err != nil {
		t.Skipf("no kernel output buffer on this host: %v", err)
	}
	common := []string{"-interval", interval.String(), "-timeout", timeout.String(), "-vif", "vif1.0"}
	r.standby = startDriver(t, "standby", tmp, append([]string{"ip", "netns", "exec", tp.gs, drv, "standby",
		"-dom0-ns", path(tp.s), "-guest-if", "eth0", "-listen", "198.51.100.2:7001"}, common...)...)
	r.standby.await(t, "ready")
	r.primary = startDriver(t, "primary", tmp, append([]string{drv, "primary", "-netbuf", mode,
		"-dom0-ns", path(tp.p), "-guest-ns", path(tp.gp), "-bridge", "xenbr0", "-mac", guestMAC.String(),
		"-listen", netip.AddrPortFrom(guest4, svcPort).String(), "-peer", "198.51.100.2:7001"}, common...)...)
	backend := r.primary.await(t, "ready").Msg
	r.primary.await(t, "release") // protected: the first checkpoint was acknowledged
	t.Logf("backend %s; protected", backend)

	r.capt = openCapture(t, path(tp.cli), "eth0")
	r.sw = openCapture(t, path(tp.sw), "toS")
	r.cl = newClient(t, tp.cli)
	r.rec = svc.NewRecorder(nil)
	r.cl.svc.SetRecorder(r.rec)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	r.ctx = ctx
	return r
}

var driver struct {
	once sync.Once
	dir  string
	err  error
}

func buildDriver(t *testing.T) string {
	driver.once.Do(func() {
		driver.dir, driver.err = os.MkdirTemp("", "xlk-netns-driver-")
		if driver.err == nil {
			var out []byte
			out, driver.err = exec.Command("go", "build", "-o", filepath.Join(driver.dir, "driver"), "./internal/driver").CombinedOutput()
			if driver.err != nil {
				driver.err = fmt.Errorf("build driver: %v\n%s", driver.err, out)
			}
		}
	})
	if driver.err != nil {
		t.Fatal(driver.err)
	}
	return filepath.Join(driver.dir, "driver")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if driver.dir != "" {
		os.RemoveAll(driver.dir)
	}
	os.Exit(code)
}

// rounds probes every protocol n times, each round once answered, and
// returns the exchanges and the standby's commit times.
func (r *run) rounds(t *testing.T, n int) ([]Exchange, []time.Time) {
	t.Helper()
	var keys []string
	for i := 0; i < n; i++ {
		round := r.cl.probe()
		k, err := r.cl.request(r.ctx)
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		round = append(round, k)
		if !r.capt.waitFor(bound, func(fs []frame) bool { return answered(fs, round) }) {
			fs, _ := r.capt.snapshot()
			t.Fatalf("round %d: not all answered: %+v", i, exchanges(fs, round))
		}
		keys = append(keys, round...)
	}
	fs, _ := r.capt.snapshot()
	xs := exchanges(fs, keys)
	// The standby's lines reach us through a pipe: once it has reported
	// a commit later than the last reply, every earlier one is in.
	last := fs[len(fs)-1].Time
	r.standby.awaitFunc(t, "a commit after the last reply", func(e event) bool { return e.Kind == "commit" && time.Unix(0, e.T).After(last) })
	return xs, r.standby.times("commit")
}

// TestUnheldOutputIsCaught is the control of the check below: with
// netbuf=none (unsafe) replies leave at once, and CheckCommit must say so
// for nearly all of them. Were it to pass them, the main test would prove
// nothing.
func TestUnheldOutputIsCaught(t *testing.T) {
	r := start(t, "none")
	xs, commits := r.rounds(t, 5)
	err := CheckCommit(xs, commits)
	caught := 0
	if err != nil {
		caught = len(err.(interface{ Unwrap() []error }).Unwrap())
	}
	t.Logf("netbuf=none: %d of %d replies flagged", caught, len(xs))
	if caught < len(xs)/2 {
		t.Errorf("only %d of %d unheld replies flagged: the check cannot see a leak", caught, len(xs))
	}
}

// TestOutputCommitAndFailover is the issue-5 end-to-end test; see the
// package comment.
func TestOutputCommitAndFailover(t *testing.T) {
	r := start(t, "auto")
	standby, primary, capt, sw, cl, rec, ctx := r.standby, r.primary, r.capt, r.sw, r.cl, r.rec, r.ctx

	// Protected phase: every reply must wait for a commit.
	xs, commits := r.rounds(t, rounds)
	if err := CheckCommit(xs, commits); err != nil {
		t.Errorf("output commit (I1) violated:\n%v", err)
	}
	logLatency(t, xs, commits)
	fs, _ := capt.snapshot()

	// Failover: kill the primary, keep asking.
	killed := time.Now()
	if err := primary.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-primary.exited
	mark := len(fs)
	// Probes into the outage: the dead primary's guest may answer them,
	// but its frames must stay in the dead holder's host.
	cl.probe()
	k, err := cl.request(ctx) // retried until the standby answers
	if err != nil {
		t.Fatalf("no answer after the failover: %v", err)
	}
	answeredAt := time.Now()
	act := standby.await(t, "activate")
	standby.await(t, "announced")
	activated := time.Unix(0, act.T)
	t.Logf("standby activated epoch %d (%s) %v after the kill; service answered after %v",
		act.Epoch, act.Msg, activated.Sub(killed).Round(time.Millisecond), answeredAt.Sub(killed).Round(time.Millisecond))
	if act.Msg != "verified" {
		t.Errorf("replica at activation: %s, want verified", act.Msg)
	}
	// Every protocol is answered by the guest on its new host.
	after := cl.probe()
	k2, err := cl.request(ctx)
	if err != nil {
		t.Fatal(err)
	}
	after = append(after, k, k2)
	if !capt.waitFor(bound, func(fs []frame) bool { return answered(fs, after) }) {
		fs, _ := capt.snapshot()
		t.Errorf("after failover not all answered: %+v", exchanges(fs, after))
	}
	fs, _ = capt.snapshot()
	// Fail closed: between the kill and the activation nothing of the
	// guest's reaches the client. Frames of a release just before the
	// kill may still be on the wire for a moment: 20 ms of grace.
	var announced, early int
	for _, f := range fs[mark:] {
		if f.Out || net.HardwareAddr(f.Data[6:12]).String() != guestMAC.String() {
			continue
		}
		if f.Time.After(killed.Add(20*time.Millisecond)) && f.Time.Before(activated) {
			early++
			t.Errorf("a frame of the guest reached the client %v after the kill, before activation: % x", f.Time.Sub(killed), f.Data[:min(len(f.Data), 42)])
		}
		if isAnnouncement(f.Data) {
			announced++
		}
	}
	if announced == 0 {
		t.Errorf("no gratuitous ARP or unsolicited NA from the guest's MAC reached the client after the failover")
	}
	// The answers came through the standby host's uplink.
	lastKey := after[len(after)-1]
	if !sw.waitFor(bound, func(fs []frame) bool {
		for _, f := range fs {
			if k, rep := classify(f.Data); rep && k == lastKey && !f.Out {
				return true
			}
		}
		return false
	}) {
		t.Errorf("the post-failover reply %s did not come through the standby host", lastKey)
	}
	// A few more requests, then the service's own verdict.
	for i := 0; i < 5; i++ {
		if _, err := cl.request(ctx); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := svc.Check(rec.Records())
	if err != nil {
		t.Errorf("acknowledged requests lost or rolled back: %v", err)
	}
	t.Logf("%d requests acknowledged, counter %d, %d announcement frames, %d commits", sum.Acked, sum.MaxCounter, announced, len(commits))
}

// isAnnouncement reports whether f is a gratuitous ARP or an unsolicited
// neighbour advertisement for the guest.
func isAnnouncement(f []byte) bool {
	for _, a := range [][]byte{announce.GARP(guestMAC, guest4, 1), announce.GARP(guestMAC, guest4, 2), announce.UnsolicitedNA(guestMAC, guest6)} {
		if len(f) >= len(a) && string(f[:len(a)]) == string(a) {
			return true
		}
	}
	return false
}

// logLatency reports, per protocol, how long replies took and how long
// after the enabling commit they arrived.
func logLatency(t *testing.T, xs []Exchange, commits []time.Time) {
	type agg struct {
		n         int
		rtt, lead time.Duration
	}
	by := map[string]*agg{}
	sort.Slice(commits, func(i, j int) bool { return commits[i].Before(commits[j]) })
	for _, x := range xs {
		if x.Arrived.IsZero() {
			continue
		}
		proto, _, _ := strings.Cut(x.Key, "/")
		a := by[proto]
		if a == nil {
			a = &agg{}
			by[proto] = a
		}
		a.n++
		a.rtt += x.Arrived.Sub(x.Sent)
		i := sort.Search(len(commits), func(i int) bool { return !commits[i].Before(x.Arrived) })
		if i > 0 {
			a.lead += x.Arrived.Sub(commits[i-1])
		}
	}
	names := make([]string, 0, len(by))
	for k := range by {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		a := by[k]
		t.Logf("%-6s %3d replies, mean round trip %8v, mean arrival after the last commit %8v",
			k, a.n, (a.rtt / time.Duration(a.n)).Round(time.Microsecond), (a.lead / time.Duration(a.n)).Round(time.Microsecond))
	}
}
