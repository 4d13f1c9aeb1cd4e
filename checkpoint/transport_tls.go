package checkpoint

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"
)

// ErrTLSConfig: the certificate, key or CA of the tls transport is missing
// or unusable.
var ErrTLSConfig = errors.New("checkpoint: tls configuration")

// TLSHandshakeTimeout bounds a peer's TLS handshake on either end, so that
// a peer that connects and says nothing cannot hold an accept slot.
const TLSHandshakeTimeout = 10 * time.Second

// NewTLSConfig builds the configuration both ends of the tls transport
// use from PEM files: this host's certificate and key, and the CA that
// signs every peer's certificate. It allows TLS 1.3 only and requires and
// verifies a certificate from the peer in both directions (mutual
// authentication), so that a peer without a valid certificate is refused
// in the handshake, before a byte of guest state is read or written.
//
// The returned config carries no ServerName: TLSDialer sets it from the
// address it dials.
func NewTLSConfig(certFile, keyFile, caFile string) (*tls.Config, error) {
	var missing []string
	for _, f := range [][2]string{{"certificate", certFile}, {"key", keyFile}, {"CA", caFile}} {
		if f[1] == "" {
			missing = append(missing, f[0])
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: no %v file given (kemari.toml [tls] or --tls-cert, --tls-key, --tls-ca)", ErrTLSConfig, missing)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("%w: %s, %s: %w", ErrTLSConfig, certFile, keyFile, err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTLSConfig, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%w: %s holds no PEM certificate", ErrTLSConfig, caFile)
	}
	return NewTLSConfigFrom(cert, pool), nil
}

// NewTLSConfigFrom is NewTLSConfig for credentials already loaded.
func NewTLSConfigFrom(cert tls.Certificate, ca *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      ca,
		ClientCAs:    ca,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}
}

// TLSDialer connects to a standby's tls listener (xl-kemari listen). The
// connection is returned only after the handshake, with the standby's
// certificate verified against Config's CA for the host of Addr.
type TLSDialer struct {
	Addr   string
	Config *tls.Config // from NewTLSConfig
}

// Dial implements Dialer.
func (d TLSDialer) Dial(ctx context.Context) (Conn, error) {
	if d.Config == nil {
		return nil, fmt.Errorf("%w: no configuration", ErrTLSConfig)
	}
	host, _, err := net.SplitHostPort(d.Addr)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: address %q: %w", d.Addr, err)
	}
	cfg := d.Config.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	cfg.VerifyConnection = requireUsage(x509.ExtKeyUsageServerAuth, "standby")
	td := tls.Dialer{Config: cfg}
	c, err := td.DialContext(ctx, "tcp", d.Addr)
	if err != nil {
		return nil, err
	}
	tc := c.(*tls.Conn)
	if nc, ok := tc.NetConn().(*net.TCPConn); ok {
		tuneTCP(nc)
	}
	return tc, nil
}

// String implements Dialer.
func (d TLSDialer) String() string { return "tls:" + d.Addr }

// MaxTLSHandshakes is how many handshakes a TLSListener runs at once by
// default; a peer connecting beyond that is closed at once, so that
// connections that never finish their handshake cannot exhaust the
// process's descriptors and memory.
const MaxTLSHandshakes = 64

// ErrBusy: a listener refused a connection because as many handshakes as
// it allows are under way.
var ErrBusy = errors.New("checkpoint: too many handshakes under way")

// TLSListenerOptions tune a TLSListener; the zero value is the default.
type TLSListenerOptions struct {
	// MaxHandshakes bounds the handshakes under way (default
	// MaxTLSHandshakes).
	MaxHandshakes int
	// HandshakeTimeout bounds each (default TLSHandshakeTimeout).
	HandshakeTimeout time.Duration
	// Refused, if not nil, is called for every peer refused (failed
	// handshake, or ErrBusy), from a listener goroutine.
	Refused func(remote net.Addr, err error)
	// AcceptError, if not nil, is called when accepting failed with an
	// error the listener survives (out of descriptors, say): it retries
	// after retry.
	AcceptError func(err error, retry time.Duration)
}

// TLSListener accepts primaries over TLS 1.3 with mutual authentication.
// Handshakes run concurrently, each bounded in time, at most
// MaxHandshakes at once; a peer that fails one is closed, reported, and
// never returned by Accept. Accept errors the process can recover from
// (EMFILE, ENFILE, ENOBUFS, ENOMEM, ECONNABORTED, ...) are retried with
// back-off; any other ends the listener and Accept returns it.
type TLSListener struct {
	ln    net.Listener
	cfg   *tls.Config
	opts  TLSListenerOptions
	slots chan struct{}
	conns chan Conn
	done  chan struct{}
	once  sync.Once
	err   error // why the accept loop ended, if not Close; set before done closes
}

// ListenTLS listens on addr (any address: the channel is encrypted and
// both ends authenticated). refused, if not nil, is called from a
// handshake goroutine for every peer refused, e.g. to log it.
func ListenTLS(addr string, cfg *tls.Config, refused func(remote net.Addr, err error)) (*TLSListener, error) {
	return ListenTLSOptions(addr, cfg, TLSListenerOptions{Refused: refused})
}

// ListenTLSOptions is ListenTLS with options.
func ListenTLSOptions(addr string, cfg *tls.Config, opts TLSListenerOptions) (*TLSListener, error) {
	if err := checkListenerConfig(cfg); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return NewTLSListener(ln, cfg, opts)
}

