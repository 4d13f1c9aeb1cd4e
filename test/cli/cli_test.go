package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// xl kemari start (in the background, as administrators run it), status
// as a table and as JSON, then stop: the standby discards its replica and
// no protector process or control socket of the primary is left.
func TestStartStatusStop(t *testing.T) {
	c := newCluster(t)
	addr := c.sock("repl")
	standby := c.spawn("standby", append([]string{"receive", "--listen=" + addr}, sim...)...)
	// start returns once the domain is protected; the standby may still
	// be coming up, so the primary retries until it answers.
	args := append([]string{"kemari", "start", "--background", "--log-file=" + filepath.Join(c.dir, "primary.log")}, sim...)
	args = append(args, simDomain("web1", addr)...)
	r := c.xl(args...)
	if r.code != 0 {
		b, _ := os.ReadFile(filepath.Join(c.dir, "primary.log"))
		t.Fatalf("start: exit %d\n%s\n%s", r.code, r.stderr, b)
	}
	if !strings.Contains(r.stderr, "web1 is protected") {
		t.Errorf("start said %q", r.stderr)
	}
	p := c.waitState("web1", "primary", "protected", 10*time.Second)
	s := c.waitState("web1", "standby", "ready", 10*time.Second)
	if p.Peer != "unix:"+addr || p.PID == s.PID || !strings.HasSuffix(p.Socket, "/primary-web1.sock") {
		t.Errorf("status: primary %+v, standby %+v", p, s)
	}

	table := c.xl("kemari", "status")
	lines := strings.Split(strings.TrimSpace(table.stdout), "\n")
	// The header, a row per protection, then a line per protection with
	// its timeout and where it comes from.
	if table.code != 0 || len(lines) != 5 || !strings.HasPrefix(lines[3], "web1 (") || !strings.Contains(lines[3], ": timeout ") ||
		!strings.HasPrefix(lines[4], "web1 (") || !strings.Contains(lines[4], ": timeout ") {
		t.Fatalf("status table: exit %d\n%s", table.code, table.stdout)
	}
	for _, col := range []string{"DOMAIN", "ROLE", "PEER", "STATE", "EPOCH", "RATE", "PAUSE LAST/AVG", "DIRTY", "BANDWIDTH", "COMPR", "COMMIT", "UNPROTECTED"} {
		if !strings.Contains(lines[0], col) {
			t.Errorf("status header lacks %s: %q", col, lines[0])
		}
	}
	if f := strings.Fields(lines[1]); len(f) < 5 || f[0] != "web1" || f[1] != "primary" || f[3] != "protected" {
		t.Errorf("status row %q", lines[1])
	}
	if f := strings.Fields(lines[2]); len(f) < 5 || f[0] != "web1" || f[1] != "standby" || f[3] != "ready" {
		t.Errorf("status row %q", lines[2])
	}
	one := c.xl("kemari", "status", "--json", "web1")
	var es []map[string]any
	if err := json.Unmarshal([]byte(one.stdout), &es); err != nil || len(es) != 2 {
		t.Fatalf("status --json web1: %v %s", err, one.stdout)
	}
	for _, k := range []string{"pid", "socket", "role", "domain", "peer", "state", "epoch", "epoch_rate_hz", "last_pause", "avg_pause",
		"last_dirty_pages", "bandwidth_bytes_per_s", "compression_ratio", "avg_commit_latency"} {
		if _, ok := es[0][k]; !ok {
			t.Errorf("status --json lacks %q: %v", k, es[0])
		}
	}
	if r := c.xl("kemari", "status", "nosuch"); r.code != 4 {
		t.Errorf("status nosuch: exit %d, want 4", r.code)
	}

	stop := c.xl("kemari", "stop", "web1")
	if stop.code != 0 || !strings.Contains(stop.stdout, "protection stopped") {
		t.Fatalf("stop: exit %d: %s%s", stop.code, stop.stdout, stop.stderr)
	}
	if alive(p.PID) {
		t.Errorf("primary %d still runs after stop", p.PID)
	}
	if _, err := os.Stat(p.Socket); !os.IsNotExist(err) {
		t.Errorf("control socket %s left: %v", p.Socket, err)
	}
	// The one-shot receiver ends with its primary's clean goodbye, exit 0.
	select {
	case <-standby.done:
		if standby.err != nil {
			t.Errorf("receive --listen after the primary's stop: %v", standby.err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("receive --listen still runs 10s after the primary's stop")
	}
	if r := c.xl("kemari", "stop", "web1"); r.code != 4 {
		t.Errorf("second stop: exit %d, want 4 (%s)", r.code, r.stderr)
	}
}

// SIGKILL of the primary: the standby activates the replica within the
// timeout, and status on the standby says so.
func TestKillPrimary(t *testing.T) {
	c := newCluster(t)
	addr := c.sock("repl")
	c.spawn("standby", append([]string{"receive", "--listen=" + addr}, sim...)...)
	primary := c.spawn("primary", append(append([]string{"start", "-F"}, sim...), simDomain("db1", addr)...)...)
	c.waitState("db1", "standby", "ready", 15*time.Second)
	p := c.waitEpoch("db1", 5, 15*time.Second)
	primary.kill()
	killed := time.Now()
	s := c.waitState("db1", "standby", "active", 10*time.Second)
	t.Logf("standby active %v after SIGKILL, at epoch %d (primary had acked %d)", time.Since(killed).Round(time.Millisecond), s.ActivatedEpoch, p.Epoch)
	if s.ActivatedEpoch < p.Epoch {
		t.Errorf("activated at epoch %d, before the %d the primary had seen acknowledged", s.ActivatedEpoch, p.Epoch)
	}
	table := c.xl("kemari", "status", "db1")
	if table.code != 0 || !strings.Contains(table.stdout, "active (failed over at epoch") {
		t.Errorf("status db1 on the standby: exit %d\n%s", table.code, table.stdout)
	}
}

// SIGKILL of the standby: the primary goes on unprotected within the
// timeout, and protects again once a standby is back on the same address.
func TestKillStandby(t *testing.T) {
	c := newCluster(t)
	addr := c.sock("repl")
	standby := c.spawn("standby", append([]string{"receive", "--listen=" + addr}, sim...)...)
	c.spawn("primary", append(append([]string{"start", "-F"}, sim...), simDomain("mail1", addr)...)...)
	c.waitState("mail1", "primary", "protected", 15*time.Second)
	standby.kill()
	killed := time.Now()
	u := c.waitState("mail1", "primary", "unprotected", 10*time.Second)
	t.Logf("primary unprotected %v after the standby's SIGKILL", time.Since(killed).Round(time.Millisecond))
	if u.UnprotectedSince.IsZero() {
		t.Errorf("unprotected without unprotected_since: %+v", u)
	}
	if !strings.Contains(c.xl("kemari", "status", "mail1").stdout, " ago") {
		t.Errorf("status does not say since when mail1 is unprotected")
	}
	c.spawn("standby2", append([]string{"receive", "--listen=" + addr}, sim...)...)
	c.waitState("mail1", "primary", "protected", 20*time.Second)
	c.waitState("mail1", "standby", "ready", 10*time.Second)
}

// The tls transport to a listen service: a primary with a certificate of
// the cluster's CA is protected; one whose certificate another CA signed
// is refused in the handshake and never gets a replica.
func TestTLSListen(t *testing.T) {
	c := newCluster(t)
	addr := freePort(t)
	cert, key, ca := certs(t, filepath.Join(c.dir, "pki"), "standby")
	tlsArgs := []string{"--tls-cert=" + cert, "--tls-key=" + key, "--tls-ca=" + ca}
	listen := c.spawn("listen", append(append([]string{"listen", "--listen=" + addr, "--toml=/dev/null", "--peer=*=localhost"}, tlsArgs...), sim...)...)

	good := c.spawn("good", append(append(append([]string{"start", "-F", "--transport=tls"}, tlsArgs...), sim...), simDomain("app1", addr)...)...)
	c.waitState("app1", "primary", "protected", 15*time.Second)
	c.waitState("app1", "standby", "ready", 10*time.Second)

	wcert, wkey, wca := certs(t, filepath.Join(c.dir, "other"), "intruder")
	bad := c.spawn("bad", append(append([]string{"start", "-F", "--transport=tls", "--tls-cert=" + wcert, "--tls-key=" + wkey, "--tls-ca=" + wca},
		sim...), simDomain("evil1", addr)...)...)
	waitLog(t, listen, "refused a peer without a valid certificate", 15*time.Second)
	for _, e := range c.status() {
		if e.Domain == "evil1" && e.Role == "standby" {
			t.Errorf("the listen service holds a replica for a peer with a wrong certificate: %+v", e)
		}
		if e.Domain == "evil1" && e.State == "protected" {
			t.Errorf("the intruder says it is protected: %+v", e)
		}
	}
	bad.kill()

	// A second domain through the same service, then a clean stop of app1.
	c.spawn("second", append(append(append([]string{"start", "-F", "--transport=tls"}, tlsArgs...), sim...), simDomain("app2", addr)...)...)
	c.waitState("app2", "standby", "ready", 15*time.Second)
	if r := c.xl("kemari", "stop", "app1"); r.code != 0 {
		t.Fatalf("stop app1: %d %s", r.code, r.stderr)
	}
	<-good.done
	c.waitGone("app1", "standby", 10*time.Second)
	c.waitState("app2", "standby", "ready", time.Second)
}

// The ssh transport, with a stand-in for ssh that runs the remote command
// locally: the primary starts `xl-kemari receive --stdio` through it.
func TestSSHTransport(t *testing.T) {
	c := newCluster(t)
	fake := filepath.Join(c.dir, "ssh")
	script := "#!/bin/sh\n# fake ssh: skip options up to --, then the host; run the command as sshd would\n" +
		"while [ \"$#\" -gt 0 ] && [ \"$1\" != -- ]; do shift; done\nshift\necho \"$1\" > \"$(dirname \"$0\")/ssh-host\"\nshift\nexec sh -c \"$*\"\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	primary := c.spawn("primary", append(append([]string{"start", "-F", "--transport=ssh", "--ssh-command=" + fake,
		"--remote-command=" + filepath.Join(bin, "xl-kemari")}, sim...), simDomain("ssh1", "root@standby-host")...)...)
	p := c.waitState("ssh1", "primary", "protected", 15*time.Second)
	s := c.waitState("ssh1", "standby", "ready", 10*time.Second)
	if p.Peer != "ssh:root@standby-host" || s.Peer != "stdio" {
		t.Errorf("peers: primary %q, standby %q", p.Peer, s.Peer)
	}
	if b, _ := os.ReadFile(filepath.Join(c.dir, "ssh-host")); strings.TrimSpace(string(b)) != "root@standby-host" {
		t.Errorf("ssh was given host %q", b)
	}
	if r := c.xl("kemari", "stop", "ssh1"); r.code != 0 {
		t.Fatalf("stop: %d %s", r.code, r.stderr)
	}
	<-primary.done
	// The receiver ends with its session: the primary said goodbye.
	c.waitGone("ssh1", "standby", 10*time.Second)
	if alive(s.PID) {
		t.Errorf("receiver %d still runs", s.PID)
	}
}

