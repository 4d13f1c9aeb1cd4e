package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"github.com/xl-kemari/xl-kemari/arbiter"
	"github.com/xl-kemari/xl-kemari/checkpoint"
	"github.com/xl-kemari/xl-kemari/checkpoint/epoch"
	"github.com/xl-kemari/xl-kemari/checkpoint/wire"
	"github.com/xl-kemari/xl-kemari/conf"
	"github.com/xl-kemari/xl-kemari/libxl"
)

func init() {
	register(&command{
		Name:    "listen",
		Summary: "the standby service: hold replicas for every primary that connects over tls",
		Usage:   "listen [options]",
		Run:     runListen,
	})
}

// helloTimeout bounds how long a connected primary may take to send its
// hello, which names the domain.
const helloTimeout = 10 * time.Second

func runListen(e *env, args []string) int {
	fs := pflag.NewFlagSet("listen", pflag.ContinueOnError)
	fs.SetOutput(e.Stderr)
	var f engineFlags
	var t transportFlags
	f.register(fs)
	t.register(fs, false)
	addr := fs.String("listen", "", "address to accept primaries on (default kemari.toml listen, \":8011\")")
	tomlPath := fs.String("toml", "", "host configuration `file` (default "+conf.DefaultHostPath+", which may be absent)")
	arb := fs.String("arbiter", "none", "arbiter: none, file:PATH or etcd://HOST:PORT/PREFIX")
	verify := fs.Bool("verify", true, "recompute a replica's memory digest before activating it")
	runDir := fs.String("run-dir", "", "directory of the control sockets (default $KEMARI_RUN_DIR or "+defaultRunDir+")")
	logFile := fs.String("log-file", "", "log to this `file` instead of standard error (default kemari.toml log.file)")
	peers := fs.StringArray("peer", nil, "allow the primary `DOMAIN=HOST[,HOST...]` (its certificate names HOST) to replicate DOMAIN here; DOMAIN * is every domain (repeatable; default *=kemari.toml [defaults] standby)")
	anyPeer := fs.Bool("any-peer", false, "let any certificate of the CA replicate any domain here (no authorisation: tests and single-tenant sites)")
	fs.Usage = func() {
		fmt.Fprintf(e.Stderr, "Usage: xl kemari listen [options]\n\nThe standby service: accept primaries over TLS 1.3 with mutual certificate\nauthentication and hold a replica for each domain; activate a domain's\nreplica when its primary is silent for --timeout. Runs in the foreground\n(systemd Type=notify: xl-kemari-listen.service).\n\nOptions:\n%s", fs.FlagUsages())
	}
	if code, ok := parseArgs(e, fs, args); !ok {
		return code
	}
	if fs.NArg() != 0 {
		e.errorf("listen: unexpected argument %q", fs.Arg(0))
		return exitUsage
	}
	host, err := conf.LoadHost(*tomlPath)
	if err != nil {
		printConfigErrors(e.Stderr, err)
		return exitConfig
	}
	// The host's [defaults] give the timings unless the command line does.
	d := host.Defaults
	if !fs.Changed("interval") {
		f.interval = d.Interval
	}
	if !fs.Changed("min-interval") {
		f.minInt = d.MinInterval
	}
	adopt := false
	if !fs.Changed("timeout") {
		f.timeout = d.Timeout
		// Neither here nor in kemari.toml: each primary's announced one.
		adopt = d.Origin(conf.FieldTimeout).Source == conf.SourceDefault
	}
	if !fs.Changed("mode") {
		f.mode = d.Mode
	}
	if !fs.Changed("arbiter") {
		*arb = d.Arbiter
	}
	if !fs.Changed("log-level") && host.LogLevel != "" {
		f.logLevel = host.LogLevel
	}
	ecfg, err := f.epochConfig()
	if err != nil {
		e.errorf("listen: %v", err)
		return exitUsage
	}
	a, err := arbiter.Open(*arb)
	if err != nil {
		e.errorf("listen: %v", err)
		return exitConfig
	}
	cfg, err := t.tlsConfig(host)
	if err != nil {
		e.errorf("listen: %v", err)
		return exitConfig
	}
	policy, err := newPeerPolicy(*peers, host.Defaults.Standby, *anyPeer)
	if err != nil {
		e.errorf("listen: %v", err)
		return exitConfig
	}
	stderr := io.Writer(e.Stderr)
	if lf := orDefault(*logFile, host.LogFile); lf != "" {
		w, err := openAppend(lf, 0o640)
		if err != nil {
			e.errorf("listen: log: %v", err)
			return exitFailure
		}
		defer w.Close()
		stderr = w
	}
	log := f.loggerTo(stderr, "standby")
	hv, err := libxl.Open(f.hv, nil)
	if err != nil {
		e.errorf("listen: %v", err)
		return exitFailure
	}
	defer hv.Close()
	setBackendLogger(hv, log)
	ev, err := openEventLog(f.events)
	if err != nil {
		e.errorf("listen: %v", err)
		return exitFailure
	}
	ln, err := checkpoint.ListenTLSOptions(orDefault(*addr, host.Listen), cfg, checkpoint.TLSListenerOptions{
		Refused: func(addr net.Addr, err error) {
			log.Warn("refused a peer without a valid certificate", "peer", addr, "err", err)
		},
		AcceptError: func(err error, retry time.Duration) {
			log.Warn("cannot accept connections; retrying", "err", err, "retry", retry)
		},
	})
	if err != nil {
		e.errorf("listen: %v", err)
		return exitFailure
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	svc := &listenService{ctx: ctx, log: log, hv: hv, arb: a, verify: *verify, ecfg: ecfg, timeout: f.timeout, adopt: adopt,
		observe: ev.observe, getenv: e.Getenv, sessions: map[string]*domainStandby{}, policy: policy,
		hellos: make(chan struct{}, maxPendingHellos), admitted: map[string]bool{}}
	if policy.any {
		log.Warn("--any-peer: every certificate of the CA may replicate, replace and take over any domain here")
	}
	srv, err := listenControl(resolveRunDir(e, *runDir), socketName("listen", "", os.Getpid()), ctlHandlers{
		Status:   svc.status,
		Failover: svc.failover,
		Admit:    svc.admit,
	})
	if err != nil {
		ln.Close()
		e.errorf("listen: %v", err)
		return exitFailure
	}
	defer srv.Close()
	log.Info("standby service listening", "addr", ln.Addr(), "control", srv.path)
	if err := sdNotify(e.Getenv, "READY=1\nSTATUS=listening on "+ln.Addr()); err != nil {
		log.Warn("could not tell the service manager", "err", err)
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	code := exitOK
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				// Not a signal: the listener cannot go on. Exit non-zero,
				// so that the service manager restarts it.
				log.Error("standby service cannot accept connections any more", "err", err)
				e.errorf("listen: %v", err)
				code = exitFailure
				cancel()
			}
			break
		}
		svc.wg.Add(1)
		go func() { defer svc.wg.Done(); svc.route(c) }()
	}
	sdNotify(e.Getenv, "STOPPING=1")
	log.Info("standby service stopping")
	svc.wait()
	return code
}

