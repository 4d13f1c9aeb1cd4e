//go:build xen

package xen

/*
#include <stdint.h>
*/
import "C"

import (
	"errors"
	"runtime/cgo"
)

// errStopped marks a save that ended because Checkpoint said so.
var errStopped = errors.New("xen: save stopped by its checkpoint callback")

func session(h C.uintptr_t) *saveSession { return cgo.Handle(h).Value().(*saveSession) }

// libxc treats 0 from suspend and <= 0 from postcopy and checkpoint as
// failure; it aborts the stream then.

//export kemariSaveSuspend
func kemariSaveSuspend(h C.uintptr_t) C.int {
	s := session(h)
	if err := s.cb.Suspend(); err != nil {
		s.err = err
		return 0
	}
	return 1
}

//export kemariSavePostcopy
func kemariSavePostcopy(h C.uintptr_t) C.int {
	s := session(h)
	if err := s.cb.Postcopy(); err != nil {
		s.err = err
		return 0
	}
	return 1
}

//export kemariSaveCheckpoint
func kemariSaveCheckpoint(h C.uintptr_t) C.int {
	s := session(h)
	if !s.cb.Checkpoint() {
		s.err = errStopped
		return 0
	}
	return 1
}

// Values of XGS_POLICY_* (xenguest.h).
const (
	policyContinue    = 0
	policyStopAndCopy = 1
)

//export kemariSavePrecopy
func kemariSavePrecopy(h C.uintptr_t, iteration C.uint, dirty C.long) C.int {
	s := session(h)
	if s.cb.Precopy != nil && s.cb.Precopy(int(iteration), int64(dirty)) {
		return policyContinue
	}
	return policyStopAndCopy
}
