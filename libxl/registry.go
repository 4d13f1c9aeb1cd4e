package libxl

import (
	"fmt"
	"slices"
	"sync"
)

// Options are backend-specific settings (e.g. the sim's workload), given as
// key=value strings from the command line or the config.
type Options map[string]string

// Factory opens a backend.
type Factory func(opts Options) (Hypervisor, error)

var (
	regMu sync.Mutex
	// Protected by regMu.
	registry = map[string]Factory{}
)

// Register makes a backend available by name. It is called from the
// backend package's init and panics on a duplicate name (a build error).
func Register(name string, f Factory) {
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := registry[name]; dup {
		panic("libxl: backend registered twice: " + name)
	}
	registry[name] = f
}

// Open opens the backend registered as name.
func Open(name string, opts Options) (Hypervisor, error) {
	regMu.Lock()
	f, ok := registry[name]
	regMu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w %q (have: %v)", ErrUnknownBackend, name, Backends())
	}
	return f(opts)
}

// Backends lists the registered backend names, sorted.
func Backends() []string {
	regMu.Lock()
	defer regMu.Unlock()
	var names []string
	for n := range registry {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
