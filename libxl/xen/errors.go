package xen

import (
	"errors"
	"strconv"

	"github.com/xl-kemari/xl-kemari/libxl"
)

// Error is a libxl error code (enum libxl_error in _libxl_types.h), as the
// libxl_* functions return it. It is comparable, so callers can test
// err == ErrorDomainNotfound after errors.As, and it matches the contract's
// sentinels through errors.Is where the meaning is the same.
type Error int

// libxl error codes, with the values of Xen 4.17's _libxl_types.h.
const (
	ErrorNonspecific                  Error = -1  // ERROR_NONSPECIFIC
	ErrorVersion                      Error = -2  // ERROR_VERSION
	ErrorFail                         Error = -3  // ERROR_FAIL
	ErrorNi                           Error = -4  // ERROR_NI: not implemented
	ErrorNomem                        Error = -5  // ERROR_NOMEM
	ErrorInval                        Error = -6  // ERROR_INVAL
	ErrorBadfail                      Error = -7  // ERROR_BADFAIL
	ErrorGuestTimedout                Error = -8  // ERROR_GUEST_TIMEDOUT
	ErrorTimedout                     Error = -9  // ERROR_TIMEDOUT
	ErrorNoparavirt                   Error = -10 // ERROR_NOPARAVIRT
	ErrorNotReady                     Error = -11 // ERROR_NOT_READY
	ErrorOseventRegFail               Error = -12 // ERROR_OSEVENT_REG_FAIL
	ErrorBufferfull                   Error = -13 // ERROR_BUFFERFULL
	ErrorUnknownChild                 Error = -14 // ERROR_UNKNOWN_CHILD
	ErrorLockFail                     Error = -15 // ERROR_LOCK_FAIL
	ErrorJSONConfigEmpty              Error = -16 // ERROR_JSON_CONFIG_EMPTY
	ErrorDeviceExists                 Error = -17 // ERROR_DEVICE_EXISTS
	ErrorCheckpointDevopsDoesNotMatch Error = -18 // ERROR_CHECKPOINT_DEVOPS_DOES_NOT_MATCH
	ErrorCheckpointDeviceNotSupported Error = -19 // ERROR_CHECKPOINT_DEVICE_NOT_SUPPORTED
	ErrorVnumaConfigInvalid           Error = -20 // ERROR_VNUMA_CONFIG_INVALID
	ErrorDomainNotfound               Error = -21 // ERROR_DOMAIN_NOTFOUND
	ErrorAborted                      Error = -22 // ERROR_ABORTED
	ErrorNotfound                     Error = -23 // ERROR_NOTFOUND
	ErrorDomainDestroyed              Error = -24 // ERROR_DOMAIN_DESTROYED
	ErrorFeatureRemoved               Error = -25 // ERROR_FEATURE_REMOVED
	ErrorProtocolErrorQmp             Error = -26 // ERROR_PROTOCOL_ERROR_QMP
	ErrorUnknownQmpError              Error = -27 // ERROR_UNKNOWN_QMP_ERROR
	ErrorQmpGenericError              Error = -28 // ERROR_QMP_GENERIC_ERROR
	ErrorQmpCommandNotFound           Error = -29 // ERROR_QMP_COMMAND_NOT_FOUND
	ErrorQmpDeviceNotActive           Error = -30 // ERROR_QMP_DEVICE_NOT_ACTIVE
	ErrorQmpDeviceNotFound            Error = -31 // ERROR_QMP_DEVICE_NOT_FOUND
	ErrorQemuAPI                      Error = -32 // ERROR_QEMU_API
)

var errorNames = map[Error]string{
	ErrorNonspecific:                  "non-specific error",
	ErrorVersion:                      "wrong version",
	ErrorFail:                         "failed",
	ErrorNi:                           "not implemented",
	ErrorNomem:                        "no memory",
	ErrorInval:                        "invalid argument",
	ErrorBadfail:                      "bad failure",
	ErrorGuestTimedout:                "guest timed out",
	ErrorTimedout:                     "timed out",
	ErrorNoparavirt:                   "no paravirtualisation",
	ErrorNotReady:                     "not ready",
	ErrorOseventRegFail:               "OS event registration failed",
	ErrorBufferfull:                   "buffer full",
	ErrorUnknownChild:                 "unknown child",
	ErrorLockFail:                     "lock failed",
	ErrorJSONConfigEmpty:              "JSON config empty",
	ErrorDeviceExists:                 "device exists",
	ErrorCheckpointDevopsDoesNotMatch: "checkpoint devops do not match",
	ErrorCheckpointDeviceNotSupported: "checkpoint device not supported",
	ErrorVnumaConfigInvalid:           "vNUMA config invalid",
	ErrorDomainNotfound:               "domain not found",
	ErrorAborted:                      "aborted",
	ErrorNotfound:                     "not found",
	ErrorDomainDestroyed:              "domain destroyed",
	ErrorFeatureRemoved:               "feature removed",
	ErrorProtocolErrorQmp:             "QMP protocol error",
	ErrorUnknownQmpError:              "unknown QMP error",
	ErrorQmpGenericError:              "QMP generic error",
	ErrorQmpCommandNotFound:           "QMP command not found",
	ErrorQmpDeviceNotActive:           "QMP device not active",
	ErrorQmpDeviceNotFound:            "QMP device not found",
	ErrorQemuAPI:                      "QEMU API error",
}

// Error names the code as libxl's documentation does.
func (e Error) Error() string {
	if s, ok := errorNames[e]; ok {
		return "libxl error " + strconv.Itoa(int(e)) + ": " + s
	}
	return "libxl error " + strconv.Itoa(int(e))
}

// Is lets errors.Is(err, libxl.ErrNoDomain) and errors.Is(err,
// libxl.ErrUnsupported) see through a libxl code with that meaning, so the
// engine need not know this package.
func (e Error) Is(target error) bool {
	switch target {
	case libxl.ErrNoDomain:
		return e == ErrorDomainNotfound || e == ErrorDomainDestroyed
	case libxl.ErrUnsupported:
		return e == ErrorNi || e == ErrorFeatureRemoved || e == ErrorNoparavirt
	}
	return false
}

// libxlError turns a libxl return code into an error: nil for 0 and for
// positive values (some calls return a count), Error otherwise.
func libxlError(rc int) error {
	if rc >= 0 {
		return nil
	}
	return Error(rc)
}

// Sentinel errors of this package, wrapped with %w and the call's details.
var (
	// ErrNoXen: the process does not run in a Xen dom0 with the privcmd
	// interface (or lacks the privilege to open it).
	ErrNoXen = errors.New("xen: cannot open the Xen control interfaces (not a dom0, or not root)")
	// ErrClosed: the Context or Hypervisor was used after Close.
	ErrClosed = errors.New("xen: handle closed")
	// ErrP2M: the PV guest's physical-to-machine table could not be read
	// or is inconsistent.
	ErrP2M = errors.New("xen: cannot read the PV guest's p2m")
	// ErrHVMContext: an HVM context record stream is malformed.
	ErrHVMContext = errors.New("xen: malformed HVM context")
)
