// Package epoch is the replication protocol's core: two pure state
// machines, one per role, that take events and return actions. They do no
// I/O, read no clock and start no goroutines; time arrives inside events as
// a monotonic offset. The drivers in package checkpoint own one machine
// each, feed it what happened and carry out what it asks, in order.
//
// The output-commit rule (design I1) is written once, here: the primary
// machine emits Release{k} only when Ack(k) has arrived for a checkpoint it
// took, or when it has been told it may run unprotected (the standby was
// declared lost and, with an arbiter, the grant is held).
//
// The driver loop, as in etcd's raft Ready/Advance:
//
//	m := epoch.NewPrimary(cfg)
//	acts := m.Step(epoch.Event{Kind: epoch.EvStart, Now: now()})
//	for {
//		for _, a := range acts { carry out a (checkpoint, release, ...) }
//		wait until m.Deadline() or the next event
//		acts = m.Step(ev)
//	}
//
// Scenario scripts in testdata/ drive both machines and name the section of
// docs/protocol.md they check.
package epoch
