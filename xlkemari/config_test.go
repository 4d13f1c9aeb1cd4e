package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xl-kemari/xl-kemari/checkpoint/wire"
	"github.com/xl-kemari/xl-kemari/conf"
	"github.com/xl-kemari/xl-kemari/libxl"
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
	dom := writeFile(t, dir, "d.cfg", "name = \"d\"\ntype = \"pv\"\nkemari = \"standby=h2,interval=50ms\"\n")
	code, out, stderr := runArgs(t, "config", "--toml", host, "--set", "timeout=2s", dom)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"domain d (pv,", "toward h2:8011",
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
	if code, _, stderr := runArgs(t, "config", "--toml", "/nonexistent/kemari.toml", "x.cfg"); code != exitConfig || stderr != "/nonexistent/kemari.toml: the host configuration does not exist\n" {
		t.Errorf("missing explicit toml: exit %d, %q", code, stderr)
	}
	dir := t.TempDir()
	missing := filepath.Join(dir, "nosuch.cfg")
	if code, _, stderr := runArgs(t, "config", "--toml", writeFile(t, dir, "k.toml", ""), missing); code != exitConfig || stderr != missing+": the domain configuration does not exist\n" {
		t.Errorf("missing domain config: exit %d, %q", code, stderr)
	}
}

// A flag a subcommand does not have is named on stderr, with exit 2,
// never silently.
func TestUnknownFlag(t *testing.T) {
	for _, cmd := range []string{"config", "demo", "version", "status", "stop", "start", "receive", "listen", "failover", "autostart"} {
		code, out, stderr := runArgs(t, cmd, "--bogus")
		want := "xl-kemari: " + cmd + ": unknown flag: --bogus; see 'xl kemari help " + cmd + "'\n"
		if code != exitUsage || out != "" || stderr != want {
			t.Errorf("%s --bogus: exit %d, stdout %q, stderr %q; want exit %d and %q", cmd, code, out, stderr, exitUsage, want)
		}
	}
	if code, _, stderr := runArgs(t, "version", "extra"); code != exitUsage || !strings.Contains(stderr, `unexpected argument "extra"`) {
		t.Errorf("version extra: exit %d, %q", code, stderr)
	}
}

// help promises the protocol version; version prints it.
func TestVersionProtocol(t *testing.T) {
	_, help, _ := runArgs(t, "help")
	if !strings.Contains(help, "print the version, protocol version and available backends") {
		t.Fatalf("help no longer promises the protocol version:\n%s", help)
	}
	code, out, stderr := runArgs(t, "version")
	if code != exitOK || !strings.Contains(out, fmt.Sprintf("protocol version: %d (reads %d to %d)\n", wire.Version, wire.MinVersion, wire.Version)) ||
		!strings.Contains(out, "hypervisor backends: [") {
		t.Errorf("version: exit %d\n%s%s", code, out, stderr)
	}
}

