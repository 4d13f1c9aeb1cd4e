// Package hvtest is the contract test suite of the hypervisor interface
// (package libxl): one set of checks that every backend must pass, so the
// simulator cannot drift from what the Xen backend does and vice versa.
//
// A backend's tests describe how to open it and how to start a guest that
// keeps writing its memory, then hand that to Run:
//
//	func TestContract(t *testing.T) {
//		hvtest.Run(t, hvtest.Factory{
//			Open:    func(t *testing.T) libxl.Hypervisor { ... },
//			Create:  func(t *testing.T, hv libxl.Hypervisor, pages uint64) libxl.DomID { ... },
//			Touch:   ...,             // optional: exact dirty sets
//			Advance: func(t *testing.T) { time.Sleep(20 * time.Millisecond) },
//			Bubble:  true,            // sim: each subtest in a synctest bubble
//		})
//	}
//
// Run checks every documented precondition, success and failure of Source
// and Sink: suspend/resume states, the dirty log (no guest write while
// suspended, read-and-clear loses no write, SetLogDirty(true) marks every
// page, the log survives a failed read), page ranges and errors, state
// capture and restore, a replica built from Describe on a second host
// equal to its primary byte for byte, activation, destruction and
// ErrNoDomain after it.
//
// RequiresXen and RequiresRoot skip tests, with the reason, on machines
// that cannot run them.
package hvtest
