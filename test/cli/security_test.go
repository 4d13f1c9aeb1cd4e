package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xl-kemari/xl-kemari/checkpoint/wire"
	"golang.org/x/sys/unix"
)

// probeEnv makes this test binary a would-be primary (see probe): its
// value is NETWORK:ADDRESS to connect to.
const probeEnv = "KEMARI_CLI_PROBE"

// probe connects to a standby, sends a primary's hello for domain
// "intruder" and reports on standard output whether the standby answered
// with its own hello (exit 0) or refused (exit 1).
func probe(target string) int {
	network, addr, _ := strings.Cut(target, ":")
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		fmt.Println("REFUSED dial:", err)
		return 1
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	w := wire.NewWriter(c)
	h := &wire.Hello{Version: wire.Version, Role: wire.RolePrimary, Inflight: 1,
		Domain: wire.DomainDesc{Name: "intruder", Type: "pvh", Pages: 16, VCPUs: 1}}
	err = w.WriteHeader(0)
	if err == nil {
		err = w.Write(h)
	}
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		fmt.Println("REFUSED write:", err)
		return 1
	}
	r := wire.NewReader(c, wire.DefaultLimits())
	if _, _, err := r.ReadHeader(); err != nil {
		fmt.Println("REFUSED header:", err)
		return 1
	}
	rec, err := r.Next()
	if err != nil {
		fmt.Println("REFUSED record:", err)
		return 1
	}
	fmt.Println("HELLO", rec.Type())
	return 0
}

// runProbe runs probe against target, as uid (0: as is).
func runProbe(t *testing.T, exe, target string, uid uint32) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = []string{probeEnv + "=" + target}
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("probe of %s as uid %d did not end", target, uid)
	}
	return strings.TrimSpace(string(out)), err == nil && strings.HasPrefix(string(out), "HELLO")
}

// A local user other than root (and the standby's own user) cannot reach
// receive --listen: plain tcp needs --insecure-tcp, and the default local
// transport, a unix socket, checks the peer's credentials even when the
// socket's mode lets anyone connect.
func TestLocalTransportRefusesOtherUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run the intruder as nobody")
	}
	c := newCluster(t)
	addr := freePort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "xl-kemari"), append([]string{"receive", "--listen=" + addr}, sim...)...)
	cmd.Env = c.env
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Errorf("receive --listen=%s (tcp) without --insecure-tcp ran: any local user could feed it", addr)
	} else if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "--insecure-tcp") {
		t.Errorf("receive --listen=%s without --insecure-tcp: %v, want exit 2 naming --insecure-tcp\n%s", addr, err, out)
	}

	// The intruder runs as nobody: the test binary copied where nobody
	// may run it, the socket where nobody may reach it.
	for d := c.dir; d != filepath.Dir(d) && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(c.dir, "probe")
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := c.sock("repl")
	standby := c.spawn("standby", append([]string{"receive", "--listen=" + sock}, sim...)...)
	waitFile(t, filepath.Dir(sock), 15*time.Second, standby, "receive --listen="+sock+" creating its socket", func() bool {
		_, err := os.Lstat(sock)
		return err == nil
	})
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v (%v), want 0600", fi.Mode(), err)
	}
	if out, ok := runProbe(t, exe, "unix:"+sock, 65534); ok {
		t.Errorf("nobody got the standby's hello through a 0600 socket: %s", out)
	}
	// Even with a socket anyone may connect to, the credentials decide.
	os.Chmod(sock, 0o666)
	if out, ok := runProbe(t, exe, "unix:"+sock, 65534); ok {
		t.Errorf("nobody got the standby's hello through a 0666 socket: %s", out)
	}
	waitLog(t, standby, "refused a local peer", 10*time.Second)
	// Root (the standby's user) is served: the probe itself works.
	if out, ok := runProbe(t, exe, "unix:"+sock, 0); !ok {
		t.Errorf("root was refused: %s", out)
	}
}

// pki is a CA for one test and the certificates it issues.
type pki struct {
	t    *testing.T
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	ca   string
}

func newPKI(t *testing.T, dir string) *pki {
	t.Helper()
	os.MkdirAll(dir, 0o700)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "site CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := &pki{t: t, dir: dir, cert: cert, key: key}
	p.ca = p.write("ca.crt", "CERTIFICATE", der)
	return p
}

func (p *pki) write(file, typ string, b []byte) string {
	path := filepath.Join(p.dir, file)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
		p.t.Fatal(err)
	}
	return path
}

