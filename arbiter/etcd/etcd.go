// Package etcd is the etcd arbiter (arbiter=etcd://HOST:PORT/PREFIX): session
// ownership and leases in an etcd v3 cluster. It registers the "etcd" scheme
// with arbiter.Open when imported; it lives apart from package arbiter so
// that only the programs that import it link the etcd client and gRPC.
package etcd

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/xl-kemari/xl-kemari/arbiter"
)

func init() {
	arbiter.Register("etcd", func(endpoint, prefix string) (arbiter.Arbiter, error) {
		return &Arbiter{Endpoint: endpoint, Prefix: prefix}, nil
	})
}

// Arbiter arbitrates through an etcd cluster (v3 API), under Prefix:
//
//	PREFIX/sessions/<SessionName>  = role   the owner, for good (Acquire)
//	PREFIX/leases/<SessionName>    = role   the live lease, attached to an etcd lease
//
// Acquire creates the session key in a transaction only if it is absent
// (CreateRevision 0) and the lease key has not changed since it was read
// (so that a live lease of the other role refuses it with arbiter.ErrHeld); else
// it reads the owner. Hold grants an etcd lease of ttl rounded up to
// whole seconds (the holder's validity and renewals follow the rounded
// ttl) and puts the lease key on it if absent and the session is
// not the other role's. etcd expires it when no keep-alive arrives for its
// ttl (measured by the etcd leader; a leader change only extends it);
// Release revokes it. WaitLapsed watches the lease key for its deletion.
//
// The connection is plain gRPC: TLS and authentication are not available
// in this build, so the etcd endpoint belongs on a trusted management
// network. Every call honours its ctx (a stopped server makes it return
// ctx.Err() by ctx's deadline); the client reconnects by itself.
//
// Set the fields before first use; Close releases the client.
type Arbiter struct {
	Endpoint string // HOST:PORT
	Prefix   string // key prefix, e.g. "/xl-kemari"; no trailing slash
	// DialTimeout bounds connecting; 0 is 5 s. Each call is bounded by
	// its ctx as well.
	DialTimeout time.Duration
	// Fault, when not nil, runs before each operation, named "acquire",
	// "hold", "renew", "release" or "wait", in the goroutine that
	// performs it: it may block or fail the operation.
	Fault func(op string) error

	once sync.Once
	cli  *clientv3.Client
	err  error
}

var _ arbiter.Leaser = (*Arbiter)(nil)

// Configured implements Arbiter.
func (*Arbiter) Configured() bool { return true }

// client connects lazily (clientv3.New does not block on the network).
func (e *Arbiter) client() (*clientv3.Client, error) {
	e.once.Do(func() {
		dt := e.DialTimeout
		if dt == 0 {
			dt = 5 * time.Second
		}
		e.cli, e.err = clientv3.New(clientv3.Config{
			Endpoints:   []string{e.Endpoint},
			DialTimeout: dt,
			Logger:      zap.NewNop(),
		})
		if e.err != nil {
			e.err = fmt.Errorf("arbiter: etcd %s: %w", e.Endpoint, e.err)
		}
	})
	return e.cli, e.err
}

// Close closes the client; leases still held lapse after their ttl.
func (e *Arbiter) Close() error {
	e.once.Do(func() { e.err = errors.New("arbiter: etcd client closed") })
	if e.cli != nil {
		return e.cli.Close()
	}
	return nil
}

func (e *Arbiter) sessionKey(s [16]byte) string {
	return e.Prefix + "/sessions/" + arbiter.SessionName(s)
}
func (e *Arbiter) leaseKey(s [16]byte) string {
	return e.Prefix + "/leases/" + arbiter.SessionName(s)
}

// do runs fn with the client, bounded by ctx (see bounded).
func (e *Arbiter) do(ctx context.Context, op string, fn func(cli *clientv3.Client) error) error {
	return arbiter.Bounded(ctx, e.Fault, op, func() error {
		cli, err := e.client()
		if err != nil {
			return err
		}
		err = fn(cli)
		if err == nil || errors.Is(err, arbiter.ErrHeld) || errors.Is(err, arbiter.ErrDenied) {
			return err // answers, not failures to reach etcd
		}
		return fmt.Errorf("arbiter: etcd %s: %s: %w", e.Endpoint, op, err)
	})
}

