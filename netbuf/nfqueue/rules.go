package nfqueue

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/google/nftables/xt"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xl-kemari/xl-kemari/netbuf/auto/host"
)

// The nftables rules of one buffer live in three tables of their own, all
// named TablePrefix+"<queue>-<device>" (see doc.go for the listing), so that
// removing them is deleting our tables and never touches another rule.
const (
	// TablePrefix starts the name of every table this backend creates.
	TablePrefix = "xl-kemari-q"
	// queuePriority is where the NFQUEUE rule sits in the ip and ip6
	// prerouting hooks: raw, before conntrack (-200), as iptables' raw
	// table did; the bridge's br_netfilter passes each IP frame from a
	// port through these hooks once, before the bridge decides where the
	// frame goes.
	queuePriority = -300
	// holdPriority is the bridge prerouting chain that drops the guest's
	// non-IP frames (the side path keeps them); before br_netfilter (0).
	holdPriority = -300
	// echoPriority is the bridge forward chain that keeps re-injected
	// frames from flooding back to the guest: filter.
	echoPriority = -200
)

// tableName is the name of queue n's tables for dev.
func tableName(n uint16, dev string) string {
	return TablePrefix + strconv.Itoa(int(n)) + "-" + dev
}

// tableQueue returns the queue number in a table name of ours.
func tableQueue(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, TablePrefix)
	if !ok {
		return 0, false
	}
	num, _, _ := strings.Cut(rest, "-")
	n, err := strconv.Atoi(num)
	return n, err == nil && n > 0 && n < 1<<16
}

// ifname is an interface name as nftables compares it: NUL-terminated.
func ifname(s string) []byte { return append([]byte(s), 0) }

// physdevIn is the xt_physdev_info of "--physdev-in dev": physindev,
// in_mask, physoutdev, out_mask (IFNAMSIZ each), invert, bitmask. The mask
// covers the name and its NUL, an exact match.
func physdevIn(dev string) []byte {
	b := make([]byte, 4*unix.IFNAMSIZ+2)
	copy(b, dev)
	for i := 0; i <= len(dev); i++ {
		b[unix.IFNAMSIZ+i] = 0xff
	}
	b[4*unix.IFNAMSIZ+1] = 0x01 // XT_PHYSDEV_OP_IN
	return b
}

// nfqueueV3 is the xt_NFQ_info_v3 of "--queue-num n": queuenum,
// queues_total 1, flags 0 (no NFQ_FLAG_BYPASS: fail closed), in host order.
func nfqueueV3(n uint16) []byte {
	b := make([]byte, 6)
	binary.NativeEndian.PutUint16(b[0:], n)
	binary.NativeEndian.PutUint16(b[2:], 1)
	return b
}

// ruleComment is the comment every rule of queue n for dev carries.
func ruleComment(n uint16, dev string) []byte {
	return userdata.AppendString(nil, userdata.TypeComment, Tag+"q"+strconv.Itoa(int(n))+":"+dev)
}

// addRuleset queues on c the batch that (re)creates queue n's tables for
// dev, with inj the re-injection port: a table of the same name (a dead
// run's with this queue number) is replaced, atomically.
//
// The queue rule uses the x_tables NFQUEUE target and physdev match through
// nft_compat, as iptables-nft stored its rules: nftables has no physdev
// match of its own (in the ip hooks the input device is the bridge), the
// bridge family cannot queue where nft_queue is missing (CONFIG_NFT_QUEUE,
// unset on some kernels), and xt NFQUEUE is refused there.
func addRuleset(c *nftables.Conn, n uint16, dev, inj string) {
	name := tableName(n, dev)
	comment := ruleComment(n, dev)
	accept := nftables.ChainPolicyAccept
	prio := func(p int32) *nftables.ChainPriority { return nftables.ChainPriorityRef(nftables.ChainPriority(p)) }
	fresh := func(fam nftables.TableFamily) *nftables.Table {
		t := &nftables.Table{Family: fam, Name: name}
		c.AddTable(t)
		c.DelTable(t)
		return c.AddTable(t)
	}
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
		t := fresh(fam)
		ch := c.AddChain(&nftables.Chain{Table: t, Name: "prerouting", Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: prio(queuePriority), Policy: &accept})
		phys, q := xt.Unknown(physdevIn(dev)), xt.Unknown(nfqueueV3(n))
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, UserData: comment, Exprs: []expr.Any{
			&expr.Match{Name: "physdev", Rev: 0, Info: &phys},
			&expr.Counter{},
			&expr.Target{Name: "NFQUEUE", Rev: 3, Info: &q},
		}})
	}
	t := fresh(nftables.TableFamilyBridge)
	pre := c.AddChain(&nftables.Chain{Table: t, Name: "prerouting", Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: prio(holdPriority), Policy: &accept})
	etherType := func(op expr.CmpOp, v uint16) []expr.Any {
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
			&expr.Cmp{Op: op, Register: 1, Data: binary.BigEndian.AppendUint16(nil, v)},
		}
	}
	hold := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(dev)},
	}
	hold = append(hold, etherType(expr.CmpOpNeq, unix.ETH_P_IP)...)
	hold = append(hold, etherType(expr.CmpOpNeq, unix.ETH_P_IPV6)...)
	hold = append(hold, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
	c.AddRule(&nftables.Rule{Table: t, Chain: pre, UserData: comment, Exprs: hold})
	fwd := c.AddChain(&nftables.Chain{Table: t, Name: "forward", Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: prio(echoPriority), Policy: &accept})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, UserData: comment, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(inj)},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(dev)},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
}

// ourFamilies are the families our tables are created in.
var ourFamilies = []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6, nftables.TableFamilyBridge}

// delRuleset queues on c the deletion of queue n's tables for dev.
func delRuleset(c *nftables.Conn, n uint16, dev string) {
	for _, fam := range ourFamilies {
		c.DelTable(&nftables.Table{Family: fam, Name: tableName(n, dev)})
	}
}

// withNft runs fn with an nftables connection to the network namespace at
// nsPath ("" = this process's); fn queues messages, which are then sent as
// one batch (all applied or none) unless fn only read.
func withNft(nsPath string, fn func(c *nftables.Conn) error) error {
	var opts []nftables.ConnOption
	if nsPath != "" {
		h, err := netns.GetFromPath(nsPath)
		if err != nil {
			return fmt.Errorf("%w: open %s: %v", host.ErrNetNS, nsPath, err)
		}
		defer h.Close()
		opts = append(opts, nftables.WithNetNSFd(int(h)))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	if err := fn(c); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	return nil
}
