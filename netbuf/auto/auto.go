package auto

import (
	"errors"
	"fmt"

	"github.com/xl-kemari/xl-kemari/netbuf"
	"github.com/xl-kemari/xl-kemari/netbuf/nfqueue"
	"github.com/xl-kemari/xl-kemari/netbuf/plug"
)

// Sentinel errors.
var (
	// ErrMode: the netbuf mode is not one of auto, plug, nfqueue, none.
	ErrMode = errors.New("auto: unknown netbuf mode")
	// ErrUnsafe: mode none was asked for without unsafe.
	ErrUnsafe = errors.New("auto: netbuf=none releases output before the standby acknowledges; it needs unsafe=1")
)

// Options say which backend to use and where.
type Options struct {
	// Mode is "auto" (or ""), "plug", "nfqueue" or "none".
	Mode string
	// Unsafe allows Mode "none".
	Unsafe bool
	// NetNS is dom0's network namespace path ("" = this process's).
	NetNS string
	// Plug and Nfqueue tune the backends; their NetNS fields are set
	// from NetNS.
	Plug    plug.Config
	Nfqueue nfqueue.Config
}

// Select returns the backend for o: for "auto", plug if the kernel has
// it, else nfqueue, else an error wrapping netbuf.ErrUnsupported that
// names what each lacks. An explicitly named backend is probed too.
func Select(o Options) (netbuf.Backend, error) {
	o.Plug.NetNS, o.Nfqueue.NetNS = o.NetNS, o.NetNS
	p, q := plug.New(o.Plug), nfqueue.New(o.Nfqueue)
	switch o.Mode {
	case "", "auto":
		perr := p.Probe()
		if perr == nil {
			return p, nil
		}
		qerr := q.Probe()
		if qerr == nil {
			return q, nil
		}
		return nil, fmt.Errorf("%w: netbuf=auto found no usable backend: %v; %v", netbuf.ErrUnsupported, unwrapMsg(perr), unwrapMsg(qerr))
	case "plug":
		return probed(p)
	case "nfqueue":
		return probed(q)
	case "none":
		if !o.Unsafe {
			return nil, ErrUnsafe
		}
		return None{}, nil
	}
	return nil, fmt.Errorf("%w: %q (want auto, plug, nfqueue or none)", ErrMode, o.Mode)
}

func probed(b netbuf.Backend) (netbuf.Backend, error) {
	if err := b.Probe(); err != nil {
		return nil, err
	}
	return b, nil
}

// unwrapMsg drops the repeated sentinel prefix from a probe error.
func unwrapMsg(err error) string {
	s := err.Error()
	prefix := netbuf.ErrUnsupported.Error() + ": "
	if len(s) > len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):]
	}
	return s
}

// Cleanup removes stale setup of both kernel backends from the namespace
// at netnsPath ("" = this one): plug IFBs whose owner process is gone
// (with their ingress qdiscs) and nfqueue rules, chains and veths whose
// queue no live process holds. Call it at start, before Open.
func Cleanup(netnsPath string) error {
	var errs []error
	if err := plug.CleanupStale(netnsPath); err != nil {
		errs = append(errs, err)
	}
	if err := nfqueue.CleanupStale(netnsPath); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// None is the netbuf=none backend: output is never held. It exists so
// that an unsafe configuration runs through the same code path.
type None struct{}

// Name implements netbuf.Backend.
func (None) Name() string { return "none" }

// Probe implements netbuf.Backend; none runs anywhere.
func (None) Probe() error { return nil }

// Open implements netbuf.Backend.
func (None) Open(netbuf.Device) (netbuf.Buffer, error) { return &noneBuffer{}, nil }

type noneBuffer struct{ closed bool }

func (b *noneBuffer) check() error {
	if b.closed {
		return netbuf.ErrClosed
	}
	return nil
}

func (b *noneBuffer) Barrier(uint64) error              { return b.check() }
func (b *noneBuffer) Release(uint64) error              { return b.check() }
func (b *noneBuffer) Unprotect() error                  { return b.check() }
func (b *noneBuffer) Protect() error                    { return b.check() }
func (b *noneBuffer) Discard() error                    { return nil }
func (b *noneBuffer) Close() error                      { b.closed = true; return nil }
func (b *noneBuffer) Waiting() <-chan struct{}          { return nil }
func (b *noneBuffer) Stats() netbuf.Stats               { return netbuf.Stats{} }
func (b *noneBuffer) Capabilities() netbuf.Capabilities { return netbuf.Capabilities{} }
