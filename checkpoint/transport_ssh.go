package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// ErrSSHHost: the ssh destination is not a plain [user@]host name or
// address (it would be read by ssh as an option or by a shell).
var ErrSSHHost = errors.New("checkpoint: bad ssh destination")

// SSHDialer reaches the standby the way `xl migrate` does: it runs the
// ssh client, which runs Remote (`xl-kemari receive --stdio ...`) on
// Host, and uses the client's standard input and output as the
// connection. Each Dial starts a new ssh session and so a new receiver.
//
// No shell runs locally: ssh is executed with an argument vector. ssh
// hands the remote command to the remote user's shell as one string, so
// every element of Remote is single-quoted for it.
type SSHDialer struct {
	// Command is the ssh client and its options, e.g. {"ssh"} or
	// {"ssh", "-i", "/root/.ssh/kemari"} (kemari.toml ssh-command).
	Command []string
	// Host is the destination, [user@]host; validated by Dial.
	Host string
	// Remote is the command to run on Host, one element per argument.
	Remote []string
	// Stderr receives ssh's and the remote receiver's diagnostics; nil
	// discards them.
	Stderr io.Writer
}

// CheckSSHHost accepts [user@]host where user and host are made of
// letters, digits and "._-" (host may be an IPv6 address, with colons or
// in brackets) and neither starts with "-".
func CheckSSHHost(h string) error {
	user, host, ok := strings.Cut(h, "@")
	if !ok {
		user, host = "", h
	} else if user == "" {
		return fmt.Errorf("%w: %q: empty user", ErrSSHHost, h)
	}
	if host == "" {
		return fmt.Errorf("%w: empty host", ErrSSHHost)
	}
	for _, part := range []string{user, host} {
		if strings.HasPrefix(part, "-") {
			return fmt.Errorf("%w: %q starts with '-'", ErrSSHHost, h)
		}
		for _, r := range part {
			switch {
			case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune("._-", r):
			case part == host && strings.ContainsRune(":[]", r):
			default:
				return fmt.Errorf("%w: %q: character %q not allowed", ErrSSHHost, h, r)
			}
		}
	}
	return nil
}

// ShellQuote quotes s for a POSIX shell: the result is one word whose
// value is s, whatever s holds.
func ShellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=./:,@%+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Argv returns the argument vector Dial executes.
func (d *SSHDialer) Argv() ([]string, error) {
	if len(d.Command) == 0 || d.Command[0] == "" {
		return nil, fmt.Errorf("%w: no ssh command", ErrSSHHost)
	}
	if err := CheckSSHHost(d.Host); err != nil {
		return nil, err
	}
	if len(d.Remote) == 0 {
		return nil, fmt.Errorf("%w: no remote command", ErrSSHHost)
	}
	quoted := make([]string, len(d.Remote))
	for i, a := range d.Remote {
		quoted[i] = ShellQuote(a)
	}
	// -T: no terminal, the stream is binary; BatchMode: a daemon has
	// nobody to type a password; "--" ends ssh's options before the host.
	argv := append([]string(nil), d.Command...)
	argv = append(argv, "-T", "-o", "BatchMode=yes", "--", d.Host, strings.Join(quoted, " "))
	return argv, nil
}

// Dial implements Dialer. It returns once ssh has started; the protocol's
// hello exchange tells whether the receiver runs.
func (d *SSHDialer) Dial(ctx context.Context) (Conn, error) {
	argv, err := d.Argv()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Not CommandContext: the session outlives the dial's context.
	cmd := exec.Command(argv[0], argv[1:]...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if d.Stderr != nil {
		cmd.Stderr = d.Stderr
	}
	// A stuck receiver must not keep Close waiting on its stderr.
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("checkpoint: ssh: %w", err)
	}
	return &sshConn{cmd: cmd, in: stdin, out: stdout}, nil
}

// String implements Dialer.
func (d *SSHDialer) String() string { return "ssh:" + d.Host }

// sshConn is one ssh session used as a Conn.
type sshConn struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  io.ReadCloser
	once sync.Once
	err  error
}

func (c *sshConn) Read(p []byte) (int, error)  { return c.out.Read(p) }
func (c *sshConn) Write(p []byte) (int, error) { return c.in.Write(p) }

// Close ends the session: end of input for the receiver, then the end of
// the ssh client. Safe to call more than once and concurrently.
func (c *sshConn) Close() error {
	c.once.Do(func() {
		c.in.Close()
		c.cmd.Process.Kill()
		c.err = c.cmd.Wait()
	})
	return nil
}

// StdioConn joins a reader and a writer, the receiver's end of an ssh
// session (its standard input and output), into a Conn.
type StdioConn struct {
	R io.ReadCloser
	W io.WriteCloser
}

// Read reads from R.
func (c StdioConn) Read(p []byte) (int, error) { return c.R.Read(p) }

// Write writes to W.
func (c StdioConn) Write(p []byte) (int, error) { return c.W.Write(p) }

// Close closes both halves.
func (c StdioConn) Close() error { return errors.Join(c.R.Close(), c.W.Close()) }

// OneConnListener is a Listener that yields one connection, then blocks
// until closed: the receiver's side of an ssh session.
type OneConnListener struct {
	c    chan Conn
	done chan struct{}
	once sync.Once
	name string
}

// NewOneConnListener returns a Listener whose only connection is c.
func NewOneConnListener(c Conn, name string) *OneConnListener {
	l := &OneConnListener{c: make(chan Conn, 1), done: make(chan struct{}), name: name}
	l.c <- c
	return l
}

// Accept implements Listener.
func (l *OneConnListener) Accept() (Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close implements Listener; a connection not yet accepted is closed.
func (l *OneConnListener) Close() error {
	l.once.Do(func() {
		close(l.done)
		select {
		case c := <-l.c:
			c.Close()
		default:
		}
	})
	return nil
}

// String implements Listener.
func (l *OneConnListener) String() string { return l.name }
