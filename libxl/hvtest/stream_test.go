package hvtest_test

import (
	"encoding/binary"
	"fmt"
	"sync"
	"testing"

	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/hvtest"
	"github.com/xl-kemari/xl-kemari/libxl/sim"
)

// streamSim is the simulator with the rules of libxl.StreamCapture laid
// over its domains (all PVH): it answers as the xen backend's stream does
// where a stream differs (a running domain's log read only before the
// stream's first checkpoint, a checkpoint's pages only readable after its
// ReadAndClearDirty, and then only the pages it carries; a checkpoint
// taken at its suspension and readable after Resume until the next
// Suspend, as libxc writes it) and reports every rule the caller breaks
// (the state taken twice, or before the pages, a checkpoint left without
// its state, a replica fed out of order). It lets the suite's stream path
// run, and be checked, without Xen.
type streamSim struct {
	*sim.Hypervisor
	t *testing.T

	mu      sync.Mutex
	streams map[libxl.DomID]*simStream // while log-dirty is on
	feeds   map[libxl.DomID]*feed      // replicas
	next    uint64
}

type simStream struct {
	id        uint64
	seq       uint64 // checkpoints whose state was taken
	suspended bool   // by Suspend during the stream: a checkpoint
	read      bool   // its ReadAndClearDirty was called
	paged     bool   // ReadPages after it
	captured  bool
	carried   *libxl.Bitmap // the pages the checkpoint carries; nil: all
	// After Resume, until the next Suspend: the checkpoint as taken.
	open  bool
	owed  *libxl.Bitmap // its dirty set, if ReadAndClearDirty has not returned it yet
	pages []byte        // every page at the suspension
	state []libxl.State // the state at the suspension
}

type feed struct{ stream, seq uint64 }

// tagIndex marks the blob CaptureState adds: which stream, which
// checkpoint.
const tagIndex = 0x5354

func newStreamSim(t *testing.T) *streamSim {
	h, err := sim.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	f := &streamSim{Hypervisor: h, t: t, streams: map[libxl.DomID]*simStream{}, feeds: map[libxl.DomID]*feed{}}
	t.Cleanup(func() {
		h.DestroyAll()
		h.Close()
	})
	return f
}

func (f *streamSim) violate(format string, args ...any) {
	f.t.Errorf("StreamCapture rule broken: "+format, args...)
}

func (f *streamSim) Source() libxl.Source { return f }
func (f *streamSim) Sink() libxl.Sink     { return f }

func (f *streamSim) StreamCaptured(t libxl.DomainType) bool { return t == libxl.TypePVH }

func (f *streamSim) stream(dom libxl.DomID) *simStream {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.streams[dom]
}

func (f *streamSim) SetLogDirty(dom libxl.DomID, on bool) error {
	if err := f.Hypervisor.SetLogDirty(dom, on); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.streams, dom)
	if on {
		f.next++
		f.streams[dom] = &simStream{id: f.next}
	}
	return nil
}

func (f *streamSim) Suspend(dom libxl.DomID) error {
	if err := f.Hypervisor.Suspend(dom); err != nil {
		return err
	}
	if s := f.stream(dom); s != nil {
		if s.open && !s.captured {
			f.violate("checkpoint of stream %d left without its CaptureState", s.id)
		}
		*s = simStream{id: s.id, seq: s.seq, suspended: true}
	}
	return nil
}

func (f *streamSim) ReadAndClearDirty(dom libxl.DomID, dst *libxl.Bitmap) error {
	s := f.stream(dom)
	if s == nil {
		return f.Hypervisor.ReadAndClearDirty(dom, dst)
	}
	if s.open && s.owed != nil {
		dst.Or(s.owed)
		s.owed, s.read = nil, true
		return nil
	}
	if s.open {
		return nil // a second read of the checkpoint: nothing new
	}
	if !s.suspended && s.seq > 0 {
		return fmt.Errorf("streamsim: %w: pre-copy rounds end with the stream's first checkpoint", libxl.ErrBadState)
	}
	got := libxl.NewBitmap(dst.Len())
	if err := f.Hypervisor.ReadAndClearDirty(dom, got); err != nil {
		return err
	}
	dst.Or(got)
	if s.suspended && !s.read {
		s.read = true
		if s.seq > 0 {
			s.carried = got
		}
	}
	return nil
}

func (f *streamSim) ReadPages(dom libxl.DomID, pfns []libxl.PFN, dst []byte) error {
	s := f.stream(dom)
	if s != nil && (s.suspended || s.open) {
		if !s.read {
			return fmt.Errorf("streamsim: %w: no checkpoint read yet", libxl.ErrBadState)
		}
		for _, p := range pfns {
			if s.carried != nil && !s.carried.Test(p) {
				return fmt.Errorf("streamsim: pfn %d is not in the checkpoint: %w", p, libxl.ErrRange)
			}
		}
		s.paged = true
	}
	if s != nil && s.open {
		if len(dst) < len(pfns)*libxl.PageSize {
			return fmt.Errorf("streamsim: short buffer: %w", libxl.ErrRange)
		}
		for i, p := range pfns {
			if int(p+1)*libxl.PageSize > len(s.pages) {
				return fmt.Errorf("streamsim: pfn %d: %w", p, libxl.ErrRange)
			}
			copy(dst[i*libxl.PageSize:(i+1)*libxl.PageSize], s.pages[int(p)*libxl.PageSize:])
		}
		return nil
	}
	return f.Hypervisor.ReadPages(dom, pfns, dst)
}

