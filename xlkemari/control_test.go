package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xl-kemari/xl-kemari/checkpoint"
	"github.com/xl-kemari/xl-kemari/conf"
)

func testEnv(runDir string) (*env, *bytes.Buffer, *bytes.Buffer) {
	var out, errb bytes.Buffer
	return &env{Stdout: &out, Stderr: &errb, Getenv: func(k string) string {
		if k == "KEMARI_RUN_DIR" {
			return runDir
		}
		return ""
	}}, &out, &errb
}

func TestControlRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	st := checkpoint.Status{Role: "primary", Domain: "web", Peer: "tcp:127.0.0.1:1", State: "protected", Epoch: 42,
		LastPause: checkpoint.Dur(1500 * time.Microsecond), CommitLatency: checkpoint.Dur(2 * time.Millisecond)}
	stopped := make(chan string, 1)
	srv, err := listenControl(dir, socketName("primary", "web", 0), ctlHandlers{
		Status: func() []checkpoint.Status { return []checkpoint.Status{st} },
		Stop: func(_ context.Context, d string) error {
			stopped <- d
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	fi, err := os.Stat(srv.path)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("socket mode %v, %v", fi.Mode(), err)
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
		t.Errorf("run dir mode %v", di.Mode())
	}
	ps, err := survey(dir, time.Second)
	if err != nil || len(ps) != 1 || len(ps[0].Status) != 1 {
		t.Fatalf("survey: %+v, %v", ps, err)
	}
	got := ps[0].Status[0]
	if got.Domain != "web" || got.Epoch != 42 || got.LastPause != st.LastPause || got.CommitLatency != st.CommitLatency || ps[0].PID != os.Getpid() {
		t.Errorf("status read back %+v", got)
	}
	r, err := ask(srv.path, ctlRequest{Op: opStop, Domain: "web"}, time.Second)
	if err != nil || !r.OK || <-stopped != "web" {
		t.Fatalf("stop: %+v, %v", r, err)
	}
	r, _ = ask(srv.path, ctlRequest{Op: opFailover, Domain: "web"}, time.Second)
	if r.OK || !strings.Contains(r.Error, "not a standby") {
		t.Errorf("failover on a primary: %+v", r)
	}
	r, _ = ask(srv.path, ctlRequest{Op: "reboot"}, time.Second)
	if r.OK || r.Code != exitUsage {
		t.Errorf("unknown op: %+v", r)
	}
	// A second protector of the same name is refused while the first
	// answers.
	if _, err := listenControl(dir, socketName("primary", "web", 0), ctlHandlers{}); !errors.Is(err, errControl) {
		t.Errorf("second listener: %v", err)
	}
	srv.Close()
	if _, err := os.Stat(srv.path); !os.IsNotExist(err) {
		t.Errorf("socket left after Close: %v", err)
	}
}

// A socket left by a protector that was killed is replaced, and survey
// skips it meanwhile.
func TestControlStaleSocket(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "primary-db.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if ps, err := survey(dir, time.Second); err != nil || len(ps) != 0 {
		t.Errorf("survey with a stale socket: %+v, %v", ps, err)
	}
	srv, err := listenControl(dir, "primary-db.sock", ctlHandlers{})
	if err != nil {
		t.Fatalf("replacing a stale socket: %v", err)
	}
	srv.Close()
}

func TestResolveRunDir(t *testing.T) {
	e, _, _ := testEnv("/tmp/x")
	if d := resolveRunDir(e, "/flag"); d != "/flag" {
		t.Errorf("flag: %s", d)
	}
	if d := resolveRunDir(e, ""); d != "/tmp/x" {
		t.Errorf("env: %s", d)
	}
	e, _, _ = testEnv("")
	if d := resolveRunDir(e, ""); os.Geteuid() == 0 && d != defaultRunDir {
		t.Errorf("root default: %s", d)
	}
}

