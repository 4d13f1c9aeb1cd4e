package arbiter_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/xl-kemari/xl-kemari/arbiter"
	"github.com/xl-kemari/xl-kemari/arbiter/etcd"
)

func TestOpen(t *testing.T) {
	for _, c := range []struct {
		spec string
		want any    // the backend, for a good setting
		err  string // a piece of the error, for a bad one
	}{
		{spec: "", want: arbiter.None{}},
		{spec: "none", want: arbiter.None{}},
		{spec: "file:/srv/kemari", want: &arbiter.File{Dir: "/srv/kemari"}},
		{spec: "etcd://127.0.0.1:2379/xl-kemari", want: &etcd.Arbiter{Endpoint: "127.0.0.1:2379", Prefix: "/xl-kemari"}},
		{spec: "etcd://e.example:2379/a/b/", want: &etcd.Arbiter{Endpoint: "e.example:2379", Prefix: "/a/b"}},
		{spec: "etcd://[2001:db8::1]:2379/k", want: &etcd.Arbiter{Endpoint: "[2001:db8::1]:2379", Prefix: "/k"}},
		{spec: "file:relative", err: "must be absolute"},
		{spec: "etcd://e.example/k", err: "needs HOST:PORT"},
		{spec: "etcd://:2379/k", err: "needs HOST:PORT"},
		{spec: "etcd://e.example:2379", err: "expected a key prefix"},
		{spec: "etcd://e.example:2379/", err: "expected a key prefix"},
		{spec: "etcd://u:pw@e.example:2379/k", err: "user information"},
		{spec: "etcd://e.example:2379/k?x=1", err: "without a query"},
		{spec: "etcd://e.example:2379/k#f", err: "without a query or fragment"},
		{spec: "etcd+tls://e.example:2379/k", err: "TLS is not available"},
		{spec: "lease", err: "want none, file:PATH or etcd://"},
	} {
		a, err := arbiter.Open(c.spec)
		if c.err != "" {
			if !errors.Is(err, arbiter.ErrBadSpec) || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), "arbiter") {
				t.Errorf("Open(%q) = %v, %v; want ErrBadSpec naming the arbiter setting and saying %q", c.spec, a, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Open(%q): %v", c.spec, err)
			continue
		}
		switch w := c.want.(type) {
		case *etcd.Arbiter:
			g, ok := a.(*etcd.Arbiter)
			if !ok || g.Endpoint != w.Endpoint || g.Prefix != w.Prefix {
				t.Errorf("Open(%q) = %#v, want endpoint %q prefix %q", c.spec, a, w.Endpoint, w.Prefix)
			}
		case *arbiter.File:
			if g, ok := a.(*arbiter.File); !ok || g.Dir != w.Dir {
				t.Errorf("Open(%q) = %#v, want dir %q", c.spec, a, w.Dir)
			}
		default:
			if a != c.want {
				t.Errorf("Open(%q) = %#v, want %#v", c.spec, a, c.want)
			}
		}
		if _, isLeaser := a.(arbiter.Leaser); isLeaser != a.Configured() {
			t.Errorf("Open(%q): Leaser %v but Configured %v", c.spec, isLeaser, a.Configured())
		}
	}
}
