package nfqueue

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/google/nftables/xt"

	"github.com/xl-kemari/xl-kemari/netbuf/auto/host"
)

// CleanupStale removes what a crashed run of this backend left in the
// network namespace at netnsPath ("" = this one), for every queue number
// that no live process has bound: our nftables tables (TablePrefix), the
// xlki/xlko veths, and the rules of the builds that ran iptables and
// ebtables (tagged rules in the ip and ip6 raw and filter tables, XLK-
// chains and the jumps to them in the bridge filter table), which
// iptables-nft and ebtables-nft kept in nf_tables too. Setups of running
// holders (their queue is bound) are left alone.
//
// Rules made by iptables-legacy or ebtables-legacy live in x_tables, which
// only those programs reach; they are not looked for: this backend runs no
// netfilter program any more, and Debian's iptables and ebtables have been
// the nf_tables flavours by default since Debian 10. Such a leftover queues
// the port's IP frames to a queue no one or a later run holds: they are
// dropped or held longer, never released early, until an administrator
// removes it with iptables-legacy.
func CleanupStale(netnsPath string) error {
	bound, err := boundQueues(netnsPath)
	if err != nil {
		return err
	}
	stale := func(num string) bool {
		n, err := strconv.Atoi(num)
		return err == nil && n > 0 && !bound[n]
	}
	var errs []error
	// A kernel built without nf_tables cannot hold rules of ours, and
	// asking it would fail: plug must still start there.
	if feats, err := host.KernelConfig(); err != nil || feats.Has("CONFIG_NF_TABLES") {
		if err := withNft(netnsPath, func(c *nftables.Conn) error {
			return queueStale(c, stale)
		}); err != nil {
			errs = append(errs, fmt.Errorf("nfqueue: stale netfilter rules: %w", err))
		}
	}
	out, err := host.Run(netnsPath, "ip", "-o", "link", "show")
	if err != nil {
		errs = append(errs, err)
	} else {
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if n, ok := strings.CutPrefix(name, injOutPrefix); ok && stale(n) {
				if _, err := host.Run(netnsPath, "ip", "link", "del", name); err != nil { // takes its xlki peer along
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// queueStale queues on c the deletion of every stale table, chain and rule.
func queueStale(c *nftables.Conn, stale func(string) bool) error {
	tables, err := c.ListTables()
	if err != nil {
		return err
	}
	for _, t := range tables {
		if n, ok := tableQueue(t.Name); ok {
			if stale(strconv.Itoa(n)) {
				c.DelTable(t)
			}
			continue
		}
		if t.Family != nftables.TableFamilyIPv4 && t.Family != nftables.TableFamilyIPv6 && t.Family != nftables.TableFamilyBridge {
			continue
		}
		if err := legacyStale(c, t, stale); err != nil {
			return err
		}
	}
	return nil
}

// legacyStale queues the deletion of what the iptables-era builds left in
// table t: rules whose comment is tagged with a stale queue, and in the
// bridge family the stale XLK- chains, the rules jumping to them and those
// naming a stale xlki port.
func legacyStale(c *nftables.Conn, t *nftables.Table, stale func(string) bool) error {
	chains, err := c.ListChainsOfTableFamily(t.Family)
	if err != nil {
		return err
	}
	var dead []*nftables.Chain
	for _, ch := range chains {
		if ch.Table.Name != t.Name {
			continue
		}
		if n, ok := strings.CutPrefix(ch.Name, legacyChainPrefix); ok && t.Family == nftables.TableFamilyBridge {
			if stale(n) {
				dead = append(dead, ch)
			}
			continue // its rules go with it
		}
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return err
		}
		for _, r := range rules {
			if legacyRuleStale(r, stale) {
				if err := c.DelRule(r); err != nil {
					return err
				}
			}
		}
	}
	for _, ch := range dead {
		c.FlushChain(ch)
		c.DelChain(ch)
	}
	return nil
}

// legacyRuleStale reports whether r is an iptables-era rule of a stale
// queue: its comment (kept as rule user data by iptables-nft, or as an xt
// comment match) is Tag+"q<N>:...", it jumps to chain XLK-<N>, or it names
// interface xlki<N>.
func legacyRuleStale(r *nftables.Rule, stale func(string) bool) bool {
	tagged := func(c string) bool {
		rest, ok := strings.CutPrefix(c, Tag+"q")
		if !ok {
			return false
		}
		num, _, _ := strings.Cut(rest, ":")
		return stale(num)
	}
	if c, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok && tagged(c) {
		return true
	}
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Match:
			if c, ok := e.Info.(*xt.Comment); ok && tagged(string(*c)) {
				return true
			}
			if u, ok := e.Info.(*xt.Unknown); ok && e.Name == "comment" && tagged(string(bytes.TrimRight(*u, "\x00"))) {
				return true
			}
		case *expr.Verdict:
			if n, ok := strings.CutPrefix(e.Chain, legacyChainPrefix); ok && e.Kind == expr.VerdictJump && stale(n) {
				return true
			}
		case *expr.Cmp:
			name := string(bytes.TrimRight(e.Data, "\x00"))
			if n, ok := strings.CutPrefix(name, injInPrefix); ok && stale(n) {
				return true
			}
		}
	}
	return false
}

// boundQueues lists the queue numbers bound in the namespace.
func boundQueues(netnsPath string) (map[int]bool, error) {
	out := map[int]bool{}
	err := host.InNetNS(netnsPath, func() error {
		b, err := readFileIfExists("/proc/thread-self/net/netfilter/nfnetlink_queue")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 0 {
				if n, err := strconv.Atoi(f[0]); err == nil {
					out[n] = true
				}
			}
		}
		return nil
	})
	return out, err
}

func readFileIfExists(name string) ([]byte, error) {
	b, err := os.ReadFile(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return b, err
}
