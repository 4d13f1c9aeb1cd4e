package checkpoint

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testCA is a certificate authority made up for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a host certificate for 127.0.0.1 and localhost, good for
// both ends of the transport, and its PEM forms.
func (ca *testCA) issue(t *testing.T, name string) (tls.Certificate, []byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c, certPEM, keyPEM
}

func serveEcho(t *testing.T, cfg *tls.Config) (*TLSListener, chan error) {
	t.Helper()
	refused := make(chan error, 4)
	ln, err := ListenTLS("127.0.0.1:0", cfg, func(_ net.Addr, err error) { refused <- err })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln, refused
}

func TestTLSMutualAuthentication(t *testing.T) {
	ca := newTestCA(t, "kemari test CA")
	srv, _, _ := ca.issue(t, "standby")
	cli, _, _ := ca.issue(t, "primary")
	ln, refused := serveEcho(t, NewTLSConfigFrom(srv, ca.pool))
	c, err := TLSDialer{Addr: ln.Addr(), Config: NewTLSConfigFrom(cli, ca.pool)}.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if st := c.(*tls.Conn).ConnectionState(); st.Version != tls.VersionTLS13 {
		t.Errorf("version %x, want TLS 1.3", st.Version)
	}
	msg := []byte("epoch 1")
	c.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo %q, %v", got, err)
	}
	select {
	case err := <-refused:
		t.Fatalf("refused a valid peer: %v", err)
	default:
	}
}

// A peer whose certificate another CA signed, or that has none, is refused
// in the handshake: the listener never hands it to the standby.
func TestTLSRefusesPeers(t *testing.T) {
	ca := newTestCA(t, "kemari test CA")
	other := newTestCA(t, "someone else")
	srv, _, _ := ca.issue(t, "standby")
	ln, refused := serveEcho(t, NewTLSConfigFrom(srv, ca.pool))
	wrong, _, _ := other.issue(t, "intruder")

	cases := map[string]*tls.Config{
		"certificate of another CA": func() *tls.Config {
			c := NewTLSConfigFrom(wrong, ca.pool)
			return c
		}(),
		"no certificate": {MinVersion: tls.VersionTLS13, RootCAs: ca.pool},
	}
	for name, cfg := range cases {
		t.Run(name, func(t *testing.T) {
			c, err := TLSDialer{Addr: ln.Addr(), Config: cfg}.Dial(context.Background())
			if err == nil {
				// TLS 1.3: the client finishes first; the server's
				// verdict arrives as an alert on the first read.
				c.Write([]byte("guest memory"))
				_, err = c.Read(make([]byte, 1))
				c.Close()
			}
			if err == nil {
				t.Fatal("a peer without a valid certificate was served")
			}
			if rerr := <-refused; rerr == nil {
				t.Fatal("no refusal reported")
			}
		})
	}
}

func TestTLSClientVerifiesStandby(t *testing.T) {
	ca := newTestCA(t, "kemari test CA")
	other := newTestCA(t, "someone else")
	fake, _, _ := other.issue(t, "fake standby")
	ln, _ := serveEcho(t, NewTLSConfigFrom(fake, other.pool))
	cli, _, _ := ca.issue(t, "primary")
	_, err := TLSDialer{Addr: ln.Addr(), Config: NewTLSConfigFrom(cli, ca.pool)}.Dial(context.Background())
	var uerr x509.UnknownAuthorityError
	if !errors.As(err, &uerr) {
		var verr *tls.CertificateVerificationError
		if !errors.As(err, &verr) {
			t.Fatalf("dial to a standby of another CA: %v", err)
		}
	}
}

func TestNewTLSConfigFiles(t *testing.T) {
	ca := newTestCA(t, "kemari test CA")
	_, certPEM, keyPEM := ca.issue(t, "host")
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cert, key, caf := write("host.crt", certPEM), write("host.key", keyPEM), write("ca.crt", ca.pem)
	cfg, err := NewTLSConfig(cert, key, caf)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS13 || cfg.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Errorf("config %+v", cfg)
	}
	for _, bad := range [][3]string{{"", key, caf}, {cert, key, write("empty.crt", nil)}, {cert, caf, caf}, {cert, key, filepath.Join(dir, "absent")}} {
		if _, err := NewTLSConfig(bad[0], bad[1], bad[2]); !errors.Is(err, ErrTLSConfig) {
			t.Errorf("NewTLSConfig(%q): %v, want ErrTLSConfig", bad, err)
		}
	}
	if _, err := ListenTLS("127.0.0.1:0", &tls.Config{}, nil); !errors.Is(err, ErrTLSConfig) {
		t.Errorf("ListenTLS without client authentication: %v", err)
	}
}
