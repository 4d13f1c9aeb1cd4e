package host

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

var nsSeq atomic.Int32

// linkNS makes a network namespace with a veth pair va–vb, both down, and
// returns its path; t.Cleanup deletes it.
func linkNS(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root, for a network namespace")
	}
	ns := fmt.Sprintf("xlkh%d-%d", os.Getpid(), nsSeq.Add(1))
	if _, err := Run("", "ip", "netns", "add", ns); err != nil {
		t.Skipf("no network namespaces here: %v", err)
	}
	t.Cleanup(func() { _, _ = Run("", "ip", "netns", "del", ns) })
	if _, err := Run("", "ip", "-n", ns, "link", "add", "va", "type", "veth", "peer", "name", "vb"); err != nil {
		t.Fatal(err)
	}
	return "/run/netns/" + ns
}

func operState(t *testing.T, nsPath, name string) netlink.LinkOperState {
	t.Helper()
	_, _, l, done, err := linkAt(nsPath, name)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	return l.Attrs().OperState
}

// LinkUp returns only once the link is operationally up: a veth whose
// peer is down is up administratively but not operationally, and LinkUp
// waits for it (here, until its wait fails); once the peer is up, it
// returns with the link up. SetLink sets the state without waiting.
func TestLinkUp(t *testing.T) {
	path := linkNS(t)
	err := LinkUp(path, "va", 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "not operationally up") {
		t.Fatalf("LinkUp(va) with its peer down: %v, want not operationally up", err)
	}
	if s := operState(t, path, "va"); s == netlink.OperUp {
		t.Fatalf("va is %v with its peer down", s)
	}
	if err := SetLink(path, "vb", true); err != nil {
		t.Fatal(err)
	}
	// In the namespace itself, as the namespace driver's standby calls it.
	if err := InNetNS(path, func() error { return LinkUp("", "va", 10*time.Second) }); err != nil {
		t.Fatalf("LinkUp(va) with its peer up: %v", err)
	}
	if s := operState(t, path, "va"); s != netlink.OperUp {
		t.Errorf("LinkUp(va) returned with va %v", s)
	}
	if err := SetLink(path, "va", false); err != nil {
		t.Fatal(err)
	}
	if s := operState(t, path, "vb"); s == netlink.OperUp {
		t.Errorf("vb is %v with its peer set down", s)
	}
}

func TestLinkErrorsName(t *testing.T) {
	path := linkNS(t)
	for _, err := range []error{LinkUp(path, "nosuch", time.Second), SetLink(path, "nosuch", true)} {
		if err == nil || !strings.Contains(err.Error(), "nosuch") || !strings.Contains(err.Error(), path) {
			t.Errorf("a missing link: %v, want an error naming it and %s", err, path)
		}
	}
	bad := path + "-none"
	for _, err := range []error{LinkUp(bad, "va", time.Second), SetLink(bad, "va", true)} {
		if !errors.Is(err, ErrNetNS) || !strings.Contains(err.Error(), bad) {
			t.Errorf("a missing namespace: %v, want ErrNetNS naming %s", err, bad)
		}
	}
}

// LinkAddrs returns the link's MAC and its global unicast addresses,
// IPv4 and IPv6, not its link-local ones (what a failover announces).
func TestLinkAddrs(t *testing.T) {
	path := linkNS(t)
	for _, args := range [][]string{
		{"link", "set", "va", "address", "02:00:00:00:0a:01"},
		{"addr", "add", "192.0.2.7/24", "dev", "va"},
		{"addr", "add", "2001:db8::7/64", "dev", "va", "nodad"},
		{"addr", "add", "fe80::7/64", "dev", "va", "nodad"},
	} {
		if _, err := Run(path, append([]string{"ip"}, args...)...); err != nil {
			t.Fatal(err)
		}
	}
	mac, addrs, err := LinkAddrs(path, "va")
	if err != nil {
		t.Fatal(err)
	}
	if mac.String() != "02:00:00:00:0a:01" {
		t.Errorf("MAC %v, want 02:00:00:00:0a:01", mac)
	}
	got := map[string]bool{}
	for _, a := range addrs {
		got[a.String()] = true
	}
	if len(addrs) != 2 || !got["192.0.2.7"] || !got["2001:db8::7"] {
		t.Errorf("addresses %v, want 192.0.2.7 and 2001:db8::7 only", addrs)
	}
	if _, _, err := LinkAddrs(path, "nosuch"); err == nil || !strings.Contains(err.Error(), "nosuch") {
		t.Errorf("a missing link: %v, want an error naming it", err)
	}
}