// maxPendingHellos bounds the connections the service waits on for a
// hello (each at most helloTimeout); more are closed at once.
const maxPendingHellos = 64

// listenService routes each primary's connection, by the domain its hello
// names, to that domain's Standby: a reconnecting primary finds its
// replica again.
type listenService struct {
	ctx     context.Context
	log     *slog.Logger
	hv      libxl.Hypervisor
	arb     arbiter.Arbiter
	verify  bool
	ecfg    epoch.Config
	timeout time.Duration
	adopt   bool // no timeout configured: take each primary's announced one
	observe func(checkpoint.Observation)
	getenv  func(string) string
	policy  *peerPolicy
	hellos  chan struct{} // a slot per connection waiting for its hello
	wg      sync.WaitGroup

	mu sync.Mutex
	// Protected by mu.
	sessions map[string]*domainStandby
	admitted map[string]bool // domains whose next new session the operator admitted
}

// domainStandby is one domain's Standby in the service, fed by ln.
type domainStandby struct {
	sess *standbySession
	ln   *chanListener
	// session is the protection session of the primary it serves (from
	// its first hello): only a connection that presents it reaches the
	// Standby, unless the operator admits a new one (xl kemari admit).
	session [16]byte
	// peer names the primary's certificate, for logs.
	peer string
}

