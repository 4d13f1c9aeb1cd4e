package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"github.com/xl-kemari/xl-kemari/arbiter"
	"github.com/xl-kemari/xl-kemari/checkpoint"
	"github.com/xl-kemari/xl-kemari/conf"
	"github.com/xl-kemari/xl-kemari/libxl"
	"golang.org/x/sys/unix"
)

func init() {
	register(&command{
		Name:    "receive",
		Summary: "the standby end: hold a replica and take over when the primary dies",
		Usage:   "receive [options] (--stdio | --listen ADDR)",
		Run:     runReceive,
	})
}

func runReceive(e *env, args []string) int {
	fs := pflag.NewFlagSet("receive", pflag.ContinueOnError)
	fs.SetOutput(e.Stderr)
	var f engineFlags
	var t transportFlags
	var nb netbufFlags
	f.register(fs)
	t.register(fs, false)
	nb.register(fs)
	listen := fs.String("listen", "", "where to accept one primary: a socket path (unix; default RUN-DIR/receive.stream), or HOST:PORT (tls; tcp: loopback only, default 127.0.0.1:8011)")
	stdio := fs.Bool("stdio", false, "serve the primary on standard input and output (run by the primary over ssh)")
	stay := fs.Bool("stay", false, "with --listen: after a primary's clean stop, wait for the next primary instead of exiting")
	kind := fs.String("transport", "", "transport of --listen: unix (default: root or this user only), tls, or tcp (loopback, anyone local: needs --insecure-tcp)")
	tomlPath := fs.String("toml", "", "host configuration `file`, for the tls certificates (default "+conf.DefaultHostPath+")")
	arb := fs.String("arbiter", "none", "arbiter: none, file:PATH or etcd://HOST:PORT/PREFIX")
	verify := fs.Bool("verify", true, "recompute the replica's memory digest before activating it")
	metrics := fs.String("metrics", "", "serve Prometheus metrics on this `address` (off when empty)")
	runDir := fs.String("run-dir", "", "directory of the control sockets (default $KEMARI_RUN_DIR or "+defaultRunDir+")")
	logFile := fs.String("log-file", "", "log to this `file` as well as to standard error")
	peers := fs.StringArray("peer", nil, "tls: allow the primary `DOMAIN=HOST[,HOST...]` (its certificate names HOST); as for listen")
	anyPeer := fs.Bool("any-peer", false, "tls: let any certificate of the CA replicate any domain here")
	fs.Usage = func() {
		fmt.Fprintf(e.Stderr, "Usage: xl kemari receive [options] (--stdio | --listen ADDR)\n\nHold the replica of a protected domain; activate it when the primary is\nsilent for --timeout. The primary runs it over ssh with --stdio, as xl\nmigrate runs migrate-receive; see also listen.\n\nOptions:\n%s", fs.FlagUsages())
	}
	if code, ok := parseArgs(e, fs, args); !ok {
		return code
	}
	if fs.NArg() != 0 {
		e.errorf("receive: unexpected argument %q", fs.Arg(0))
		return exitUsage
	}
	if *stdio && fs.Changed("listen") {
		e.errorf("receive: --stdio and --listen exclude each other")
		return exitUsage
	}
	ecfg, err := f.epochConfig()
	if err != nil {
		e.errorf("receive: %v", err)
		return exitUsage
	}
	if err := nb.checkStandbyNS(); err != nil {
		e.errorf("receive: %v", err)
		return exitUsage
	}
	a, err := arbiter.Open(*arb)
	if err != nil {
		e.errorf("receive: %v", err)
		return exitUsage
	}

	var conn *eofConn
	var ln checkpoint.Listener
	var attached *chanListener // --stdio: the stream, then those attached later
	var out *os.File
	stderr := e.Stderr
	if *stdio {
		// The stream is stdin/stdout. Keep stray writes to stdout off it,
		// and survive the primary's end: a broken pipe or a hangup from
		// sshd must not kill the replica the standby may have to run.
		signal.Ignore(syscall.SIGPIPE, syscall.SIGHUP)
		out, err = privateStdout()
		if err != nil {
			e.errorf("receive: %v", err)
			return exitFailure
		}
	}
	if *logFile != "" {
		lf, err := openAppend(*logFile, 0o640)
		if err != nil {
			e.errorf("receive: log: %v", err)
			return exitFailure
		}
		defer lf.Close()
		stderr = io.MultiWriter(lf, stderrWriter{e.Stderr})
	}
	log := f.loggerTo(stderr, "standby")
	if *stdio {
		// A primary reconnecting over ssh starts a new receiver. If a
		// standby on this host already holds its domain (the receiver of
		// the broken session, still within its timeout), the stream goes
		// to it: it keeps its replica, resynchronises or rebuilds it, and
		// does not activate behind the back of a primary that is alive.
		name, stream, err := peekHello(checkpoint.StdioConn{R: os.Stdin, W: out})
		if err != nil {
			e.errorf("receive: %v", err)
			return exitFailure
		}
		if ok, err := attachToStandby(resolveRunDir(e, *runDir), name, stream, log); ok {
			if err != nil {
				log.Info("attached stream ended", "err", err)
			}
			return exitOK
		}
		conn = &eofConn{Conn: stream, eof: make(chan struct{})}
		attached = newChanListener("stdio")
		go attached.push(conn)
		ln = attached
	}
	if !*stdio {
		if *kind == "" {
			*kind = transportUnix
			if t.insecureTCP {
				*kind = transportTCP
			}
		}
		switch *kind {
		case transportUnix:
			path := *listen
			if path == "" {
				// Not *.sock: status asks every *.sock of the run
				// directory, and a control request on the replication
				// socket would replace the primary's connection.
				path = filepath.Join(resolveRunDir(e, *runDir), "receive.stream")
				if err := ensureRunDir(filepath.Dir(path)); err != nil {
					e.errorf("receive: listen: %v", err)
					return exitFailure
				}
			}
			if !filepath.IsAbs(path) {
				e.errorf("receive: --listen %q: the unix transport takes an absolute socket path (a tcp address needs --insecure-tcp)", path)
				return exitUsage
			}
			if filepath.Dir(path) == filepath.Clean(resolveRunDir(e, *runDir)) && strings.HasSuffix(path, ".sock") {
				e.errorf("receive: --listen %q: a *.sock of the run directory is taken for a control socket; name it otherwise", path)
				return exitUsage
			}
			l, err := checkpoint.ListenUnix(path)
			if err != nil {
				e.errorf("receive: listen: %v", err)
				return exitFailure
			}
			l.Refused = func(err error) { log.Warn("refused a local peer", "err", err) }
			l.AcceptError = func(err error, retry time.Duration) {
				log.Warn("cannot accept connections; retrying", "err", err, "retry", retry)
			}
			ln = l
		case transportTCP:
			if !t.insecureTCP {
				e.errorf("receive: %v", errInsecureTCP)
				return exitUsage
			}
			var l *checkpoint.TCPListener
			// In dom0's namespace (--netns), where the primary reaches us.
			err := nb.inDom0(func() (err error) { l, err = checkpoint.ListenTCP(cmp.Or(*listen, "127.0.0.1:8011")); return err })
			if err != nil {
				e.errorf("receive: listen: %v", err)
				return exitFailure
			}
			l.AcceptError = func(err error, retry time.Duration) {
				log.Warn("cannot accept connections; retrying", "err", err, "retry", retry)
			}
			ln = l
		case transportTLS:
			host, err := conf.LoadHost(*tomlPath)
			if err != nil {
				printConfigErrors(e.Stderr, err)
				return exitConfig
			}
			cfg, err := t.tlsConfig(host)
			if err != nil {
				e.errorf("receive: %v", err)
				return exitConfig
			}
			var l *checkpoint.TLSListener
			err = nb.inDom0(func() (err error) {
				l, err = checkpoint.ListenTLSOptions(cmp.Or(*listen, "127.0.0.1:8011"), cfg, checkpoint.TLSListenerOptions{
					Refused: func(addr net.Addr, err error) {
						log.Warn("refused a peer without a valid certificate", "peer", addr, "err", err)
					},
					AcceptError: func(err error, retry time.Duration) {
						log.Warn("cannot accept connections; retrying", "err", err, "retry", retry)
					},
				})
				return err
			})
			if err != nil {
				e.errorf("receive: listen: %v", err)
				return exitFailure
			}
			policy, err := newPeerPolicy(*peers, host.Defaults.Standby, *anyPeer)
			if err != nil {
				l.Close()
				e.errorf("receive: %v", err)
				return exitConfig
			}
			ln = authorize(l, policy, log)
		default:
			e.errorf("receive: --transport %q: want unix, tls or tcp", *kind)
			return exitUsage
		}
	}
	hv, err := libxl.Open(f.hv, nil)
	if err != nil {
		ln.Close()
		e.errorf("receive: %v", err)
		return exitFailure
	}
	defer hv.Close()
	setBackendLogger(hv, log)
	ev, err := openEventLog(f.events)
	if err != nil {
		ln.Close()
		e.errorf("receive: %v", err)
		return exitFailure
	}
	ss := &standbySession{arbiter: a.Configured(), timeout: f.timeout, done: make(chan struct{})}
	s, err := checkpoint.NewStandby(checkpoint.StandbyConfig{Epoch: ecfg, Verify: *verify, Logger: log,
		// No --timeout: the primary's derived one, announced (start
		// leaves --timeout out when it derives its own).
		AdoptTimeout: !fs.Changed("timeout"),
		Disks:        standbyDisksOn(hv, resolveDiskDir(e, "")),
		// One primary, --stdio or --listen: after its clean goodbye (stop)
		// there is nothing left to hold, so Run returns and we exit 0,
		// unless --stay. (`listen` is the service that outlives them.)
		Once: *stdio || !*stay,
		// Once active, a primary that comes back is told to fence.
		AnswerTakenOver: true,
		OnActivate:      nb.onActivate(log, hv),
		Observer:        func(o checkpoint.Observation) { ev.observe(o); ss.observe(o) }}, budgetSink{hv.Sink()}, ln, a)
	if err != nil {
		ln.Close()
		e.errorf("receive: %v", err)
		return exitUsage
	}
	ss.s = s
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	srv, err := listenControl(resolveRunDir(e, *runDir), socketName("standby", "", os.Getpid()), ctlHandlers{
		Status: func() []checkpoint.Status { return []checkpoint.Status{s.Status()} },
		Failover: func(ctx context.Context, d string, force bool) error {
			if st := s.Status(); d != "" && st.Domain != d {
				return &ctlError{exitNotFound, fmt.Sprintf("this standby holds %s, not %s", dash(st.Domain), d)}
			}
			return ss.failover(ctx, force)
		},
		Attach: func(d string) (func(net.Conn) bool, error) {
			if attached == nil {
				return nil, &ctlError{exitFailure, "this standby listens for its primaries itself"}
			}
			switch st := s.Status(); {
			case st.Domain != d:
				return nil, &ctlError{exitNotFound, fmt.Sprintf("this standby holds %s, not %s", dash(st.Domain), d)}
			case st.State != "ready" && st.State != "syncing":
				return nil, &ctlError{exitFailure, fmt.Sprintf("this standby of %s is %s", d, st.State)}
			}
			return func(c net.Conn) bool {
				log.Info("primary reconnected through another receiver; stream attached")
				return attached.push(c)
			}, nil
		},
	})
	if err != nil {
		ln.Close()
		e.errorf("receive: %v", err)
		return exitFailure
	}
	defer srv.Close()
	_, stopMetrics, err := serveMetrics(*metrics, func() []checkpoint.Status { return []checkpoint.Status{s.Status()} }, log)
	if err != nil {
		e.errorf("receive: %v", err)
		return exitFailure
	}
	defer stopMetrics()
	if conn != nil {
		go endWithStream(ctx, cancel, conn, ss)
	}
	if err := ss.run(ctx); err != nil {
		if errors.Is(err, context.Canceled) {
			return exitOK
		}
		e.errorf("receive: %v", err)
		return exitFailure
	}
	if _, ok := s.Activated(); ok {
		// The guest runs here now; on the simulator it lives as long as
		// this process.
		log.Info("replica active; serving until signalled")
		<-ctx.Done()
	}
	return exitOK
}

