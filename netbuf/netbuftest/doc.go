// Package netbuftest is the contract suite every netbuf backend must pass,
// and the network-namespace topology the kernel backends are tested in.
//
// A backend's test adapts it with a Harness and calls Run:
//
//	func TestContract(t *testing.T) { netbuftest.Run(t, myHarness{}) }
//
// The suite sends tagged frames of every protocol (IPv4 UDP, ICMP echo,
// IPv6 UDP, ARP) from the guest side and checks what the client side
// captured: nothing before the epoch's Release, everything after, in
// order, once. Absence is checked without timers: Link.Flush sends a
// sentinel by a path that is not held and waits for it at the client, so a
// frame that had leaked would have arrived first.
//
// For kernel backends, NewTopology builds, inside namespaces named after
// the test process, a "dom0" with a bridge, one "guest" namespace per NIC
// (its veth's dom0 end is the vif), and a "client" namespace; all
// addresses are TEST-NET (192.0.2.0/24, 2001:db8::/32), and t.Cleanup
// deletes every namespace even when the test fails. RequireRoot skips with
// the reason when the process is not root or KEMARI_SKIP_ROOT_TESTS is set.
package netbuftest
