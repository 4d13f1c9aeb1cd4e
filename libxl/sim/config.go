package sim

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/xl-kemari/xl-kemari/libxl"
)

// Workload names, the guest programs the simulator can run.
const (
	WorkloadIdle    = "idle"    // only the tick counter in page 0 changes
	WorkloadHotset  = "hotset"  // random pages within the first HotPages data pages
	WorkloadUniform = "uniform" // random pages over all data pages
	WorkloadStream  = "stream"  // sequential data pages, wrapping around
	WorkloadService = "service" // a counter/KV service answering requests on its NICs
)

// Workloads lists the workload names CreateDomain accepts.
var Workloads = []string{WorkloadIdle, WorkloadHotset, WorkloadUniform, WorkloadStream, WorkloadService}

// Defaults applied by CreateDomain to zero fields of DomainConfig.
const (
	DefaultPages   = 65536 // 256 MiB
	DefaultRate    = 2000  // pages per second for the writer workloads
	DefaultQuantum = time.Millisecond
	// DefaultHotPages is the hot-set size when HotPages is 0 (capped at
	// the number of data pages).
	DefaultHotPages = 1024
)

// DomainConfig is everything needed to build a domain. It travels, as JSON,
// in libxl.DomainInfo.Config, so a standby can build an identical replica
// from the DomainInfo alone.
type DomainConfig struct {
	Name     string        `json:"name"`
	Pages    uint64        `json:"pages"`
	VCPUs    int           `json:"vcpus"`
	Workload string        `json:"workload"`
	Rate     int           `json:"rate,omitempty"`      // writers: pages dirtied per second
	HotPages uint64        `json:"hot_pages,omitempty"` // hotset size in pages
	Seed     uint64        `json:"seed"`
	NICs     []NICConfig   `json:"nics,omitempty"`
	Disks    []DiskConfig  `json:"disks,omitempty"`
	Quantum  time.Duration `json:"quantum"` // guest step period
	// Paused creates the domain suspended, as if Suspend had been called
	// before its first step; Resume starts it, or Step drives it.
	Paused bool `json:"paused,omitempty"`
}

// NICConfig is one virtual NIC.
type NICConfig struct {
	MAC string `json:"mac,omitempty"` // default: derived from the name, Xen OUI 00:16:3e
	// Listen is the host UDP address ("127.0.0.1:7777") whose datagrams
	// the NIC receives and from which it transmits. Empty: no host socket;
	// traffic only through Inject and SetEgress (the form to use inside
	// testing/synctest bubbles, where a socket read would stall time).
	Listen string `json:"listen,omitempty"`
}

// DiskConfig is one virtual disk.
type DiskConfig struct {
	Sectors uint64 `json:"sectors"` // size in 512-byte sectors
}

// withDefaults fills zero fields and validates, returning every problem.
func (c DomainConfig) withDefaults(defQuantum time.Duration) (DomainConfig, error) {
	c.NICs = slices.Clone(c.NICs)
	c.Disks = slices.Clone(c.Disks)
	if c.Pages == 0 {
		c.Pages = DefaultPages
	}
	if c.VCPUs == 0 {
		c.VCPUs = 1
	}
	if c.Workload == "" {
		c.Workload = WorkloadIdle
	}
	if c.Quantum == 0 {
		c.Quantum = defQuantum
	}
	if c.Rate == 0 && isWriter(c.Workload) {
		c.Rate = DefaultRate
	}
	var probs []string
	if c.VCPUs < 0 || c.VCPUs > 128 {
		probs = append(probs, fmt.Sprintf("vcpus %d not in 1..128", c.VCPUs))
	}
	if !slices.Contains(Workloads, c.Workload) {
		probs = append(probs, fmt.Sprintf("workload %q not one of %v", c.Workload, Workloads))
	}
	if c.Rate < 0 {
		probs = append(probs, fmt.Sprintf("rate %d negative", c.Rate))
	}
	if c.Quantum < 0 {
		probs = append(probs, fmt.Sprintf("quantum %v negative", c.Quantum))
	}
	if c.Pages > maxPages {
		probs = append(probs, fmt.Sprintf("pages %d above the simulator's 256 TiB limit", c.Pages))
	}
	for i := range c.NICs {
		n := &c.NICs[i]
		if n.MAC == "" {
			n.MAC = defaultMAC(c.Name, c.Seed, i).String()
		} else if hw, err := net.ParseMAC(n.MAC); err != nil || len(hw) != 6 {
			probs = append(probs, fmt.Sprintf("nic %d: bad mac %q", i, n.MAC))
		}
		if n.Listen != "" {
			if _, err := netip.ParseAddrPort(n.Listen); err != nil {
				probs = append(probs, fmt.Sprintf("nic %d: listen %q is not ip:port: %v", i, n.Listen, err))
			}
		}
	}
	for i, d := range c.Disks {
		if d.Sectors == 0 {
			probs = append(probs, fmt.Sprintf("disk %d: zero sectors", i))
		}
	}
	if len(probs) == 0 {
		l := newLayout(&c)
		db := uint64(l.dataBase)
		if db >= c.Pages && c.Workload != WorkloadIdle {
			probs = append(probs, fmt.Sprintf("pages %d too small: workload %s with %d nics needs more than %d",
				c.Pages, c.Workload, len(c.NICs), db))
		} else if db > c.Pages {
			probs = append(probs, fmt.Sprintf("pages %d too small: %d nics need %d", c.Pages, len(c.NICs), db))
		}
		if c.Workload == WorkloadHotset {
			if c.HotPages == 0 {
				c.HotPages = min(DefaultHotPages, c.Pages-db)
			}
			if c.HotPages > c.Pages-db {
				probs = append(probs, fmt.Sprintf("hot_pages %d above the %d data pages", c.HotPages, c.Pages-db))
			}
		}
	}
	if len(probs) > 0 {
		return c, fmt.Errorf("%w: %s", ErrConfig, strings.Join(probs, "; "))
	}
	return c, nil
}

