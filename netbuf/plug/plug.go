package plug

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/mdlayher/netlink"
	vnl "github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xl-kemari/xl-kemari/netbuf"
	"github.com/xl-kemari/xl-kemari/netbuf/auto/host"
)

// Sentinel errors of this backend.
var (
	// ErrSetup: a device, qdisc or filter could not be set up; Open undid
	// whatever it had done.
	ErrSetup = errors.New("plug: setup failed")
	// ErrDevice: the device does not exist or its name is unusable.
	ErrDevice = errors.New("plug: device not usable")
	// ErrCommand: a plug command was refused by the kernel.
	ErrCommand = errors.New("plug: qdisc command failed")
)

// Names and tags that mark this backend's setup for Cleanup.
const (
	IFBPrefix = "xlkb"
	AliasTag  = "xl-kemari:"
)

// DefaultLimit is the plug's byte limit when Config.Limit is 0 (upstream
// Remus uses 10 MB; a checkpoint interval of a fast guest needs more).
const DefaultLimit = 64 << 20

// KernelFeatures lists the kernel options this backend needs.
var KernelFeatures = []string{"CONFIG_NET_SCH_PLUG", "CONFIG_IFB", "CONFIG_NET_SCH_INGRESS", "CONFIG_NET_ACT_MIRRED", "CONFIG_NET_CLS_U32"}

// Config tunes the backend; the zero value is the production setting.
type Config struct {
	// NetNS is the path of dom0's network namespace ("" = this one).
	NetNS string
	// Limit is the plug qdisc's byte limit; frames beyond it are dropped
	// and counted in Stats.LimitHits.
	Limit uint32
}

// Backend opens plug buffers. It is safe for concurrent use.
type Backend struct {
	cfg Config
	mu  sync.Mutex
}

var _ netbuf.Backend = (*Backend)(nil)

// New returns a backend with cfg.
func New(cfg Config) *Backend {
	if cfg.Limit == 0 {
		cfg.Limit = DefaultLimit
	}
	return &Backend{cfg: cfg}
}

// Name implements netbuf.Backend.
func (b *Backend) Name() string { return "plug" }

// Probe implements netbuf.Backend: it names each missing kernel option
// (the Debian dom0 kernel has them all as modules).
func (b *Backend) Probe() error {
	feats, err := host.KernelConfig()
	if err != nil {
		return fmt.Errorf("%w: plug: cannot tell whether the kernel has %s: %v", netbuf.ErrUnsupported, strings.Join(KernelFeatures, ", "), err)
	}
	if m := feats.Missing(KernelFeatures...); len(m) > 0 {
		return fmt.Errorf("%w: plug needs %s (modules sch_plug, ifb, sch_ingress, act_mirred, cls_u32)", netbuf.ErrUnsupported, strings.Join(m, ", "))
	}
	return nil
}

// Open implements netbuf.Backend: it starts holding every frame dev sends.
func (b *Backend) Open(dev netbuf.Device) (netbuf.Buffer, error) {
	if dev.Name == "" || len(dev.Name) > 15 || strings.ContainsAny(dev.Name, "/: \t\n") {
		return nil, fmt.Errorf("%w: bad interface name %q", ErrDevice, dev.Name)
	}
	k, err := b.setup(dev.Name)
	if err != nil {
		return nil, err
	}
	return newBuffer(k), nil
}

// kernel is the ctl of a real IFB + plug setup.
type kernel struct {
	nl      *vnl.Handle
	rt      *netlink.Conn
	dev     vnl.Link
	ifb     vnl.Link
	handle  uint32 // current plug qdisc handle: alternates 1: and 2:
	limit   uint32
	ingress bool
	base    counters // of plug qdiscs replaced by Reset
}

