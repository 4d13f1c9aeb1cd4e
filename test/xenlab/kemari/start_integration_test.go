//go:build xen && integration

package kemari_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	vnl "github.com/vishvananda/netlink"

	"github.com/xl-kemari/xl-kemari/internal/wirecap"
	"github.com/xl-kemari/xl-kemari/netbuf/auto"
	"github.com/xl-kemari/xl-kemari/netbuf/plug"
	"github.com/xl-kemari/xl-kemari/test/netns"
)

// The lab's addresses (test/xenlab/README.md): dom0 is 192.0.2.1 on
// xenbr0, the guest 192.0.2.100 with its service on port 7.
var (
	labGuest = netip.MustParseAddr("192.0.2.100")
	labDom0  = netip.MustParseAddr("192.0.2.1")
)

const (
	labMAC    = "00:16:3e:00:00:64"
	labBridge = "xenbr0"
	labPort   = 7
	// The protection under test: 100 ms epochs; a 10 s timeout because
	// under TCG on a loaded machine a checkpoint's pause reaches 2 s and
	// its commit 5 s (results/engine-*.log), and a primary that loses its
	// standby stops holding output (it runs unprotected), which would end
	// the property under test.
	e2eInterval = "100ms"
	e2eTimeout  = 10 * time.Second
)

// kemariBin is the xen build of xl-kemari (run.sh puts it in bin/, shared
// at /mnt/host).
func kemariBin() string {
	if b := os.Getenv("KEMARI_BIN"); b != "" {
		return b
	}
	return "/mnt/host/xl-kemari"
}

// runDir holds the control sockets of the processes under test; not in
// the log folder, which may be a 9p share (no sockets there).
var runDir = filepath.Join(os.TempDir(), fmt.Sprintf("kemari-e2e-run-%d", os.Getpid()))

// proc is an xl-kemari process with its --events file.
type proc struct {
	name   string
	cmd    *exec.Cmd
	events string
	done   chan struct{}
	err    error
}

func spawn(t *testing.T, dir, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, events: filepath.Join(dir, name+".jsonl"), done: make(chan struct{})}
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(kemariBin(), append(args, "--events", p.events, "--run-dir", runDir, "--log-level", "debug")...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: pid %d: %s", name, p.cmd.Process.Pid, strings.Join(p.cmd.Args, " "))
	go func() {
		p.err = p.cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			if t.Failed() && os.Getenv("KEMARI_E2E_LOGS") != "" {
				// Where was it? Go dumps every goroutine on SIGQUIT.
				p.cmd.Process.Signal(syscall.SIGQUIT)
				select {
				case <-p.done:
				case <-time.After(10 * time.Second):
				}
				break
			}
			p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(30 * time.Second):
				p.cmd.Process.Kill()
				<-p.done
			}
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, name+".log"))
			t.Logf("%s log:\n%s", name, tail(string(b), 40))
		}
	})
	return p
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

// event is a line of --events (xlkemari/engine.go eventLine).
type event struct {
	T     int64  `json:"t"`
	Kind  string `json:"kind"`
	Epoch uint64 `json:"epoch"`
	State string `json:"state"`
	Msg   string `json:"msg"`
	Pause int64  `json:"pause_ns"`
}

func (p *proc) eventsNow() []event {
	f, err := os.Open(p.events)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			out = append(out, e)
		}
	}
	return out
}

// await polls p's events until match holds for one (the engine writes
// them as they happen; polling the file is the only interface) or bound
// passes. A process that exits first fails the test.
func (p *proc) await(t *testing.T, what string, bound time.Duration, match func(event) bool) event {
	t.Helper()
	deadline := time.NewTimer(bound)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, e := range p.eventsNow() {
			if match(e) {
				return e
			}
		}
		select {
		case <-tick.C:
		case <-p.done:
			for _, e := range p.eventsNow() {
				if match(e) {
					return e
				}
			}
			t.Fatalf("%s exited (%v) before %s", p.name, p.err, what)
		case <-deadline.C:
			t.Fatalf("%s: no %s within %v", p.name, what, bound)
		}
	}
}

func (p *proc) times(kind string) []time.Time {
	var ts []time.Time
	for _, e := range p.eventsNow() {
		if e.Kind == kind {
			ts = append(ts, time.Unix(0, e.T))
		}
	}
	return ts
}

func (p *proc) wait(t *testing.T, bound time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(bound):
		t.Fatalf("%s still runs after %v", p.name, bound)
		return nil
	}
}

// vmHWM is a running process's peak resident memory.
func vmHWM(p *proc) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

