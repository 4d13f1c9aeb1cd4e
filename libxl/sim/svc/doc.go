// Package svc is the request/response protocol of the simulator's service
// workload (a counter and key-value store), a real UDP client for it, and
// the checker that proves no acknowledged request was lost across a
// failover.
//
// A request names its client and a per-client sequence number; the
// service applies each (client, seq) at most once and answers retries of
// the last one from a dedup table kept in guest memory, so a client that
// retries until answered sees exactly-once semantics even when the
// primary dies and the replica answers instead:
//
//	c, _ := svc.NewClient("127.0.0.1:7777", 42)
//	rec := svc.NewRecorder(logFile)         // every finished request
//	c.SetRecorder(rec)
//	rep, err := c.Do(ctx, svc.Request{Op: svc.OpIncr})
//	...
//	sum, err := svc.Check(rec.Records())    // err wraps ErrViolation
//
// Messages have a fixed size and layout (see AppendRequest and
// AppendReply); Decode functions reject anything else with ErrMalformed
// and never panic.
package svc
