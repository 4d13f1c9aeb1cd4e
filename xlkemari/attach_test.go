package main

import (
	"errors"
	"net"
	"os"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/xl-kemari/xl-kemari/conf"
	"github.com/xl-kemari/xl-kemari/libxl"
)

// runningHV is a real hypervisor as attachRunning sees it: one running
// domain, "web", described by info. Everything else panics (nil embeds),
// so a test fails loudly if attachRunning reaches for more.
type runningHV struct {
	libxl.Hypervisor
	info  libxl.DomainInfo
	types []libxl.DomainType
}

type runningSource struct {
	libxl.Source
	info libxl.DomainInfo
}

func (h *runningHV) Name() string { return "xen" }
func (h *runningHV) Capabilities() libxl.Capabilities {
	return libxl.Capabilities{Types: h.types}
}
func (h *runningHV) Lookup(name string) (libxl.DomID, error) {
	if name != "web" {
		return libxl.DomIDInvalid, libxl.ErrNoDomain
	}
	return 7, nil
}
func (h *runningHV) Source() libxl.Source { return &runningSource{info: h.info} }
func (s *runningSource) Describe(dom libxl.DomID) (libxl.DomainInfo, error) {
	if dom != 7 {
		return libxl.DomainInfo{}, libxl.ErrNoDomain
	}
	return s.info, nil
}

func TestAttachRunning(t *testing.T) {
	mac, _ := net.ParseMAC("00:16:3e:00:00:01")
	pv := libxl.DomainInfo{Name: "web", Type: libxl.TypePV,
		NICs:  []libxl.NIC{{Index: 0, MAC: mac, Bridge: "xenbr0", Backend: "vif7.0"}, {Index: 1, MAC: mac, Bridge: "xenbr1", Backend: "vif7.1"}},
		Disks: []libxl.Disk{{Index: 0, Target: "/srv/web.img", Writable: true}, {Index: 1, Target: "/srv/iso/debian.iso"}}}
	ro := pv
	ro.Disks = []libxl.Disk{{Index: 0, Target: "/srv/web-ro.img"}}
	front := pv
	front.Disks = []libxl.Disk{{Index: 0, Target: "web", Writable: true, Script: "block-kemari"}, {Index: 1, Target: "/srv/iso/debian.iso"}}
	hvm := pv
	hvm.Type = libxl.TypeHVM
	prot := func(kv ...string) conf.Protection {
		p := conf.Defaults()
		for _, s := range kv {
			switch s {
			case "disk=none":
				p.Disk = "none"
			case "unsafe":
				p.Unsafe = true
			}
		}
		return p
	}
	pass := netbufFlags{mode: netbufNone, unsafe: true} // no kernel needed
	for _, tc := range []struct {
		name     string
		info     libxl.DomainInfo
		dom      string
		prot     conf.Protection
		nb       netbufFlags
		code     int
		is       error
		contains []string
	}{
		{name: "no such domain", info: pv, dom: "mail", prot: prot(), nb: pass, code: exitNotFound, is: libxl.ErrNoDomain},
		{name: "hvm refused", info: hvm, dom: "web", prot: prot("disk=none", "unsafe"), nb: pass, code: exitFailure,
			contains: []string{"web is a hvm domain", "protects pv domains only"}},
		{name: "writable disk refused", info: pv, dom: "web", prot: prot(), nb: pass, code: exitConfig, is: errWritableDisk,
			contains: []string{"/srv/web.img", "disk=none, unsafe=1", "now disk=replicate"}},
		{name: "disk=none without unsafe refused", info: pv, dom: "web", prot: prot("disk=none"), nb: pass, code: exitConfig, is: errWritableDisk},
		{name: "unsafe alone refused", info: pv, dom: "web", prot: prot("unsafe"), nb: pass, code: exitConfig, is: errWritableDisk},
		{name: "disk=none unsafe=1 accepted", info: pv, dom: "web", prot: prot("disk=none", "unsafe"), nb: pass, code: exitOK},
		{name: "read-only disks need nothing", info: ro, dom: "web", prot: prot(), nb: pass, code: exitOK},
		{name: "a front disk is leased from its front", info: front, dom: "web", prot: prot(), nb: pass, code: exitFailure,
			contains: []string{"disk web: no front serves it"}},
		{name: "--vif refused", info: ro, dom: "web", prot: prot(), nb: netbufFlags{mode: netbufNone, unsafe: true, vifs: []string{"vif9.0"}},
			code: exitUsage, is: errNetbufFlags, contains: []string{"vif7.0, vif7.1"}},
		{name: "mem refused", info: ro, dom: "web", prot: prot(), nb: netbufFlags{mode: netbufMem}, code: exitUsage, is: errNetbufFlags},
		{name: "none needs unsafe", info: ro, dom: "web", prot: prot(), nb: netbufFlags{mode: netbufNone}, code: exitUsage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hv := &runningHV{info: tc.info, types: []libxl.DomainType{libxl.TypePV}}
			nb := tc.nb
			defer nb.close()
			id, nets, disk, code, err := attachRunning(hv, tc.dom, &nb, tc.prot, t.TempDir(), nil)
			if code != tc.code {
				t.Fatalf("code %d, want %d (err %v)", code, tc.code, err)
			}
			if tc.code == exitOK {
				if err != nil || id != 7 || len(nets) != len(tc.info.NICs) || disk.prim != nil {
					t.Fatalf("got id %d, %d buffers, disk %v, err %v; want 7, %d, nil, nil", id, len(nets), disk, err, len(tc.info.NICs))
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q is not %v", err, tc.is)
			}
			for _, s := range tc.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
		})
	}
}

func TestReserveGuestMemory(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "") // set (even empty): the administrator's word
	os.Unsetenv("GOMEMLIMIT")
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	reserveGuestMemory("a", 1000)
	want := int64(memBase + 1000*4096*memPerGuest)
	if got := debug.SetMemoryLimit(-1); got != want {
		t.Errorf("one guest: limit %d, want %d", got, want)
	}
	reserveGuestMemory("b", 3000)
	reserveGuestMemory("a", 2000) // a new replica of a replaces the old
	want = int64(memBase + 5000*4096*memPerGuest)
	if got := debug.SetMemoryLimit(-1); got != want {
		t.Errorf("two guests: limit %d, want %d", got, want)
	}
	t.Setenv("GOMEMLIMIT", "1GiB")
	reserveGuestMemory("c", 100000)
	if got := debug.SetMemoryLimit(-1); got != want {
		t.Errorf("GOMEMLIMIT set: limit changed to %d", got)
	}
	memBudget.guests = nil
}
