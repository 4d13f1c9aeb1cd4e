package checkpoint

import (
	"net"
	"net/netip"

	"github.com/xl-kemari/xl-kemari/checkpoint/wire"
	"github.com/xl-kemari/xl-kemari/libxl"
)

func toDesc(i libxl.DomainInfo) wire.DomainDesc {
	d := wire.DomainDesc{Name: i.Name, UUID: i.UUID, Type: string(i.Type), Pages: i.Pages,
		VCPUs: uint32(i.VCPUs), Workload: i.Workload, Config: i.Config}
	for _, n := range i.NICs {
		var nd wire.NICDesc
		copy(nd.MAC[:], n.MAC)
		nd.Addrs, nd.Bridge, nd.Backend = n.Addrs, n.Bridge, n.Backend
		d.NICs = append(d.NICs, nd)
	}
	for _, k := range i.Disks {
		d.Disks = append(d.Disks, wire.DiskDesc{Sectors: k.Sectors, Writable: k.Writable, Target: k.Target})
	}
	return d
}

func fromDesc(d wire.DomainDesc) libxl.DomainInfo {
	i := libxl.DomainInfo{Name: d.Name, UUID: d.UUID, Type: libxl.DomainType(d.Type), Pages: d.Pages,
		VCPUs: int(d.VCPUs), Workload: d.Workload, Config: append([]byte(nil), d.Config...)}
	for idx, n := range d.NICs {
		i.NICs = append(i.NICs, libxl.NIC{Index: idx, MAC: net.HardwareAddr(append([]byte(nil), n.MAC[:]...)),
			Addrs: append([]netip.Addr(nil), n.Addrs...), Bridge: n.Bridge, Backend: n.Backend})
	}
	for idx, k := range d.Disks {
		i.Disks = append(i.Disks, libxl.Disk{Index: idx, Target: k.Target, Sectors: k.Sectors, Writable: k.Writable})
	}
	return i
}

func toU64(dst []uint64, pfns []libxl.PFN) []uint64 {
	dst = dst[:0]
	for _, p := range pfns {
		dst = append(dst, uint64(p))
	}
	return dst
}
