package wire

import "net/netip"

func sampleHello() *Hello {
	return &Hello{
		Version:   Version,
		Role:      RolePrimary,
		Session:   [16]byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12},
		Codec:     CodecLZ4,
		Inflight:  2,
		Committed: 0,
		MemDigest: 0,
		Flags:     HelloSharedDisk,
		Domain: DomainDesc{
			Name:  "web1",
			UUID:  [16]byte{0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00},
			Type:  "pvh",
			Pages: 262144,
			VCPUs: 2,
			NICs: []NICDesc{{
				MAC:     [6]byte{0x00, 0x16, 0x3e, 0x01, 0x02, 0x03},
				Addrs:   []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("fe80::1%eth0")},
				Bridge:  "xenbr0",
				Backend: "",
			}},
			Disks:    []DiskDesc{{Sectors: 2097152, Writable: true, Target: "/dev/vg0/web1"}},
			Workload: "kv",
			Config:   []byte("name = \"web1\"\nmemory = 1024\n"),
		},
	}
}
