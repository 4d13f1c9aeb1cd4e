package xen

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/xl-kemari/xl-kemari/libxl"
)

func TestParseConfig(t *testing.T) {
	js, err := os.ReadFile("testdata/domu-pv.json")
	if err != nil {
		t.Fatal(err)
	}
	var info libxl.DomainInfo
	if err := parseConfig(js, 3, &info); err != nil {
		t.Fatal(err)
	}
	if info.Type != libxl.TypePV || info.Name != "domu" || info.VCPUs != 1 {
		t.Errorf("type %q name %q vcpus %d", info.Type, info.Name, info.VCPUs)
	}
	if len(info.NICs) != 1 {
		t.Fatalf("%d nics", len(info.NICs))
	}
	n := info.NICs[0]
	if n.MAC.String() != "00:16:3e:00:00:64" || n.Bridge != "xenbr0" || n.Backend != "vif3.0" {
		t.Errorf("nic %+v", n)
	}
	if len(n.Addrs) != 2 || n.Addrs[0] != netip.MustParseAddr("192.0.2.100") || n.Addrs[1] != netip.MustParseAddr("2001:db8::64") {
		t.Errorf("nic addrs %v", n.Addrs)
	}
	if len(info.Disks) != 1 || !info.Disks[0].Writable || info.Disks[0].Target != "/var/lib/xenlab/domu-disk.img" {
		t.Errorf("disks %+v", info.Disks)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for name, js := range map[string]string{
		"not json":     `{`,
		"no type":      `{"c_info":{"name":"x"}}`,
		"bad type":     `{"c_info":{"type":"pvm"}}`,
		"bad mac":      `{"c_info":{"type":"pv"},"nics":[{"mac":"zz"}]}`,
		"bad ip":       `{"c_info":{"type":"hvm"},"nics":[{"ip":"192.0.2.300"}]}`,
		"wrong shapes": `{"c_info":{"type":"pv"},"disks":{"a":1}}`,
	} {
		var info libxl.DomainInfo
		if err := parseConfig([]byte(js), 1, &info); err == nil {
			t.Errorf("%s: parsed without error: %+v", name, info)
		}
	}
}

func TestConfigTypeAndMemory(t *testing.T) {
	js, err := os.ReadFile("testdata/domu-pv.json")
	if err != nil {
		t.Fatal(err)
	}
	if got := configType(js); got != "pv" {
		t.Errorf("configType = %q, want pv", got)
	}
	if got := configMaxMemKB(js); got != 196608 {
		t.Errorf("configMaxMemKB = %d, want 196608", got)
	}
	pvh := []byte(`{"c_info":{"type":"pvh","name":"g"},"b_info":{"max_memkb":98304}}`)
	if configType(pvh) != "pvh" || configMaxMemKB(pvh) != 98304 {
		t.Errorf("pvh config: type %q, %d KiB", configType(pvh), configMaxMemKB(pvh))
	}
	if configType([]byte("{")) != "" || configMaxMemKB([]byte("[]")) != 0 {
		t.Error("garbage config: want no type, no memory")
	}
}

// TestRenamedConfig: a replica's configuration is the primary's under the
// replica's name, every other field kept; JSON without c_info is refused
// naming the caller.
func TestRenamedConfig(t *testing.T) {
	js, err := renamedConfig("Op", []byte(`{"c_info":{"name":"web","type":"pvh"},"b_info":{"max_memkb":1024}}`), "web--kemari")
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"b_info":{"max_memkb":1024},"c_info":{"name":"web--kemari","type":"pvh"}}`; string(js) != want {
		t.Fatalf("got %s, want %s", js, want)
	}
	for _, bad := range []string{`{}`, `[`, `{"c_info":3}`} {
		if _, err := renamedConfig("Op", []byte(bad), "x"); err == nil || !strings.Contains(err.Error(), "xen: Op: config JSON") {
			t.Errorf("%s: %v, want an error naming Op", bad, err)
		}
	}
}
