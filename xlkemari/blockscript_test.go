package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestBlockKemariScript runs dist/block-kemari with stub xenstore tools
// and a stub xl-kemari: a target that is not a disk name is refused
// before anything runs with it (no shell injection), remove stops the
// front, add starts a front when none answers and fails, naming the log,
// when none publishes a device.
func TestBlockKemariScript(t *testing.T) {
	script, err := filepath.Abs("../dist/block-kemari")
	if err != nil {
		t.Fatal(err)
	}
	run := func(t *testing.T, params, cmd string) (calls, xs, served string, err error) {
		dir := t.TempDir()
		bin := filepath.Join(dir, "bin")
		os.Mkdir(bin, 0o755)
		stub := func(name, body string) {
			if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		stub("xenstore-read", `printf '%s' "$PARAMS"`)
		stub("xenstore-write", `echo "$*" >>"$STUBDIR/xs"`)
		stub("logger", `:`)
		// serve runs in the background: it reports on a FIFO the test
		// reads once the script has ended.
		stub("xl-kemari", `case "$1 $2" in "disk serve") echo "$*" >"$STUBDIR/served";; "disk status") echo "$*" >>"$STUBDIR/calls"; exit 1;; *) echo "$*" >>"$STUBDIR/calls";; esac`)
		if err := unix.Mkfifo(filepath.Join(dir, "served"), 0o600); err != nil {
			t.Fatal(err)
		}
		c := exec.Command("/bin/sh", script, cmd)
		c.Env = []string{"PATH=" + bin + ":/usr/bin:/bin", "XENBUS_PATH=backend/vbd/3/51712", "PARAMS=" + params,
			"STUBDIR=" + dir, "XL_KEMARI=" + filepath.Join(bin, "xl-kemari"), "KEMARI_RUN_DIR=" + dir,
			"KEMARI_LOG_DIR=" + dir, "XL_KEMARI_DISK_WAIT=0"}
		c.Dir = dir
		out, err := c.CombinedOutput()
		b, _ := os.ReadFile(filepath.Join(dir, "calls"))
		x, _ := os.ReadFile(filepath.Join(dir, "xs"))
		if _, serr := os.Stat(filepath.Join(dir, "pwned")); serr == nil {
			t.Fatalf("the target ran as a command: %s", out)
		}
		if strings.Contains(string(b), "disk status") {
			s, _ := os.ReadFile(filepath.Join(dir, "served")) // blocks until serve ran
			served = string(s)
		}
		return string(b), string(x), served, err
	}
	for _, bad := range []string{"a;touch pwned", "$(touch pwned)", "`touch pwned`", "../x", "-x", "a b", ""} {
		calls, xs, _, err := run(t, bad, "add")
		if err == nil || calls != "" || !strings.Contains(xs, "hotplug-status error") {
			t.Errorf("target %q: err %v, xl-kemari calls %q, xenstore %q", bad, err, calls, xs)
		}
	}
	calls, _, _, err := run(t, "/dev/web", "remove")
	if err != nil || calls != "disk stop -- web\n" {
		t.Errorf("remove: err %v, calls %q", err, calls)
	}
	calls, xs, served, err := run(t, "web", "add")
	if err == nil || served != "disk serve -- web\n" || !strings.Contains(calls, "disk status -- web") || !strings.Contains(xs, "disk-web.log") {
		t.Errorf("add without a front: err %v, served %q, calls %q, xenstore %q", err, served, calls, xs)
	}
}
