package checkpoint

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeSSH writes a stand-in for the ssh client that, like sshd, hands the
// remote command string to a shell on "the peer" (here, locally).
func fakeSSH(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ssh")
	script := `#!/bin/sh
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do shift; done
shift
host=$1
shift
exec sh -c "$*"
`
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSSHDialerRunsRemote(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	d := &SSHDialer{Command: []string{fakeSSH(t)}, Host: "root@standby-1", Remote: []string{"cat"}}
	c, err := d.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	msg := "hello over ssh\n"
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("read %q, %v", got, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if d.String() != "ssh:root@standby-1" {
		t.Errorf("String %q", d.String())
	}
}

// Arguments reach the remote command as they were, one word each, however
// hostile: the remote shell sees them quoted.
func TestSSHDialerQuotesRemoteArguments(t *testing.T) {
	dir := t.TempDir()
	canary := filepath.Join(dir, "pwned")
	hostile := []string{"a b", "it's", "$(touch " + canary + ")", "`touch " + canary + "`", "; touch " + canary, "", "*"}
	d := &SSHDialer{Command: []string{fakeSSH(t)}, Host: "standby",
		Remote: append([]string{"printf", `%s\n`}, hostile...)}
	c, err := d.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(c)
	c.Close()
	if want := strings.Join(hostile, "\n") + "\n"; string(out) != want {
		t.Errorf("remote got\n%q\nwant\n%q", out, want)
	}
	if _, err := os.Stat(canary); err == nil {
		t.Fatal("an argument was run by the remote shell")
	}
}

func TestSSHDialerArgv(t *testing.T) {
	d := &SSHDialer{Command: []string{"ssh", "-i", "/root/.ssh/kemari"}, Host: "xen2", Remote: []string{"xl-kemari", "receive", "--stdio", "--timeout=1s"}}
	argv, err := d.Argv()
	if err != nil {
		t.Fatal(err)
	}
	want := "ssh -i /root/.ssh/kemari -T -o BatchMode=yes -- xen2 xl-kemari receive --stdio --timeout=1s"
	if got := strings.Join(argv, " "); got != want {
		t.Errorf("argv %q\nwant  %q", got, want)
	}
}

func TestCheckSSHHost(t *testing.T) {
	good := []string{"xen2", "root@xen2.example.net", "10.0.0.2", "fe80::1", "[fe80::1]", "a_b-c"}
	bad := []string{"", "-oProxyCommand=touch /tmp/x", "root@-x", "@xen2", "xen2;reboot", "xen 2", "xen2\n", "$(id)", "a/b", "root@"}
	for _, h := range good {
		if err := CheckSSHHost(h); err != nil {
			t.Errorf("CheckSSHHost(%q): %v", h, err)
		}
	}
	for _, h := range bad {
		if err := CheckSSHHost(h); !errors.Is(err, ErrSSHHost) {
			t.Errorf("CheckSSHHost(%q): %v, want ErrSSHHost", h, err)
		}
		if _, err := (&SSHDialer{Command: []string{"ssh"}, Host: h, Remote: []string{"true"}}).Dial(context.Background()); err == nil {
			t.Errorf("Dial(%q) ran ssh", h)
		}
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{"abc": "abc", "--timeout=1s": "--timeout=1s", "": "''", "a b": "'a b'", "it's": `'it'\''s'`} {
		if got := ShellQuote(in); got != want {
			t.Errorf("ShellQuote(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestOneConnListener(t *testing.T) {
	a, b := io.Pipe()
	c := StdioConn{R: a, W: b}
	l := NewOneConnListener(c, "stdio")
	got, err := l.Accept()
	if err != nil || got != Conn(c) {
		t.Fatalf("Accept: %v, %v", got, err)
	}
	l.Close()
	if _, err := l.Accept(); err == nil {
		t.Fatal("Accept after Close")
	}
	if l.String() != "stdio" {
		t.Errorf("String %q", l.String())
	}
}
