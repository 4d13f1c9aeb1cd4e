// Package host holds what the kernel netbuf backends share about the dom0
// they run on: which kernel features it has (from its build
// configuration), running a tool with a fixed argument vector, optionally
// inside another network namespace, running Go code inside one, and
// over netlink, setting a link up or down in one and reading its MAC and
// addresses (LinkUp waits until the link is operationally up, on link
// notifications: a replica's vif at failover, before its announcement).
//
// Walk-through:
//
//	feats, _ := host.KernelConfig()            // /proc/config.gz or /boot/config-<release>
//	missing := feats.Missing("CONFIG_NET_SCH_PLUG", "CONFIG_IFB")
//	_ = host.Run("", "ip", "link", "set", "ifb0", "up")            // this namespace
//	_ = host.Run("/run/netns/dom0", "ip", "-o", "link", "show")   // via nsenter
//	_ = host.InNetNS("/run/netns/dom0", func() error { ...open a socket... })
//	_ = host.LinkUp("/run/netns/dom0", "vif1.0", 5*time.Second) // up, and operationally up
//	_ = host.SetLink("/run/netns/dom0", "vif1.0", false)        // down, no wait
//	mac, addrs, _ := host.LinkAddrs("", "eth0")                 // global unicast only
//
// Tests build their dom0 in a network namespace; production passes "" and
// works in the namespace the process runs in.
package host
