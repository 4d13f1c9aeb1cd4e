package arbiter_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xl-kemari/xl-kemari/arbiter"
	"github.com/xl-kemari/xl-kemari/arbiter/arbitertest"
)

// serveEnv names the lease directory a helper process serves (TestMain).
const serveEnv = "ARBITERTEST_SERVE_FILE"

func TestMain(m *testing.M) {
	if dir := os.Getenv(serveEnv); dir != "" {
		if err := arbitertest.Serve(&arbiter.File{Dir: dir}, os.Stdin, os.Stdout); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const fileTTL = 2 * time.Second

func filePair(p arbiter.Leaser, faults *arbitertest.Faults) *arbitertest.Pair {
	return &arbitertest.Pair{P: p, TTL: fileTTL, FastLapse: true,
		Stall: func() func() { return faults.Block("renew") },
		Hang:  func() func() { return faults.Block("*") },
	}
}

// TestFileContract: both sides in this process, two File values on one
// directory (two open file descriptions of its lock).
func TestFileContract(t *testing.T) {
	arbitertest.Run(t, func(t *testing.T) *arbitertest.Pair {
		dir := filepath.Join(t.TempDir(), "leases")
		faults := &arbitertest.Faults{}
		p := filePair(&arbiter.File{Dir: dir, Fault: faults.Hook}, faults)
		p.S = &arbiter.File{Dir: dir}
		return p
	})
}

// TestFileContractTwoProcesses: the standby side is a helper process
// (this test binary re-executed) on the same directory, so that the two
// sides contend through the kernel's flock and the filesystem only.
func TestFileContractTwoProcesses(t *testing.T) {
	arbitertest.Run(t, func(t *testing.T) *arbitertest.Pair {
		dir := filepath.Join(t.TempDir(), "leases")
		faults := &arbitertest.Faults{}
		p := filePair(&arbiter.File{Dir: dir, Fault: faults.Hook}, faults)
		var cmd *exec.Cmd
		p.S, cmd = startHelper(t, dir)
		// By PID: only the helper this test started.
		p.Kill = func() { cmd.Process.Kill() }
		p.Freeze = func() func() {
			cmd.Process.Signal(syscall.SIGSTOP)
			return func() { cmd.Process.Signal(syscall.SIGCONT) }
		}
		return p
	})
}

func startHelper(t *testing.T, dir string) (*arbitertest.Remote, *exec.Cmd) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), serveEnv+"="+dir)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		in.Close() // the helper ends when its input does and its calls return
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill() // by PID: only the helper this test started
			<-exited
		}
	})
	rm := arbitertest.NewRemote(in, out)
	go func() { exited <- cmd.Wait() }()
	return rm, cmd
}

// TestFileHungMountOneGoroutine: calls on a hung mount return by their
// deadline, and only the first of them is left blocked in the filesystem.
func TestFileHungMountOneGoroutine(t *testing.T) {
	var entered atomic.Int32
	block := make(chan struct{})
	f := &arbiter.File{Dir: t.TempDir(), Fault: func(string) error {
		entered.Add(1)
		<-block
		return nil
	}}
	for i := 0; i < 5; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		_, err := f.Acquire(ctx, [16]byte{1}, arbiter.Primary)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("call %d: err = %v, want a deadline", i, err)
		}
	}
	close(block)
	ok, err := f.Acquire(context.Background(), [16]byte{1}, arbiter.Primary)
	if err != nil || !ok {
		t.Fatalf("after the mount answers: %v, %v", ok, err)
	}
	// The abandoned first call ran to completion (it may have won the
	// session, which the last call read back); the four waiting ones
	// never reached the filesystem.
	if n := entered.Load(); n != 2 {
		t.Fatalf("%d calls reached the filesystem, want 2 (the abandoned one and the last)", n)
	}
}

// TestFileRecordFormat: the decision record is "<role>\n" in a file named
// by the session's hex, as before leases existed, so hosts running the
// previous release agree with this one.
func TestFileRecordFormat(t *testing.T) {
	dir := t.TempDir()
	s := [16]byte{0xab, 0xcd}
	if err := os.WriteFile(filepath.Join(dir, "abcd0000000000000000000000000000"), []byte("standby\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := &arbiter.File{Dir: dir}
	if ok, err := f.Acquire(context.Background(), s, arbiter.Primary); err != nil || ok {
		t.Fatalf("primary on a standby record: %v, %v", ok, err)
	}
	if ok, err := f.Acquire(context.Background(), [16]byte{1}, arbiter.Primary); err != nil || !ok {
		t.Fatalf("fresh session: %v, %v", ok, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "01000000000000000000000000000000"))
	if err != nil || strings.TrimSpace(string(b)) != "primary" {
		t.Fatalf("record = %q, %v", b, err)
	}
}

// TestFileBlockedLock: the other host holds the directory's lock and
// does not let go (a stand-in for a hung mount that blocks in the
// kernel, not in a hook): Acquire returns by its deadline, and answers
// once the lock is free.
func TestFileBlockedLock(t *testing.T) {
	dir := t.TempDir()
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	f := &arbiter.File{Dir: dir}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := f.Acquire(ctx, [16]byte{1}, arbiter.Primary); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire under a held lock: %v, want a deadline", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if ok, err := f.Acquire(context.Background(), [16]byte{1}, arbiter.Primary); err != nil || !ok {
		t.Fatalf("after the lock is free: %v, %v", ok, err)
	}
}
