package checkpoint

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The unix transport serves this user end to end; a socket left by a
// process that died is replaced, a live one and a file that is not a
// socket are not; relative paths are refused on both ends.
func TestUnixTransport(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "repl.sock")
	ln, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v %v, want 0600", fi.Mode(), err)
	}
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.Copy(c, c)
		c.Close()
	}()
	c, err := UnixDialer{Path: path}.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("epoch 1")
	c.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo %q %v", got, err)
	}
	c.Close()
	if _, err := ListenUnix(path); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("a second listener on a live socket: %v", err)
	}
	ln.Close()

	// Stale: a socket nobody answers.
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	ln2, err := ListenUnix(stale)
	if err != nil {
		t.Fatalf("replacing a stale socket: %v", err)
	}
	ln2.Close()

	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("keep"), 0o600)
	if _, err := ListenUnix(file); err == nil {
		t.Errorf("a regular file was replaced by a socket")
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Errorf("the file was touched")
	}
	if _, err := ListenUnix("rel.sock"); err == nil {
		t.Errorf("a relative socket path was accepted")
	}
	if _, err := (UnixDialer{Path: "rel.sock"}).Dial(context.Background()); err == nil {
		t.Errorf("a relative socket path was dialled")
	}
}
