package netbuf

import (
	"errors"
	"net"
	"net/netip"
)

// Sentinel errors of the contract.
var (
	// ErrClosed: the buffer was closed.
	ErrClosed = errors.New("netbuf: buffer closed")
	// ErrOrder: a barrier or release epoch went backwards.
	ErrOrder = errors.New("netbuf: epoch out of order")
	// ErrUnsupported: the backend cannot run on this host; the message
	// names the missing kernel feature.
	ErrUnsupported = errors.New("netbuf: backend unsupported here")
	// ErrLimit: the buffer limit was hit and frames were dropped.
	ErrLimit = errors.New("netbuf: buffer limit reached")
)

// Device names the guest NIC whose output is held.
type Device struct {
	Name   string           // dom0 backend device (e.g. "vif3.0"); sim: "sim:<dom>.<nic>"
	MAC    net.HardwareAddr // guest MAC
	Addrs  []netip.Addr     // guest addresses
	Bridge string           // bridge the device is a port of, if any
}

// Stats are a buffer's counters since Open.
type Stats struct {
	HeldFrames, HeldBytes uint64 // currently held
	Released, Dropped     uint64 // frames
	ReleasedBytes         uint64
	LimitHits             uint64 // times the limit dropped a frame
	LastRelease           uint64 // highest epoch released
}

// Capabilities say what a backend can do beyond the contract's core.
type Capabilities struct {
	// Notifies: Waiting delivers a signal when a frame is held. Backends
	// that hold frames in the kernel without seeing them (plug) cannot,
	// and event mode then falls back to its maximum interval.
	Notifies bool
}

// Buffer holds the output of one device.
//
// Concurrency: Barrier, Release, Unprotect, Protect, Discard and Close are
// called by one goroutine (the primary loop); Stats and Waiting may be
// called from any goroutine.
type Buffer interface {
	// Barrier closes the current epoch: every frame held now and not yet
	// under a barrier belongs to epoch. Called while the guest is
	// suspended, so no frame of epoch+1 can slip before it.
	//
	// Preconditions: epoch greater than every earlier barrier.
	// Success: the barrier is recorded. Failure: ErrOrder, ErrClosed.
	Barrier(epoch uint64) error

	// Release lets out, in order, every frame under barriers <= epoch.
	//
	// Preconditions: a barrier for epoch exists (or Release is a no-op for
	// epochs already released). Success: those frames left the host.
	// Failure: ErrClosed; nothing is released twice.
	Release(epoch uint64) error

	// Unprotect releases everything held (under any barrier or none) and
	// lets further output pass unheld, for a primary that lost its standby
	// and may run unprotected (I5). Protect starts holding again.
	Unprotect() error
	// Protect starts holding again after Unprotect (re-protection); the
	// next Barrier continues the epoch sequence.
	Protect() error

	// Discard drops every held frame without releasing it (a primary that
	// was fenced, or a stop that discards).
	Discard() error

	// Close drops whatever is held (fail closed) and undoes the setup.
	Close() error

	// Waiting returns a channel that receives a value when a frame is held
	// that is not yet under a barrier (Kemari's event mode); nil when the
	// backend cannot tell (see Capabilities).
	Waiting() <-chan struct{}

	Stats() Stats
	Capabilities() Capabilities
}

// Backend opens buffers for devices on this host.
type Backend interface {
	// Name is "mem", "plug" or "nfqueue".
	Name() string
	// Probe reports whether the backend can run here; the error wraps
	// ErrUnsupported and names each missing kernel feature.
	Probe() error
	// Open starts holding the output of dev.
	Open(dev Device) (Buffer, error)
}