func checkListenerConfig(cfg *tls.Config) error {
	if cfg == nil || cfg.ClientAuth != tls.RequireAndVerifyClientCert || cfg.MinVersion < tls.VersionTLS13 {
		return fmt.Errorf("%w: the listener needs TLS 1.3 with client certificates (NewTLSConfig)", ErrTLSConfig)
	}
	return nil
}

// NewTLSListener serves TLS on ln, which it owns from now on (tests pass
// a listener that injects faults).
func NewTLSListener(ln net.Listener, cfg *tls.Config, opts TLSListenerOptions) (*TLSListener, error) {
	if err := checkListenerConfig(cfg); err != nil {
		ln.Close()
		return nil, err
	}
	if opts.MaxHandshakes <= 0 {
		opts.MaxHandshakes = MaxTLSHandshakes
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = TLSHandshakeTimeout
	}
	cfg = cfg.Clone()
	cfg.VerifyConnection = requireUsage(x509.ExtKeyUsageClientAuth, "client")
	l := &TLSListener{ln: ln, cfg: cfg, opts: opts, slots: make(chan struct{}, opts.MaxHandshakes),
		conns: make(chan Conn), done: make(chan struct{})}
	go l.acceptLoop()
	return l, nil
}

// requireUsage checks that the peer's certificate is meant for its end:
// its extended key usage names usage explicitly (Go's verification takes
// a certificate without the extension as good for anything), and its
// key usage, if it has one, allows signatures.
func requireUsage(usage x509.ExtKeyUsage, end string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("%w: the %s sent no certificate", ErrTLSConfig, end)
		}
		leaf := cs.PeerCertificates[0]
		if !slices.Contains(leaf.ExtKeyUsage, usage) {
			return fmt.Errorf("%w: the %s certificate %q lacks the extended key usage %s", ErrTLSConfig, end, leaf.Subject.CommonName, usageName(usage))
		}
		if leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
			return fmt.Errorf("%w: the %s certificate %q does not allow digital signatures", ErrTLSConfig, end, leaf.Subject.CommonName)
		}
		return nil
	}
}

func usageName(u x509.ExtKeyUsage) string {
	switch u {
	case x509.ExtKeyUsageClientAuth:
		return "clientAuth"
	case x509.ExtKeyUsageServerAuth:
		return "serverAuth"
	}
	return fmt.Sprint(int(u))
}

// acceptBackoff bounds the wait between accept retries.
const (
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
)

// retryableAccept reports whether an accept error is one the listener
// outlives: a lack of resources that closing connections frees, or a
// peer that went away before it was accepted.
func retryableAccept(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EPROTO, syscall.EPERM, syscall.EAGAIN, syscall.EINTR,
		syscall.ENETDOWN, syscall.ENOPROTOOPT, syscall.EHOSTDOWN, syscall.ENONET, syscall.EHOSTUNREACH, syscall.EOPNOTSUPP, syscall.ENETUNREACH} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// acceptRetry is the accept loop's back-off: it waits before the next
// attempt after a retryable error, or returns false if done closed
// meanwhile. delay is the previous wait (0 after a success).
func acceptRetry(delay *time.Duration, done <-chan struct{}, report func(error, time.Duration), err error) bool {
	*delay = min(max(2**delay, minAcceptBackoff), maxAcceptBackoff)
	if report != nil {
		report(err, *delay)
	}
	t := time.NewTimer(*delay)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}

func (l *TLSListener) acceptLoop() {
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			if retryableAccept(err) && !errors.Is(err, net.ErrClosed) {
				if !acceptRetry(&delay, l.done, l.opts.AcceptError, err) {
					return
				}
				continue
			}
			l.fail(fmt.Errorf("checkpoint: tls listener %s: accept: %w", l.ln.Addr(), err))
			return
		}
		delay = 0
		select {
		case l.slots <- struct{}{}:
			go func() {
				defer func() { <-l.slots }()
				l.handshake(c)
			}()
		default:
			c.Close()
			if l.opts.Refused != nil {
				l.opts.Refused(c.RemoteAddr(), fmt.Errorf("%w (%d)", ErrBusy, l.opts.MaxHandshakes))
			}
		}
	}
}

// fail ends the listener with err, which Accept returns from now on.
func (l *TLSListener) fail(err error) {
	l.once.Do(func() {
		l.err = err
		close(l.done)
		l.ln.Close()
	})
}

func (l *TLSListener) handshake(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tuneTCP(tc)
	}
	tc := tls.Server(c, l.cfg)
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.HandshakeTimeout)
	defer cancel()
	go func() {
		select {
		case <-l.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := tc.HandshakeContext(ctx)
	if err != nil {
		c.Close()
		if l.opts.Refused != nil {
			l.opts.Refused(c.RemoteAddr(), err)
		}
		return
	}
	select {
	case l.conns <- tc:
	case <-l.done:
		tc.Close()
	}
}

// Accept implements Listener: it returns the next peer that completed the
// handshake with a valid certificate.
func (l *TLSListener) Accept() (Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		if l.err != nil {
			return nil, l.err
		}
		return nil, net.ErrClosed
	}
}

// Close implements Listener. Handshakes under way are abandoned.
func (l *TLSListener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.ln.Close()
	})
	return err
}

// Addr is the address listened on.
func (l *TLSListener) Addr() string { return l.ln.Addr().String() }

// String implements Listener.
func (l *TLSListener) String() string { return "tls:" + l.Addr() }
