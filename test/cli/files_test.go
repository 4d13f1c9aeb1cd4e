package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// --log-file never follows a symbolic link: a dangling one planted where
// root logs would otherwise create the file it names, anywhere.
func TestLogFileNoFollow(t *testing.T) {
	dir := t.TempDir()
	planted := filepath.Join(dir, "planted")
	link := filepath.Join(dir, "receive.log")
	if err := os.Symlink(planted, link); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"receive", "--stdio", "--hypervisor=sim", "--run-dir=" + filepath.Join(dir, "run"), "--log-file=" + link},
	} {
		cmd := exec.Command(filepath.Join(bin, "xl-kemari"), args...)
		stdin, _ := os.Open(os.DevNull)
		defer stdin.Close()
		cmd.Stdin = stdin
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("%s with a symlinked log file: exit 0\n%s", args[0], out)
		}
		if !strings.Contains(string(out), "symbolic link") {
			t.Errorf("%s: the error does not name the symbolic link:\n%s", args[0], out)
		}
	}
	if _, err := os.Lstat(planted); err == nil {
		t.Errorf("receive --log-file created %s through a dangling symlink", planted)
	}
}
