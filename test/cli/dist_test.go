package cli

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// shimEnv lays out a PATH with the shim as xl first; realXL is the
// XL_KEMARI_REAL_XL list.
func shimRun(t *testing.T, path, realXL string, args ...string) result {
	t.Helper()
	// Resolve xl with the PATH under test, as a shell would.
	cmd := &exec.Cmd{Args: append([]string{"xl"}, args...), Env: []string{"PATH=" + path, "XL_KEMARI_REAL_XL=" + realXL}}
	for _, dir := range filepath.SplitList(path) {
		if p := filepath.Join(dir, "xl"); isExec(p) {
			cmd.Path = p
			break
		}
	}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

func writeExec(t *testing.T, path, body string) {
	t.Helper()
	os.MkdirAll(filepath.Dir(path), 0o755)
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
}

// The xl shim: `xl kemari ...` runs xl-kemari; anything else runs the real
// xl with its arguments and exit status untouched, wherever the real xl
// is, never the shim itself or a copy of it.
func TestShim(t *testing.T) {
	dir := t.TempDir()
	shim, err := os.ReadFile("../../dist/xl")
	if err != nil {
		t.Fatal(err)
	}
	wrap := filepath.Join(dir, "local", "sbin")
	writeExec(t, filepath.Join(wrap, "xl"), string(shim))
	os.Symlink(filepath.Join(bin, "xl-kemari"), filepath.Join(wrap, "xl-kemari"))
	fake := "#!/bin/sh\nprintf '%s|' \"$0\" \"$@\"\nexit 7\n"
	usrSbin := filepath.Join(dir, "usr", "sbin", "xl")
	localSbin := filepath.Join(dir, "usr", "local", "sbin", "xl")
	writeExec(t, usrSbin, fake)
	writeExec(t, localSbin, fake)
	sysPath := "/usr/bin:/bin"

	t.Run("kemari", func(t *testing.T) {
		r := shimRun(t, wrap+":"+sysPath, usrSbin, "kemari", "version")
		if r.code != 0 || !strings.HasPrefix(r.stdout, "xl-kemari ") {
			t.Errorf("xl kemari version: exit %d %q %q", r.code, r.stdout, r.stderr)
		}
		r = shimRun(t, wrap+":"+sysPath, usrSbin, "kemari", "frobnicate")
		if r.code != 2 {
			t.Errorf("xl kemari frobnicate: exit %d, want 2", r.code)
		}
	})
	for name, real := range map[string]string{"/usr/sbin": usrSbin, "/usr/local/sbin": localSbin} {
		t.Run("real xl in "+name, func(t *testing.T) {
			r := shimRun(t, wrap+":"+sysPath, "/nonexistent/xl:"+real, "list", "-l", "a b", "", "kemari")
			if want := real + "|list|-l|a b||kemari|"; r.code != 7 || r.stdout != want {
				t.Errorf("xl list: exit %d, %q; want 7, %q", r.code, r.stdout, want)
			}
		})
	}
	t.Run("real xl only in PATH", func(t *testing.T) {
		r := shimRun(t, wrap+":"+filepath.Dir(usrSbin)+":"+sysPath, "/nonexistent/xl", "info")
		if r.code != 7 || !strings.HasPrefix(r.stdout, usrSbin+"|info|") {
			t.Errorf("exit %d, %q", r.code, r.stdout)
		}
	})
	t.Run("never itself", func(t *testing.T) {
		// The shim named as the real xl (by a symlink) and a second copy
		// of it earlier in PATH: both skipped.
		link := filepath.Join(dir, "link", "xl")
		os.MkdirAll(filepath.Dir(link), 0o755)
		os.Symlink(filepath.Join(wrap, "xl"), link)
		copyDir := filepath.Join(dir, "copy")
		writeExec(t, filepath.Join(copyDir, "xl"), string(shim))
		r := shimRun(t, wrap+":"+copyDir+":"+sysPath, link+":"+usrSbin, "info")
		if r.code != 7 || !strings.HasPrefix(r.stdout, usrSbin+"|") {
			t.Errorf("exit %d, %q %q", r.code, r.stdout, r.stderr)
		}
		r = shimRun(t, wrap+":"+copyDir+":"+sysPath, link, "info")
		if r.code != 127 || !strings.Contains(r.stderr, "real xl was not found") {
			t.Errorf("no real xl: exit %d, %q", r.code, r.stderr)
		}
	})
}

func TestShimIsPOSIX(t *testing.T) {
	for _, sh := range []string{"dash", "busybox"} {
		p, err := exec.LookPath(sh)
		if err != nil {
			continue
		}
		args := []string{"-n", "../../dist/xl"}
		if sh == "busybox" {
			args = append([]string{"sh"}, args...)
		}
		if out, err := exec.Command(p, args...).CombinedOutput(); err != nil {
			t.Errorf("%s -n dist/xl: %v %s", sh, err, out)
		}
	}
	if out, err := exec.Command("sh", "-n", "../../dist/init.d/xl-kemari.in").CombinedOutput(); err != nil {
		t.Errorf("sh -n init script: %v %s", err, out)
	}
}

// The systemd units pass systemd-analyze verify without a warning.
func TestSystemdUnits(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (apt-get install systemd)")
	}
	dir := t.TempDir()
	ins, _ := filepath.Glob("../../dist/systemd/*.service.in")
	if len(ins) != 3 {
		t.Fatalf("units: %v", ins)
	}
	var units []string
	for _, in := range ins {
		b, err := os.ReadFile(in)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(filepath.Base(in), ".in")
		if strings.HasSuffix(name, "@.service") {
			name = strings.Replace(name, "@.", "@web.", 1)
		}
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(strings.ReplaceAll(string(b), "@SBINDIR@", bin)), 0o644)
		units = append(units, p)
	}
	out, err := exec.Command(sa, append([]string{"verify", "--man=no"}, units...)...).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// xl-kemari(1) is clean under mandoc's lint and documents every command.
