package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"github.com/xl-kemari/xl-kemari/checkpoint"
	"github.com/xl-kemari/xl-kemari/conf"
)

// The transports: ssh (the default for real use: `xl-kemari receive
// --stdio` on the standby, over the ssh client, as `xl migrate` does), tls
// (to a standby's `listen` service), unix (a local socket; both ends
// check that the other is root or their own user: the demo and tests)
// and tcp (plain, loopback only, authenticating nobody: any local user
// could feed or read it, so only behind --insecure-tcp, for tests).
const (
	transportSSH  = "ssh"
	transportTLS  = "tls"
	transportUnix = "unix"
	transportTCP  = "tcp"
)

// errInsecureTCP: the tcp transport was asked for without --insecure-tcp.
var errInsecureTCP = errors.New("the tcp transport authenticates nobody (any local user could connect to it); use unix (a socket path), ssh or tls, or pass --insecure-tcp for tests")

// transportFlags select and configure the transport; values given here
// win over kemari.toml's.
type transportFlags struct {
	kind       string
	sshCommand string
	remote     string
	tlsCert    string
	tlsKey     string
	tlsCA      string
	// insecureTCP allows the tcp transport.
	insecureTCP bool
}

func (t *transportFlags) register(fs *pflag.FlagSet, primary bool) {
	if primary {
		fs.StringVar(&t.kind, "transport", "", "replication transport: ssh, tls, unix (a local socket path), or tcp (plain, loopback only, needs --insecure-tcp); default from the configuration (ssh), unix with --hypervisor=sim")
		fs.StringVar(&t.sshCommand, "ssh-command", "", "ssh client and its options, split on blanks (default kemari.toml ssh-command, \"ssh\")")
		fs.StringVar(&t.remote, "remote-command", "xl-kemari", "the xl-kemari command on the standby host (ssh transport)")
	}
	fs.BoolVar(&t.insecureTCP, "insecure-tcp", false, "allow the plain tcp transport on loopback, which any local user can reach (tests only)")
	fs.StringVar(&t.tlsCert, "tls-cert", "", "this host's certificate, PEM (default kemari.toml tls.cert)")
	fs.StringVar(&t.tlsKey, "tls-key", "", "this host's private key, PEM (default kemari.toml tls.key)")
	fs.StringVar(&t.tlsCA, "tls-ca", "", "the CA that signs the peers' certificates, PEM (default kemari.toml tls.ca)")
}

func orDefault(v, def string) string {
	if v != "" {
		return v
	}
	return def
}

// tlsConfig loads the certificates named by the flags or by host.
func (t *transportFlags) tlsConfig(host *conf.Host) (*tls.Config, error) {
	return checkpoint.NewTLSConfig(orDefault(t.tlsCert, host.TLSCert), orDefault(t.tlsKey, host.TLSKey), orDefault(t.tlsCA, host.TLSCA))
}

// withPort adds conf.DefaultPort to an address that has no port.
func withPort(addr string) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	return net.JoinHostPort(strings.Trim(addr, "[]"), strconv.Itoa(conf.DefaultPort))
}

// sshHost drops a port from the standby's name: ssh has its own.
func sshHost(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// dialer builds the primary's Dialer toward peer. remote is the receive
// command line to run over ssh (without the command itself).
func (t *transportFlags) dialer(kind, peer string, host *conf.Host, remote []string, stderr io.Writer) (checkpoint.Dialer, error) {
	switch kind {
	case transportTCP:
		if !t.insecureTCP {
			return nil, errInsecureTCP
		}
		return checkpoint.TCPDialer{Addr: withPort(peer)}, nil
	case transportUnix:
		if !filepath.IsAbs(peer) {
			return nil, fmt.Errorf("the unix transport takes the standby's socket path, not %q", peer)
		}
		return checkpoint.UnixDialer{Path: peer}, nil
	case transportTLS:
		cfg, err := t.tlsConfig(host)
		if err != nil {
			return nil, err
		}
		return checkpoint.TLSDialer{Addr: withPort(peer), Config: cfg}, nil
	case transportSSH:
		cmd := strings.Fields(orDefault(t.sshCommand, host.SSHCommand))
		if len(cmd) == 0 {
			cmd = []string{"ssh"}
		}
		d := &checkpoint.SSHDialer{Command: cmd, Host: sshHost(peer), Remote: append([]string{t.remote}, remote...), Stderr: stderr}
		if _, err := d.Argv(); err != nil {
			return nil, err
		}
		return d, nil
	}
	return nil, fmt.Errorf("unknown transport %q: want ssh, tls, unix or tcp", kind)
}

// localTransport is the simulator's default transport toward peer: unix
// for a socket path, else tcp (which the dialer allows only with
// --insecure-tcp).
func localTransport(peer string, insecureTCP bool) string {
	if filepath.IsAbs(peer) || !insecureTCP {
		return transportUnix
	}
	return transportTCP
}
