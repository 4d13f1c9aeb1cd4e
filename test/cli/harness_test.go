package cli

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// bin is the directory holding the built xl-kemari, the xl shim and a
// fake real xl (in bin/real).
var bin string

func TestMain(m *testing.M) {
	if os.Getenv(relayEnv) != "" {
		os.Exit(sshRelay(os.Args[1:]))
	}
	if a := os.Getenv(probeEnv); a != "" {
		os.Exit(probe(a))
	}
	dir, err := os.MkdirTemp("", "kemari-cli-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = dir
	code := func() int {
		defer os.RemoveAll(dir)
		args := []string{"build", "-o", filepath.Join(dir, "xl-kemari")}
		if os.Getenv("KEMARI_CLI_RACE") != "" {
			// The command's own goroutines (control server, listen's
			// router) under the race detector.
			args = append(args, "-race")
		}
		build := exec.Command("go", append(args, "../../xlkemari")...)
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
			return 1
		}
		shim, err := os.ReadFile("../../dist/xl")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if err := os.WriteFile(filepath.Join(dir, "xl"), shim, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		os.Mkdir(filepath.Join(dir, "real"), 0o755)
		fake := "#!/bin/sh\necho \"real xl $*\"\nexit 0\n"
		if err := os.WriteFile(filepath.Join(dir, "real", "xl"), []byte(fake), 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// cluster is one test's hosts: a run directory and the processes spawned.
type cluster struct {
	t      *testing.T
	dir    string
	runDir string
	env    []string
	procs  []*proc
}

// proc is a spawned protector.
type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	dir := t.TempDir()
	c := &cluster{t: t, dir: dir, runDir: filepath.Join(dir, "run")}
	c.env = append(os.Environ(), "KEMARI_RUN_DIR="+c.runDir, "PATH="+bin+":"+filepath.Join(bin, "real")+":"+os.Getenv("PATH"),
		"XL_KEMARI_REAL_XL=")
	t.Cleanup(func() {
		for _, p := range c.procs {
			if p.cmd.ProcessState == nil {
				p.cmd.Process.Kill()
				<-p.done
			}
		}
		for _, p := range c.procs {
			if strings.Contains(p.logText(), "WARNING: DATA RACE") {
				t.Errorf("data race in %v", p.cmd.Args[1:])
			}
		}
		if t.Failed() {
			for _, p := range c.procs {
				b, _ := os.ReadFile(p.log)
				t.Logf("log of %v:\n%s", p.cmd.Args[1:], b)
			}
		}
	})
	return c
}

// result is a finished command.
type result struct {
	code           int
	stdout, stderr string
}

// xl runs `xl args...` through the shim and waits for it.
func (c *cluster) xl(args ...string) result {
	c.t.Helper()
	cmd := exec.Command(filepath.Join(bin, "xl"), args...)
	cmd.Env = c.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("xl %v: %v", args, err)
	}
	return r
}

// spawn starts `xl kemari args...` in the background, its output in a log.
func (c *cluster) spawn(name string, args ...string) *proc {
	c.t.Helper()
	log := filepath.Join(c.dir, name+".log")
	f, err := os.Create(log)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(filepath.Join(bin, "xl"), append([]string{"kemari"}, args...)...)
	cmd.Env = c.env
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	p := &proc{cmd: cmd, log: log, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	c.procs = append(c.procs, p)
	return p
}

func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (p *proc) logText() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// entry is one object of `status --json`.
type entry struct {
	PID              int       `json:"pid"`
	Socket           string    `json:"socket"`
	Role             string    `json:"role"`
	Domain           string    `json:"domain"`
	Peer             string    `json:"peer"`
	State            string    `json:"state"`
	Epoch            uint64    `json:"epoch"`
	EpochRate        float64   `json:"epoch_rate_hz"`
	LastPause        string    `json:"last_pause"`
	UnprotectedSince time.Time `json:"unprotected_since"`
	ActivatedEpoch   uint64    `json:"activated_epoch"`
}

func (c *cluster) status() []entry {
	c.t.Helper()
	r := c.xl("kemari", "status", "--json")
	if r.code != 0 {
		c.t.Fatalf("status --json: exit %d: %s", r.code, r.stderr)
	}
	var es []entry
	if err := json.Unmarshal([]byte(r.stdout), &es); err != nil {
		c.t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	return es
}

// pollEvery is how often a wait on status asks again: the control
// socket has no change notification, so those waits poll it, each with a
// deadline that fails the test naming what it waited for. Waits on files
// (a log line, a socket) take the file's inotify events instead
// (waitFile).
const pollEvery = 20 * time.Millisecond

// until asks cond every pollEvery until it holds, failing the test with
// msg() after d, or as soon as p (if not nil) has ended without cond.
func until(t *testing.T, d time.Duration, p *proc, cond func() bool, msg func() string) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-p.ended():
			if cond() {
				return
			}
			t.Fatalf("%s: %v ended (%v)", msg(), p.cmd.Args[1:], p.err) // its log: newCluster's cleanup
		case <-timer.C:
			if cond() {
				return
			}
			t.Fatal(msg())
		}
	}
}

// waitFile waits until cond, a check of files in dir, holds: it checks
// again on each inotify event of dir (a file created, written, renamed
// in or changed in mode), not on a clock. It fails the test with what
// after d, or as soon as p (if not nil) has ended without cond.
func waitFile(t *testing.T, dir string, d time.Duration, p *proc, what string, cond func() bool) {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	f := os.NewFile(uintptr(fd), "inotify") // non-blocking: Close ends a Read
	defer f.Close()
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MODIFY|unix.IN_CLOSE_WRITE|unix.IN_MOVED_TO|unix.IN_ATTRIB); err != nil {
		t.Fatalf("inotify watch %s: %v", dir, err)
	}
	// One pending wake-up is enough: cond is checked after each.
	events := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			_, err := f.Read(buf)
			select {
			case events <- err:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	timer := time.NewTimer(d)
	defer timer.Stop()
	// The watch is in place before the first check: no change is missed.
	for !cond() {
		select {
		case err := <-events:
			if err != nil {
				t.Fatalf("inotify %s: %v", dir, err)
			}
		case <-p.ended():
			if cond() {
				return
			}
			t.Fatalf("%v ended (%v) before %s", p.cmd.Args[1:], p.err, what) // its log: newCluster's cleanup
		case <-timer.C:
			if cond() {
				return
			}
			t.Fatalf("not within %v: %s", d, what)
		}
	}
}

// ended is p.done, or nil (never ready) for no process.
func (p *proc) ended() <-chan struct{} {
	if p == nil {
		return nil
	}
	return p.done
}

// waitState polls status until domain's protection in role is in state,
// failing the test after d.
func (c *cluster) waitState(domain, role, state string, d time.Duration) entry {
	c.t.Helper()
	var last []entry
	var got entry
	until(c.t, d, nil, func() bool {
		last = c.status()
		for _, e := range last {
			if e.Domain == domain && e.Role == role && e.State == state {
				got = e
				return true
			}
		}
		return false
	}, func() string { return fmt.Sprintf("%s %s not %s within %v; status %+v", role, domain, state, d, last) })
	return got
}

// waitEpoch polls until domain's primary is protected and has epoch e
// acknowledged.
func (c *cluster) waitEpoch(domain string, e uint64, d time.Duration) entry {
	c.t.Helper()
	var got entry
	until(c.t, d, nil, func() bool {
		for _, en := range c.status() {
			if en.Domain == domain && en.Role == "primary" && en.State == "protected" && en.Epoch >= e {
				got = en
				return true
			}
		}
		return false
	}, func() string { return fmt.Sprintf("primary %s not at epoch %d within %v", domain, e, d) })
	return got
}

// waitGone polls until no protector of domain in role answers.
func (c *cluster) waitGone(domain, role string, d time.Duration) {
	c.t.Helper()
	until(c.t, d, nil, func() bool {
		for _, e := range c.status() {
			if e.Domain == domain && e.Role == role {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("%s of %s still answers after %v", role, domain, d) })
}

// sock returns the path of a unix socket for a standby of this test (the
// local transport: root or this user only).
func (c *cluster) sock(name string) string {
	return filepath.Join(c.dir, name+".sock")
}

// freePort returns a loopback address nobody listens on now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// sim are the settings of every protection in these tests: a small
// simulated domain, checkpoints every 20ms, a peer lost after 600ms (the
// machine is shared: not tighter).
var sim = []string{"--hypervisor=sim", "--interval=20ms", "--timeout=600ms", "--log-level=info"}

func simDomain(extra ...string) []string {
	return append([]string{"--sim=memory_mib=16", "--sim=workload=hotset"}, extra...)
}

// certs writes a CA and a host certificate (for 127.0.0.1 and localhost,
// good for both ends) to dir, returning the cert, key and CA paths.
func certs(t *testing.T, dir, name string) (string, string, string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	write := func(file, typ string, b []byte) string {
		p := filepath.Join(dir, file)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("host.crt", "CERTIFICATE", der), write("host.key", "EC PRIVATE KEY", kder), write("ca.crt", "CERTIFICATE", caDER)
}

// alive reports whether pid runs (a zombie has finished).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || (b[i+2] != 'Z' && b[i+2] != 'X')
}

// relayEnv makes this test binary a fake ssh that relays (see sshRelay);
// its value is the file the relay appends its pid to.
const relayEnv = "KEMARI_CLI_SSH_RELAY"

// sshRelay is a fake ssh, as the primary runs it (options, "--", host,
// command): it runs the command and copies its standard input and output
// through itself, as sshd's connection does, so that killing the relay
// breaks the session without touching the remote command.
func sshRelay(args []string) int {
	for len(args) > 0 && args[0] != "--" {
		args = args[1:]
	}
	if len(args) < 3 {
		fmt.Fprintln(os.Stderr, "fake ssh: no host and command")
		return 255
	}
	f, err := os.OpenFile(os.Getenv(relayEnv), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 255
	}
	fmt.Fprintln(f, os.Getpid())
	f.Close()
	cmd := exec.Command("sh", "-c", strings.Join(args[2:], " "))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return 255
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 255
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 255
	}
	go func() { io.Copy(in, os.Stdin); in.Close() }()
	io.Copy(os.Stdout, out)
	cmd.Wait()
	return 0
}