func (f *streamSim) CaptureState(dom libxl.DomID, dst []libxl.State) ([]libxl.State, error) {
	s := f.stream(dom)
	if s == nil || (!s.suspended && !s.open) {
		return f.Hypervisor.CaptureState(dom, dst)
	}
	switch {
	case s.captured:
		f.violate("CaptureState twice in checkpoint %d of stream %d", s.seq, s.id)
		return dst, fmt.Errorf("streamsim: %w: state already taken", libxl.ErrBadState)
	case !s.read || !s.paged:
		f.violate("CaptureState before the checkpoint's ReadAndClearDirty and ReadPages (stream %d)", s.id)
		return dst, fmt.Errorf("streamsim: %w: no checkpoint read yet", libxl.ErrBadState)
	}
	var err error
	if s.open {
		dst = append(dst, s.state...)
	} else if dst, err = f.Hypervisor.CaptureState(dom, dst); err != nil {
		return dst, err
	}
	s.captured = true
	s.seq++
	tag := binary.LittleEndian.AppendUint64(nil, s.id)
	tag = binary.LittleEndian.AppendUint64(tag, s.seq)
	return append(dst, libxl.State{Kind: libxl.StatePlatform, Index: tagIndex, Data: tag}), nil
}

func (f *streamSim) Resume(dom libxl.DomID) error {
	if s := f.stream(dom); s != nil && s.suspended {
		// The checkpoint as libxc writes it during the suspension: its
		// dirty set, if nobody read it yet, every page and the state.
		if !s.read {
			info, err := f.Hypervisor.Describe(dom)
			if err != nil {
				return err
			}
			got := libxl.NewBitmap(info.Pages)
			if err := f.Hypervisor.ReadAndClearDirty(dom, got); err != nil {
				return err
			}
			s.owed = got
			if s.seq > 0 {
				s.carried = got
			}
		}
		info, err := f.Hypervisor.Describe(dom)
		if err != nil {
			return err
		}
		all := make([]libxl.PFN, info.Pages)
		for i := range all {
			all[i] = libxl.PFN(i)
		}
		s.pages = make([]byte, int(info.Pages)*libxl.PageSize)
		if err := f.Hypervisor.ReadPages(dom, all, s.pages); err != nil {
			return err
		}
		if !s.captured {
			if s.state, err = f.Hypervisor.CaptureState(dom, nil); err != nil {
				return err
			}
		}
		s.suspended, s.open = false, true
	}
	return f.Hypervisor.Resume(dom)
}

func (f *streamSim) Destroy(dom libxl.DomID) error {
	if err := f.Hypervisor.Destroy(dom); err != nil {
		return err
	}
	f.mu.Lock()
	delete(f.streams, dom)
	delete(f.feeds, dom)
	f.mu.Unlock()
	return nil
}

func (f *streamSim) CreateReplica(info libxl.DomainInfo) (libxl.DomID, error) {
	r, err := f.Hypervisor.CreateReplica(info)
	if err == nil {
		f.mu.Lock()
		f.feeds[r] = &feed{}
		f.mu.Unlock()
	}
	return r, err
}

func (f *streamSim) RestoreState(dom libxl.DomID, st []libxl.State) error {
	var rest []libxl.State
	var stream, seq uint64
	tags := 0
	for _, b := range st {
		if b.Kind == libxl.StatePlatform && b.Index == tagIndex && len(b.Data) == 16 {
			stream, seq = binary.LittleEndian.Uint64(b.Data), binary.LittleEndian.Uint64(b.Data[8:])
			tags++
			continue
		}
		rest = append(rest, b)
	}
	if err := f.Hypervisor.RestoreState(dom, rest); err != nil || tags == 0 {
		return err // what the suite feeds on purpose to see it refused
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.feeds[dom]
	switch {
	case tags != 1:
		f.violate("replica %d: an epoch with %d captures", dom, tags)
	case r == nil:
		f.violate("replica %d: state for a replica never created", dom)
	case r.stream == 0 && seq != 1:
		f.violate("replica %d: first state is checkpoint %d of stream %d", dom, seq, stream)
	case r.stream != 0 && (stream != r.stream || seq != r.seq+1):
		f.violate("replica %d: checkpoint %d of stream %d after checkpoint %d of stream %d", dom, seq, stream, r.seq, r.stream)
	}
	if r != nil {
		r.stream, r.seq = stream, seq
	}
	return nil
}

// TestContractStream runs the suite against the simulator with the rules
// of a stream capture: the suite's stream path, as the xen backend
// (pv=stream) takes it in the lab, checked without Xen.
func TestContractStream(t *testing.T) {
	hvtest.Run(t, hvtest.Factory{
		Open: func(t *testing.T) libxl.Hypervisor { return newStreamSim(t) },
		Create: func(t *testing.T, hv libxl.Hypervisor, pages uint64) libxl.DomID {
			dom, err := hv.(*streamSim).CreateDomain(sim.DomainConfig{
				Pages: pages, Workload: sim.WorkloadUniform, Rate: 20000, Seed: 7, VCPUs: 2,
			})
			if err != nil {
				t.Fatal(err)
			}
			return dom
		},
		NoTouch: "a stream's checks run on the guest's own writes, as on Xen",
		Advance: hvtest.Virtual(20 * sim.DefaultQuantum),
		Bubble:  true,
	})
}