// host issues a certificate for host (a DNS name), good for both ends;
// the standby's also names 127.0.0.1, which the primaries dial. It
// returns the --tls-* flags.
func (p *pki) host(host string, ip bool) []string {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    []string{host}}
	if ip {
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		p.t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return []string{"--tls-cert=" + p.write(host+".crt", "CERTIFICATE", der), "--tls-key=" + p.write(host+".key", "EC PRIVATE KEY", kder), "--tls-ca=" + p.ca}
}

// waitLog waits until p's log holds s (on the log's inotify events),
// failing the test after d or when p ends first.
func waitLog(t *testing.T, p *proc, s string, d time.Duration) {
	t.Helper()
	waitFile(t, filepath.Dir(p.log), d, p, fmt.Sprintf("%v logging %q", p.cmd.Args[1:], s), func() bool {
		return strings.Contains(p.logText(), s)
	})
}

// byPID returns the status entry of the protector with pid whose control
// socket is in runDir.
func (c *cluster) byPID(runDir string, pid int) (entry, bool) {
	c.t.Helper()
	r := c.xl("kemari", "status", "--json", "--run-dir="+runDir)
	var es []entry
	if err := json.Unmarshal([]byte(r.stdout), &es); r.code != 0 || err != nil {
		c.t.Fatalf("status --json --run-dir=%s: exit %d %v: %s", runDir, r.code, err, r.stderr)
	}
	for _, e := range es {
		if e.PID == pid {
			return e, true
		}
	}
	return entry{}, false
}

// waitPID polls until the protector pid (its socket in runDir) is in
// state, failing the test after d.
func (c *cluster) waitPID(runDir string, pid int, state string, d time.Duration) {
	c.t.Helper()
	var e entry
	until(c.t, d, nil, func() bool {
		var ok bool
		e, ok = c.byPID(runDir, pid)
		return ok && e.State == state
	}, func() string { return fmt.Sprintf("protector %d not %s within %v: %+v", pid, state, d, e) })
}

// Authentication is not authorisation: a certificate of the same CA for
// another host may not replicate a domain the configuration gives to
// xen1; a second protection session for a domain already replicated,
// even with xen1's own certificate, is refused and does not touch the
// replica; the operator's admit lets the next one in.
func TestListenAuthorisesPeers(t *testing.T) {
	c := newCluster(t)
	addr := freePort(t)
	p := newPKI(t, filepath.Join(c.dir, "pki"))
	standbyTLS := p.host("xen2.test", true)
	xen1 := p.host("xen1.test", false)
	xen3 := p.host("xen3.test", false)
	// Nobody named, nobody allowed: the service does not start.
	if r := c.xl(append(append([]string{"kemari", "listen", "--listen=" + addr, "--toml=/dev/null"}, standbyTLS...), sim...)...); r.code != 3 ||
		!strings.Contains(r.stderr, "no peer may replicate") {
		t.Errorf("listen without a peer: exit %d %q, want 3", r.code, r.stderr)
	}
	listen := c.spawn("listen", append(append([]string{"listen", "--listen=" + addr, "--toml=/dev/null", "--peer=web1=xen1.test"}, standbyTLS...), sim...)...)
	waitLog(t, listen, "standby service listening", 15*time.Second)
	// Each primary is a host of its own: its own run directory (the
	// first, good one's is the cluster's).
	runDir := func(name string) string {
		if name == "good" {
			return c.runDir
		}
		return filepath.Join(c.dir, "run-"+name)
	}
	tlsStart := func(name string, tlsArgs []string, dom string) *proc {
		args := append(append([]string{"start", "-F", "--transport=tls", "--run-dir=" + runDir(name)}, tlsArgs...), sim...)
		return c.spawn(name, append(args, simDomain(dom, addr)...)...)
	}

	good := tlsStart("good", xen1, "web1")
	c.waitState("web1", "primary", "protected", 15*time.Second)
	ready := c.waitState("web1", "standby", "ready", 10*time.Second)

	// Another host of the CA, for the same domain and for one nobody
	// configured.
	intruder := tlsStart("intruder", xen3, "web1")
	waitLog(t, listen, "refused a primary not allowed to replicate the domain here", 15*time.Second)
	other := tlsStart("other", xen3, "db9")
	waitFile(t, filepath.Dir(listen.log), 15*time.Second, listen, "the listen service refusing xen3 for db9 (a second refusal)", func() bool {
		return strings.Count(listen.logText(), "refused a primary not allowed") >= 2
	})
	for _, e := range c.status() {
		if e.Role == "standby" && e.Domain == "db9" {
			t.Errorf("a replica of db9 for an unconfigured peer: %+v", e)
		}
	}
	intruder.kill()
	other.kill()

	// xen1's certificate, a second protector: a new session.
	second := tlsStart("second", xen1, "web1")
	waitLog(t, listen, "refused a second primary for a domain replicated here from another session", 15*time.Second)
	c.waitPID(c.runDir, good.cmd.Process.Pid, "protected", 10*time.Second)
	if s := c.waitState("web1", "standby", "ready", 10*time.Second); s.PID != ready.PID {
		t.Errorf("the standby changed: %+v, was %+v", s, ready)
	}
	if strings.Contains(listen.logText(), "replaces the current one") {
		t.Errorf("the second session replaced the first without the operator")
	}

	// The operator says so: the next new session replaces the first.
	if r := c.xl("kemari", "admit", "web1"); r.code != 0 {
		t.Fatalf("admit web1: exit %d %s", r.code, r.stderr)
	}
	waitLog(t, listen, "a new protection session replaces the current one", 15*time.Second)
	c.waitPID(runDir("second"), second.cmd.Process.Pid, "protected", 20*time.Second)
	good.kill()
}

