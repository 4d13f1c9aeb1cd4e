// Package arbiter decides which host may run a protected domain when the
// primary and the standby lose each other (design I4: one active copy;
// design §8).
//
// Each side asks only after it has declared its peer lost: the primary
// before it releases output unprotected, the standby before it activates
// the replica. The first to Acquire a protection session wins it for
// good; the other is refused and must stand down (the primary fences its
// guest, the standby discards its replica). Without an arbiter ("none")
// both proceed, which is safe only under the fail-stop assumption that a
// silent peer is a dead one: xl-kemari says so in a warning at start.
//
// # Leases
//
// Backends other than none also implement Leaser: a lease on a session
// that its holder renews in the background. It binds the holder's
// actions to the arbiter's knowledge and lets the peer act as soon as the
// holder is gone. The intended use by the engine:
//
//   - The primary Holds a lease from the start of protection and renews it
//     (Hold does). It releases output (checkpoint k's, after ack k, or
//     unprotected output) only while Lease.Valid(time.Now()): validity
//     ends ttl less Margin(ttl) after the request that last renewed it
//     was sent, by the primary's own monotonic clock, so a primary cut off
//     from the arbiter, or stalled, stops releasing before the arbiter can
//     let anyone else in. On Done it holds output and tries Hold again; an
//     ErrDenied there means the standby took over: fence.
//   - The standby that loses the primary calls WaitLapsed(session,
//     Primary) (at once, on a clean end of stream or reset, rather than
//     after its own timeout), then Acquire(session, Standby): granted, it
//     activates; refused, it discards the replica.
//   - The primary that loses the standby calls Acquire(session, Primary)
//     and continues unprotected only while granted and its lease Valid.
//
// Acquire refuses with ErrHeld (an error, so the engine's retry loop asks
// again) while the other role holds a live lease on an undecided session,
// so a standby that asks too early is delayed rather than let in.
//
// # Backends
//
//   - none: every request granted (Configured false); no leases.
//   - mem: in process, for tests and the simulator; leases on an
//     injectable Clock.
//   - file:PATH: files in a directory on storage both hosts share (the
//     VMware FT approach), under an flock; leases are heartbeat files
//     judged by the observer's own monotonic clock. Bounded by ctx on a
//     hung mount (see File).
//   - etcd://HOST:PORT/PREFIX: keys under PREFIX in an etcd v3 cluster,
//     etcd leases with keep-alive. Plain gRPC: no TLS or authentication
//     in this build (package arbiter/etcd, linked by the command).
//
// Package arbitertest holds the contract suite every backend passes.
package arbiter
