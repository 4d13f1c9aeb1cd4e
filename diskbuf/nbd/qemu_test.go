package nbd

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestQemuIOInterop runs qemu-io (QEMU's own NBD client, an independent
// implementation of the protocol) against the server over a unix socket:
// option haggling with structured replies refused, then WRITE, READ with
// pattern checks, WRITE_ZEROES, TRIM and FLUSH. Skips without qemu-io.
func TestQemuIOInterop(t *testing.T) {
	qemuIO, err := exec.LookPath("qemu-io")
	if err != nil {
		t.Skip("qemu-io not installed")
	}
	mem := NewMemBackend(4 << 20)
	srv := newServer(t, Config{Backend: mem})
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	defer func() { cancel(); <-done }()
	cmds := []string{
		"write -P 0xab 0 64k",
		"write -P 0xcd 1M 128k",
		"read -P 0xab 0 64k",
		"read -P 0xcd 1M 128k",
		"write -z 1M 4k",
		"read -P 0 1M 4k",
		"discard 0 4k",
		"read -P 0 0 4k",
		"read -P 0xab 4k 60k",
		"flush",
	}
	args := []string{"-f", "raw"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	args = append(args, "nbd+unix:///disk?socket="+sock)
	out, err := exec.CommandContext(ctx, qemuIO, args...).CombinedOutput()
	t.Logf("qemu-io output:\n%s", out)
	if err != nil {
		t.Fatalf("qemu-io: %v", err)
	}
	if bytes.Contains(out, []byte("Pattern verification failed")) || bytes.Contains(out, []byte("failed")) {
		t.Fatal("qemu-io reported a failure")
	}
	if n := strings.Count(string(out), "read "); n != 5 {
		t.Fatalf("qemu-io ran %d reads, want 5", n)
	}
	got := mem.Bytes()
	want := make([]byte, 4<<20)
	copy(want[4096:64<<10], bytes.Repeat([]byte{0xab}, 60<<10))
	copy(want[1<<20+4096:1<<20+128<<10], bytes.Repeat([]byte{0xcd}, 124<<10))
	if !bytes.Equal(got, want) {
		t.Fatal("store differs from what qemu-io wrote")
	}
}