// TestSSHReconnectAttaches: the ssh session breaks (the connection dies,
// the receiver does not). The primary reconnects through a new ssh
// session; the receiver that starts hands the stream to the standby that
// already holds the domain, which resynchronises its replica instead of
// activating it behind the back of a primary that is alive. Killed later,
// the primary is then taken over by that standby.
func TestSSHReconnectAttaches(t *testing.T) {
	c := newCluster(t)
	pids := filepath.Join(c.dir, "ssh-pids")
	c.env = append(c.env, relayEnv+"="+pids)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The receivers are ssh's children, not the cluster's: end them, and
	// the relays, whatever happens (an activated one runs until signalled).
	var standbyPIDs []int
	t.Cleanup(func() {
		b, _ := os.ReadFile(pids)
		for _, f := range strings.Fields(string(b)) {
			var pid int
			fmt.Sscan(f, &pid)
			standbyPIDs = append(standbyPIDs, pid)
		}
		for _, pid := range standbyPIDs {
			// Only if it is still ours: a pid that ended may be reused.
			cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if pid > 0 && (strings.Contains(string(cmd), bin) || strings.HasPrefix(string(cmd), self)) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	opts := []string{"--hypervisor=sim", "--interval=20ms", "--timeout=3s", "--log-level=info"}
	primary := c.spawn("primary", append(append([]string{"start", "-F", "--transport=ssh", "--ssh-command=" + self,
		"--remote-command=" + filepath.Join(bin, "xl-kemari")}, opts...), simDomain("ssh2", "root@standby-host")...)...)
	c.waitState("ssh2", "primary", "protected", 15*time.Second)
	s1 := c.waitState("ssh2", "standby", "ready", 10*time.Second)
	standbyPIDs = append(standbyPIDs, s1.PID)
	before := c.waitEpoch("ssh2", 5, 15*time.Second)

	b, err := os.ReadFile(pids)
	if err != nil {
		t.Fatal(err)
	}
	var relay int
	fmt.Sscan(string(b), &relay)
	if relay == 0 {
		t.Fatalf("no relay pid in %q", b)
	}
	if err := syscall.Kill(relay, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Protected again, past the epoch before the break, through a second
	// session...
	waitFile(t, filepath.Dir(pids), 15*time.Second, primary, "the primary reconnecting through a new ssh session", func() bool {
		b, _ = os.ReadFile(pids)
		return len(strings.Fields(string(b))) >= 2
	})
	after := c.waitEpoch("ssh2", before.Epoch+5, 15*time.Second)
	// ...to the same standby, the only one of the domain, never active.
	var standbys []entry
	for _, e := range c.status() {
		if e.Domain == "ssh2" && e.Role == "standby" {
			standbys = append(standbys, e)
		}
	}
	for _, e := range standbys {
		standbyPIDs = append(standbyPIDs, e.PID)
	}
	if len(standbys) != 1 || standbys[0].PID != s1.PID || standbys[0].State != "ready" {
		t.Fatalf("after the reconnect: standbys %+v; want only the first receiver (pid %d), ready", standbys, s1.PID)
	}
	t.Logf("reconnected through a second session to receiver %d: acked epoch %d before the break, %d after", s1.PID, before.Epoch, after.Epoch)
	primary.kill()
	s := c.waitState("ssh2", "standby", "active", 10*time.Second)
	if s.PID != s1.PID || s.ActivatedEpoch < after.Epoch {
		t.Errorf("activated by pid %d at epoch %d; want pid %d at or after %d", s.PID, s.ActivatedEpoch, s1.PID, after.Epoch)
	}
}

// Failover by hand: refused while the primary checkpoints (no arbiter),
// done once it is gone.
func TestFailoverByHand(t *testing.T) {
	c := newCluster(t)
	addr := c.sock("repl")
	c.spawn("standby", append([]string{"receive", "--listen=" + addr, "--timeout=5s"}, sim[:2]...)...)
	primary := c.spawn("primary", append(append([]string{"start", "-F", "--timeout=5s"}, sim[:2]...), simDomain("fo1", addr)...)...)
	c.waitState("fo1", "standby", "ready", 15*time.Second)
	r := c.xl("kemari", "failover", "fo1")
	if r.code != 1 || !strings.Contains(r.stderr, "still checkpoints") {
		t.Fatalf("failover with a live primary: exit %d: %s", r.code, r.stderr)
	}
	primary.cmd.Process.Signal(os.Interrupt) // dies without a goodbye
	<-primary.done
	r = c.xl("kemari", "failover", "--force", "fo1")
	if r.code != 0 || !strings.Contains(r.stdout, "fo1: active on this host") {
		t.Fatalf("failover: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	c.waitState("fo1", "standby", "active", time.Second)
	if r := c.xl("kemari", "failover", "nosuch"); r.code != 4 {
		t.Errorf("failover nosuch: exit %d, want 4", r.code)
	}
}

// Bad command lines: a clear message and exit code 2 (3 for a bad
// setting, which is configuration; 4 for nothing of that name).
func TestBadCommandLines(t *testing.T) {
	c := newCluster(t)
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"kemari"}, 2, "Usage: xl kemari"},
		{[]string{"kemari", "frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"kemari", "start"}, 2, "want <Domain> [<host>]"},
		{[]string{"kemari", "start", "a", "b", "c"}, 2, "want <Domain> [<host>]"},
		{[]string{"kemari", "start", "--hypervisor=sim", "--interval=often", "d", "127.0.0.1:1"}, 2, "invalid argument"},
		{[]string{"kemari", "start", "--hypervisor=sim", "--frob", "d", "h"}, 2, "unknown flag: --frob"},
		{[]string{"kemari", "start", "--hypervisor=sim", "--transport=udp", "d", "127.0.0.1:1"}, 2, `--transport "udp"`},
		{[]string{"kemari", "start", "--hypervisor=sim", "d"}, 2, "no standby for d"},
		{[]string{"kemari", "start", "--hypervisor=sim", "--transport=ssh", "--", "d", "-oProxyCommand=x"}, 2, "bad ssh destination"},
		{[]string{"kemari", "start", "-F", "--background", "d", "h"}, 2, "exclude each other"},
		{[]string{"kemari", "start", "--hypervisor=sim", "--set", "interval=5", "d", "127.0.0.1:1"}, 3, "<command line>:1:"},
		{[]string{"kemari", "start", "--hypervisor=sim", "-C", "/nonexistent.cfg", "d", "127.0.0.1:1"}, 3, "/nonexistent.cfg"},
		{[]string{"kemari", "status", "a", "b"}, 2, "at most one domain"},
		{[]string{"kemari", "stop"}, 2, "exactly one domain"},
		{[]string{"kemari", "stop", "nosuch"}, 4, "nosuch is not protected"},
		{[]string{"kemari", "failover"}, 2, "exactly one domain"},
		{[]string{"kemari", "receive", "--stdio", "--listen=127.0.0.1:1"}, 2, "exclude each other"},
		{[]string{"kemari", "receive", "--hypervisor=sim", "--transport=udp"}, 2, `--transport "udp"`},
		{[]string{"kemari", "listen", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"kemari", "listen", "--toml=/dev/null", "--hypervisor=sim"}, 3, "no [certificate key CA] file given"},
		{[]string{"kemari", "help", "nosuch"}, 2, `unknown command "nosuch"`},
		// The local transports: unix, or tcp only when asked for as insecure.
		{[]string{"kemari", "start", "--hypervisor=sim", "--transport=tcp", "d", "127.0.0.1:1"}, 2, "--insecure-tcp"},
		{[]string{"kemari", "start", "--hypervisor=sim", "d", "127.0.0.1:1"}, 2, "socket path"},
		{[]string{"kemari", "receive", "--hypervisor=sim", "--transport=tcp", "--listen=127.0.0.1:1"}, 2, "--insecure-tcp"},
		{[]string{"kemari", "receive", "--hypervisor=sim", "--listen=rel.sock"}, 2, "absolute socket path"},
		{[]string{"kemari", "receive", "--hypervisor=sim", "--run-dir=/tmp/rd", "--listen=/tmp/rd/x.sock"}, 2, "taken for a control socket"},
		{[]string{"kemari", "admit"}, 2, "exactly one domain"},
		{[]string{"kemari", "admit", "web1"}, 4, "no listen service"},
	}
	for _, tc := range cases {
		r := c.xl(tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr+r.stdout, tc.want) {
			t.Errorf("xl %s: exit %d, output %q; want exit %d and %q", strings.Join(tc.args, " "), r.code, r.stderr+r.stdout, tc.code, tc.want)
		}
	}
	for _, sub := range []string{"start", "stop", "status", "receive", "listen", "admit", "failover", "autostart", "config", "demo", "version"} {
		if r := c.xl("kemari", "help", sub); r.code != 0 || r.stdout+r.stderr == "" {
			t.Errorf("help %s: exit %d", sub, r.code)
		}
		if r := c.xl("kemari", sub, "--help"); r.code != 0 {
			t.Errorf("%s --help: exit %d", sub, r.code)
		}
	}
}

// autostart: the configurations that ask for it are found; on the
// simulator nothing is started, with the reason.
func TestAutostart(t *testing.T) {
	c := newCluster(t)
	auto := filepath.Join(c.dir, "auto")
	os.Mkdir(auto, 0o755)
	os.WriteFile(filepath.Join(auto, "a.cfg"), []byte("name = \"a\"\nkemari = [ \"standby=xen2,autostart=1\" ]\n"), 0o644)
	os.WriteFile(filepath.Join(auto, "b.cfg"), []byte("name = \"b\"\nkemari = [ \"standby=xen2\" ]\n"), 0o644)
	r := c.xl("kemari", "autostart", "--hypervisor=sim", "--toml=/dev/null", "--config-dir="+auto, "--dry-run")
	if r.code != 0 || !strings.Contains(r.stdout, "would protect a (") || strings.Contains(r.stdout, "protect b") {
		t.Errorf("autostart --dry-run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = c.xl("kemari", "autostart", "--hypervisor=sim", "--toml=/dev/null", "--config-dir="+auto)
	if r.code != 0 || !strings.Contains(r.stdout, "skipping a") {
		t.Errorf("autostart on sim: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// A failover by hand (--force, no arbiter) while the primary still
// streams, through the listen service (protocol §7.7): the standby tells
// the primary before it activates, and the primary fences and exits
// non-zero; a primary of the domain that connects later is told the same
// and fences at once, and the service holds no second replica for it.
func TestForcedFailoverFences(t *testing.T) {
	c := newCluster(t)
	addr := freePort(t)
	cert, key, ca := certs(t, filepath.Join(c.dir, "pki"), "standby")
	tlsArgs := []string{"--tls-cert=" + cert, "--tls-key=" + key, "--tls-ca=" + ca}
	c.spawn("listen", append(append([]string{"listen", "--listen=" + addr, "--toml=/dev/null", "--peer=*=localhost"}, tlsArgs...), sim...)...)
	primary := c.spawn("primary", append(append(append([]string{"start", "-F", "--transport=tls"}, tlsArgs...), sim...), simDomain("tk1", addr)...)...)
	c.waitState("tk1", "standby", "ready", 15*time.Second)
	if r := c.xl("kemari", "failover", "--force", "tk1"); r.code != 0 {
		t.Fatalf("failover --force: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	select {
	case <-primary.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the primary still runs 10 s after the standby took over")
	}
	if primary.err == nil || !strings.Contains(primary.logText(), "taken over by the standby") {
		t.Fatalf("primary: %v, want a takeover; log:\n%s", primary.err, primary.logText())
	}
	// Another primary of the domain (a copy restarted by hand, a host
	// back from a partition) is fenced on its first connection.
	again := c.spawn("again", append(append(append([]string{"start", "-F", "--transport=tls"}, tlsArgs...), sim...), simDomain("tk1", addr)...)...)
	select {
	case <-again.done:
	case <-time.After(10 * time.Second):
		t.Fatal("a primary of a taken-over domain still runs 10 s after connecting")
	}
	if again.err == nil || !strings.Contains(again.logText(), "taken over by the standby") {
		t.Fatalf("second primary: %v, want a takeover; log:\n%s", again.err, again.logText())
	}
	c.waitState("tk1", "standby", "active", time.Second)
}