// route reads the hello of a new connection and hands the connection,
// hello included, to its domain's Standby, starting one if needed, if
// the primary may replicate that domain here.
func (l *listenService) route(c checkpoint.Conn) {
	select {
	case l.hellos <- struct{}{}:
	default:
		l.log.Warn("dropped a connection: too many connections are waiting to say hello", "max", maxPendingHellos)
		c.Close()
		return
	}
	h, replay, err := readHello(c)
	<-l.hellos
	if err != nil {
		l.log.Warn("dropped a connection without a valid hello", "err", err)
		c.Close()
		return
	}
	name := h.Domain.Name
	id := peerIdentity(c)
	if err := l.policy.allow(name, id); err != nil {
		l.log.Warn("refused a primary not allowed to replicate the domain here", "domain", name, "peer", id, "err", err)
		c.Close()
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if ds := l.sessions[name]; ds != nil {
		if st := ds.sess.s.Status(); st.State == "active" {
			// Its Standby has returned; the domain runs here. A primary
			// of it that comes back (stalled, partitioned, reprotecting)
			// must fence its copy: say so (protocol §7.7).
			l.log.Warn("a primary of a domain that runs here since its failover came back: told it to fence",
				"domain", name, "peer", id, "epoch", st.ActivatedEpoch, "same-session", h.Session == ds.session)
			checkpoint.WriteTakenOver(replay, h, st.ActivatedEpoch)
			c.Close()
			return
		}
	}
	if ds := l.sessions[name]; ds != nil && !ds.ended() {
		if h.Session != ds.session {
			if !l.admitted[name] {
				l.log.Warn("refused a second primary for a domain replicated here from another session (xl kemari admit DOMAIN lets the next one in)",
					"domain", name, "peer", id, "serving", ds.peer)
				c.Close()
				return
			}
			delete(l.admitted, name)
			l.log.Warn("a new protection session replaces the current one, as the operator admitted", "domain", name, "peer", id, "was", ds.peer)
			ds.session, ds.peer = h.Session, id.String()
		}
		if ds.ln.push(replay) {
			return
		}
	}
	delete(l.admitted, name)
	ds, err := l.startDomain(name)
	if err != nil {
		l.log.Error("cannot hold a replica", "domain", name, "err", err)
		c.Close()
		return
	}
	ds.session, ds.peer = h.Session, id.String()
	ds.ln.push(replay)
}

// ended reports whether the domain's Standby has returned.
func (ds *domainStandby) ended() bool {
	select {
	case <-ds.sess.done:
		return true
	default:
		return false
	}
}

// admit is `xl kemari admit DOMAIN`: the next connection for domain
// that presents a new session replaces the current one.
func (l *listenService) admit(domain string) error {
	if domain == "" {
		return &ctlError{exitUsage, "admit needs a domain"}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.admitted[domain] = true
	l.log.Warn("the operator admits a new primary session for the domain", "domain", domain)
	return nil
}

// startDomain starts a Standby for one domain. Preconditions: l.mu held.
func (l *listenService) startDomain(name string) (*domainStandby, error) {
	ln := newChanListener("tls:" + name)
	ss := &standbySession{arbiter: l.arb.Configured(), timeout: l.timeout, done: make(chan struct{})}
	s, err := checkpoint.NewStandby(checkpoint.StandbyConfig{Epoch: l.ecfg, Verify: l.verify, Once: true, AdoptTimeout: l.adopt,
		// A primary routed to it while it activates is told to fence
		// (after: route answers those itself).
		AnswerTakenOver: true,
		Logger:          l.log.With("domain", name),
		Disks:           standbyDisksOn(l.hv, resolveDiskDir(&env{Getenv: l.getenv}, "")),
		// On Xen: bring the replica's vifs up and announce its addresses.
		OnActivate: (&netbufFlags{}).onActivate(l.log.With("domain", name), l.hv),
		Observer: func(o checkpoint.Observation) {
			if l.observe != nil {
				l.observe(o)
			}
			ss.observe(o)
			if o.Kind == checkpoint.ObsState || o.Kind == checkpoint.ObsActivating || o.Kind == checkpoint.ObsActivate {
				// Not on the Standby's loop: status takes l.mu.
				go l.notifyStatus()
			}
		}}, budgetSink{l.hv.Sink()}, ln, l.arb)
	if err != nil {
		return nil, err
	}
	ss.s = s
	ds := &domainStandby{sess: ss, ln: ln}
	l.sessions[name] = ds
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		err := ss.run(l.ctx)
		if err != nil && !errors.Is(err, context.Canceled) {
			l.log.Error("standby ended", "domain", name, "err", err)
		}
		ln.Close()
		if _, active := s.Activated(); active {
			l.log.Info("replica active; it runs here now", "domain", name)
			return
		}
		l.mu.Lock()
		if l.sessions[name] == ds {
			delete(l.sessions, name)
		}
		l.mu.Unlock()
		l.notifyStatus()
	}()
	return ds, nil
}

// notifyStatus tells systemd how many domains the service protects.
func (l *listenService) notifyStatus() {
	var held, active int
	for _, st := range l.status() {
		if st.State == "active" {
			active++
		} else {
			held++
		}
	}
	sdNotify(l.getenv, fmt.Sprintf("STATUS=%d replica(s) held, %d domain(s) active after failover", held, active))
}

func (l *listenService) status() []checkpoint.Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]checkpoint.Status, 0, len(l.sessions))
	for name, ds := range l.sessions {
		st := ds.sess.s.Status()
		if st.Domain == "" {
			st.Domain = name
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b checkpoint.Status) int { return strings.Compare(a.Domain, b.Domain) })
	return out
}

