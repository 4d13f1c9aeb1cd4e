package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runArgs(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
	code := run(e, args)
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigTable(t *testing.T) {
	dir := t.TempDir()
	host := writeFile(t, dir, "kemari.toml", "[defaults]\nnetbuf = \"plug\"\n")
	dom := writeFile(t, dir, "d.cfg", "name = \"d\"\ntype = \"pvh\"\nkemari = \"standby=h2,interval=50ms\"\n")
	code, out, stderr := runArgs(t, "config", "--toml", host, "--set", "timeout=2s", dom)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"domain d (pvh,", "toward h2:8011",
		"interval      50ms       " + dom + ":3:31",
		"netbuf        plug       " + host + ":2:10",
		"timeout       2s         command line",
		"mode          epoch      default",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestConfigJSON(t *testing.T) {
	dir := t.TempDir()
	dom := writeFile(t, dir, "d.cfg", "name = \"d\"\nkemari = [ \"standby=h2\", \"standby=h3\" ]\n")
	code, out, stderr := runArgs(t, "config", "--json", "--toml", writeFile(t, dir, "k.toml", ""), dom)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var got struct {
		Domain      struct{ Name string }
		Protections []struct {
			StandbyAddr string `json:"standby_addr"`
			Settings    []struct {
				Setting, Value string
				Origin         struct{ Source string }
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if got.Domain.Name != "d" || len(got.Protections) != 2 || got.Protections[1].StandbyAddr != "h3:8011" ||
		got.Protections[0].Settings[0].Origin.Source != "xl.cfg" {
		t.Errorf("unexpected JSON:\n%s", out)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	dom := writeFile(t, dir, "bad.cfg", "name = \"d\nkemari = \"standby=h2,intervall=5ms,netbuf=none\"\n")
	code, out, stderr := runArgs(t, "config", "--toml", writeFile(t, dir, "k.toml", ""), dom)
	if code != exitConfig || out != "" {
		t.Fatalf("exit %d, stdout %q", code, out)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 3 error lines, got:\n%s", stderr)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, dom+":") {
			t.Errorf("line does not start with FILE:LINE:COLUMN: %q", l)
		}
	}
	if !strings.Contains(stderr, `did you mean "interval"?`) {
		t.Errorf("no suggestion:\n%s", stderr)
	}
}

func TestConfigUsage(t *testing.T) {
	if code, _, _ := runArgs(t, "config"); code != exitUsage {
		t.Errorf("no argument: exit %d", code)
	}
	if code, _, _ := runArgs(t, "config", "--nope", "x"); code != exitUsage {
		t.Errorf("bad flag: exit %d", code)
	}
	if code, _, stderr := runArgs(t, "config", "--toml", "/nonexistent/kemari.toml", "x.cfg"); code != exitConfig || !strings.HasPrefix(stderr, "/nonexistent/kemari.toml") {
		t.Errorf("missing explicit toml: exit %d, %q", code, stderr)
	}
}