func TestSocketNames(t *testing.T) {
	for in, want := range map[string]string{"web": "primary-web.sock", "a/b": "primary-a%2Fb.sock", ".x": "primary-%2Ex.sock", "a b.c": "primary-a%20b.c.sock"} {
		if got := socketName("primary", in, 0); got != want {
			t.Errorf("socketName(%q) = %q, want %q", in, got, want)
		}
	}
	if got := socketName("standby", "ignored", 12); got != "standby-12.sock" {
		t.Errorf("standby socket %q", got)
	}
}

func TestStatusTable(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	entries := []statusEntry{
		{PID: 1, Status: checkpoint.Status{Role: "primary", Domain: "web", Peer: "ssh:xen2", State: "protected", Epoch: 7, EpochRate: 10,
			LastPause: checkpoint.Dur(800 * time.Microsecond), AvgPause: checkpoint.Dur(1200 * time.Microsecond), LastDirty: 12, AvgDirty: 10,
			Bandwidth: 3 << 20, Compression: 2.5, CommitLatency: checkpoint.Dur(3 * time.Millisecond)}},
		{PID: 2, Status: checkpoint.Status{Role: "primary", Domain: "db", Peer: "tls:xen3:8011", State: "unprotected", UnprotectedSince: now.Add(-90 * time.Second)}},
		{PID: 3, Status: checkpoint.Status{Role: "primary", Domain: "mail", State: "syncing", SyncPercent: 42}},
		{PID: 4, Status: checkpoint.Status{Role: "standby", Domain: "old", State: "active", ActivatedEpoch: 99}},
		{PID: 5, Status: checkpoint.Status{Role: "standby", Domain: "pv", Peer: "stdio", State: "syncing", FallbackEpoch: 41}},
		{PID: 6, Status: checkpoint.Status{Role: "standby", Domain: "hvm", State: "activating", Epoch: 12, Reason: "primary silent for the timeout",
			LastHeard: checkpoint.Dur(1012 * time.Millisecond)}},
		{PID: 7, Status: checkpoint.Status{Role: "standby", Domain: "new", State: "active", ActivatedEpoch: 5, Activation: checkpoint.Dur(2800 * time.Millisecond)}},
	}
	var b bytes.Buffer
	writeStatusTable(&b, entries, now)
	want := []string{
		"DOMAIN  ROLE     PEER           STATE                                                                  EPOCH  RATE    PAUSE LAST/AVG  DIRTY  BANDWIDTH  COMPR  COMMIT  UNPROTECTED",
		"web     primary  ssh:xen2       protected                                                              7      10.0/s  800us/1.2ms     12/10  3.0 MiB/s  2.5x   3.0ms   -",
		"db      primary  tls:xen3:8011  unprotected                                                            0      -       -               -      -          -      -       1m30s ago",
		"mail    primary  -              syncing 42%                                                            0      -       -               -      -          -      -       -",
		"old     standby  -              active (failed over at epoch 99)                                       0      -       -               -      -          -      -       -",
		"pv      standby  stdio          syncing (fallback at epoch 41)                                         0      -       -               -      -          -      -       -",
		"hvm     standby  -              activating epoch 12: primary silent for the timeout, last heard 1.01s  12     -       -               -      -          -      -       -",
		"new     standby  -              active (failed over at epoch 5 in 2.8s)                                0      -       -               -      -          -      -       -",
	}
	got := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(got) != len(want) {
		t.Fatalf("table:\n%s", b.String())
	}
	for i := range want {
		if strings.TrimRight(got[i], " ") != want[i] {
			t.Errorf("line %d\n got %q\nwant %q", i, got[i], want[i])
		}
	}
}