func (b *Backend) setup(devName string) (k *kernel, err error) {
	b.mu.Lock() // IFB name choice and creation must not race
	defer b.mu.Unlock()
	k = &kernel{handle: 0x10000, limit: b.cfg.Limit}
	var ns netns.NsHandle = -1
	if b.cfg.NetNS != "" {
		if ns, err = netns.GetFromPath(b.cfg.NetNS); err != nil {
			return nil, fmt.Errorf("%w: %w: %v", ErrSetup, host.ErrNetNS, err)
		}
		defer ns.Close()
		k.nl, err = vnl.NewHandleAt(ns)
	} else {
		k.nl, err = vnl.NewHandle()
	}
	if err != nil {
		return nil, fmt.Errorf("%w: netlink: %v", ErrSetup, err)
	}
	defer func() {
		if err != nil {
			k.teardown()
		}
	}()
	cfg := &netlink.Config{}
	if ns >= 0 {
		cfg.NetNS = int(ns)
	}
	if k.rt, err = netlink.Dial(unix.NETLINK_ROUTE, cfg); err != nil {
		return k, fmt.Errorf("%w: rtnetlink: %v", ErrSetup, err)
	}
	if k.dev, err = k.nl.LinkByName(devName); err != nil {
		return k, fmt.Errorf("%w: %s: %v", ErrDevice, devName, err)
	}
	name, err := freeIFB(k.nl)
	if err != nil {
		return k, err
	}
	ifb := &vnl.Ifb{LinkAttrs: vnl.LinkAttrs{Name: name, TxQLen: 1000}}
	if err = k.nl.LinkAdd(ifb); err != nil {
		return k, fmt.Errorf("%w: add ifb %s: %v", ErrSetup, name, err)
	}
	if k.ifb, err = k.nl.LinkByName(name); err != nil {
		return k, fmt.Errorf("%w: %s: %v", ErrSetup, name, err)
	}
	if err = k.nl.LinkSetAlias(k.ifb, fmt.Sprintf("%spid=%d:dev=%s", AliasTag, os.Getpid(), devName)); err != nil {
		return k, fmt.Errorf("%w: alias %s: %v", ErrSetup, name, err)
	}
	if err = k.nl.LinkSetUp(k.ifb); err != nil {
		return k, fmt.Errorf("%w: up %s: %v", ErrSetup, name, err)
	}
	if err = k.send(qdiscMsg(int32(k.ifb.Attrs().Index), k.handle, TCQPlugLimit, k.limit), netlink.Create|netlink.Excl); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL) {
			return k, fmt.Errorf("%w: plug qdisc refused by the kernel (CONFIG_NET_SCH_PLUG / module sch_plug missing?): %v", netbuf.ErrUnsupported, err)
		}
		return k, fmt.Errorf("%w: plug qdisc on %s: %v", ErrSetup, name, err)
	}
	ing := &vnl.Ingress{QdiscAttrs: vnl.QdiscAttrs{LinkIndex: k.dev.Attrs().Index, Handle: vnl.MakeHandle(0xffff, 0), Parent: vnl.HANDLE_INGRESS}}
	if err = k.nl.QdiscAdd(ing); err != nil {
		return k, fmt.Errorf("%w: ingress qdisc on %s: %v", ErrSetup, devName, err)
	}
	k.ingress = true
	f := &vnl.U32{
		FilterAttrs: vnl.FilterAttrs{LinkIndex: k.dev.Attrs().Index, Parent: vnl.MakeHandle(0xffff, 0), Priority: 1, Protocol: unix.ETH_P_ALL},
		// "match u32 0 0": every frame, whatever its protocol.
		Sel:     &vnl.TcU32Sel{Flags: vnl.TC_U32_TERMINAL, Nkeys: 1, Keys: []vnl.TcU32Key{{Mask: 0, Val: 0, Off: 0}}},
		Actions: []vnl.Action{vnl.NewMirredAction(k.ifb.Attrs().Index)},
	}
	if err = k.nl.FilterAdd(f); err != nil {
		return k, fmt.Errorf("%w: redirect filter on %s: %v", ErrSetup, devName, err)
	}
	return k, nil
}

