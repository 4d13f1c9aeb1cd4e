// Package host holds what the kernel netbuf backends share about the dom0
// they run on: which kernel features it has (from its build
// configuration), running a tool with a fixed argument vector, optionally
// inside another network namespace, and running Go code inside one.
//
// Walk-through:
//
//	feats, _ := host.KernelConfig()            // /proc/config.gz or /boot/config-<release>
//	missing := feats.Missing("CONFIG_NET_SCH_PLUG", "CONFIG_IFB")
//	_ = host.Run("", "ip", "link", "set", "ifb0", "up")            // this namespace
//	_ = host.Run("/run/netns/dom0", "ip", "-o", "link", "show")   // via nsenter
//	_ = host.InNetNS("/run/netns/dom0", func() error { ...open a socket... })
//
// Tests build their dom0 in a network namespace; production passes "" and
// works in the namespace the process runs in.
package host
