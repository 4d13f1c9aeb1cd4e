package plug

import (
	"errors"
	"strings"
	"testing"

	"github.com/xl-kemari/xl-kemari/netbuf"
	"github.com/xl-kemari/xl-kemari/netbuf/auto/host"
	"github.com/xl-kemari/xl-kemari/netbuf/netbuftest"
)

type harness struct{}

func (harness) Serial() bool { return true }

func (harness) Setup(t *testing.T, n int) []netbuftest.Port {
	topo := netbuftest.NewTopology(t, n)
	b := New(Config{NetNS: topo.Dom0Path()})
	var ports []netbuftest.Port
	for i := 0; i < n; i++ {
		buf, err := b.Open(netbuf.Device{Name: topo.Vifs[i], Bridge: topo.Bridge})
		if errors.Is(err, netbuf.ErrUnsupported) {
			t.Skipf("plug cannot run here: %v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { buf.Close() })
		ports = append(ports, netbuftest.Port{Buffer: buf, Link: topo.Link(t, i)})
	}
	return ports
}

// TestContractPlug runs the suite where the kernel has sch_plug (the
// Debian dom0 kernel, the Xen lab); it skips elsewhere, naming what is
// missing.
func TestContractPlug(t *testing.T) {
	netbuftest.RequireRoot(t)
	if err := New(Config{}).Probe(); err != nil {
		t.Skipf("plug contract suite needs sch_plug: %v", err)
	}
	netbuftest.Run(t, harness{})
}

// TestOpenUndoes checks that an Open that fails (here: no sch_plug, or a
// missing device) leaves no IFB and no ingress qdisc behind, and that on
// this kernel the refusal names the missing feature.
func TestOpenUndoes(t *testing.T) {
	topo := netbuftest.NewTopology(t, 1)
	ns := topo.Dom0Path()
	b := New(Config{NetNS: ns})
	if _, err := b.Open(netbuf.Device{Name: "nosuchdev0"}); !errors.Is(err, ErrDevice) {
		t.Fatalf("missing device: %v, want ErrDevice", err)
	}
	buf, err := b.Open(netbuf.Device{Name: topo.Vifs[0]})
	if b.Probe() != nil {
		if !errors.Is(err, netbuf.ErrUnsupported) || !strings.Contains(err.Error(), "CONFIG_NET_SCH_PLUG") {
			t.Fatalf("Open without sch_plug: %v, want ErrUnsupported naming CONFIG_NET_SCH_PLUG", err)
		}
	} else {
		if err != nil {
			t.Fatal(err)
		}
		if err := buf.Close(); err != nil {
			t.Fatal(err)
		}
	}
	links, _ := host.Run(ns, "ip", "-o", "link", "show")
	qd, _ := host.Run(ns, "tc", "qdisc", "show", "dev", topo.Vifs[0])
	if strings.Contains(string(links), IFBPrefix) || strings.Contains(string(qd), "ingress") {
		t.Fatalf("setup left behind:\n%s\n%s", links, qd)
	}
}

func TestProbeNamesMissing(t *testing.T) {
	f, err := host.KernelConfig()
	if err != nil {
		t.Skip(err)
	}
	err = New(Config{}).Probe()
	if f.Has("CONFIG_NET_SCH_PLUG") {
		return
	}
	if !errors.Is(err, netbuf.ErrUnsupported) || !strings.Contains(err.Error(), "CONFIG_NET_SCH_PLUG") {
		t.Fatalf("Probe = %v, want ErrUnsupported naming CONFIG_NET_SCH_PLUG", err)
	}
}

func TestParseAlias(t *testing.T) {
	if pid, dev, ok := parseAlias("xl-kemari:pid=42:dev=vif3.0"); !ok || pid != 42 || dev != "vif3.0" {
		t.Fatalf("got %d %q %v", pid, dev, ok)
	}
	for _, s := range []string{"", "other", "xl-kemari:pid=x:dev=a", "xl-kemari:pid=-1:dev=a", "xl-kemari:pid=3"} {
		if _, _, ok := parseAlias(s); ok {
			t.Errorf("parseAlias(%q) accepted", s)
		}
	}
}