// serviceRE parses the guest's status line. Its tick can be empty: the
// guest's ticker rewrites /state/tick (truncate, then write) while the
// service may read it.
var serviceRE = regexp.MustCompile(`boot=(\S+) tick=(\d*) hits=(\d+)`)

type answer struct {
	boot       string
	tick, hits int
}

// ask makes one request to the guest's service: connect, send an empty
// line, read the status line.
func ask(ctx context.Context) (answer, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp4", netip.AddrPortFrom(labGuest, labPort).String())
	if err != nil {
		return answer{}, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if _, err := c.Write([]byte("\n")); err != nil {
		return answer{}, err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return answer{}, fmt.Errorf("reading the answer: %w (got %q)", err, line)
	}
	m := serviceRE.FindStringSubmatch(line)
	if m == nil {
		return answer{}, fmt.Errorf("unexpected answer %q", line)
	}
	a := answer{boot: m[1]}
	a.tick, _ = strconv.Atoi(m[2])
	a.hits, _ = strconv.Atoi(m[3])
	return a, nil
}

// askUntil retries ask until it succeeds or bound passes.
func askUntil(t *testing.T, bound time.Duration) answer {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		a, err := ask(ctx)
		cancel()
		if err == nil {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guest's service does not answer within %v: %v", bound, err)
		}
		<-time.After(250 * time.Millisecond) // retry pacing, not a settle wait
	}
}

// tcpFrame is the part of a captured IPv4/TCP frame the commit check needs.
type tcpFrame struct {
	src, dst         netip.AddrPort
	seq              uint32
	syn, fin, rst    bool
	payload          int
	fromGuest, toGst bool
}

func parseTCP(b []byte) (tcpFrame, bool) {
	var f tcpFrame
	if len(b) < 14+20 || binary.BigEndian.Uint16(b[12:]) != 0x0800 {
		return f, false
	}
	ip := b[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ip[9] != 6 || len(ip) < ihl+20 {
		return f, false
	}
	total := int(binary.BigEndian.Uint16(ip[2:]))
	src, _ := netip.AddrFromSlice(ip[12:16])
	dst, _ := netip.AddrFromSlice(ip[16:20])
	tcp := ip[ihl:]
	f.src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(tcp[0:]))
	f.dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(tcp[2:]))
	f.seq = binary.BigEndian.Uint32(tcp[4:])
	off := int(tcp[12]>>4) * 4
	f.payload = total - ihl - off
	flags := tcp[13]
	f.fin, f.syn, f.rst = flags&0x01 != 0, flags&0x02 != 0, flags&0x04 != 0
	f.fromGuest = f.src == netip.AddrPortFrom(labGuest, labPort) && dst == labDom0
	f.toGst = f.dst == netip.AddrPortFrom(labGuest, labPort) && src == labDom0
	return f, true
}

// guestExchanges turns the frames of the service's connections captured
// on dom0's bridge port into exchanges for netns.CheckCommit: every frame
// the guest sent is paired with the first transmission of the last thing
// dom0 sent on that connection that could have caused it (its SYN, or new
// payload). That is a lower bound on its true cause: later dom0 frames are
// pure ACKs and FINs, which cause no new output but their own ACK, and
// retransmissions (the guest's answer may be to the first copy, held
// until its epoch's commit while dom0 retransmits) do not count. So the
// check is sound: a guest frame that was held until its epoch's commit
// always has a commit between the two.
func guestExchanges(fs []wirecap.Frame) []netns.Exchange {
	type conn struct {
		cause time.Time
		isn   uint32 // dom0's initial sequence number
		next  uint32 // sequence number after dom0's highest payload
	}
	conns := map[netip.AddrPort]*conn{} // by dom0's port
	var xs []netns.Exchange
	for _, fr := range fs {
		f, ok := parseTCP(fr.Data)
		if !ok {
			continue
		}
		switch {
		case f.toGst && fr.Out && f.syn:
			// A retransmitted SYN repeats the first one's sequence
			// number; a new connection from the same port does not.
			if c := conns[f.src]; c == nil || c.isn != f.seq {
				conns[f.src] = &conn{cause: fr.Time, isn: f.seq, next: f.seq + 1}
			}
		case f.toGst && fr.Out && f.payload > 0:
			c := conns[f.src]
			if c != nil && int32(f.seq+uint32(f.payload)-c.next) > 0 { // new data
				c.cause, c.next = fr.Time, f.seq+uint32(f.payload)
			}
		case f.fromGuest && !fr.Out:
			c := conns[f.dst]
			if c == nil {
				continue // a connection that began before the capture
			}
			sent := c.cause
			kind := "ack"
			switch {
			case f.syn:
				kind = "synack"
			case f.payload > 0:
				kind = "data"
			case f.fin:
				kind = "fin"
			case f.rst:
				kind = "rst"
			}
			xs = append(xs, netns.Exchange{Key: fmt.Sprintf("tcp/%d/%s", f.dst.Port(), kind), Sent: sent, Arrived: fr.Time})
		}
	}
	return xs
}

