// Package nfqueue is the netbuf backend for kernels without sch_plug: it
// holds a bridged guest NIC's output in the kernel's NFQUEUE and lets it
// out with one batch verdict per acknowledged epoch.
//
// Open programs netfilter over netlink (github.com/google/nftables): no
// iptables, ip6tables, ebtables or nft program is run. Each buffer, with
// queue number N (27392 and up) on port DEV, gets three tables of its own,
// all named "xl-kemari-qN-DEV", in one atomic batch; Close deletes them,
// and no other table, chain or rule is touched. `nft list ruleset` (nft
// 1.0.6, Debian 12) shows them as follows (N=27392, DEV=vif3.0):
//
//	# Warning: table ip xl-kemari-q27392-vif3.0 is managed by iptables-nft, do not touch!
//	table ip xl-kemari-q27392-vif3.0 {
//		chain prerouting {
//			type filter hook prerouting priority raw; policy accept;
//			xt match physdev counter packets 0 bytes 0 queue num 27392 comment "xl-kemari:q27392:vif3.0"
//		}
//	}
//	(the same again as table ip6 xl-kemari-q27392-vif3.0)
//	table bridge xl-kemari-q27392-vif3.0 {
//		chain prerouting {
//			type filter hook prerouting priority dstnat; policy accept;
//			iifname "vif3.0" ether type != ip ether type != ip6 counter packets 0 bytes 0 drop comment "xl-kemari:q27392:vif3.0"
//		}
//
//		chain forward {
//			type filter hook forward priority filter; policy accept;
//			iifname "xlki27392" oifname "vif3.0" counter packets 0 bytes 0 drop comment "xl-kemari:q27392:vif3.0"
//		}
//	}
//
// Priorities: raw is -300 in the ip families; in the bridge family dstnat
// is -300 and filter -200. The ip rule is the x_tables physdev match
// ("--physdev-in vif3.0") and NFQUEUE target ("--queue-num 27392", revision
// 3, no bypass: fail closed) run by nft_compat, what the iptables-nft rule
// "-m physdev --physdev-in vif3.0 -j NFQUEUE --queue-num 27392" is made of;
// hence nft's warning, which is about those expressions, not about who
// made the table. Without iptables' extension libraries installed (package
// iptables), nft prints "XT match physdev not found" and "XT target
// NFQUEUE not found" in their place; the rule is the same. Why x_tables
// expressions: nftables has no physdev match of its own (in the ip hooks
// the input device is the bridge; the port is known only to br_netfilter),
// and the bridge family cannot queue where nft_queue is missing
// (CONFIG_NFT_QUEUE; unset on some kernels, where the x_tables NFQUEUE
// target is also refused in the bridge family).
//
// Why there:
//
//   - The ip and ip6 prerouting chains at raw priority see every IPv4 and
//     IPv6 frame from the guest once, before conntrack and before the
//     bridge decides whether to forward, flood or deliver it to dom0: the
//     bridge passes it through them (br_netfilter, with
//     bridge-nf-call-iptables and bridge-nf-call-ip6tables, which Open sets
//     to 1) from its own prerouting hook. Queued in forward, a flooded frame
//     would be queued once per output port, and a frame for dom0 not at
//     all. Accepted on release, a frame goes on through conntrack and every
//     later chain, so the administrator's rules (vif-bridge's
//     anti-spoofing, input filters) still apply.
//   - Everything else the guest sends (ARP, VLAN-tagged frames, any other
//     ether type) the bridge table drops in its prerouting hook, at -300,
//     before br_netfilter (0); an AF_PACKET socket on DEV keeps a copy in
//     this process (the side path), VLAN tag included (the kernel moves it
//     out of the frame; it is put back from PACKET_AUXDATA). On release the copies re-enter the
//     bridge through a private veth port "xlkiN" (peer "xlkoN") that
//     neither learns nor floods and has the highest address,
//     fe:ff:ff:ff:ff:ff like Xen's vifs, so that it never becomes the
//     bridge's own (the lowest port's); the forward chain keeps them from
//     being flooded back to the guest. Rules that match the guest's port
//     by name (iifname, physdev) do not see these re-injected frames: they
//     enter through xlkiN.
//
// Kernel: nf_tables with the ip, ip6 and bridge families, nft_compat, the
// x_tables physdev match and NFQUEUE target, br_netfilter, nfnetlink_queue,
// veth and AF_PACKET (see KernelFeatures; Probe names what is missing).
// Debian 12's kernel has them all as modules, loaded on first use.
//
// Walk-through:
//
//	b := nfqueue.New(nfqueue.Config{})
//	if err := b.Probe(); err != nil { ... }   // names missing kernel features
//	buf, _ := b.Open(netbuf.Device{Name: "vif3.0", Bridge: "xenbr0"})
//	buf.Barrier(k)   // remembers the last packet id and side-frame seen
//	buf.Release(k)   // side frames re-injected, then SetVerdictBatch(id, ACCEPT)
//	buf.Close()      // drop, unbind (kernel drops the rest), delete our tables
//
// Fail closed: the queue has no fail-open flag and the rule no bypass, so
// while the holder is gone the kernel drops the queued frames and every
// new one; side copies live only in this process's memory. The tables are
// therefore not owned by the holder's netlink socket (NFT_TABLE_F_OWNER
// would delete them, and let the guest's output out unheld, when it dies);
// CleanupStale deletes a dead holder's tables at the next start.
package nfqueue
