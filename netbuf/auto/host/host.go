package host

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Sentinel errors.
var (
	// ErrCommand: a configuration tool exited with an error.
	ErrCommand = errors.New("host: command failed")
	// ErrNetNS: entering or leaving a network namespace failed.
	ErrNetNS = errors.New("host: network namespace")
	// ErrNoConfig: the kernel build configuration is not readable.
	ErrNoConfig = errors.New("host: kernel config not found")
)

// Run executes argv (no shell) and returns its combined output. With
// netnsPath set, the command runs inside that network namespace through
// nsenter(1). The error wraps ErrCommand and quotes the command and its
// output, so that a failed rule names itself.
func Run(netnsPath string, argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("%w: empty command", ErrCommand)
	}
	full := argv
	if netnsPath != "" {
		full = append([]string{"nsenter", "--net=" + netnsPath, "--"}, argv...)
	}
	cmd := exec.Command(full[0], full[1:]...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%w: %s: %v: %s", ErrCommand, strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// InNetNS runs fn on an OS thread that has entered the network namespace
// at path; sockets fn opens belong to that namespace for their lifetime.
// An empty path runs fn directly.
func InNetNS(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	target, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("%w: open %s: %v", ErrNetNS, path, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	// A fresh goroutine whose thread is thrown away if it cannot return to
	// its namespace: a thread left in the wrong namespace must not be
	// reused by the scheduler.
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("%w: current: %v", ErrNetNS, err)
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("%w: enter %s: %v", ErrNetNS, path, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("%w: leave %s: %v", ErrNetNS, path, err))
			return // thread stays locked and dies with the goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Features is a kernel build configuration: CONFIG_ name to "y", "m" or a
// value. Names that are "not set" are absent.
type Features map[string]string

// Has reports whether the kernel has name built in or as a module.
func (f Features) Has(name string) bool {
	v := f[name]
	return v == "y" || v == "m"
}

// Missing returns the names of opts that the kernel has neither built in
// nor as a module, in the order given.
func (f Features) Missing(opts ...string) []string {
	var out []string
	for _, o := range opts {
		if !f.Has(o) {
			out = append(out, o)
		}
	}
	return out
}

// KernelConfig reads the running kernel's build configuration from
// /proc/config.gz, else /boot/config-<release>.
func KernelConfig() (Features, error) {
	if f, err := os.Open("/proc/config.gz"); err == nil {
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%w: /proc/config.gz: %v", ErrNoConfig, err)
		}
		return ParseConfig(zr)
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return nil, fmt.Errorf("%w: uname: %v", ErrNoConfig, err)
	}
	name := "/boot/config-" + unix.ByteSliceToString(u.Release[:])
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("%w: neither /proc/config.gz nor %s", ErrNoConfig, name)
	}
	defer f.Close()
	return ParseConfig(f)
}

// ParseConfig parses a kernel .config.
func ParseConfig(r io.Reader) (Features, error) {
	out := Features{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "CONFIG_") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if ok {
			out[k] = strings.Trim(v, `"`)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoConfig, err)
	}
	return out, nil
}

// MissingTools returns the names in tools that are not found in the
// system directories Run searches.
func MissingTools(tools ...string) []string {
	var out []string
	for _, t := range tools {
		found := false
		for _, d := range []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
			if st, err := os.Stat(d + "/" + t); err == nil && st.Mode()&0o111 != 0 {
				found = true
				break
			}
		}
		if !found {
			out = append(out, t)
		}
	}
	return out
}

// WriteSysctl writes value to /proc/sys/<key> (key with slashes), inside
// the network namespace at netnsPath when set.
func WriteSysctl(netnsPath, key, value string) error {
	return InNetNS(netnsPath, func() error {
		if err := os.WriteFile("/proc/sys/"+key, []byte(value), 0o644); err != nil {
			return fmt.Errorf("%w: sysctl %s=%s: %v", ErrCommand, key, value, err)
		}
		return nil
	})
}
