package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/xl-kemari/xl-kemari/checkpoint"
)

// Authorisation on the listen service. The CA authenticates a peer; what
// it may do is bound to the host its certificate names: a domain is
// accepted only from the primary host(s) configured for it. Where that
// comes from, first match wins:
//
//   - --peer DOMAIN=HOST[,HOST...] on the command line, per domain;
//   - --peer '*=HOST[,HOST...]', for every other domain;
//   - kemari.toml's [defaults] standby: on a pair of hosts that protect
//     each other, the host this one replicates to is the one that
//     replicates here;
//   - --any-peer: any certificate of the CA, any domain (no
//     authorisation; stated in a warning at start).
//
// With none of these the service refuses to start: a CA that signs many
// hosts' certificates must not let each of them replace every domain.

// errPeerNotAllowed: a primary's certificate does not name a host allowed
// to replicate the domain it asked for.
var errPeerNotAllowed = errors.New("xl-kemari: peer not allowed for this domain")

// peerPolicy maps each domain to the hosts allowed to replicate it here.
type peerPolicy struct {
	any      bool
	byDomain map[string][]string
	fallback []string // for domains without an entry ("*" or kemari.toml)
}

// newPeerPolicy builds the policy from --peer entries, kemari.toml's
// standby (host or host:port) and --any-peer.
func newPeerPolicy(entries []string, standby string, any bool) (*peerPolicy, error) {
	p := &peerPolicy{any: any, byDomain: map[string][]string{}}
	var errs []error
	star := false
	for _, e := range entries {
		dom, hosts, ok := strings.Cut(e, "=")
		if !ok || dom == "" || hosts == "" {
			errs = append(errs, fmt.Errorf("--peer %q: want DOMAIN=HOST[,HOST...]", e))
			continue
		}
		var hs []string
		for h := range strings.SplitSeq(hosts, ",") {
			h = strings.TrimSpace(h)
			if h == "" || strings.ContainsAny(h, " /") {
				errs = append(errs, fmt.Errorf("--peer %q: %q is not a host name or address", e, h))
				continue
			}
			hs = append(hs, h)
		}
		if dom == "*" {
			star = true
			p.fallback = append(p.fallback, hs...)
		} else {
			p.byDomain[dom] = append(p.byDomain[dom], hs...)
		}
	}
	if !star && standby != "" {
		p.fallback = []string{sshHost(standby)}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if !any && len(p.byDomain) == 0 && len(p.fallback) == 0 {
		return nil, fmt.Errorf("no peer may replicate to this host: name the primary hosts with --peer DOMAIN=HOST or --peer '*=HOST' (or [defaults] standby in kemari.toml), or accept every certificate of the CA with --any-peer")
	}
	return p, nil
}

// hosts returns the hosts allowed to replicate domain.
func (p *peerPolicy) hosts(domain string) []string {
	if hs, ok := p.byDomain[domain]; ok {
		return hs
	}
	return p.fallback
}

// allow reports (nil) whether the peer id may replicate domain.
func (p *peerPolicy) allow(domain string, id peerID) error {
	if p.any {
		return nil
	}
	if id.cert == nil {
		return fmt.Errorf("%w: the connection carries no certificate", errPeerNotAllowed)
	}
	hosts := p.hosts(domain)
	for _, h := range hosts {
		if id.names(h) {
			return nil
		}
	}
	if len(hosts) == 0 {
		return fmt.Errorf("%w: no host may replicate %q here (--peer %s=HOST)", errPeerNotAllowed, domain, domain)
	}
	return fmt.Errorf("%w: %s may replicate %q here, not %s", errPeerNotAllowed, strings.Join(hosts, ", "), domain, id)
}

// peerID is the verified certificate of a connection's peer, if any.
type peerID struct{ cert *x509.Certificate }

// peerIdentity returns the verified leaf certificate of c's peer: a TLS
// connection after its handshake (possibly wrapped by the router).
func peerIdentity(c checkpoint.Conn) peerID {
	for {
		switch x := c.(type) {
		case *tls.Conn:
			cs := x.ConnectionState()
			if !cs.HandshakeComplete || len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
				return peerID{}
			}
			return peerID{cert: cs.PeerCertificates[0]}
		case *replayConn:
			c = x.Conn
		default:
			return peerID{}
		}
	}
}

// names reports whether the certificate is host's: host matches one of
// its subject alternative names (DNS or IP), or, for certificates made
// without them, its common name.
func (id peerID) names(host string) bool {
	if id.cert == nil {
		return false
	}
	if id.cert.VerifyHostname(host) == nil {
		return true
	}
	return len(id.cert.DNSNames) == 0 && len(id.cert.IPAddresses) == 0 && id.cert.Subject.CommonName != "" &&
		strings.EqualFold(id.cert.Subject.CommonName, host)
}

func (id peerID) String() string {
	if id.cert == nil {
		return "(no certificate)"
	}
	names := slices.Clone(id.cert.DNSNames)
	for _, ip := range id.cert.IPAddresses {
		names = append(names, net.IP(ip).String())
	}
	return fmt.Sprintf("CN=%q SAN=%v", id.cert.Subject.CommonName, names)
}
