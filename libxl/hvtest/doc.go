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
//			Touch:   ...,             // optional: exact dirty sets (else NoTouch says why not)
//			Advance: hvtest.Virtual(20 * time.Millisecond), // virtual time: no wall clock
//			Bubble:  true,            // sim: each subtest in a synctest bubble
//		})
//	}
//
// A backend whose guests are slow to start (Xen) sets Reuse, so that the
// subtests share one domain, Spawn, for a domain that need not have
// booted, Pages, the fixed size of its guests, and Boot, so that Replica
// can tell a resumed guest from a restarted one.
//
// Run checks every documented precondition, success and failure of Source
// and Sink: suspend/resume states, the dirty log (no guest write while
// suspended, read-and-clear loses no write, SetLogDirty(true) marks every
// page, the log survives a failed read), page ranges and errors, state
// capture and restore, a replica built from Describe on a second host
// equal to its primary byte for byte, activation, destruction and
// ErrNoDomain after it.
//
// A backend that captures a domain type as a stream (libxl.StreamCapture:
// the xen backend's PV guests) is driven by the stream's rules: its
// memory is what the stream carries, readable whole only up to the first
// checkpoint; each checkpoint's state is taken once, after its pages; a
// replica gets the stream's checkpoints in order. Each subtest's comment
// says what it then checks. TestContractStream runs the suite on the
// simulator under those rules, so the stream path is checked without Xen.
//
// RequiresXen and RequiresRoot skip tests, with the reason, on machines
// that cannot run them.
package hvtest
