package auto

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/xl-kemari/xl-kemari/netbuf"
	"github.com/xl-kemari/xl-kemari/netbuf/auto/host"
	"github.com/xl-kemari/xl-kemari/netbuf/netbuftest"
	"github.com/xl-kemari/xl-kemari/netbuf/plug"
)

func TestSelectModes(t *testing.T) {
	if _, err := Select(Options{Mode: "bogus"}); !errors.Is(err, ErrMode) {
		t.Fatalf("bogus: %v", err)
	}
	if _, err := Select(Options{Mode: "none"}); !errors.Is(err, ErrUnsafe) {
		t.Fatalf("none without unsafe: %v", err)
	}
	b, err := Select(Options{Mode: "none", Unsafe: true})
	if err != nil || b.Name() != "none" {
		t.Fatalf("none with unsafe: %v, %v", b, err)
	}
}

// TestSelectAutoHere checks the choice against the kernel's config: plug
// where it exists, else nfqueue, and a refusal naming what is missing.
func TestSelectAutoHere(t *testing.T) {
	feats, err := host.KernelConfig()
	if err != nil {
		t.Skip(err)
	}
	b, err := Select(Options{})
	switch {
	case feats.Has("CONFIG_NET_SCH_PLUG") && feats.Has("CONFIG_IFB"):
		if err != nil || b.Name() != "plug" {
			t.Fatalf("kernel has sch_plug: got %v, %v", b, err)
		}
	case err == nil:
		if b.Name() != "nfqueue" {
			t.Fatalf("no sch_plug: got %s", b.Name())
		}
		_, perr := Select(Options{Mode: "plug"})
		if !errors.Is(perr, netbuf.ErrUnsupported) || !strings.Contains(perr.Error(), "CONFIG_NET_SCH_PLUG") {
			t.Fatalf("netbuf=plug here: %v", perr)
		}
	default:
		if !errors.Is(err, netbuf.ErrUnsupported) || !strings.Contains(err.Error(), "CONFIG_") && !strings.Contains(err.Error(), "tool ") {
			t.Fatalf("refusal does not name features: %v", err)
		}
	}
}

// TestCleanupStale plants the leftovers of a dead run (an IFB whose alias
// names a dead pid, with an ingress qdisc on its device, and a tagged
// NFQUEUE rule for an unbound queue) and checks Cleanup removes them.
func TestCleanupStale(t *testing.T) {
	topo := netbuftest.NewTopology(t, 1)
	ns := topo.Dom0Path()
	vif := topo.Vifs[0]
	dead := deadPid(t)
	for _, argv := range [][]string{
		{"ip", "link", "add", plug.IFBPrefix + "7", "type", "ifb"},
		{"ip", "link", "set", plug.IFBPrefix + "7", "alias", fmt.Sprintf("%spid=%d:dev=%s", plug.AliasTag, dead, vif)},
		{"ip", "link", "add", "keepme0", "type", "ifb"},
		{"tc", "qdisc", "add", "dev", vif, "ingress"},
		{"iptables", "-w", "-A", "FORWARD", "-m", "physdev", "--physdev-in", vif, "-m", "comment", "--comment", "xl-kemari:q31000:" + vif, "-j", "NFQUEUE", "--queue-num", "31000"},
		{"ip6tables", "-w", "-t", "raw", "-A", "PREROUTING", "-m", "physdev", "--physdev-in", vif, "-m", "comment", "--comment", "xl-kemari:q31001:" + vif, "-j", "NFQUEUE", "--queue-num", "31001"},
		{"iptables", "-w", "-A", "FORWARD", "-m", "comment", "--comment", "not-ours", "-j", "ACCEPT"},
	} {
		if _, err := host.Run(ns, argv...); err != nil {
			t.Fatal(err)
		}
	}
	if err := Cleanup(ns); err != nil {
		t.Fatal(err)
	}
	links, _ := host.Run(ns, "ip", "-o", "link", "show")
	qd, _ := host.Run(ns, "tc", "qdisc", "show", "dev", vif)
	rules, _ := host.Run(ns, "iptables", "-w", "-S")
	raw6, _ := host.Run(ns, "ip6tables", "-w", "-t", "raw", "-S")
	rules = append(rules, raw6...)
	if strings.Contains(string(links), plug.IFBPrefix+"7") || strings.Contains(string(qd), "ingress") || strings.Contains(string(rules), "xl-kemari:") {
		t.Fatalf("stale setup survived:\n%s\n%s\n%s", links, qd, rules)
	}
	if !strings.Contains(string(links), "keepme0") || !strings.Contains(string(rules), "not-ours") {
		t.Fatalf("Cleanup removed setup that is not its own:\n%s\n%s", links, rules)
	}
}

// deadPid returns the pid of a process that has exited.
func deadPid(t *testing.T) int {
	p, err := os.StartProcess("/bin/true", []string{"true"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	return p.Pid
}
