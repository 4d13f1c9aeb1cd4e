package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"github.com/xl-kemari/xl-kemari/libxl/sim"
	"github.com/xl-kemari/xl-kemari/libxl/sim/svc"
	"github.com/xl-kemari/xl-kemari/netbuf"
	"github.com/xl-kemari/xl-kemari/netbuf/auto"
	"github.com/xl-kemari/xl-kemari/netbuf/auto/host"
	"github.com/xl-kemari/xl-kemari/netbuf/netbuftest"
)

func parseNetbuf(t *testing.T, args ...string) *netbufFlags {
	t.Helper()
	var f netbufFlags
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return &f
}

func simDomain(t *testing.T, nics int) *sim.Domain {
	t.Helper()
	h, err := sim.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	cfg := sim.DomainConfig{Workload: sim.WorkloadIdle, Pages: 64, Paused: true}
	for range nics {
		cfg.NICs = append(cfg.NICs, sim.NICConfig{})
	}
	f := parseNetbuf(t)
	id, err := f.createSim(h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := h.Domain(id)
	return d
}

func TestOpenSimMemDefault(t *testing.T) {
	d := simDomain(t, 2)
	f := parseNetbuf(t)
	bufs, _, err := f.openSim(d, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(bufs) != 2 {
		t.Fatalf("%d buffers, want 2", len(bufs))
	}
	if err := bufs[0].Barrier(1); err != nil {
		t.Fatal(err)
	}
	f.close()
	f.close()
	if err := bufs[1].Barrier(1); err == nil {
		t.Error("a buffer is still open after close")
	}
}

func TestOpenSimRefusals(t *testing.T) {
	d := simDomain(t, 1)
	for _, tc := range []struct {
		args []string
		want error
		say  string
	}{
		{[]string{"--netbuf=none"}, auto.ErrUnsafe, "unsafe"},
		{[]string{"--netbuf=nfqueue", "--vif=vif1.0"}, errNetbufFlags, "--guest-netns"},
		{[]string{"--netbuf=nfqueue", "--guest-netns=/run/netns/x"}, errNetbufFlags, "one --vif per NIC"},
		{[]string{"--netbuf=bogus", "--guest-netns=/run/netns/x", "--vif=v0"}, auto.ErrMode, "bogus"},
	} {
		f := parseNetbuf(t, tc.args...)
		if tc.want == auto.ErrMode {
			// auto.Cleanup runs first and needs no root to find nothing;
			// Select then refuses the mode.
			if _, err := auto.Select(auto.Options{Mode: f.mode}); !errors.Is(err, auto.ErrMode) {
				t.Errorf("%v: %v", tc.args, err)
			}
			continue
		}
		_, _, err := f.openSim(d, 1)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.say) {
			t.Errorf("%v: %v, want %v naming %q", tc.args, err, tc.want, tc.say)
		}
	}
	f := parseNetbuf(t, "--netbuf=none", "--unsafe")
	bufs, cleanup, err := f.openSim(d, 1)
	if err != nil || len(bufs) != 1 {
		t.Fatalf("none with --unsafe: %v, %d buffers", err, len(bufs))
	}
	cleanup()
}

func TestCheckStandbyNS(t *testing.T) {
	if err := parseNetbuf(t, "--guest-netns=/proc/self/ns/net").checkStandbyNS(); err != nil {
		t.Errorf("own namespace refused: %v", err)
	}
	if err := parseNetbuf(t, "--guest-netns=/nonexistent").checkStandbyNS(); !errors.Is(err, errNetbufFlags) {
		t.Errorf("missing namespace: %v", err)
	}
}

// TestOpenSimKernel wires a sim service domain to the nfqueue backend in
// namespaces: its socket in the guest namespace, its replies held on the
// vif until released, then answered at the client.
func TestOpenSimKernel(t *testing.T) {
	topo := netbuftest.NewTopology(t, 1)
	g := netbuftest.NSPath(topo.Guests[0])
	if _, err := host.Run(g, "ip", "addr", "add", "192.0.2.10/24", "dev", "geth0"); err != nil {
		t.Fatal(err)
	}
	f := parseNetbuf(t, "--netbuf=nfqueue", "--netns="+topo.Dom0Path(), "--guest-netns="+g, "--vif="+topo.Vifs[0])
	h, err := sim.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	id, err := f.createSim(h, sim.DomainConfig{Workload: sim.WorkloadService, Pages: 1024,
		NICs: []sim.NICConfig{{Listen: "192.0.2.10:7777"}}, Disks: []sim.DiskConfig{{Sectors: 64}}})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := h.Domain(id)
	bufs, _, err := f.openSim(d, 1)
	if err != nil {
		if errors.Is(err, netbuf.ErrUnsupported) {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	defer f.close()
	var cl *svc.Client
	if err := host.InNetNS(netbuftest.NSPath(topo.Client), func() error {
		cl, err = svc.NewClient("192.0.2.10:7777", 1)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	done := make(chan error, 1)
	go func() { _, err := cl.Do(t.Context(), svc.Request{Op: svc.OpIncr}); done <- err }()
	// Release epoch after epoch: the guest's ARP reply, then its answer,
	// each wait in the vif until then.
	for e := uint64(1); ; e++ {
		netbuftest.WaitHeld(t, bufs[0], 1)
		if err := bufs[0].Barrier(e); err != nil {
			t.Fatal(err)
		}
		if err := bufs[0].Release(e); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			if st := bufs[0].Stats(); st.Released < 2 {
				t.Errorf("answered with %d frames released, want the ARP reply and the answer", st.Released)
			}
			return
		default:
		}
	}
}