// attachToStandby hands stream, the primary's (its hello peeked), to the
// standby on this host that holds domain, if there is one that takes it,
// and copies both ways until either side ends. It reports whether it did;
// the error is what ended the copy.
func attachToStandby(runDir, domain string, stream checkpoint.Conn, log *slog.Logger) (bool, error) {
	ps, err := find(runDir, "standby", domain, 2*time.Second)
	if err != nil {
		return false, nil // no run directory: no standby to find
	}
	for _, p := range ps {
		if p.PID == os.Getpid() {
			continue
		}
		c, err := net.DialTimeout("unix", p.Socket, 2*time.Second)
		if err != nil {
			continue
		}
		b, _ := json.Marshal(ctlRequest{Op: opAttach, Domain: domain})
		c.SetDeadline(time.Now().Add(5 * time.Second))
		var resp ctlResponse
		br := bufio.NewReader(c)
		_, werr := c.Write(append(b, '\n'))
		line, rerr := br.ReadBytes('\n')
		if werr != nil || rerr != nil || json.Unmarshal(line, &resp) != nil || !resp.OK {
			log.Info("standby of the domain on this host did not take the stream", "pid", p.PID, "err", cmp.Or(resp.Error, fmt.Sprint(cmp.Or(werr, rerr))))
			c.Close()
			continue
		}
		c.SetDeadline(time.Time{})
		log.Info("stream handed to the standby already holding the domain", "domain", domain, "pid", p.PID)
		errc := make(chan error, 2)
		go func() { _, err := io.Copy(c, stream); errc <- err }()
		go func() { _, err := io.Copy(stream, br); errc <- err }()
		err = <-errc
		c.Close()
		stream.Close()
		return true, err
	}
	return false, nil
}

