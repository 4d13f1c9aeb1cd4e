package xen

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/xl-kemari/xl-kemari/libxl"
)

// libxlConfig is the part of libxl's domain-config JSON
// (libxl_domain_config_to_json) that the contract's DomainInfo needs. The
// whole JSON still travels as DomainInfo.Config, because the standby hands
// it back to libxl_domain_config_from_json when it creates the replica.
type libxlConfig struct {
	CInfo struct {
		Type string `json:"type"`
		Name string `json:"name"`
	} `json:"c_info"`
	BInfo struct {
		MaxVCPUs int    `json:"max_vcpus"`
		MaxMemKB uint64 `json:"max_memkb"`
	} `json:"b_info"`
	Disks []struct {
		PdevPath  string `json:"pdev_path"`
		Vdev      string `json:"vdev"`
		Readwrite int    `json:"readwrite"`
		IsCdrom   int    `json:"is_cdrom"`
		Script    string `json:"script"`
	} `json:"disks"`
	Nics []struct {
		Devid  int    `json:"devid"`
		Mac    string `json:"mac"`
		Bridge string `json:"bridge"`
		IP     string `json:"ip"`
	} `json:"nics"`
}

// parseConfig fills the type, vCPUs, NICs and disks of info from a libxl
// JSON domain config of domain dom.
func parseConfig(js []byte, dom libxl.DomID, info *libxl.DomainInfo) error {
	var c libxlConfig
	if err := json.Unmarshal(js, &c); err != nil {
		return fmt.Errorf("xen: domain %d: libxl config JSON: %w", dom, err)
	}
	switch c.CInfo.Type {
	case "pv":
		info.Type = libxl.TypePV
	case "pvh":
		info.Type = libxl.TypePVH
	case "hvm":
		info.Type = libxl.TypeHVM
	default:
		return fmt.Errorf("xen: domain %d: libxl config has domain type %q", dom, c.CInfo.Type)
	}
	if info.Name == "" {
		info.Name = c.CInfo.Name
	}
	if info.VCPUs == 0 {
		info.VCPUs = c.BInfo.MaxVCPUs
	}
	info.NICs = info.NICs[:0]
	for _, n := range c.Nics {
		nic := libxl.NIC{
			Index:   n.Devid,
			Bridge:  n.Bridge,
			Backend: fmt.Sprintf("vif%d.%d", dom, n.Devid),
		}
		if n.Mac != "" {
			mac, err := net.ParseMAC(n.Mac)
			if err != nil {
				return fmt.Errorf("xen: domain %d: nic %d: %w", dom, n.Devid, err)
			}
			nic.MAC = mac
		}
		// libxl's ip field is a space-separated list (xl.cfg vif ip=).
		for _, s := range strings.Fields(n.IP) {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return fmt.Errorf("xen: domain %d: nic %d: ip %q: %w", dom, n.Devid, s, err)
			}
			nic.Addrs = append(nic.Addrs, a)
		}
		info.NICs = append(info.NICs, nic)
	}
	info.Disks = info.Disks[:0]
	for i, d := range c.Disks {
		info.Disks = append(info.Disks, libxl.Disk{
			Index:    i,
			Target:   d.PdevPath,
			Writable: d.Readwrite != 0 && d.IsCdrom == 0,
			Script:   d.Script,
		})
	}
	return nil
}

// configType is the domain type a libxl JSON config names ("pv", "pvh",
// "hvm"), or "" if it cannot be read.
func configType(js []byte) string {
	var c libxlConfig
	if json.Unmarshal(js, &c) != nil {
		return ""
	}
	return c.CInfo.Type
}

// configMaxMemKB is the memory a libxl JSON config gives the domain
// (b_info.max_memkb), or 0 if it cannot be read.
func configMaxMemKB(js []byte) uint64 {
	var c libxlConfig
	if json.Unmarshal(js, &c) != nil {
		return 0
	}
	return c.BInfo.MaxMemKB
}

// renamedConfig returns the libxl JSON configJSON with its c_info.name
// replaced by name, for op (the caller, named in errors): a replica is
// built under a name of its own.
func renamedConfig(op string, configJSON []byte, name string) ([]byte, error) {
	var cfg map[string]any
	if err := json.Unmarshal(configJSON, &cfg); err != nil {
		return nil, fmt.Errorf("xen: %s: config JSON: %w", op, err)
	}
	ci, _ := cfg["c_info"].(map[string]any)
	if ci == nil {
		return nil, fmt.Errorf("xen: %s: config JSON has no c_info", op)
	}
	ci["name"] = name
	return json.Marshal(cfg)
}
