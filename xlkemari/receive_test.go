package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xl-kemari/xl-kemari/checkpoint/wire"
)

// receiveHelperEnv makes the test binary run `xl-kemari receive` with the
// arguments after "--" instead of its tests (TestReceiveHelper), so that
// receive --stdio gets a standard input and output of its own.
const receiveHelperEnv = "XL_KEMARI_TEST_RECEIVE"

func TestReceiveHelper(t *testing.T) {
	if os.Getenv(receiveHelperEnv) != "1" {
		t.Skip("helper process of TestReceiveStdioBadFrame")
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	os.Exit(run(&env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}, args))
}

// TestReceiveStdioBadFrame: a stream that breaks right after its HELLO (a
// record with a bad CRC) ends `receive --stdio` with a non-zero exit, at
// once, its control socket removed. On main the receiver kept waiting,
// with its socket, for a primary that would never come back (issue 12,
// 986 of 11,620 fuzzed streams). The deadline only bounds a broken run;
// a working one exits as soon as it has read the bad record.
func TestReceiveStdioBadFrame(t *testing.T) {
	var in bytes.Buffer
	w := wire.NewWriter(&in)
	w.WriteHeader(0)
	w.Write(&wire.Hello{Version: wire.Version, Role: wire.RolePrimary, Session: [16]byte{9}, Inflight: 1,
		Domain: wire.DomainDesc{Name: "bad1", Type: "pvh", Pages: 16, VCPUs: 1, Workload: "idle"}})
	w.Flush()
	// EPOCH_BEGIN, seq 1, with a CRC that does not match.
	in.Write([]byte{0x02, 0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef})
	in.Write(make([]byte, 16))

	runDir := filepath.Join(t.TempDir(), "run") // created 0700 by receive: a run directory must be private
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestReceiveHelper$", "--",
		"receive", "--stdio", "--hypervisor=sim", "--run-dir="+runDir, "--timeout=30s", "--interval=1s")
	cmd.Env = append(os.Environ(), receiveHelperEnv+"=1")
	// Standard input stays open after the stream, as an ssh channel whose
	// primary hangs: only the bad frame may end the receiver.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	cmd.Stdin = pr
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pr.Close()
	if _, err := pw.Write(in.Bytes()); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	if ctx.Err() != nil {
		t.Fatalf("receive --stdio still running after a bad frame (killed at the deadline)\n%s", stderr.String())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitFailure {
		t.Fatalf("receive --stdio: %v, want exit %d\n%s", err, exitFailure, stderr.String())
	}
	if !strings.Contains(stderr.String(), "crc") {
		t.Errorf("stderr does not name the bad frame:\n%s", stderr.String())
	}
	t.Logf("receive --stdio:\n%s", stderr.String())
	if ents, _ := os.ReadDir(runDir); len(ents) != 0 {
		t.Errorf("run directory keeps %v", ents)
	}
}