// Acquire implements Arbiter.
func (e *Arbiter) Acquire(ctx context.Context, s [16]byte, r arbiter.Role) (bool, error) {
	var granted bool
	err := e.do(ctx, "acquire", func(cli *clientv3.Client) error {
		sk, lk := e.sessionKey(s), e.leaseKey(s)
		for {
			lr, err := cli.Get(ctx, lk)
			if err != nil {
				return err
			}
			var leaseRev int64
			if len(lr.Kvs) > 0 {
				if o := arbiter.Role(lr.Kvs[0].Value); o != r {
					// Refused unless the session is decided already.
					if sr, err := cli.Get(ctx, sk); err != nil {
						return err
					} else if len(sr.Kvs) > 0 {
						granted = arbiter.Role(sr.Kvs[0].Value) == r
						return nil
					}
					return fmt.Errorf("%w (the %s's)", arbiter.ErrHeld, o)
				}
				leaseRev = lr.Kvs[0].ModRevision
			}
			tr, err := cli.Txn(ctx).
				If(clientv3.Compare(clientv3.CreateRevision(sk), "=", 0),
					clientv3.Compare(clientv3.ModRevision(lk), "=", leaseRev)).
				Then(clientv3.OpPut(sk, string(r))).
				Else(clientv3.OpGet(sk)).
				Commit()
			if err != nil {
				return err
			}
			if tr.Succeeded {
				granted = true
				return nil
			}
			if kvs := tr.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
				granted = arbiter.Role(kvs[0].Value) == r
				return nil
			}
			// The lease key changed under us: look again.
		}
	})
	if err != nil {
		return false, err // granted may still be written by an abandoned call
	}
	return granted, nil
}

// Hold implements arbiter.Leaser.
func (e *Arbiter) Hold(ctx context.Context, s [16]byte, r arbiter.Role, ttl time.Duration) (arbiter.Lease, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("arbiter: hold: ttl %v is not positive", ttl)
	}
	secs := int64((ttl + time.Second - 1) / time.Second)
	start := time.Now()
	var id clientv3.LeaseID
	err := e.do(ctx, "hold", func(cli *clientv3.Client) error {
		sk, lk := e.sessionKey(s), e.leaseKey(s)
		g, err := cli.Grant(ctx, secs)
		if err != nil {
			return err
		}
		revoke := func() {
			// Best effort: an unrevoked lease lapses by itself.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			cli.Revoke(rctx, g.ID)
		}
		for {
			sr, err := cli.Get(ctx, sk)
			if err != nil {
				revoke()
				return err
			}
			var sessRev int64
			if len(sr.Kvs) > 0 {
				if o := arbiter.Role(sr.Kvs[0].Value); o != r {
					revoke()
					return fmt.Errorf("%w (the %s won it)", arbiter.ErrDenied, o)
				}
				sessRev = sr.Kvs[0].ModRevision
			}
			tr, err := cli.Txn(ctx).
				If(clientv3.Compare(clientv3.CreateRevision(lk), "=", 0),
					clientv3.Compare(clientv3.ModRevision(sk), "=", sessRev)).
				Then(clientv3.OpPut(lk, string(r), clientv3.WithLease(g.ID))).
				Else(clientv3.OpGet(lk)).
				Commit()
			if err != nil {
				revoke()
				return err
			}
			if tr.Succeeded {
				id = g.ID
				return nil
			}
			if kvs := tr.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
				revoke()
				return fmt.Errorf("%w (the %s's)", arbiter.ErrHeld, arbiter.Role(kvs[0].Value))
			}
			// The session was decided under us: look again.
		}
	})
	if err != nil {
		return nil, err
	}
	renew := func(ctx context.Context) error {
		return e.do(ctx, "renew", func(cli *clientv3.Client) error {
			ka, err := cli.KeepAliveOnce(ctx, id)
			if errors.Is(err, rpctypes.ErrLeaseNotFound) || (err == nil && ka.TTL <= 0) {
				return fmt.Errorf("lease %x: %w", int64(id), arbiter.ErrStopRenewing)
			}
			return err
		})
	}
	drop := func(ctx context.Context) error {
		return e.do(ctx, "release", func(cli *clientv3.Client) error {
			_, err := cli.Revoke(ctx, id)
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return nil
			}
			return err
		})
	}
	// The holder's validity follows the ttl etcd keeps the lease for
	// (whole seconds, at least the server's minimum, never less than
	// secs): a ttl below a second would only make the holder give up a
	// lease the server still keeps, the standby gaining nothing.
	return arbiter.NewLease(nil, start, time.Duration(secs)*time.Second, renew, drop), nil
}

// WaitLapsed implements arbiter.Leaser.
func (e *Arbiter) WaitLapsed(ctx context.Context, s [16]byte, r arbiter.Role) error {
	return e.do(ctx, "wait", func(cli *clientv3.Client) error {
		lk := e.leaseKey(s)
		gr, err := cli.Get(ctx, lk)
		if err != nil {
			return err
		}
		if len(gr.Kvs) == 0 || arbiter.Role(gr.Kvs[0].Value) != r {
			return nil
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		defer cancel()
		for wr := range cli.Watch(wctx, lk, clientv3.WithRev(gr.Header.Revision+1)) {
			if err := wr.Err(); err != nil {
				return err
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE || arbiter.Role(ev.Kv.Value) != r {
					return nil
				}
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		return errors.New("watch ended")
	})
}