func TestManPage(t *testing.T) {
	m, err := exec.LookPath("mandoc")
	if err != nil {
		t.Skip("mandoc is not installed (apt-get install mandoc)")
	}
	out, err := exec.Command(m, "-T", "lint", "-W", "warning", "../../man/xl-kemari.1").CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("mandoc -T lint: %v\n%s", err, out)
	}
	src, _ := os.ReadFile("../../man/xl-kemari.1")
	usage, _ := exec.Command(filepath.Join(bin, "xl-kemari"), "help").Output()
	for _, line := range strings.Split(string(usage), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(line, "  ") {
			if !strings.Contains(string(src), "\n.SS "+f[0]+"\n") {
				t.Errorf("xl-kemari(1) does not document %s", f[0])
			}
		}
	}
}

// shimRunIn is shimRun with a working directory and extra environment,
// bounded by a deadline: a shim that loops must fail the test, not hang
// it.
func shimRunIn(t *testing.T, cwd, path string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "xl", args...)
	cmd.Err = nil
	for _, dir := range filepath.SplitList(path) {
		if p := filepath.Join(dir, "xl"); filepath.IsAbs(p) && isExec(p) {
			cmd.Path = p
			break
		}
	}
	cmd.Dir = cwd
	cmd.Env = append([]string{"PATH=" + path}, env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("xl %v did not end within 30s (a loop?): %s", args, errb.String())
	}
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

