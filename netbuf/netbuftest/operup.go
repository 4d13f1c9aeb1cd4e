package netbuftest

import (
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// WaitOperUp blocks until every named link in the namespace named ns is
// operationally up. Carrier changes reach the bridge through the kernel's
// link watcher, up to a second after "ip link set up"; a frame sent
// before that is dropped by a port that is still disabled. It listens to
// link notifications instead of polling.
func WaitOperUp(t testing.TB, ns string, names ...string) {
	t.Helper()
	h, err := netns.GetFromPath(NSPath(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ch := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	errc := make(chan error, 1)
	if err := netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{
		Namespace:    &h,
		ListExisting: true,
		ErrorCallback: func(err error) {
			select {
			case errc <- err:
			default:
			}
		},
	}); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	for len(want) > 0 {
		select {
		case u, ok := <-ch:
			if !ok {
				t.Fatalf("%s: link notifications ended; still waiting for %v", ns, want)
			}
			if a := u.Attrs(); a != nil && a.OperState == netlink.OperUp {
				delete(want, a.Name)
			}
		case err := <-errc:
			t.Fatalf("%s: link notifications: %v", ns, err)
		case <-t.Context().Done():
			t.Fatalf("%s: links %v never came up", ns, want)
		}
	}
}
