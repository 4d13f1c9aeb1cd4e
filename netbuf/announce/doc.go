// Package announce tells a segment that a guest's addresses now live
// behind this host: after failover the new primary sends, for each IPv4
// address, gratuitous ARP (a request and a reply whose sender and target
// are the address itself) and, for each IPv6 address, an unsolicited
// neighbour advertisement (override flag set, to all-nodes) carrying the
// guest's MAC. Switches learn the MAC's new port from the frames'
// source; peers update their neighbour caches.
//
// Walk-through:
//
//	err := announce.Send("vif3.0", mac, []netip.Addr{v4, v6}, 3)
//
// Frames are built here and written whole through an AF_PACKET socket,
// so no IP configuration of the interface is needed.
package announce
