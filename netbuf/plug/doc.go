// Package plug is the production netbuf backend, the classic Remus
// design done over netlink and for every protocol: the guest NIC's
// ingress (the guest's output) is redirected to an IFB device whose root
// qdisc is sch_plug, and plug commands mark and release epochs.
//
// Setup per device (all over rtnetlink, no tc or libnl tools):
//
//	ip link add xlkb<N> type ifb; alias "xl-kemari:pid=<pid>:dev=<dev>"
//	root qdisc on xlkb<N>: plug, limit Config.Limit bytes
//	ingress qdisc on <dev>
//	u32 filter, protocol all, match u32 0 0, action mirred egress redirect dev xlkb<N>
//
// Epochs map onto plug commands: Barrier(k) is TCQ_PLUG_BUFFER (a new
// plug behind the frames so far), Release(k) is TCQ_PLUG_RELEASE_ONE,
// Unprotect is TCQ_PLUG_RELEASE_INDEFINITE, Protect is TCQ_PLUG_BUFFER,
// Discard grafts a fresh plug qdisc (the old one and its frames are
// destroyed), Close deletes the IFB and the ingress qdisc.
//
// sch_plug counts only two epochs (the last closed one and the current
// one), so one barrier can be outstanding at a time. A Barrier that comes
// while an earlier one is unreleased inserts no plug: its frames stay in
// the current section and are plugged, and later released, with the next
// Barrier after the Release. Output is never released early, only later
// than a deeper pipeline would allow. With one checkpoint in flight (the
// default), every epoch is released exactly at its Release.
//
// The plug qdisc holds frames in the kernel, so Capabilities().Notifies
// is false. When the holder process dies the plug stays shut: nothing is
// released; the next run's Cleanup deletes the IFB, dropping the frames.
package plug