// freeIFB returns the first IFBPrefix<N> name not in use.
func freeIFB(h *vnl.Handle) (string, error) {
	links, err := h.LinkList()
	if err != nil {
		return "", fmt.Errorf("%w: list links: %v", ErrSetup, err)
	}
	used := map[string]bool{}
	for _, l := range links {
		used[l.Attrs().Name] = true
	}
	for i := 0; i < 10000; i++ {
		if n := IFBPrefix + strconv.Itoa(i); !used[n] {
			return n, nil
		}
	}
	return "", fmt.Errorf("%w: no free %s name", ErrSetup, IFBPrefix)
}

func (k *kernel) send(body []byte, flags netlink.HeaderFlags) error {
	_, err := k.rt.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.RTM_NEWQDISC), Flags: netlink.Request | netlink.Acknowledge | flags},
		Data:   body,
	})
	return err
}

func (k *kernel) Plug(action int32) error {
	if err := k.send(qdiscMsg(int32(k.ifb.Attrs().Index), k.handle, action, 0), 0); err != nil {
		return fmt.Errorf("%w: action %d on %s: %v", ErrCommand, action, k.ifb.Attrs().Name, err)
	}
	return nil
}

// Reset grafts a fresh plug qdisc under the other handle; the kernel
// destroys the old one with its frames. A same-handle replace would be
// turned into a change and keep them.
func (k *kernel) Reset() error {
	c, _ := k.Counters()
	h := uint32(0x20000)
	if k.handle == 0x20000 {
		h = 0x10000
	}
	if err := k.send(qdiscMsg(int32(k.ifb.Attrs().Index), h, TCQPlugLimit, k.limit), netlink.Create|netlink.Replace); err != nil {
		return fmt.Errorf("%w: replace plug on %s: %v", ErrCommand, k.ifb.Attrs().Name, err)
	}
	k.handle = h
	c.discarded += c.held
	c.held, c.heldBytes = 0, 0
	k.base = c
	return nil
}

type counters struct {
	held, heldBytes, released, releasedBytes uint64
	dropped                                  uint64 // by the qdisc: the limit was hit
	discarded                                uint64 // by Reset
}

func (k *kernel) Counters() (counters, error) {
	qs, err := k.nl.QdiscList(k.ifb)
	if err != nil {
		return k.base, err
	}
	c := k.base
	for _, q := range qs {
		a := q.Attrs()
		if a.Handle != k.handle || a.Statistics == nil {
			continue
		}
		if s := a.Statistics.Queue; s != nil {
			c.held = uint64(s.Qlen)
			c.heldBytes = uint64(s.Backlog)
			c.dropped += uint64(s.Drops)
		}
		if s := a.Statistics.Basic; s != nil {
			c.released += uint64(s.Packets)
			c.releasedBytes += s.Bytes
		}
	}
	return c, nil
}

// Teardown deletes the IFB first (its held frames are dropped and mirred
// drops what it still redirects), then the ingress qdisc.
func (k *kernel) Teardown() error {
	var errs []error
	if k.ifb != nil {
		if err := k.nl.LinkDel(k.ifb); err != nil {
			errs = append(errs, fmt.Errorf("%w: delete %s: %v", ErrSetup, k.ifb.Attrs().Name, err))
		}
		k.ifb = nil
	}
	if k.ingress {
		ing := &vnl.Ingress{QdiscAttrs: vnl.QdiscAttrs{LinkIndex: k.dev.Attrs().Index, Handle: vnl.MakeHandle(0xffff, 0), Parent: vnl.HANDLE_INGRESS}}
		if err := k.nl.QdiscDel(ing); err != nil {
			errs = append(errs, fmt.Errorf("%w: delete ingress on %s: %v", ErrSetup, k.dev.Attrs().Name, err))
		}
		k.ingress = false
	}
	return errors.Join(errs...)
}

func (k *kernel) teardown() {
	_ = k.Teardown()
	if k.rt != nil {
		k.rt.Close()
	}
	if k.nl != nil {
		k.nl.Close()
	}
}
