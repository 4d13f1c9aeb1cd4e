package netns

import (
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/xl-kemari/xl-kemari/netbuf/auto/host"
	"github.com/xl-kemari/xl-kemari/netbuf/netbuftest"
)

// topo names the namespaces of one run (see the package comment).
type topo struct {
	prefix                string
	sw, p, s, gp, gs, cli string
}

var topoSeq atomic.Int32

func path(ns string) string { return netbuftest.NSPath(ns) }

// newTopo builds the namespaces; t.Cleanup deletes every one of them,
// also when the test fails half way.
func newTopo(t *testing.T) *topo {
	t.Helper()
	pre := fmt.Sprintf("xlke%d-%d", os.Getpid(), topoSeq.Add(1))
	tp := &topo{prefix: pre, sw: pre + "sw", p: pre + "p", s: pre + "s", gp: pre + "gp", gs: pre + "gs", cli: pre + "c"}
	addNamespaces(t, tp.sw, tp.p, tp.s, tp.gp, tp.gs, tp.cli)
	ip(t, tp.sw, "link", "add", "lan0", "type", "bridge")
	ip(t, tp.sw, "link", "set", "lan0", "up")
	dom0Pair(t, tp.sw, "lan0", "lan0", tp.p, tp.s, tp.gp, tp.gs)
	addClient(t, tp.sw, "lan0", "toC", tp.cli, clientMAC, "192.0.2.100/24", "2001:db8::100/64")
	netbuftest.WaitOperUp(t, tp.sw, "lan0", "toP", "toS", "toC")
	waitDom0Pair(t, tp.p, tp.s, tp.gp)
	netbuftest.WaitOperUp(t, tp.cli, "eth0")
	return tp
}

// The builders every topology of this package is made of: newTopo's
// (one LAN) and newPartTopo's (a LAN in two halves).

// ip runs "ip -n ns args...", failing the test.
func ip(t *testing.T, ns string, args ...string) {
	t.Helper()
	if _, err := host.Run("", append([]string{"ip", "-n", ns}, args...)...); err != nil {
		t.Fatal(err)
	}
}

// addNamespaces creates the network namespaces names, each with lo up
// and IPv6 off by default (only the guests and the clients speak it: no
// autoconfiguration chatter from bridges and ports); t.Cleanup deletes
// each, also when the test fails half way.
func addNamespaces(t *testing.T, names ...string) {
	t.Helper()
	for _, ns := range names {
		t.Cleanup(func() { _, _ = host.Run("", "ip", "netns", "del", ns) })
		if _, err := host.Run("", "ip", "netns", "add", ns); err != nil {
			t.Fatal(err)
		}
		ip(t, ns, "link", "set", "lo", "up")
		for _, kv := range [][2]string{{"disable_ipv6", "1"}, {"accept_dad", "0"}} {
			if err := host.WriteSysctl(path(ns), "net/ipv6/conf/default/"+kv[0], kv[1]); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// dom0Pair builds the two hosts: in each dom0 namespace (p, s) a bridge
// xenbr0 whose uplink is a veth to port toP (toS) on bridge brP (brS) of
// the switch namespace sw; the replication link rep0 between them
// (198.51.100.1/30 and .2/30); and the guest on each host, namespace gp
// (gs) behind vif1.0, with the same MAC and addresses, as a replica has.
// The primary's vif is up; the standby's stays down until failover.
func dom0Pair(t *testing.T, sw, brP, brS, p, s, gp, gs string) {
	t.Helper()
	for _, hp := range [][3]string{{p, "toP", brP}, {s, "toS", brS}} {
		h, port, br := hp[0], hp[1], hp[2]
		ip(t, h, "link", "add", "xenbr0", "type", "bridge")
		ip(t, h, "link", "set", "xenbr0", "up")
		ip(t, sw, "link", "add", port, "type", "veth", "peer", "name", "uplink", "netns", h)
		ip(t, sw, "link", "set", port, "master", br, "up")
		ip(t, h, "link", "set", "uplink", "master", "xenbr0", "up")
	}
	ip(t, p, "link", "add", "rep0", "type", "veth", "peer", "name", "rep0", "netns", s)
	ip(t, p, "addr", "add", "198.51.100.1/30", "dev", "rep0")
	ip(t, s, "addr", "add", "198.51.100.2/30", "dev", "rep0")
	ip(t, p, "link", "set", "rep0", "up")
	ip(t, s, "link", "set", "rep0", "up")
	for _, hg := range [][2]string{{p, gp}, {s, gs}} {
		ip(t, hg[0], "link", "add", "vif1.0", "type", "veth", "peer", "name", "eth0", "netns", hg[1])
		ip(t, hg[0], "link", "set", "vif1.0", "master", "xenbr0")
		guestIf(t, hg[1], guestMAC.String(), "192.0.2.10/24", "2001:db8::10/64")
	}
	ip(t, p, "link", "set", "vif1.0", "up")
}

// waitDom0Pair waits until the links dom0Pair set up are operationally
// up (the switch's ports are the caller's): a frame sent before a bridge
// port noticed its carrier is dropped.
func waitDom0Pair(t *testing.T, p, s, gp string) {
	t.Helper()
	netbuftest.WaitOperUp(t, p, "xenbr0", "uplink", "vif1.0", "rep0")
	netbuftest.WaitOperUp(t, s, "xenbr0", "uplink", "rep0")
	netbuftest.WaitOperUp(t, gp, "eth0")
}

// addClient puts the client namespace ns on bridge br of the switch sw
// through port, with mac and addresses a4, a6. The client knows the
// guest's MAC already (as a client that talked to it before would):
// probes measure the guest's replies, not the client's own neighbour
// resolution. The caller waits for the links to be operationally up,
// all at once (netbuftest.WaitOperUp of port in sw, eth0 in ns).
func addClient(t *testing.T, sw, br, port, ns string, mac net.HardwareAddr, a4, a6 string) {
	t.Helper()
	ip(t, sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
	ip(t, sw, "link", "set", port, "master", br, "up")
	guestIf(t, ns, mac.String(), a4, a6)
	ip(t, ns, "neigh", "replace", "192.0.2.10", "lladdr", guestMAC.String(), "dev", "eth0", "nud", "permanent")
	ip(t, ns, "neigh", "replace", "2001:db8::10", "lladdr", guestMAC.String(), "dev", "eth0", "nud", "permanent")
}

func guestIf(t *testing.T, ns, mac, a4, a6 string) {
	t.Helper()
	for _, kv := range [][2]string{{"disable_ipv6", "0"}, {"accept_dad", "0"}, {"accept_ra", "0"}, {"router_solicitations", "0"}} {
		if err := host.WriteSysctl(path(ns), "net/ipv6/conf/eth0/"+kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{
		{"link", "set", "eth0", "address", mac},
		{"addr", "add", a4, "dev", "eth0"},
		{"addr", "add", a6, "dev", "eth0", "nodad"},
		{"link", "set", "eth0", "up"},
	} {
		if _, err := host.Run("", append([]string{"ip", "-n", ns}, args...)...); err != nil {
			t.Fatal(err)
		}
	}
}

// leftovers lists the namespaces of this process still present whose
// names start with kind (xlke: newTopo's, xlkp: the partition suites').
func leftovers(kind string) []string {
	out, _ := host.Run("", "ip", "netns", "list")
	var left []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], fmt.Sprintf("%s%d-", kind, os.Getpid())) {
			left = append(left, f[0])
		}
	}
	return left
}
