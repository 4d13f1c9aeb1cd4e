package libxl

import "errors"

// Sentinel errors every backend returns (wrapped) for the conditions below,
// so the engine can tell them apart without knowing the backend.
var (
	// ErrNoDomain: the domain does not exist (any more).
	ErrNoDomain = errors.New("libxl: no such domain")
	// ErrBadState: the call is not valid in the domain's current state,
	// e.g. ReadPages on a running domain, Resume on a running domain.
	ErrBadState = errors.New("libxl: domain in wrong state for this call")
	// ErrRange: a PFN, vCPU or device index is outside the domain.
	ErrRange = errors.New("libxl: out of range")
	// ErrUnsupported: the backend cannot do this for this domain (for
	// example own capture of a PV guest).
	ErrUnsupported = errors.New("libxl: unsupported")
	// ErrUnknownBackend: Lookup found no backend of that name.
	ErrUnknownBackend = errors.New("libxl: unknown hypervisor backend")
	// ErrInjected: a simulated fault (sim only), so tests can recognise it.
	ErrInjected = errors.New("libxl: injected fault")
)