// Out of descriptors (EMFILE) is a passing shortage: the listen service
// keeps its listener (and its control socket), says so, and serves the
// next primary once descriptors are free again; it does not exit 0 as if
// stopped.
func TestListenSurvivesEMFILE(t *testing.T) {
	c := newCluster(t)
	addr := freePort(t)
	cert, key, ca := certs(t, filepath.Join(c.dir, "pki"), "standby")
	tlsArgs := []string{"--tls-cert=" + cert, "--tls-key=" + key, "--tls-ca=" + ca}
	listen := c.spawn("listen", append(append([]string{"listen", "--listen=" + addr, "--toml=/dev/null", "--peer=*=localhost"}, tlsArgs...), sim...)...)
	waitLog(t, listen, "standby service listening", 15*time.Second)
	pid := listen.cmd.Process.Pid
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	var old unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		t.Fatal(err)
	}
	// The soft limit only: the hard one could not be raised back.
	low := unix.Rlimit{Cur: uint64(len(fds) + 2), Max: old.Max}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &low, nil); err != nil {
		t.Fatal(err)
	}
	var flood []net.Conn
	for range 16 {
		fc, err := net.Dial("tcp", addr)
		if err != nil {
			break
		}
		flood = append(flood, fc)
	}
	waitLog(t, listen, "cannot accept connections; retrying", 15*time.Second)
	for _, fc := range flood {
		fc.Close()
	}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &old, nil); err != nil {
		t.Fatal(err)
	}
	good := c.spawn("good", append(append(append([]string{"start", "-F", "--transport=tls"}, tlsArgs...), sim...), simDomain("app1", addr)...)...)
	until(t, 20*time.Second, listen, func() bool {
		e, ok := c.byPID(c.runDir, good.cmd.Process.Pid)
		return ok && e.State == "protected"
	}, func() string { return "no protection through the listen service after EMFILE" })
	c.waitState("app1", "standby", "ready", 10*time.Second)
}

// receive over tls authorises like listen: xen3's certificate may not
// replicate web1 there; xen1's may.
func TestReceiveTLSAuthorisesPeers(t *testing.T) {
	c := newCluster(t)
	addr := freePort(t)
	p := newPKI(t, filepath.Join(c.dir, "pki"))
	standbyTLS := p.host("xen2.test", true)
	xen1 := p.host("xen1.test", false)
	xen3 := p.host("xen3.test", false)
	if r := c.xl(append(append([]string{"kemari", "receive", "--transport=tls", "--listen=" + addr, "--toml=/dev/null"}, standbyTLS...), sim...)...); r.code != 3 ||
		!strings.Contains(r.stderr, "no peer may replicate") {
		t.Errorf("receive --transport=tls without a peer: exit %d %q, want 3", r.code, r.stderr)
	}
	standby := c.spawn("standby", append(append([]string{"receive", "--transport=tls", "--listen=" + addr, "--toml=/dev/null", "--peer=web1=xen1.test"}, standbyTLS...), sim...)...)
	start := func(name string, tlsArgs []string) *proc {
		args := append(append([]string{"start", "-F", "--transport=tls", "--run-dir=" + filepath.Join(c.dir, "run-"+name)}, tlsArgs...), sim...)
		return c.spawn(name, append(args, simDomain("web1", addr)...)...)
	}
	intruder := start("intruder", xen3)
	waitLog(t, standby, "refused a primary not allowed to replicate the domain here", 15*time.Second)
	intruder.kill()
	good := start("good", xen1)
	c.waitPID(filepath.Join(c.dir, "run-good"), good.cmd.Process.Pid, "protected", 15*time.Second)
}