func isWriter(w string) bool {
	return w == WorkloadHotset || w == WorkloadUniform || w == WorkloadStream
}

// defaultMAC derives a stable locally administered-looking MAC in Xen's OUI.
func defaultMAC(name string, seed uint64, i int) net.HardwareAddr {
	h := sha256.Sum256([]byte(fmt.Sprintf("%s/%d/%d", name, seed, i)))
	return net.HardwareAddr{0x00, 0x16, 0x3e, h[0] & 0x7f, h[1], h[2]}
}

// Option keys understood by DomainConfigFromOptions.
var domainKeys = []string{"name", "pages", "memory_mib", "vcpus", "workload", "rate", "hot_pages", "seed", "listen", "disks", "quantum"}

// DomainConfigFromOptions builds a DomainConfig from key=value options, as
// given on a command line: name, pages or memory_mib, vcpus, workload,
// rate, hot_pages, seed, listen (comma-separated UDP addresses, one NIC
// each; "-" for a NIC without socket), disks (comma-separated sizes in
// sectors) and quantum (a Go duration). Keys it does not know are ignored
// (they may be the hypervisor's); every bad value is reported at once.
func DomainConfigFromOptions(opts libxl.Options) (DomainConfig, error) {
	var c DomainConfig
	var probs []string
	u := func(k string, dst *uint64) {
		if v, ok := opts[k]; ok {
			n, err := strconv.ParseUint(v, 0, 64)
			if err != nil {
				probs = append(probs, fmt.Sprintf("%s=%q: %v", k, v, err))
			}
			*dst = n
		}
	}
	c.Name = opts["name"]
	c.Workload = opts["workload"]
	u("pages", &c.Pages)
	var mib, vcpus, rate uint64
	u("memory_mib", &mib)
	if mib != 0 {
		c.Pages = mib << 20 / libxl.PageSize
	}
	u("vcpus", &vcpus)
	u("rate", &rate)
	c.VCPUs, c.Rate = int(min(vcpus, 1<<16)), int(min(rate, 1<<40))
	u("hot_pages", &c.HotPages)
	u("seed", &c.Seed)
	if v, ok := opts["quantum"]; ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			probs = append(probs, fmt.Sprintf("quantum=%q: %v", v, err))
		}
		c.Quantum = d
	}
	if v := opts["listen"]; v != "" {
		for _, a := range strings.Split(v, ",") {
			if a == "-" {
				a = ""
			}
			c.NICs = append(c.NICs, NICConfig{Listen: a})
		}
	}
	if v := opts["disks"]; v != "" {
		for _, s := range strings.Split(v, ",") {
			n, err := strconv.ParseUint(s, 0, 64)
			if err != nil {
				probs = append(probs, fmt.Sprintf("disks=%q: %v", v, err))
			}
			c.Disks = append(c.Disks, DiskConfig{Sectors: n})
		}
	}
	if len(probs) > 0 {
		return c, fmt.Errorf("%w: %s", ErrConfig, strings.Join(probs, "; "))
	}
	return c, nil
}