func (l *listenService) failover(ctx context.Context, domain string, force bool) error {
	l.mu.Lock()
	ds := l.sessions[domain]
	l.mu.Unlock()
	if ds == nil {
		return &ctlError{exitNotFound, "this standby holds no replica of " + domain}
	}
	return ds.sess.failover(ctx, force)
}

func (l *listenService) wait() { l.wg.Wait() }

// peekHello reads the first record of c, which must be a primary's hello,
// and returns the domain it names and a Conn that reads the whole stream
// again from its first byte.
func peekHello(c checkpoint.Conn) (string, checkpoint.Conn, error) {
	h, replay, err := readHello(c)
	if err != nil {
		return "", nil, err
	}
	return h.Domain.Name, replay, nil
}

// readHello is peekHello returning the whole hello.
func readHello(c checkpoint.Conn) (*wire.Hello, checkpoint.Conn, error) {
	type deadliner interface{ SetReadDeadline(time.Time) error }
	if d, ok := c.(deadliner); ok {
		d.SetReadDeadline(time.Now().Add(helloTimeout))
		defer d.SetReadDeadline(time.Time{})
	}
	var seen bytes.Buffer
	r := wire.NewReader(io.TeeReader(c, &seen), wire.DefaultLimits())
	if _, _, err := r.ReadHeader(); err != nil {
		return nil, nil, err
	}
	rec, err := r.Next()
	if err != nil {
		return nil, nil, err
	}
	h, ok := rec.(*wire.Hello)
	if !ok || h.Role != wire.RolePrimary {
		return nil, nil, fmt.Errorf("%w: first record is %v, not a primary's hello", checkpoint.ErrPeer, rec.Type())
	}
	if h.Domain.Name == "" {
		return nil, nil, fmt.Errorf("%w: hello without a domain name", checkpoint.ErrPeer)
	}
	// The record aliases the reader's buffer: keep a copy.
	hc := *h
	hc.Domain.Name = strings.Clone(h.Domain.Name)
	return &hc, &replayConn{Conn: c, r: io.MultiReader(&seen, c)}, nil
}

// replayConn reads what was already read from Conn, then Conn.
type replayConn struct {
	checkpoint.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// chanListener is a Listener fed by the service's router.
type chanListener struct {
	name string
	c    chan checkpoint.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener(name string) *chanListener {
	return &chanListener{name: name, c: make(chan checkpoint.Conn), done: make(chan struct{})}
}

// push hands c to the Standby; false if it no longer accepts (c is then
// the caller's).
func (l *chanListener) push(c checkpoint.Conn) bool {
	select {
	case l.c <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (checkpoint.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) String() string { return l.name }

// authListener passes on the connections of ln whose peer may replicate
// the domain its hello names (receive --transport=tls: the per-domain
// authorisation of listen, for one primary). Hellos are read
// concurrently, at most maxPendingHellos at once, so that a silent peer
// does not hold up the next.
type authListener struct {
	*chanListener
	ln checkpoint.Listener
}

func authorize(ln checkpoint.Listener, policy *peerPolicy, log *slog.Logger) *authListener {
	a := &authListener{chanListener: newChanListener(ln.String()), ln: ln}
	slots := make(chan struct{}, maxPendingHellos)
	go func() {
		defer a.chanListener.Close()
		for {
			c, err := ln.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					log.Error("cannot accept connections any more", "err", err)
				}
				return
			}
			select {
			case slots <- struct{}{}:
			default:
				log.Warn("dropped a connection: too many connections are waiting to say hello", "max", maxPendingHellos)
				c.Close()
				continue
			}
			go func() {
				h, replay, err := readHello(c)
				<-slots
				if err != nil {
					log.Warn("dropped a connection without a valid hello", "err", err)
					c.Close()
					return
				}
				if err := policy.allow(h.Domain.Name, peerIdentity(c)); err != nil {
					log.Warn("refused a primary not allowed to replicate the domain here", "domain", h.Domain.Name, "peer", peerIdentity(c), "err", err)
					c.Close()
					return
				}
				if !a.push(replay) {
					c.Close()
				}
			}()
		}
	}()
	return a
}

// Close implements checkpoint.Listener.
func (a *authListener) Close() error {
	a.chanListener.Close()
	return a.ln.Close()
}
