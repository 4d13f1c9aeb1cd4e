package checkpoint

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// faultListener is a net.Listener whose Accept fails with the errors of
// errs, in turn, before it accepts for real.
type faultListener struct {
	net.Listener
	errs chan error
}

func (l *faultListener) Accept() (net.Conn, error) {
	select {
	case err := <-l.errs:
		return nil, err
	default:
	}
	return l.Listener.Accept()
}

func acceptErr(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept", errno)}
}

// Out of descriptors (EMFILE, ENFILE) and other passing shortages do not
// end the listener: it retries, reports each, and serves the next peer.
func TestTLSListenerOutlivesEMFILE(t *testing.T) {
	ca := newTestCA(t, "kemari test CA")
	srv, _, _ := ca.issue(t, "standby")
	cli, _, _ := ca.issue(t, "primary")
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &faultListener{Listener: raw, errs: make(chan error, 8)}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.EMFILE, syscall.ENFILE, syscall.ECONNABORTED, syscall.ENOBUFS} {
		fl.errs <- acceptErr(e)
	}
	reported := make(chan error, 8)
	ln, err := NewTLSListener(fl, NewTLSConfigFrom(srv, ca.pool), TLSListenerOptions{
		AcceptError: func(err error, retry time.Duration) { reported <- err }})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := TLSDialer{Addr: raw.Addr().String(), Config: NewTLSConfigFrom(cli, ca.pool)}.Dial(context.Background())
		if err == nil {
			c.Write([]byte("x"))
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("Accept after EMFILE: %v", err)
	}
	c.Close()
	for i := range 5 {
		if err := <-reported; !errors.Is(err, syscall.EMFILE) && !errors.Is(err, syscall.ENFILE) &&
			!errors.Is(err, syscall.ECONNABORTED) && !errors.Is(err, syscall.ENOBUFS) {
			t.Errorf("report %d: %v", i, err)
		}
	}
}

// An accept error the process cannot recover from ends the listener, and
// Accept says why (not a plain "closed", which the service takes for a
// shutdown).
func TestTLSListenerFatalAcceptError(t *testing.T) {
	ca := newTestCA(t, "kemari test CA")
	srv, _, _ := ca.issue(t, "standby")
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &faultListener{Listener: raw, errs: make(chan error, 1)}
	fl.errs <- acceptErr(syscall.EBADF)
	ln, err := NewTLSListener(fl, NewTLSConfigFrom(srv, ca.pool), TLSListenerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := ln.Accept(); !errors.Is(err, syscall.EBADF) || errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after EBADF: %v, want it wrapped", err)
	}
	ln.Close()
	if _, err := ln.Accept(); !errors.Is(err, syscall.EBADF) {
		t.Errorf("Accept after Close of a failed listener: %v", err)
	}
}

// Handshakes under way are bounded: beyond MaxHandshakes silent peers, a
// new one is closed at once; when a slot frees, a real peer gets in.
func TestTLSListenerBoundsHandshakes(t *testing.T) {
	ca := newTestCA(t, "kemari test CA")
	srv, _, _ := ca.issue(t, "standby")
	cli, _, _ := ca.issue(t, "primary")
	refused := make(chan error, 8)
	ln, err := ListenTLSOptions("127.0.0.1:0", NewTLSConfigFrom(srv, ca.pool), TLSListenerOptions{MaxHandshakes: 2,
		Refused: func(_ net.Addr, err error) { refused <- err }})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var silent []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", ln.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		silent = append(silent, c)
	}
	extra, err := net.Dial("tcp", ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	if err := <-refused; !errors.Is(err, ErrBusy) {
		t.Fatalf("third silent peer: %v, want ErrBusy", err)
	}
	if n, err := extra.Read(make([]byte, 1)); err == nil {
		t.Errorf("the peer beyond the bound was served (%d bytes)", n)
	}
	silent[0].Close()
	if err := <-refused; err == nil || errors.Is(err, ErrBusy) {
		t.Fatalf("the closed silent peer: %v", err)
	}
	go func() {
		c, err := TLSDialer{Addr: ln.Addr(), Config: NewTLSConfigFrom(cli, ca.pool)}.Dial(context.Background())
		if err == nil {
			c.Write([]byte("x"))
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// A certificate of the CA that does not say it is for its end (no
// extended key usage, which Go would take as "any", or the wrong one) is
// refused on both ends.
func TestTLSKeyUsageEnforced(t *testing.T) {
	ca := newTestCA(t, "kemari test CA")
	srv, _, _ := ca.issue(t, "standby")
	ln, refused := serveEcho(t, NewTLSConfigFrom(srv, ca.pool))
	for name, eku := range map[string][]x509.ExtKeyUsage{"none": nil, "serverAuth only": {x509.ExtKeyUsageServerAuth}} {
		t.Run("primary with "+name, func(t *testing.T) {
			cert := issueWith(t, ca, "primary", eku)
			c, err := TLSDialer{Addr: ln.Addr(), Config: NewTLSConfigFrom(cert, ca.pool)}.Dial(context.Background())
			if err == nil {
				c.Write([]byte("guest memory"))
				_, err = c.Read(make([]byte, 1))
				c.Close()
			}
			if err == nil {
				t.Fatal("served")
			}
			if rerr := <-refused; rerr == nil {
				t.Fatal("no refusal reported")
			}
		})
	}
	t.Run("standby with clientAuth only", func(t *testing.T) {
		bad := issueWith(t, ca, "standby", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
		ln2, _ := serveEcho(t, NewTLSConfigFrom(bad, ca.pool))
		cli, _, _ := ca.issue(t, "primary")
		c, err := TLSDialer{Addr: ln2.Addr(), Config: NewTLSConfigFrom(cli, ca.pool)}.Dial(context.Background())
		if err == nil {
			c.Close()
			t.Fatal("the primary accepted a standby certificate without serverAuth")
		}
	})
}

func issueWith(t *testing.T, ca *testCA, name string, eku []x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: eku,
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// The tcp listener (receive --insecure-tcp) outlives EMFILE as well, and
// ends on an error it cannot recover from.
func TestTCPListenerOutlivesEMFILE(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &faultListener{Listener: raw, errs: make(chan error, 4)}
	fl.errs <- acceptErr(syscall.EMFILE)
	fl.errs <- acceptErr(syscall.ENFILE)
	var retried int
	ln := &TCPListener{ln: fl, done: make(chan struct{}), AcceptError: func(error, time.Duration) { retried++ }}
	defer ln.Close()
	go func() {
		if c, err := net.Dial("tcp", raw.Addr().String()); err == nil {
			defer c.Close()
			c.Read(make([]byte, 1))
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("Accept after EMFILE: %v", err)
	}
	c.Close()
	if retried != 2 {
		t.Errorf("%d retries reported, want 2", retried)
	}
	fl.errs <- acceptErr(syscall.EINVAL)
	if _, err := ln.Accept(); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("Accept after EINVAL: %v", err)
	}
	ln.Close()
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
}
