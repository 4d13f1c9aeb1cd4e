package netns

import (
	"fmt"
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
	run := func(ns string, argv ...string) {
		t.Helper()
		if ns != "" {
			argv = append([]string{"ip", "-n", ns}, argv[1:]...)
		}
		if _, err := host.Run("", argv...); err != nil {
			t.Fatal(err)
		}
	}
	sysctl := func(ns, key, v string) {
		t.Helper()
		if err := host.WriteSysctl(path(ns), key, v); err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range []string{tp.sw, tp.p, tp.s, tp.gp, tp.gs, tp.cli} {
		t.Cleanup(func() { _, _ = host.Run("", "ip", "netns", "del", ns) })
		run("", "ip", "netns", "add", ns)
		run(ns, "ip", "link", "set", "lo", "up")
		// Only the guests and the client speak IPv6: no autoconfiguration
		// chatter from bridges and ports.
		sysctl(ns, "net/ipv6/conf/default/disable_ipv6", "1")
		sysctl(ns, "net/ipv6/conf/default/accept_dad", "0")
	}
	ip := func(ns string, args ...string) { t.Helper(); run(ns, append([]string{"ip"}, args...)...) }
	ip(tp.sw, "link", "add", "lan0", "type", "bridge")
	ip(tp.sw, "link", "set", "lan0", "up")
	for _, h := range []string{tp.p, tp.s} {
		ip(h, "link", "add", "xenbr0", "type", "bridge")
		ip(h, "link", "set", "xenbr0", "up")
		port := "toP"
		if h == tp.s {
			port = "toS"
		}
		ip(tp.sw, "link", "add", port, "type", "veth", "peer", "name", "uplink", "netns", h)
		ip(tp.sw, "link", "set", port, "master", "lan0", "up")
		ip(h, "link", "set", "uplink", "master", "xenbr0", "up")
	}
	ip(tp.p, "link", "add", "rep0", "type", "veth", "peer", "name", "rep0", "netns", tp.s)
	ip(tp.p, "addr", "add", "198.51.100.1/30", "dev", "rep0")
	ip(tp.s, "addr", "add", "198.51.100.2/30", "dev", "rep0")
	ip(tp.p, "link", "set", "rep0", "up")
	ip(tp.s, "link", "set", "rep0", "up")
	// The guest on each host: same MAC and addresses, as a replica has.
	for _, hg := range [][2]string{{tp.p, tp.gp}, {tp.s, tp.gs}} {
		h, g := hg[0], hg[1]
		ip(h, "link", "add", "vif1.0", "type", "veth", "peer", "name", "eth0", "netns", g)
		ip(h, "link", "set", "vif1.0", "master", "xenbr0")
		guestIf(t, g, guestMAC.String(), "192.0.2.10/24", "2001:db8::10/64")
	}
	// The primary's vif is up; the standby's stays down until failover.
	ip(tp.p, "link", "set", "vif1.0", "up")
	ip(tp.sw, "link", "add", "toC", "type", "veth", "peer", "name", "eth0", "netns", tp.cli)
	ip(tp.sw, "link", "set", "toC", "master", "lan0", "up")
	guestIf(t, tp.cli, clientMAC.String(), "192.0.2.100/24", "2001:db8::100/64")
	// The client knows the guest's MAC already (as a client that talked to
	// it before would): probes measure the guest's replies, not the
	// client's own neighbour resolution.
	ip(tp.cli, "neigh", "replace", "192.0.2.10", "lladdr", guestMAC.String(), "dev", "eth0", "nud", "permanent")
	ip(tp.cli, "neigh", "replace", "2001:db8::10", "lladdr", guestMAC.String(), "dev", "eth0", "nud", "permanent")
	// A frame sent before a bridge port noticed its carrier is dropped.
	netbuftest.WaitOperUp(t, tp.sw, "lan0", "toP", "toS", "toC")
	netbuftest.WaitOperUp(t, tp.p, "xenbr0", "uplink", "vif1.0", "rep0")
	netbuftest.WaitOperUp(t, tp.s, "xenbr0", "uplink", "rep0")
	netbuftest.WaitOperUp(t, tp.gp, "eth0")
	netbuftest.WaitOperUp(t, tp.cli, "eth0")
	return tp
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

// leftovers lists the namespaces of this process still present.
func leftovers() []string {
	out, _ := host.Run("", "ip", "netns", "list")
	var left []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], fmt.Sprintf("xlke%d-", os.Getpid())) {
			left = append(left, f[0])
		}
	}
	return left
}
