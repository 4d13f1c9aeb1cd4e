// Package netns is the end-to-end test of output commit in the real
// kernel (issue 5, design §9 tier 4): a replicated simulator service
// domain whose frames are held by a kernel netbuf backend (plug where the
// kernel has sch_plug, else nfqueue), in network namespaces the test
// builds and deletes.
//
// The topology, every address TEST-NET:
//
//	client C: eth0 192.0.2.100, 2001:db8::100 ─┐
//	                                             lan0 (switch SW)
//	primary host P: xenbr0 ── uplink ───────────┤
//	  └ vif1.0 (held) ── guest GP: eth0 192.0.2.10, 2001:db8::10
//	standby host S: xenbr0 ── uplink ───────────┘
//	  └ vif1.0 (down until failover) ── guest GS: eth0, same MAC and addresses
//	P rep0 198.51.100.1 ──── replication link ──── S rep0 198.51.100.2
//
// Two driver processes (internal/driver) run the primary and the standby
// with checkpoint.NewPrimary and NewStandby: the primary's sim domain
// binds its service socket in GP, so its replies, and GP's kernel answers
// to ICMP echo, ARP, ICMPv6 and TCP, leave through vif1.0 where the
// backend holds them; the standby, running inside GS, logs every commit
// with its time before it sends the ack.
//
// The client probes the guest in every protocol and captures its own
// interface with AF_PACKET and kernel timestamps. CheckCommit then
// requires, for every reply, a standby commit strictly between the
// request leaving the client and the reply reaching it: a reply released
// before the ack of the epoch that produced it has none. Then the primary
// is SIGKILLed: nothing from the guest may reach the client until the
// standby activates (the dead holder fails closed), the standby brings its
// vif up and announces the guest (gratuitous ARP, unsolicited NA), the
// client's next requests are answered through the standby's host, and
// svc.Check finds no acknowledged request lost.
//
// TestUnheldOutputIsCaught runs the same probes with netbuf=none and
// requires CheckCommit to flag the replies, so that a pass above means
// something.
//
// TestPartition and TestStall (partition_test.go, run with -partition;
// make test does) are issue 14's partition and stall suites on the same
// drivers: a LAN in two halves with a client on each, an arbiter (file:
// on a shared directory, cut through its fault hook; or a real etcd in a
// namespace of its own, cut by setting a veth down), and seeded faults —
// a cut of any link or all three, a SIGSTOP of either process — checked
// for two hosts answering (on the wire), I4 (from the drivers'
// observations) and acknowledged INCRs lost (svc.Check).
//
// The test needs root; it skips, saying why, otherwise or when
// KEMARI_SKIP_ROOT_TESTS is set.
package netns
