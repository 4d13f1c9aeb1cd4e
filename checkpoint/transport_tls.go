package checkpoint

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
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

// TLSListener accepts primaries over TLS 1.3 with mutual authentication.
// Handshakes run concurrently, each bounded by TLSHandshakeTimeout; a
// peer that fails one is closed, reported to the refused callback, and
// never returned by Accept.
type TLSListener struct {
	ln      net.Listener
	cfg     *tls.Config
	refused func(net.Addr, error)
	conns   chan Conn
	done    chan struct{}
	once    sync.Once
}

// ListenTLS listens on addr (any address: the channel is encrypted and
// both ends authenticated). refused, if not nil, is called from a
// handshake goroutine for every peer refused, e.g. to log it.
func ListenTLS(addr string, cfg *tls.Config, refused func(remote net.Addr, err error)) (*TLSListener, error) {
	if cfg == nil || cfg.ClientAuth != tls.RequireAndVerifyClientCert || cfg.MinVersion < tls.VersionTLS13 {
		return nil, fmt.Errorf("%w: the listener needs TLS 1.3 with client certificates (NewTLSConfig)", ErrTLSConfig)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	l := &TLSListener{ln: ln, cfg: cfg, refused: refused, conns: make(chan Conn), done: make(chan struct{})}
	go l.acceptLoop()
	return l, nil
}

func (l *TLSListener) acceptLoop() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			l.Close()
			return
		}
		go l.handshake(c)
	}
}

func (l *TLSListener) handshake(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tuneTCP(tc)
	}
	tc := tls.Server(c, l.cfg)
	ctx, cancel := context.WithTimeout(context.Background(), TLSHandshakeTimeout)
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
		if l.refused != nil {
			l.refused(c.RemoteAddr(), err)
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
