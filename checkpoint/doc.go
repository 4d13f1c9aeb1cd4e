// Package checkpoint holds the drivers of xl-kemari's replication: the
// primary loop, the standby receiver, the initial synchronisation, the
// heartbeats and the failover. Each driver owns one state machine from
// package epoch, feeds it what happened and carries out what it asks; the
// rules (release output of epoch k only after Ack(k); apply an epoch
// wholly or not at all; fail over only from a complete checkpoint) live in
// the machines, the mechanics here.
//
// A primary is built from its dependencies and run until stopped:
//
//	p, _ := checkpoint.NewPrimary(cfg, hv.Source(), dialer, nets, disk, arb)
//	go p.Run(ctx)   // sync, then checkpoint every interval
//	p.Status()      // for `xl kemari status`
//	p.Stop()        // goodbye: the standby discards its replica, output flows
//
// and a standby likewise:
//
//	s, _ := checkpoint.NewStandby(cfg, hv.Sink(), listener, arb)
//	s.Run(ctx)      // returns nil once the replica was activated
//
// Goroutines of the primary (all end before Run returns):
//
//	loop      owns the machine, captures checkpoints (the pause), releases output
//	connect   dials and exchanges hellos, one per attempt
//	precopy   the initial sync's rounds, while the guest runs
//	sender    the only writer of a connection: encodes and ships what the loop queued
//	reader    turns the standby's acks, heartbeats and nacks into events
//
// The pause is suspend, barrier, dirty log, copy into a staging buffer,
// state, resume: encoding and sending happen after the guest runs again.
//
// Transports: UnixDialer/ListenUnix (a local socket; each end checks the
// other is root or its own user: demo and tests), TCPDialer/ListenTCP
// (loopback only, authenticating nobody: tests behind --insecure-tcp),
// PipeNetwork (in memory, with fault hooks, for the cluster harness in
// checkpointtest); ssh and tls live beside them. Every listener retries
// the accept errors a process outlives (EMFILE, ...) with back-off.
package checkpoint
