package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A run directory that others may enter (a 1777 /tmp named by mistake)
// is refused and left as it was, not made private under its other users;
// so is a symbolic link to one, even to a private directory of ours.
func TestRunDirRefusedNotChanged(t *testing.T) {
	base := t.TempDir()
	shared := filepath.Join(base, "shared")
	if err := os.Mkdir(shared, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	if err := ensureRunDir(shared); err == nil || !strings.Contains(err.Error(), "others may enter it") {
		t.Errorf("a 1777 run directory: %v, want refused", err)
	}
	if fi, err := os.Stat(shared); err != nil || fi.Mode().Perm() != 0o777 || fi.Mode()&os.ModeSticky == 0 {
		t.Errorf("the 1777 directory was changed: %v %v", fi.Mode(), err)
	}
	if _, err := listenControl(shared, "x.sock", ctlHandlers{}); err == nil {
		t.Errorf("a control socket was made in a 1777 directory")
	}

	private := filepath.Join(base, "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(private, link); err != nil {
		t.Fatal(err)
	}
	if err := ensureRunDir(link); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("a symlinked run directory: %v, want refused", err)
	}
	group := filepath.Join(base, "group")
	if err := os.Mkdir(group, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chmod(group, 0o750)
	if err := ensureRunDir(group); err == nil {
		t.Errorf("a 0750 run directory was accepted")
	}
	if fi, _ := os.Stat(group); fi.Mode().Perm() != 0o750 {
		t.Errorf("the 0750 directory was changed to %v", fi.Mode())
	}

	// Missing: created private, parents and all; then accepted as is.
	fresh := filepath.Join(base, "a", "b", "run")
	if err := ensureRunDir(fresh); err != nil {
		t.Fatalf("a missing run directory: %v", err)
	}
	if fi, err := os.Lstat(fresh); err != nil || fi.Mode().Perm()&0o077 != 0 || !fi.IsDir() {
		t.Errorf("created run directory: %v %v", fi.Mode(), err)
	}
	if err := ensureRunDir(fresh); err != nil {
		t.Errorf("our own private run directory: %v", err)
	}
}

// The event log never follows a symbolic link: neither one to an
// existing file (appended to) nor a dangling one (the file it names
// would be created, anywhere root can write).
func TestEventLogNoFollow(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "events")
	os.Symlink(victim, link)
	if ev, err := openEventLog(link); err == nil {
		ev.f.Close()
		t.Errorf("--events through a symlink to a file was opened")
	}
	dangling := filepath.Join(dir, "events2")
	planted := filepath.Join(dir, "planted")
	os.Symlink(planted, dangling)
	if ev, err := openEventLog(dangling); err == nil {
		ev.f.Close()
		t.Errorf("--events through a dangling symlink was opened")
	}
	if _, err := os.Lstat(planted); err == nil {
		t.Errorf("a dangling symlink made %s", planted)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Errorf("the link's target changed: %q", b)
	}
	hard := filepath.Join(dir, "hard")
	if err := os.Link(victim, hard); err == nil {
		if ev, err := openEventLog(hard); err == nil {
			ev.f.Close()
			t.Errorf("--events to a file with a second hard link was opened")
		}
	}
	ok := filepath.Join(dir, "ok.jsonl")
	ev, err := openEventLog(ok)
	if err != nil {
		t.Fatalf("a plain new event log: %v", err)
	}
	ev.f.Close()
	if fi, _ := os.Stat(ok); fi.Mode().Perm() != 0o600 {
		t.Errorf("event log mode %v, want 0600", fi.Mode())
	}
}
