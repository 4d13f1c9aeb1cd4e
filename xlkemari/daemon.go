package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Background protectors, as xl runs its own daemons: `start` re-executes
// itself in a new session with its output on a log file, and waits on a
// pipe for the child to say how far it got (ready, sync progress,
// protected, or why it failed) before returning.

// envNotifyFD names, in the daemon child's environment, the descriptor of
// the pipe to the waiting parent.
const envNotifyFD = "XL_KEMARI_NOTIFY_FD"

// defaultLogDir is where background protectors log.
const defaultLogDir = "/var/log/xen"

// notifier is the daemon child's end of the pipe; nil outside one. Safe
// for concurrent use.
type notifier struct {
	mu sync.Mutex
	// Protected by mu.
	f *os.File
}

// childNotifier returns the pipe to the parent if this process is a
// daemon child, and hides it from the processes it starts.
func childNotifier(getenv func(string) string) *notifier {
	s := getenv(envNotifyFD)
	if s == "" {
		return nil
	}
	os.Unsetenv(envNotifyFD)
	fd, err := strconv.Atoi(s)
	if err != nil || fd < 3 {
		return nil
	}
	syscall.CloseOnExec(fd)
	return &notifier{f: os.NewFile(uintptr(fd), "notify")}
}

func (n *notifier) send(format string, args ...any) {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.f != nil {
		// One line, whatever the message holds.
		msg := strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", " ")
		n.f.WriteString(msg + "\n")
	}
}

// fail reports the reason and exit code of a failure, then closes.
func (n *notifier) fail(code int, msg string) {
	n.send("fail %d %s", code, msg)
	n.close()
}

func (n *notifier) close() {
	if n == nil {
		return
	}
	n.mu.Lock()
	if n.f != nil {
		n.f.Close()
		n.f = nil
	}
	n.mu.Unlock()
}

// daemonize starts `xl-kemari start args...` in the background, logging to
// logPath, and follows its progress on e.Stderr until it is protected,
// unprotected (it keeps trying), or failed. wait false returns as soon as
// the child is ready.
func daemonize(e *env, args []string, domain, logPath string, wait bool) int {
	self, err := os.Executable()
	if err != nil {
		e.errorf("start: %v", err)
		return exitFailure
	}
	if err := os.MkdirAll(filepath.Dir(logPath), 0o750); err != nil {
		e.errorf("start: log: %v", err)
		return exitFailure
	}
	logf, err := openAppend(logPath, 0o640)
	if err != nil {
		e.errorf("start: log: %v", err)
		return exitFailure
	}
	r, w, err := os.Pipe()
	if err != nil {
		logf.Close()
		e.errorf("start: %v", err)
		return exitFailure
	}
	cmd := exec.Command(self, append([]string{"start"}, args...)...)
	cmd.Env = append(os.Environ(), envNotifyFD+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	logf.Close()
	if err != nil {
		r.Close()
		e.errorf("start: %v", err)
		return exitFailure
	}
	defer r.Close()
	pid := cmd.Process.Pid
	bar := newProgress(e.Stderr)
	ready := false
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		word, rest, _ := strings.Cut(sc.Text(), " ")
		switch word {
		case "ready":
			ready = true
			fmt.Fprintf(e.Stderr, "xl-kemari: protecting %s in the background (pid %d, log %s)\n", domain, pid, logPath)
			if !wait {
				cmd.Process.Release()
				return exitOK
			}
		case "sync":
			// sync PERCENT [ROUND [WHAT IS NOT YET PROTECTED]]
			f := strings.SplitN(rest, " ", 3)
			if pct, err := strconv.ParseFloat(f[0], 64); err == nil {
				var round int
				var msg string
				if len(f) > 1 {
					round, _ = strconv.Atoi(f[1])
				}
				if len(f) > 2 {
					msg = f[2]
				}
				bar.update(pct, round, msg)
			}
		case "state":
			st, why, _ := strings.Cut(rest, " ")
			switch st {
			case "protected":
				bar.finish()
				fmt.Fprintf(e.Stderr, "xl-kemari: %s is protected\n", domain)
				cmd.Process.Release()
				return exitOK
			case "stalled":
				bar.finish()
				fmt.Fprintf(e.Stderr, "xl-kemari: %s is NOT protected: the protector stalled and then lost the standby (%s); its output is held until the standby answers: see xl kemari status %s\n", domain, why, domain)
				cmd.Process.Release()
				return exitOK
			case "unprotected":
				bar.finish()
				fmt.Fprintf(e.Stderr, "xl-kemari: %s is NOT protected yet (%s); the protector keeps trying: see xl kemari status %s\n", domain, why, domain)
				cmd.Process.Release()
				return exitOK
			}
		case "fail":
			bar.finish()
			codeS, msg, _ := strings.Cut(rest, " ")
			code, err := strconv.Atoi(codeS)
			if err != nil || code == 0 {
				code = exitFailure
			}
			fmt.Fprintf(e.Stderr, "xl-kemari: %s\n", msg)
			cmd.Wait()
			return code
		}
	}
	// The child closed the pipe without a verdict: it died.
	bar.finish()
	err = cmd.Wait()
	code := exitFailure
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() > 0 {
		code = ee.ExitCode()
	}
	if ready {
		e.errorf("start: the protector of %s ended before protection was established (%v); see %s", domain, err, logPath)
	} else {
		e.errorf("start: the protector of %s did not start (%v); see %s", domain, err, logPath)
	}
	return code
}

