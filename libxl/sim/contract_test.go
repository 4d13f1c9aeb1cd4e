package sim_test

import (
	"testing"

	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/hvtest"
	"github.com/xl-kemari/xl-kemari/libxl/sim"
)

func simHV(t *testing.T, hv libxl.Hypervisor) *sim.Hypervisor {
	t.Helper()
	h, ok := hv.(*sim.Hypervisor)
	if !ok {
		t.Fatalf("hypervisor is %T, not *sim.Hypervisor", hv)
	}
	return h
}

// TestContract runs the hypervisor contract suite against sim, each subtest
// in a synctest bubble (which also proves no goroutine outlives it).
func TestContract(t *testing.T) {
	hvtest.Run(t, hvtest.Factory{
		Open: func(t *testing.T) libxl.Hypervisor {
			hv, err := libxl.Open("sim", nil)
			if err != nil {
				t.Fatal(err)
			}
			h := simHV(t, hv)
			t.Cleanup(func() {
				h.DestroyAll()
				h.Close()
			})
			return hv
		},
		Create: func(t *testing.T, hv libxl.Hypervisor, pages uint64) libxl.DomID {
			dom, err := simHV(t, hv).CreateDomain(sim.DomainConfig{
				Pages: pages, Workload: sim.WorkloadUniform, Rate: 20000, Seed: 7, VCPUs: 2,
			})
			if err != nil {
				t.Fatal(err)
			}
			return dom
		},
		Touch: func(t *testing.T, hv libxl.Hypervisor, dom libxl.DomID, pfns []libxl.PFN) {
			d, err := simHV(t, hv).Domain(dom)
			if err == nil {
				err = d.Touch(pfns)
			}
			if err != nil {
				t.Error(err)
			}
		},
		Advance: hvtest.Virtual(20 * sim.DefaultQuantum),
		Bubble:  true,
	})
}