// requests makes n requests one after another and returns the highest
// hit count the guest answered with (and its boot id).
func requests(t *testing.T, n int) (maxHits int, boot string) {
	t.Helper()
	for i := range n {
		// Generous: on a loaded TCG host the guest runs about a third
		// of the time, and forks slowly.
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		a, err := ask(ctx)
		cancel()
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if boot != "" && a.boot != boot {
			t.Fatalf("request %d: the guest rebooted: boot %s, was %s", i, a.boot, boot)
		}
		boot = a.boot
		maxHits = max(maxHits, a.hits)
	}
	return maxHits, boot
}

// leftovers lists what protection of a domain leaves in dom0 once it has
// ended: plug IFBs (alias xl-kemari:...), ingress qdiscs on the guest's
// vifs, replica domains (<name>--kemari-...).
func leftovers(t *testing.T, vif string) []string {
	t.Helper()
	var out []string
	links, err := vnl.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Alias, plug.AliasTag) {
			out = append(out, "link "+l.Attrs().Name+" ("+l.Attrs().Alias+")")
		}
		if l.Attrs().Name == vif {
			qs, _ := vnl.QdiscList(l)
			for _, q := range qs {
				if q.Type() == "ingress" {
					out = append(out, "ingress qdisc on "+vif)
				}
			}
			fs, _ := vnl.FilterList(l, vnl.HANDLE_MIN_INGRESS)
			if len(fs) > 0 {
				out = append(out, fmt.Sprintf("%d ingress filters on %s", len(fs), vif))
			}
		}
	}
	xl, _ := exec.Command("xl", "list").Output()
	for _, line := range strings.Split(string(xl), "\n") {
		if strings.Contains(line, "--kemari-") {
			out = append(out, "domain "+strings.Fields(line)[0])
		}
	}
	return out
}