func TestPickProtection(t *testing.T) {
	parse := func(src string) *conf.Domain {
		t.Helper()
		d, err := conf.ParseDomain("d.cfg", []byte(src), nil, conf.Overrides{})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	one := parse("name = \"d\"\nkemari = [ \"standby=xen2,interval=50ms\" ]\n")
	if p, peer, err := pickProtection(one, ""); err != nil || peer != "xen2" || p.Interval != 50*time.Millisecond {
		t.Errorf("from the entry: %v %q %v", p.Interval, peer, err)
	}
	if _, peer, err := pickProtection(one, "xen9"); err != nil || peer != "xen9" {
		t.Errorf("host on the command line: %q %v", peer, err)
	}
	two := parse("name = \"d\"\nkemari = [ \"standby=xen2,interval=50ms\", \"standby=xen3,interval=70ms\" ]\n")
	if p, peer, err := pickProtection(two, "xen3"); err != nil || peer != "xen3" || p.Interval != 70*time.Millisecond {
		t.Errorf("named entry: %v %q %v", p.Interval, peer, err)
	}
	if _, _, err := pickProtection(two, ""); err == nil {
		t.Error("two entries and no host: no error")
	}
	if _, _, err := pickProtection(two, "xen9"); err == nil {
		t.Error("two entries, another host: no error")
	}
	none := parse("name = \"d\"\n")
	if _, _, err := pickProtection(none, ""); err == nil || !strings.Contains(err.Error(), "no standby") {
		t.Errorf("no standby anywhere: %v", err)
	}
}

func TestSDNotify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	getenv := func(k string) string {
		if k == "NOTIFY_SOCKET" {
			return path
		}
		return ""
	}
	if err := sdNotify(getenv, "READY=1"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _, err := l.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Errorf("got %q, %v", buf[:n], err)
	}
	if err := sdNotify(func(string) string { return "" }, "READY=1"); err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v", err)
	}
}

func TestProgress(t *testing.T) {
	var b bytes.Buffer
	p := newProgress(&b)
	for _, pct := range []float64{0, 3, 9, 10, 15, 35, 99, 100, 100} {
		p.update(pct, 0, "")
	}
	p.finish()
	want := "initial sync 0%\ninitial sync 10%\ninitial sync 35%\ninitial sync 99%\ninitial sync 100%\n"
	if b.String() != want {
		t.Errorf("progress lines\n%s\nwant\n%s", b.String(), want)
	}
	// What is not yet protected is said on every line, and a new pre-copy
	// round gets a line even where the percentage stands still.
	b.Reset()
	p = newProgress(&b)
	p.update(50, 1, "not yet protected (initial sync, round 1, 53% of memory sent)")
	p.update(95, 1, "not yet protected (initial sync, round 1, 100% of memory sent)")
	p.update(95, 2, "not yet protected (initial sync, round 2, 104% of memory sent)")
	p.update(95, 2, "not yet protected (initial sync, round 2, 106% of memory sent)")
	want = "initial sync 50%: not yet protected (initial sync, round 1, 53% of memory sent)\n" +
		"initial sync 95%: not yet protected (initial sync, round 1, 100% of memory sent)\n" +
		"initial sync 95%: not yet protected (initial sync, round 2, 104% of memory sent)\n"
	if b.String() != want {
		t.Errorf("progress lines\n%s\nwant\n%s", b.String(), want)
	}
}

// TestStatusTableTimeout: under the table, each protection's timeout and
// where it comes from.
func TestStatusTableTimeout(t *testing.T) {
	var b bytes.Buffer
	writeStatusTable(&b, []statusEntry{
		{Status: checkpoint.Status{Role: "primary", Domain: "web", State: "protected", Timeout: checkpoint.Dur(410 * time.Millisecond),
			TimeoutWhy: "timeout 410ms, derived: pause p99 38ms + heartbeat jitter p99 12ms + checkpoint round trip p99 67ms, 3.5 × their sum; set with --timeout"}},
		{Status: checkpoint.Status{Role: "standby", Domain: "web", State: "ready", Timeout: checkpoint.Dur(410 * time.Millisecond),
			TimeoutWhy: "timeout 410ms, announced by the primary; set with --timeout"}},
	}, time.Now())
	got := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	want := []string{
		"web (primary): timeout 410ms, derived: pause p99 38ms + heartbeat jitter p99 12ms + checkpoint round trip p99 67ms, 3.5 × their sum; set with --timeout",
		"web (standby): timeout 410ms, announced by the primary; set with --timeout",
	}
	if len(got) != 5 || got[3] != want[0] || got[4] != want[1] {
		t.Fatalf("table:\n%s", b.String())
	}
}
