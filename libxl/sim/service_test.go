package sim_test

import (
	"context"
	"errors"
	"net"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/sim"
	"github.com/xl-kemari/xl-kemari/libxl/sim/svc"
)

// freeAddr returns a loopback UDP address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

func serviceConfig(addr string) sim.DomainConfig {
	return sim.DomainConfig{
		Name: "kv", Pages: 1024, Workload: sim.WorkloadService, Seed: 3,
		NICs:  []sim.NICConfig{{Listen: addr}},
		Disks: []sim.DiskConfig{{Sectors: 128}},
	}
}

func do(t *testing.T, c *svc.Client, req svc.Request) svc.Reply {
	t.Helper()
	rep, err := c.Do(t.Context(), req)
	if err != nil {
		t.Fatalf("%v: %v", req.Op, err)
	}
	return rep
}

// TestServiceFailover: a real UDP client talks to the service, the
// primary is checkpointed and destroyed, the replica takes over the
// address, and the client's history checks out: nothing acknowledged lost.
func TestServiceFailover(t *testing.T) {
	addr := freeAddr(t)
	p := newHV(t, nil)
	dom, pd := create(t, p, serviceConfig(addr))
	c, err := svc.NewClient(addr, 7)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rec := svc.NewRecorder(nil)
	c.SetRecorder(rec)
	for i := uint64(1); i <= 10; i++ {
		if rep := do(t, c, svc.Request{Op: svc.OpIncr}); rep.Status != svc.StatusOK || rep.Value != i {
			t.Fatalf("INCR %d = %+v", i, rep)
		}
	}
	if rep := do(t, c, svc.Request{Op: svc.OpPut, Key: 5, Value: 55}); rep.Value != 55 {
		t.Errorf("PUT = %+v", rep)
	}
	if rep := do(t, c, svc.Request{Op: svc.OpGetKey, Key: 5}); rep.Status != svc.StatusOK || rep.Value != 55 {
		t.Errorf("GETK 5 = %+v", rep)
	}
	if rep := do(t, c, svc.Request{Op: svc.OpGetKey, Key: 6}); rep.Status != svc.StatusNotFound {
		t.Errorf("GETK 6 = %+v", rep)
	}
	get := do(t, c, svc.Request{Op: svc.OpGet})
	// A retry of the last request is answered from the dedup table.
	if rep := do(t, c, svc.Request{Op: svc.OpGet, Seq: c.Seq()}); rep != get || get.Value != 10 {
		t.Errorf("GET retry = %+v, first %+v", rep, get)
	}
	if _, err := c.Do(t.Context(), svc.Request{Op: svc.OpGet, Seq: 1}); !errors.Is(err, svc.ErrStale) {
		t.Errorf("stale seq: %v", err)
	}
	st, _ := pd.Service()
	if st.Counter != 10 || st.Duplicates != 1 || st.Stale != 1 || st.Journal != st.Applied || st.Keys != 1 {
		t.Errorf("service stats %+v", st)
	}

	s := newHV(t, libxl.Options{"bind_retry": "2s"})
	if err := p.Suspend(dom); err != nil {
		t.Fatal(err)
	}
	r, rd := replicate(t, p, s, dom)
	if err := p.Destroy(dom); err != nil {
		t.Fatal(err)
	}
	if err := s.Activate(r); err != nil {
		t.Fatal(err)
	}
	if rd.Name() != "kv" || rd.NIC(0).Addr().String() != addr {
		t.Errorf("activated replica %q at %v, want kv at %s", rd.Name(), rd.NIC(0).Addr(), addr)
	}
	for i := uint64(11); i <= 20; i++ {
		if rep := do(t, c, svc.Request{Op: svc.OpIncr}); rep.Value != i {
			t.Fatalf("INCR after failover = %+v, want %d", rep, i)
		}
	}
	sum, err := svc.Check(rec.Records())
	if err != nil {
		t.Error(err)
	}
	if sum.MaxCounter != 20 || sum.Acked != 25 {
		t.Errorf("summary %+v", sum)
	}
}

// TestServiceEgress: with the egress redirected, replies wait for the
// caller, who puts them on the wire with Transmit.
func TestServiceEgress(t *testing.T) {
	addr := freeAddr(t)
	p := newHV(t, nil)
	_, pd := create(t, p, serviceConfig(addr))
	held := make(chan []byte, 4)
	pd.NIC(0).SetEgress(func(f []byte) { held <- slices.Clone(f) })
	c, err := svc.NewClient(addr, 9)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan svc.Reply, 1)
	go func() {
		rep, _ := c.Do(context.Background(), svc.Request{Op: svc.OpIncr})
		done <- rep
	}()
	f := <-held
	to, payload, err := sim.ParseFrame(f)
	if err != nil || !to.Addr().IsLoopback() {
		t.Fatalf("held frame to %v: %v", to, err)
	}
	if rep, err := svc.DecodeReply(payload); err != nil || rep.Value != 1 || rep.Client != 9 {
		t.Fatalf("held frame carries %+v, %v", rep, err)
	}
	if err := pd.NIC(0).Transmit(f); err != nil {
		t.Fatal(err)
	}
	if rep := <-done; rep.Value != 1 {
		t.Errorf("client got %+v", rep)
	}
	if err := pd.NIC(0).Transmit([]byte{9}); !errors.Is(err, sim.ErrFrame) {
		t.Errorf("Transmit(garbage) = %v", err)
	}
}

// TestActivateAddressInUse: Activate retries a busy address, then fails
// clearly and leaves the replica paused and activatable.
func TestActivateAddressInUse(t *testing.T) {
	addr := freeAddr(t)
	p := newHV(t, nil)
	dom, _ := create(t, p, serviceConfig(addr))
	if err := p.Suspend(dom); err != nil {
		t.Fatal(err)
	}
	s := newHV(t, libxl.Options{"bind_retry": "30ms"})
	r, rd := replicate(t, p, s, dom)
	err := s.Activate(r)
	if !errors.Is(err, sim.ErrBind) {
		t.Fatalf("Activate with the address held: %v", err)
	}
	if rd.Running() {
		t.Fatal("failed Activate left the replica running")
	}
	if err := p.Destroy(dom); err != nil {
		t.Fatal(err)
	}
	if err := s.Activate(r); err != nil {
		t.Fatalf("Activate once the address is free: %v", err)
	}
}

// TestDestroyReleasesEverything: Destroy of a domain with sockets ends its
// goroutines and frees its address at once.
func TestDestroyReleasesEverything(t *testing.T) {
	base := runtime.NumGoroutine()
	addr := freeAddr(t)
	h := newHV(t, nil)
	dom, _ := create(t, h, serviceConfig(addr))
	if err := h.Destroy(dom); err != nil {
		t.Fatal(err)
	}
	// The address is free again: a new domain can take it immediately.
	dom, _ = create(t, h, serviceConfig(addr))
	if err := h.Destroy(dom); err != nil {
		t.Fatal(err)
	}
	// Destroy waited for the domain's goroutines to finish their work;
	// each may still be between its deferred Done and its return, on a
	// thread the OS has not run yet (other packages' tests load the
	// machine). Poll for the count under a deadline: a goroutine Destroy
	// failed to stop never exits and fails the test.
	n := runtime.NumGoroutine()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
poll:
	for n > base {
		select {
		case <-tick.C:
			n = runtime.NumGoroutine()
		case <-deadline:
			break poll
		}
	}
	if n > base {
		t.Errorf("%d goroutines after Destroy, %d before the domain", n, base)
	}
}
