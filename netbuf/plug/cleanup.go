package plug

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	vnl "github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/xl-kemari/xl-kemari/netbuf/auto/host"
)

// CleanupStale removes what a crashed run of this backend left in the
// network namespace at netnsPath ("" = this one): every IFBPrefix device
// whose alias names a process that is gone, with the ingress qdisc on the
// device it served. Deleting the IFB drops the frames its plug held.
func CleanupStale(netnsPath string) error {
	var h *vnl.Handle
	var err error
	if netnsPath != "" {
		ns, nerr := netns.GetFromPath(netnsPath)
		if nerr != nil {
			return fmt.Errorf("%w: %w: %v", ErrSetup, host.ErrNetNS, nerr)
		}
		defer ns.Close()
		h, err = vnl.NewHandleAt(ns)
	} else {
		h, err = vnl.NewHandle()
	}
	if err != nil {
		return fmt.Errorf("%w: netlink: %v", ErrSetup, err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return fmt.Errorf("%w: list links: %v", ErrSetup, err)
	}
	var errs []error
	for _, l := range links {
		a := l.Attrs()
		pid, dev, ok := parseAlias(a.Alias)
		if !strings.HasPrefix(a.Name, IFBPrefix) || !ok || processAlive(pid) {
			continue
		}
		if err := h.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("%w: delete %s: %v", ErrSetup, a.Name, err))
		}
		if d, err := h.LinkByName(dev); err == nil {
			ing := &vnl.Ingress{QdiscAttrs: vnl.QdiscAttrs{LinkIndex: d.Attrs().Index, Handle: vnl.MakeHandle(0xffff, 0), Parent: vnl.HANDLE_INGRESS}}
			_ = h.QdiscDel(ing) // absent when the device was recreated
		}
	}
	return errors.Join(errs...)
}

// parseAlias reads "xl-kemari:pid=<pid>:dev=<dev>".
func parseAlias(s string) (pid int, dev string, ok bool) {
	rest, ok := strings.CutPrefix(s, AliasTag+"pid=")
	if !ok {
		return 0, "", false
	}
	p, d, ok := strings.Cut(rest, ":dev=")
	if !ok {
		return 0, "", false
	}
	pid, err := strconv.Atoi(p)
	if err != nil || pid <= 0 {
		return 0, "", false
	}
	return pid, d, true
}

func processAlive(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}
