package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xl-kemari/xl-kemari/arbiter"
	"github.com/xl-kemari/xl-kemari/arbiter/arbitertest"
	"github.com/xl-kemari/xl-kemari/arbiter/etcd"
)

// etcdServer is an etcd this test started: one member on 127.0.0.1,
// ports picked free, a temporary data directory.
type etcdServer struct {
	cmd      *exec.Cmd
	endpoint string
	exited   chan error
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startEtcd runs the etcd binary of Debian's etcd-server package (or
// $ETCD), skipping the test when there is none; t.Cleanup stops it by
// its PID.
func startEtcd(t *testing.T) *etcdServer {
	bin := os.Getenv("ETCD")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("etcd"); err != nil {
			t.Skip("no etcd binary (install Debian's etcd-server package, or set ETCD): the etcd arbiter is not tested")
		}
	}
	dir := t.TempDir()
	client := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	log, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(bin, "--name=kemari-test", "--data-dir="+filepath.Join(dir, "data"),
		"--listen-client-urls="+client, "--advertise-client-urls="+client,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
		"--initial-cluster=kemari-test="+peer, "--initial-cluster-state=new",
		// Short ticks: etcd's minimum lease ttl is 1.5 election timeouts.
		"--heartbeat-interval=50", "--election-timeout=250",
		"--logger=zap", "--log-level=warn")
	cmd.Stdout, cmd.Stderr = log, log
	// etcd reads ETCD_* settings from the environment: give it none.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	srv := &etcdServer{cmd: cmd, endpoint: strings.TrimPrefix(client, "http://"), exited: make(chan error, 1)}
	go func() { srv.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT) // in case a case left it stopped
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-srv.exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-srv.exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("etcd log:\n%s", b)
		}
	})
	// Ready when it answers.
	probe := &etcd.Arbiter{Endpoint: srv.endpoint, Prefix: "/probe"}
	defer probe.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := probe.Acquire(ctx, [16]byte{}, arbiter.Primary)
		cancel()
		if err == nil {
			return srv
		}
		select {
		case err := <-srv.exited:
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("etcd exited (%v):\n%s", err, b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd not answering at %s: %v", srv.endpoint, err)
		}
		<-time.After(50 * time.Millisecond)
	}
}

func TestEtcdContract(t *testing.T) {
	srv := startEtcd(t)
	arbitertest.Run(t, func(t *testing.T) *arbitertest.Pair {
		faults := &arbitertest.Faults{}
		p := &etcd.Arbiter{Endpoint: srv.endpoint, Prefix: "/xl-kemari-test", Fault: faults.Hook}
		s := &etcd.Arbiter{Endpoint: srv.endpoint, Prefix: "/xl-kemari-test"}
		t.Cleanup(func() { p.Close(); s.Close() })
		return &arbitertest.Pair{P: p, S: s, TTL: 2 * time.Second,
			Stall: func() func() { return faults.Block("renew") },
			// A stopped server: its sockets stay open, nothing answers.
			Hang: func() func() {
				if err := srv.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
					t.Fatal(err)
				}
				return func() { srv.cmd.Process.Signal(syscall.SIGCONT) }
			},
		}
	})
}

// TestEtcdUnreachable: nothing listens at the endpoint; calls fail by
// their deadline with an error, not a grant.
func TestEtcdUnreachable(t *testing.T) {
	e := &etcd.Arbiter{Endpoint: fmt.Sprintf("127.0.0.1:%d", freePort(t)), Prefix: "/x"}
	defer e.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	ok, err := e.Acquire(ctx, [16]byte{1}, arbiter.Primary)
	if ok || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire with no server: %v, %v; want a deadline error", ok, err)
	}
}