// config reports what start would refuse on Xen, in start's words (both
// come from checkProtectable), at the setting to change.
func TestConfigStartRefusals(t *testing.T) {
	dir := t.TempDir()
	toml := writeFile(t, dir, "k.toml", "")
	for _, c := range []struct {
		name, cfg string
		sets      []string
		want      []string // FILE:LINE:COL prefixes (after the file) and message parts
		ok        bool
	}{
		{name: "pvh", cfg: "name = \"d\"\ntype = \"pvh\"\nkemari = \"standby=h2\"\n",
			want: []string{":2:8: d is a pvh domain; the xen backend of this release protects pv domains only (see xl-kemari(1), GUESTS)"}},
		{name: "hvm", cfg: "name = \"d\"\nbuilder = \"hvm\"\nkemari = \"standby=h2\"\n",
			want: []string{":2:11: d is a hvm domain; the xen backend", "device model (QEMU) is neither checkpointed nor its emulated NIC's output held (see xl-kemari(1), GUESTS)"}},
		{name: "rw-disk", cfg: "name = \"d\"\ndisk = [ \"phy:/dev/vg/ro,xvdb,r\", \"phy:/dev/vg/d,xvda,w\" ]\nkemari = \"standby=h2\"\n",
			want: []string{":2:35: writable disk: d writes to /dev/vg/d, which xl-kemari does not replicate", "script=block-kemari, target=NAME", "disk=none, unsafe=1 (now disk=replicate)"}},
		{name: "front-disk", cfg: "name = \"d\"\ndisk = [ \"format=raw, vdev=xvda, access=rw, script=block-kemari, target=web\" ]\nkemari = \"standby=h2\"\n", ok: true},
		{name: "front-disk-shared", cfg: "name = \"d\"\ndisk = [ \"format=raw, vdev=xvda, access=rw, script=block-kemari, target=web\" ]\nkemari = \"standby=h2,disk=shared\"\n",
			want: []string{":3:27: writable disk: d: disk=shared is not implemented on Xen yet"}},
		{name: "front-disk-bad-name", cfg: "name = \"d\"\ndisk = [ \"format=raw, vdev=xvda, access=rw, script=block-kemari, target=/srv/web.img\" ]\nkemari = \"standby=h2\"\n",
			want: []string{":2:10: writable disk: d writes to /srv/web.img, which xl-kemari does not replicate"}},
		{name: "rw-disk-accepted", cfg: "name = \"d\"\ndisk = [ \"phy:/dev/vg/d,xvda,w\" ]\nkemari = \"standby=h2,disk=none,unsafe=1\"\n", ok: true},
		{name: "ro-disk", cfg: "name = \"d\"\ndisk = [ \"/srv/x.iso,raw,hdc:cdrom,r\" ]\nkemari = \"standby=h2\"\n", ok: true},
		{name: "etcd", cfg: "name = \"d\"\nkemari = \"standby=h2,arbiter=etcd://e1:2379/kemari\"\n", ok: true},
		{name: "etcd-no-host", cfg: "name = \"d\"\nkemari = \"standby=h2,arbiter=etcd://:2379/kemari\"\n",
			want: []string{":2:30: arbiter: bad arbiter setting: arbiter \"etcd://:2379/kemari\": the etcd endpoint needs HOST:PORT"}},
		{name: "etcd-tls-set", cfg: "name = \"d\"\nkemari = \"standby=h2\"\n", sets: []string{"arbiter=etcd+tls://e1:2379/k"},
			want: []string{"<command line>:1:9: arbiter"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dom := writeFile(t, dir, c.name+".cfg", c.cfg)
			args := []string{"config", "--toml", toml}
			for _, s := range c.sets {
				args = append(args, "--set", s)
			}
			code, out, stderr := runArgs(t, append(args, dom)...)
			if c.ok {
				if code != exitOK {
					t.Errorf("exit %d: %s", code, stderr)
				}
				return
			}
			if code != exitConfig || out != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, out, stderr)
			}
			if !strings.HasPrefix(c.want[0], "<") {
				c.want[0] = dom + c.want[0]
			}
			for _, w := range c.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
}

// start's refusal of a running domain is word for word what config says.
func TestStartRefusalIsConfigs(t *testing.T) {
	prot := conf.Defaults()
	err := checkProtectable(protectTarget{Name: "d", Type: libxl.TypeHVM, Disks: []libxl.Disk{{Target: "/dev/vg/d", Writable: true}}}, "xen", []libxl.DomainType{libxl.TypePV}, prot)
	if !errors.Is(err, errDomainType) || !errors.Is(err, errWritableDisk) || errors.Is(err, errArbiter) {
		t.Fatalf("checkProtectable: %v", err)
	}
	dir := t.TempDir()
	dom := writeFile(t, dir, "d.cfg", "name = \"d\"\ntype = \"hvm\"\ndisk = [ \"/dev/vg/d,raw,xvda,rw\" ]\n")
	_, _, stderr := runArgs(t, "config", "--toml", writeFile(t, dir, "k.toml", ""), dom)
	for _, e := range unjoin(err) {
		if !strings.Contains(stderr, ": "+e.Error()+"\n") {
			t.Errorf("config does not say %q:\n%s", e, stderr)
		}
	}
}
