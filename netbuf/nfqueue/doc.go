// Package nfqueue is the netbuf backend for kernels without sch_plug: it
// holds a bridged guest NIC's output in the kernel's NFQUEUE and lets it
// out with one batch verdict per acknowledged epoch.
//
// What Open sets up in dom0 (every rule tagged "xl-kemari:" so that a
// crashed run's leftovers can be found, see CleanupStale):
//
//   - one iptables and one ip6tables rule in the raw table's PREROUTING,
//     "-m physdev --physdev-in DEV -j NFQUEUE --queue-num N" (never
//     --queue-bypass), with bridge-nf-call-ip(6)tables enabled: every IPv4
//     and IPv6 frame from the guest waits in queue N, once, whether the
//     bridge then forwards it, floods it or delivers it to dom0. Released
//     frames go on through conntrack and the filter table, so the
//     administrator's rules (vif-bridge's anti-spoofing) still apply.
//   - Everything else the guest sends (ARP, VLAN-tagged, any other
//     ethertype) cannot be queued on this kernel family (the xt NFQUEUE
//     target is refused in bridge and ARP tables), so an ebtables chain
//     XLK-DEV drops it in the bridge while an AF_PACKET socket on DEV keeps
//     a copy in this process; on release the copies re-enter the bridge
//     through a private veth port "xlki<N>" that neither learns nor floods
//     and has the highest address, fe:ff:ff:ff:ff:ff like Xen's vifs, so
//     that it never becomes the bridge's own (the lowest port's).
//
// Walk-through:
//
//	b := nfqueue.New(nfqueue.Config{})
//	if err := b.Probe(); err != nil { ... }   // names missing kernel features
//	buf, _ := b.Open(netbuf.Device{Name: "vif3.0", Bridge: "xenbr0"})
//	buf.Barrier(k)   // remembers the last packet id and side-frame seen
//	buf.Release(k)   // side frames re-injected, then SetVerdictBatch(id, ACCEPT)
//	buf.Close()      // drop, unbind (kernel drops the rest), remove rules
//
// Fail closed: the queue has no fail-open flag and the rules no bypass, so
// while the holder is gone the kernel drops the queued frames and every
// new one; side copies live only in this process's memory.
package nfqueue
