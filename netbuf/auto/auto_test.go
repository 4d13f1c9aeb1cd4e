package auto

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/google/nftables/xt"

	"github.com/xl-kemari/xl-kemari/netbuf"
	"github.com/xl-kemari/xl-kemari/netbuf/auto/host"
	"github.com/xl-kemari/xl-kemari/netbuf/netbuftest"
	"github.com/xl-kemari/xl-kemari/netbuf/nfqueue"
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
// names a dead pid, with an ingress qdisc on its device; nftables tables of
// an unbound queue; the rules and chain an iptables/ebtables-era build left
// in iptables-nft's and ebtables-nft's tables) and checks Cleanup removes
// them and nothing else.
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
	} {
		if _, err := host.Run(ns, argv...); err != nil {
			t.Fatal(err)
		}
	}
	comment := func(s string) []byte { return userdata.AppendString(nil, userdata.TypeComment, s) }
	netbuftest.Nft(t, ns, func(c *nftables.Conn) error {
		for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyBridge} {
			tb := c.AddTable(&nftables.Table{Family: fam, Name: nfqueue.TablePrefix + "31000-" + vif})
			c.AddChain(&nftables.Chain{Table: tb, Name: "prerouting", Type: nftables.ChainTypeFilter,
				Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw})
		}
		// iptables-nft 1.8.9 stores "-m comment --comment C" as an xt
		// comment match (checked against it); a comment in the rule's user
		// data is recognised too.
		filter := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "filter"})
		fwd := c.AddChain(&nftables.Chain{Table: filter, Name: "FORWARD", Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter})
		for _, cm := range []string{"xl-kemari:q31001:" + vif, "not-ours"} {
			c.AddRule(&nftables.Rule{Table: filter, Chain: fwd, UserData: comment(cm),
				Exprs: []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictAccept}}})
		}
		raw := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv6, Name: "raw"})
		pre := c.AddChain(&nftables.Chain{Table: raw, Name: "PREROUTING", Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw})
		for _, s := range []string{"xl-kemari:q31002:" + vif, "not-ours-either"} {
			cm := xt.Comment(s)
			c.AddRule(&nftables.Rule{Table: raw, Chain: pre,
				Exprs: []expr.Any{&expr.Match{Name: "comment", Info: &cm}, &expr.Counter{}}})
		}
		// ebtables-nft: chain XLK-31003 and the jump to it.
		br := c.AddTable(&nftables.Table{Family: nftables.TableFamilyBridge, Name: "filter"})
		bfwd := c.AddChain(&nftables.Chain{Table: br, Name: "FORWARD", Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityRef(-200)})
		xlk := c.AddChain(&nftables.Chain{Table: br, Name: "XLK-31003"})
		c.AddRule(&nftables.Rule{Table: br, Chain: xlk, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}})
		c.AddRule(&nftables.Rule{Table: br, Chain: bfwd, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: "XLK-31003"}}})
		c.AddRule(&nftables.Rule{Table: br, Chain: bfwd, UserData: comment("keep"), Exprs: []expr.Any{&expr.Counter{}}})
		return nil
	})
	if err := Cleanup(ns); err != nil {
		t.Fatal(err)
	}
	links, _ := host.Run(ns, "ip", "-o", "link", "show")
	qd, _ := host.Run(ns, "tc", "qdisc", "show", "dev", vif)
	rules := netbuftest.Ruleset(t, ns)
	if strings.Contains(string(links), plug.IFBPrefix+"7") || strings.Contains(string(qd), "ingress") ||
		strings.Contains(rules, "xl-kemari") || strings.Contains(rules, "XLK-") {
		t.Fatalf("stale setup survived:\n%s\n%s\n%s", links, qd, rules)
	}
	for _, keep := range []string{`comment "not-ours"`, "not-ours-either", `comment "keep"`} {
		if !strings.Contains(rules, keep) {
			t.Fatalf("Cleanup removed rules that are not its own (%s):\n%s", keep, rules)
		}
	}
	if !strings.Contains(string(links), "keepme0") {
		t.Fatalf("Cleanup removed a link that is not its own:\n%s", links)
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
