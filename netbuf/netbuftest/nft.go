package netbuftest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/google/nftables/xt"
	"github.com/vishvananda/netns"
)

// Nft runs fn with an nftables connection to the network namespace at ns
// and sends what fn queued as one batch; any error fails t. Tests plant
// and read netfilter rules with it, over netlink: no iptables or nft
// program is needed.
func Nft(t testing.TB, ns string, fn func(c *nftables.Conn) error) {
	t.Helper()
	h, err := netns.GetFromPath(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		t.Fatal(err)
	}
	if err := fn(c); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("nftables in %s: %v", ns, err)
	}
}

// Ruleset lists the nftables ruleset of the namespace at ns: each table
// (family number and name), its chains, and each rule's expressions
// (counters left out: they change on their own) and comment.
func Ruleset(t testing.TB, ns string) string {
	t.Helper()
	var sb strings.Builder
	Nft(t, ns, func(c *nftables.Conn) error {
		tables, err := c.ListTables()
		if err != nil {
			return err
		}
		chains, err := c.ListChains()
		if err != nil {
			return err
		}
		for _, tb := range tables {
			fmt.Fprintf(&sb, "table %d %s\n", tb.Family, tb.Name)
			for _, ch := range chains {
				if ch.Table.Name != tb.Name || ch.Table.Family != tb.Family {
					continue
				}
				fmt.Fprintf(&sb, "  chain %s\n", ch.Name)
				rules, err := c.GetRules(tb, ch)
				if err != nil {
					return err
				}
				for _, r := range rules {
					sb.WriteString("    rule")
					for _, e := range r.Exprs {
						switch e := e.(type) {
						case *expr.Counter:
						case *expr.Match:
							info := any(e.Info)
							if c, ok := e.Info.(*xt.Comment); ok {
								info = string(*c)
							}
							fmt.Fprintf(&sb, " xt match %s rev %d %+v", e.Name, e.Rev, info)
						case *expr.Target:
							fmt.Fprintf(&sb, " xt target %s rev %d %+v", e.Name, e.Rev, e.Info)
						default:
							fmt.Fprintf(&sb, " %T%+v", e, e)
						}
					}
					comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
					fmt.Fprintf(&sb, " comment %q\n", comment)
				}
			}
		}
		return nil
	})
	return sb.String()
}
