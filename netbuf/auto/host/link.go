package host

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// SetLink sets link name in the network namespace at nsPath ("" = the
// calling thread's) up or down. It does not wait for the link to be
// operationally up: LinkUp does.
func SetLink(nsPath, name string, up bool) error {
	_, nh, l, done, err := linkAt(nsPath, name)
	if err != nil {
		return err
	}
	defer done()
	if up {
		err = nh.LinkSetUp(l)
	} else {
		err = nh.LinkSetDown(l)
	}
	if err != nil {
		return fmt.Errorf("host: set link %s in %s up=%v: %w", name, nsName(nsPath), up, err)
	}
	return nil
}

// LinkUp sets link name in the network namespace at nsPath ("" = the
// calling thread's) up and waits, on link notifications (no polling),
// until it is operationally up, or fails after wait. A bridge port is
// forwarding only once its carrier is noticed: a frame sent through it
// before (a failover announcement) is dropped.
func LinkUp(nsPath, name string, wait time.Duration) error {
	ns, nh, l, done, err := linkAt(nsPath, name)
	if err != nil {
		return err
	}
	defer done()
	// Subscribed before the link is set up: no transition is missed.
	ch := make(chan netlink.LinkUpdate, 16)
	stop := make(chan struct{})
	defer close(stop)
	if err := netlink.LinkSubscribeAt(ns, ch, stop); err != nil {
		return fmt.Errorf("host: link notifications in %s: %w", nsName(nsPath), err)
	}
	if err := nh.LinkSetUp(l); err != nil {
		return fmt.Errorf("host: set link %s in %s up: %w", name, nsName(nsPath), err)
	}
	if l, err := nh.LinkByName(name); err == nil && l.Attrs().OperState == netlink.OperUp {
		return nil
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case u, ok := <-ch:
			if !ok {
				return fmt.Errorf("host: link notifications in %s ended before %s was operationally up", nsName(nsPath), name)
			}
			if u.Attrs().Name == name && u.Attrs().OperState == netlink.OperUp {
				return nil
			}
		case <-timer.C:
			return fmt.Errorf("host: link %s in %s not operationally up after %v", name, nsName(nsPath), wait)
		}
	}
}

// LinkAddrs returns the MAC and the global unicast addresses of link
// name in the network namespace at nsPath ("" = the calling thread's):
// what a failover announces for an interface.
func LinkAddrs(nsPath, name string) (net.HardwareAddr, []netip.Addr, error) {
	_, nh, l, done, err := linkAt(nsPath, name)
	if err != nil {
		return nil, nil, err
	}
	defer done()
	as, err := nh.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, nil, fmt.Errorf("host: addresses of %s in %s: %w", name, nsName(nsPath), err)
	}
	var out []netip.Addr
	for _, a := range as {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap().IsGlobalUnicast() {
			out = append(out, ip.Unmap())
		}
	}
	return l.Attrs().HardwareAddr, out, nil
}

// linkAt returns the network namespace at nsPath ("" = the calling
// thread's), a netlink handle in it and its link name; done closes the
// handles.
func linkAt(nsPath, name string) (netns.NsHandle, *netlink.Handle, netlink.Link, func(), error) {
	ns, nh, err := handleAt(nsPath)
	if err != nil {
		return ns, nil, nil, nil, err
	}
	done := func() { nh.Close(); ns.Close() }
	l, err := nh.LinkByName(name)
	if err != nil {
		done()
		return netns.None(), nil, nil, nil, fmt.Errorf("host: link %s in %s: %w", name, nsName(nsPath), err)
	}
	return ns, nh, l, done, nil
}

// handleAt returns the network namespace at nsPath ("" = the calling
// thread's) and a netlink handle in it. The caller closes both.
func handleAt(nsPath string) (netns.NsHandle, *netlink.Handle, error) {
	var ns netns.NsHandle
	var err error
	if nsPath == "" {
		ns, err = netns.Get()
	} else {
		ns, err = netns.GetFromPath(nsPath)
	}
	if err != nil {
		return netns.None(), nil, fmt.Errorf("%w: open %s: %v", ErrNetNS, nsName(nsPath), err)
	}
	nh, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return netns.None(), nil, fmt.Errorf("%w: netlink in %s: %v", ErrNetNS, nsName(nsPath), err)
	}
	return ns, nh, nil
}

// nsName names the namespace at nsPath in errors.
func nsName(nsPath string) string {
	if nsPath == "" {
		return "this network namespace"
	}
	return nsPath
}