// TestStartXen runs `xl-kemari start` and `xl-kemari receive` (TCP on
// loopback: one host, the standby in the same dom0) against the lab's PV
// guest, which has a writable disk:
//
//  1. start refuses the domain for its writable disk, and says how to
//     accept that (disk=none, unsafe=1);
//  2. with plug output buffering, every frame of the guest's service
//     reaches dom0's bridge only after the standby committed an epoch
//     that began after its request (captured on the bridge, against the
//     standby's commit log); `xl-kemari stop` then leaves no replica,
//     IFB, qdisc or process behind;
//  3. the same check on a run with --netbuf=none --unsafe flags most
//     frames: the check can fail;
//  4. protected again with plug, the primary is SIGKILLed and its domain
//     destroyed (a host failure, as far as the standby can tell); the
//     standby activates the replica within the timeout, and the guest
//     answers with the same boot and a hit count above every one a
//     client was answered before the failure.
func TestStartXen(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root in a Xen dom0")
	}
	if _, err := os.Stat("/proc/xen/capabilities"); err != nil {
		t.Skipf("no Xen here: %v", err)
	}
	if _, err := os.Stat(kemariBin()); err != nil {
		t.Skipf("no xl-kemari binary: %v", err)
	}
	tmp := t.TempDir()
	dir := tmp
	name := fmt.Sprintf("kemari-e2e-%d", os.Getpid())
	if d := os.Getenv("KEMARI_E2E_LOGS"); d != "" {
		// Keep the processes' logs and events (dom0.sh: /mnt/out, which
		// is run/host1.out on the machine running the lab, kept across
		// lab boots). Pids repeat from boot to boot and the event logs
		// are appended to, so the directory is named by the time too:
		// a run must never read an earlier run's events.
		dir = filepath.Join(d, name+"-"+time.Now().UTC().Format("20060102T150405"))
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Logf("logs and events in %s", dir)
	}
	disk := filepath.Join(tmp, "xvda.img")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 16<<20); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(tmp, name+".cfg")
	// The lab guest (lab/domu.sh) with its writable disk.
	err := os.WriteFile(cfg, []byte(`name = "`+name+`"
kernel = "/var/lib/xenlab/vmlinuz"
ramdisk = "/var/lib/xenlab/domu-initrd.gz"
extra = "console=hvc0 rdinit=/init quiet xenlab.dirty_mb=8"
memory = 192
vcpus = 1
on_crash = "preserve"
vif = [ "bridge=xenbr0,mac=`+labMAC+`" ]
disk = [ "format=raw,vdev=xvda,access=rw,script=/mnt/lab/block-shared,target=`+disk+`" ]
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("xl", "create", "-q", cfg).CombinedOutput(); err != nil {
		t.Fatalf("xl create: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		exec.Command("xl", "destroy", name).Run()
		// Replicas a killed standby left behind (<name>--kemari-...).
		xl, _ := exec.Command("xl", "list").Output()
		for _, line := range strings.Split(string(xl), "\n") {
			if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], name+"--kemari-") {
				exec.Command("xl", "destroy", f[0]).Run()
			}
		}
		if err := auto.Cleanup(""); err != nil {
			t.Errorf("cleanup of a killed protector's buffers: %v", err)
		}
	})
	// The guest's ARP replies are output too, held until their epoch's
	// commit: with epochs of seconds on a loaded TCG host, dom0's ARP
	// resolution gives up ("no route to host"). The test is about the
	// service's TCP output, so dom0 knows the guest's MAC for good.
	if out, err := exec.Command("ip", "neigh", "replace", labGuest.String(), "lladdr", labMAC, "nud", "permanent", "dev", labBridge).CombinedOutput(); err != nil {
		t.Fatalf("ip neigh: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "neigh", "del", labGuest.String(), "dev", labBridge).Run() })
	a0 := askUntil(t, 4*time.Minute)
	domid, _ := exec.Command("xl", "domid", name).Output()
	vif := "vif" + strings.TrimSpace(string(domid)) + ".0"
	t.Logf("guest %s up: boot %s tick %d hits %d, vif %s", name, a0.boot, a0.tick, a0.hits, vif)

	port := 8011 + os.Getpid()%1000
	peer := fmt.Sprintf("127.0.0.1:%d", port)
	startArgs := func(extra ...string) []string {
		return append([]string{"start", "-F", "--hypervisor=xen", "--transport=tcp", "--insecure-tcp", "--interval=" + e2eInterval,
			"--timeout=" + e2eTimeout.String()}, append(extra, name, peer)...)
	}

	t.Run("WritableDiskRefused", func(t *testing.T) {
		out, err := exec.Command(kemariBin(), startArgs()...).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Fatalf("start on a domain with a writable disk: %v, want exit 3\n%s", err, out)
		}
		for _, want := range []string{disk, "disk=none, unsafe=1"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("the refusal does not mention %q:\n%s", want, out)
			}
		}
		t.Logf("refused: %s", strings.TrimSpace(string(out)))
	})

	// One standby for every run below, as `listen` would be (--stay: a
	// receiver otherwise ends with its primary's stop).
	sb := spawn(t, dir, "standby", "receive", "--hypervisor=xen", "--insecure-tcp", "--listen", peer, "--stay", "--interval="+e2eInterval,
		"--timeout="+e2eTimeout.String())

	// protect starts a primary and waits until it is protected and has
	// committed a few epochs.
	run := 0
	protect := func(t *testing.T, extra ...string) *proc {
		t.Helper()
		run++
		p := spawn(t, dir, fmt.Sprintf("primary%d", run), startArgs(append([]string{"--set=disk=none", "--set=unsafe=1"}, extra...)...)...)
		t0 := time.Now()
		p.await(t, "protected", 5*time.Minute, func(e event) bool { return e.Kind == "state" && e.State == "protected" })
		t.Logf("protected after %v", time.Since(t0).Round(time.Millisecond))
		return p
	}
	// commitChecked makes n requests under capture and returns the
	// commit check's verdict, with how many guest frames it judged.
	commitChecked := func(t *testing.T, p *proc, n int) (maxHits int, boot string, frames int, err error) {
		t.Helper()
		c, cerr := wirecap.Open("", labBridge)
		if cerr != nil {
			t.Fatal(cerr)
		}
		maxHits, boot = requests(t, n)
		c.Close()
		fs, _ := c.Snapshot()
		xs := guestExchanges(fs)
		if len(xs) < 3*n {
			t.Fatalf("captured %d guest frames of %d connections, want at least 3 each (SYN-ACK, data, FIN)", len(xs), n)
		}
		// Output commit holds while protected. A primary that lost its
		// standby says so (the state event comes before it stops
		// holding output) and runs unprotected: frames after that are
		// not judged, and too few judged fails the test.
		for _, e := range p.eventsNow() {
			if e.Kind == "state" && e.State != "protected" && e.State != "syncing" && e.State != "connecting" {
				lapse := time.Unix(0, e.T)
				kept := xs[:0]
				for _, x := range xs {
					if x.Arrived.Before(lapse) {
						kept = append(kept, x)
					}
				}
				t.Logf("protection lapsed at %s (%s: %s): %d of %d guest frames judged", lapse.Format("15:04:05.000"), e.State, e.Msg, len(kept), len(xs))
				if len(kept) < 3*n/2 {
					t.Fatalf("protection lapsed before enough output was seen to judge (machine overloaded?)")
				}
				xs = kept
				break
			}
		}
		return maxHits, boot, len(xs), netns.CheckCommit(xs, sb.times("commit"))
	}
	stop := func(t *testing.T, p *proc) {
		t.Helper()
		out, err := exec.Command(kemariBin(), "stop", "--run-dir", runDir, name).CombinedOutput()
		if err != nil {
			t.Fatalf("xl-kemari stop: %v\n%s", err, out)
		}
		if err := p.wait(t, time.Minute); err != nil {
			t.Errorf("the primary exited with %v after stop", err)
		}
	}

	t.Run("OutputCommit", func(t *testing.T) {
		p := protect(t, "--netbuf=plug")
		hits, _, n, err := commitChecked(t, p, 20)
		if err != nil {
			t.Fatalf("output left before its epoch was committed:\n%v", err)
		}
		t.Logf("20 requests, %d guest frames, each released after a commit of the standby (answered up to hits=%d)", n, hits)
		stop(t, p)
		// The standby destroys its replica in the background: give it
		// the time a destroy takes, watching for the end.
		deadline := time.Now().Add(time.Minute)
		for left := leftovers(t, vif); len(left) > 0; left = leftovers(t, vif) {
			if time.Now().After(deadline) {
				t.Fatalf("after stop, left behind: %s", strings.Join(left, "; "))
			}
			<-time.After(500 * time.Millisecond)
		}
		t.Logf("stop left no replica, IFB, qdisc or process")
	})
	if t.Failed() {
		return
	}

	t.Run("UnheldOutputIsCaught", func(t *testing.T) {
		p := protect(t, "--netbuf=none", "--unsafe")
		_, _, n, err := commitChecked(t, p, 10)
		if err == nil {
			t.Fatalf("with --netbuf=none the check passed %d guest frames: it cannot tell held output from leaked output", n)
		}
		flagged := strings.Count(err.Error(), "\n") + 1
		t.Logf("control run: %d of %d guest frames flagged as released before a commit", flagged, n)
		if flagged < n/2 {
			t.Errorf("only %d of %d unheld frames flagged", flagged, n)
		}
		stop(t, p)
	})

	t.Run("Failover", func(t *testing.T) {
		p := protect(t, "--netbuf=plug")
		hits, boot, _, err := commitChecked(t, p, 10)
		if err != nil {
			t.Fatalf("output left before its epoch was committed:\n%v", err)
		}
		p.await(t, "a released epoch", time.Minute, func(e event) bool { return e.Kind == "release" })
		t.Logf("peak memory (VmHWM): primary %s, standby %s", vmHWM(p), vmHWM(sb))
		// The host dies: the protector without a word, then its domain.
		killed := time.Now()
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		if out, err := exec.Command("xl", "destroy", name).CombinedOutput(); err != nil {
			t.Fatalf("xl destroy %s: %v\n%s", name, err, out)
		}
		act := sb.await(t, "activation", e2eTimeout+3*time.Minute, func(e event) bool { return e.Kind == "activate" })
		actAt := time.Unix(0, act.T)
		t.Logf("standby activated %v after the kill (timeout %v): %s", actAt.Sub(killed).Round(time.Millisecond), e2eTimeout, act.Msg)
		if actAt.Sub(killed) < e2eTimeout {
			t.Errorf("activated %v after the kill, before the timeout %v", actAt.Sub(killed), e2eTimeout)
		}
		a := askUntil(t, 3*time.Minute)
		t.Logf("the guest answers %v after the kill: boot %s tick %d hits %d (answered before: up to %d)",
			time.Since(killed).Round(time.Millisecond), a.boot, a.tick, a.hits, hits)
		if a.boot != boot {
			t.Errorf("the replica rebooted: boot %s, primary's was %s", a.boot, boot)
		}
		if a.hits <= hits {
			t.Errorf("hits=%d after the failover, but a client was answered hits=%d before it: answered state lost", a.hits, hits)
		}
		if out, _ := exec.Command("xl", "domid", name).CombinedOutput(); len(strings.TrimSpace(string(out))) == 0 {
			t.Errorf("no domain is called %s after the failover", name)
		}
	})
}