// endWithStream ends a --stdio receiver whose primary went away leaving
// nothing to hold: no replica, or one the primary said goodbye to. A
// replica with a complete checkpoint stays, for the failover.
func endWithStream(ctx context.Context, cancel context.CancelFunc, c *eofConn, ss *standbySession) {
	select {
	case <-c.eof:
	case <-ctx.Done():
		return
	}
	if _, ok := ss.waitFor(ctx, func(st checkpoint.Status) bool {
		return st.State == "waiting" || st.State == "stopped" || st.State == "denied"
	}); ok {
		cancel()
	}
}

// eofConn notes when its reader hits the end of the stream.
type eofConn struct {
	checkpoint.Conn
	eof  chan struct{}
	once sync.Once
}

func (c *eofConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.once.Do(func() { close(c.eof) })
	}
	return n, err
}

// privateStdout moves standard output to a descriptor of its own and
// points descriptor 1 at standard error, so that nothing but the protocol
// reaches the primary.
func privateStdout() (*os.File, error) {
	fd, err := unix.Dup(1)
	if err != nil {
		return nil, fmt.Errorf("stdio: %w", err)
	}
	unix.CloseOnExec(fd)
	if err := unix.Dup2(2, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("stdio: %w", err)
	}
	return os.NewFile(uintptr(fd), "stdio-out"), nil
}

// stderrWriter ignores write errors: standard error may be a pipe to a
// primary that died, and the log file must still get every line.
type stderrWriter struct{ w io.Writer }

func (s stderrWriter) Write(p []byte) (int, error) {
	s.w.Write(p)
	return len(p), nil
}