// The shim runs only absolute paths, ends a wrapper loop, and as root
// takes from the environment only files that root owns and alone may
// write.
func TestShimHardening(t *testing.T) {
	dir := t.TempDir()
	shim, err := os.ReadFile("../../dist/xl")
	if err != nil {
		t.Fatal(err)
	}
	wrap := filepath.Join(dir, "local", "sbin")
	writeExec(t, filepath.Join(wrap, "xl"), string(shim))
	fake := "#!/bin/sh\nprintf '%s|' \"$0\" \"$@\"\nexit 7\n"
	usrSbin := filepath.Join(dir, "usr", "sbin", "xl")
	writeExec(t, usrSbin, fake)
	sysPath := "/usr/bin:/bin"

	t.Run("no relative PATH entries", func(t *testing.T) {
		// The caller's directory holds an xl and an xl-kemari; PATH names
		// it as ".", "" and "rel". None may run.
		cwd := filepath.Join(dir, "cwd")
		trap := "#!/bin/sh\necho TRAPPED\nexit 99\n"
		writeExec(t, filepath.Join(cwd, "xl"), trap)
		writeExec(t, filepath.Join(cwd, "rel", "xl"), trap)
		writeExec(t, filepath.Join(cwd, "xl-kemari"), trap)
		writeExec(t, filepath.Join(cwd, "rel", "xl-kemari"), trap)
		noKemari := filepath.Join(dir, "nokemari")
		writeExec(t, filepath.Join(noKemari, "xl"), string(shim))
		path := noKemari + ":.::rel:" + sysPath
		r := shimRunIn(t, cwd, path, []string{"XL_KEMARI_REAL_XL=/nonexistent/xl:xl:rel/xl"}, "info")
		if strings.Contains(r.stdout, "TRAPPED") || r.code != 127 {
			t.Errorf("xl info with only relative candidates: exit %d %q %q", r.code, r.stdout, r.stderr)
		}
		r = shimRunIn(t, cwd, path, []string{"XL_KEMARI=xl-kemari"}, "kemari", "version")
		if strings.Contains(r.stdout, "TRAPPED") || r.code != 127 {
			t.Errorf("xl kemari with xl-kemari only in relative places: exit %d %q %q", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("site wrapper calling xl through PATH", func(t *testing.T) {
		// /usr/local/bin/xl-style wrapper: logs, then `exec xl "$@"`.
		wrapper := filepath.Join(dir, "site", "xl")
		writeExec(t, wrapper, "#!/bin/sh\necho wrapped >&2\nexec xl \"$@\"\n")
		path := wrap + ":" + filepath.Dir(wrapper) + ":" + filepath.Dir(usrSbin) + ":" + sysPath
		r := shimRunIn(t, dir, path, []string{"XL_KEMARI_REAL_XL=" + wrapper}, "info")
		if r.code != 7 || !strings.HasPrefix(r.stdout, usrSbin+"|info|") {
			t.Errorf("through a wrapper: exit %d %q %q", r.code, r.stdout, r.stderr)
		}
		// No real xl behind the wrapper: a clear end, not a loop.
		path = wrap + ":" + filepath.Dir(wrapper) + ":" + sysPath
		r = shimRunIn(t, dir, path, []string{"XL_KEMARI_REAL_XL=" + wrapper}, "info")
		if r.code == 0 || r.code == 7 || !strings.Contains(r.stderr, "shim was entered") {
			t.Errorf("a wrapper and no real xl: exit %d %q", r.code, r.stderr)
		}
	})
	t.Run("root ignores others' files in the environment", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root: the environment is trusted for other users")
		}
		nobody := filepath.Join(dir, "nobody")
		writeExec(t, filepath.Join(nobody, "xl"), "#!/bin/sh\necho NOBODY\nexit 99\n")
		writeExec(t, filepath.Join(nobody, "xl-kemari"), "#!/bin/sh\necho NOBODY\nexit 99\n")
		for _, f := range []string{"xl", "xl-kemari"} {
			if err := os.Chown(filepath.Join(nobody, f), 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}
		writable := filepath.Join(dir, "writable", "xl")
		writeExec(t, writable, "#!/bin/sh\necho WRITABLE\nexit 99\n")
		os.Chmod(writable, 0o777)
		path := wrap + ":" + filepath.Dir(usrSbin) + ":" + sysPath
		r := shimRunIn(t, dir, path, []string{"XL_KEMARI_REAL_XL=" + filepath.Join(nobody, "xl") + ":" + writable + ":" + usrSbin}, "info")
		if r.code != 7 || !strings.HasPrefix(r.stdout, usrSbin+"|") {
			t.Errorf("root with XL_KEMARI_REAL_XL naming others' files: exit %d %q %q", r.code, r.stdout, r.stderr)
		}
		os.Symlink(filepath.Join(bin, "xl-kemari"), filepath.Join(wrap, "xl-kemari"))
		r = shimRunIn(t, dir, path, []string{"XL_KEMARI=" + filepath.Join(nobody, "xl-kemari")}, "kemari", "version")
		if r.code != 0 || !strings.HasPrefix(r.stdout, "xl-kemari ") {
			t.Errorf("root with XL_KEMARI naming nobody's file: exit %d %q %q", r.code, r.stdout, r.stderr)
		}
	})
}