// openAppend opens the log or event file path for appending, creating it
// with mode perm if it does not exist. It never follows a symbolic link
// in the last component (a link planted where root writes its log would
// make it append to, or create, any file), and refuses anything but a
// regular file with a single link. The file is not chmod-ed: one that
// exists keeps the mode its owner gave it.
func openAppend(path string, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND|syscall.O_NOFOLLOW|syscall.O_CLOEXEC|syscall.O_NONBLOCK, perm)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%s is a symbolic link; name the file itself: %w", path, err)
		}
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.Mode().IsRegular():
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file (%v)", path, fi.Mode().Type())
	case ok && st.Nlink > 1:
		f.Close()
		return nil, fmt.Errorf("%s has %d hard links; refusing to append to a file linked elsewhere", path, st.Nlink)
	}
	// O_NONBLOCK only kept a FIFO from blocking the open; writes to a
	// regular file never block.
	if err := syscall.SetNonblock(int(f.Fd()), false); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// progress shows the initial synchronisation: a bar on a terminal,
// a plain line every 10% and every pre-copy round otherwise, each saying
// what is not yet protected.
type progress struct {
	w     io.Writer
	tty   bool
	last  float64
	round int
	drawn bool
}

func newProgress(w io.Writer) *progress {
	return &progress{w: w, tty: isTerminal(w), last: -1}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// update shows pct of the sync done, in pre-copy round (from 1; 0:
// unknown), and msg, what is not yet protected ("" when output is held).
func (p *progress) update(pct float64, round int, msg string) {
	pct = min(max(pct, 0), 100)
	tail := ""
	if msg != "" {
		tail = ": " + msg
	}
	if p.tty {
		const width = 40
		n := int(pct / 100 * width)
		fmt.Fprintf(p.w, "\rinitial sync [%s%s] %3.0f%%%s\x1b[K", strings.Repeat("#", n), strings.Repeat(" ", width-n), pct, tail)
		p.drawn = true
		return
	}
	if p.last < 0 || pct >= p.last+10 || (pct >= 100 && p.last < 100) || round > p.round {
		fmt.Fprintf(p.w, "initial sync %.0f%%%s\n", pct, tail)
		p.last = pct
		p.round = max(p.round, round)
	}
}

func (p *progress) finish() {
	if p.tty && p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}
