// Package sim is a simulated Xen: a pure-Go implementation of the libxl
// hypervisor contract, registered as the "sim" backend. The demo, every
// test tier below the Xen lab, and the benchmarks run on it.
//
// A sim domain is a small deterministic machine. Its memory is sparse
// (4 KiB pages allocated on first write, so an untouched 4 GiB guest costs
// almost nothing) with a real dirty log; its vCPUs are register files (a
// PRNG state, a rate accumulator, a cursor); its program is one of the
// workloads (idle, hotset, uniform, stream, service). The guest's whole
// state is its memory plus those registers and the device blobs, so a
// replica built from the pages and state blobs of a checkpoint continues
// exactly as the primary would, and tests compare the two byte for byte.
//
// Each running domain has one goroutine that runs a quantum under the
// domain's lock and then waits on a timer. Holding the lock therefore
// means the guest is between two steps: Suspend takes it to stop the guest
// at a quantum boundary, ReadAndClearDirty to be atomic with respect to
// guest writes. Between quanta the goroutine is blocked on a timer or a
// channel, never spinning, so inside a testing/synctest bubble virtual
// time advances. (A NIC with a host socket has a reader goroutine blocked
// in the kernel, which a bubble does not count as durably blocked: inside
// bubbles use NICs without Listen and drive them with Inject/SetEgress.)
//
// The service workload is a counter and key-value store answering the
// requests of package svc: a NIC's socket (or Inject) queues datagrams on
// the host side; at its next quantum the guest copies them into the rx
// ring in its memory, applies each request at most once (a per-client
// dedup table in memory answers retries), appends a journal sector to
// disk 0, and queues the reply on the tx ring, which the NIC drains to its
// egress: Transmit by default, a netbuf buffer when replication holds
// output.
//
// A walk-through, primary and standby on two simulated hosts:
//
//	p, _ := sim.New(nil)
//	dom, _ := p.CreateDomain(sim.DomainConfig{Workload: "service",
//		NICs: []sim.NICConfig{{Listen: "127.0.0.1:7777"}}, Disks: []sim.DiskConfig{{Sectors: 2048}}})
//	d, _ := p.Domain(dom)
//	d.NIC(0).SetEgress(buf.Send)          // hold output until acked
//	p.SetLogDirty(dom, true)
//	p.Suspend(dom)                        // guest stopped between quanta
//	p.ReadAndClearDirty(dom, bm)
//	p.ReadPages(dom, pfns, staging)
//	st, _ := p.CaptureState(dom, nil)
//	p.Resume(dom)
//
//	s, _ := sim.New(nil)                  // the standby host
//	info, _ := p.Describe(dom)            // DomainConfig travels in info.Config
//	r, _ := s.CreateReplica(info)         // paused, zeroed, no sockets
//	s.WritePages(r, pfns, staging)
//	s.RestoreState(r, st)
//	s.Activate(r)                         // binds 127.0.0.1:7777 here, runs
//
// Fault hooks (SetFaults) make any of these calls fail with an error
// wrapping libxl.ErrInjected. For tests and benchmarks a Domain also
// offers Step (run quanta synchronously while stopped), Touch, Snapshot
// and Steps.
package sim
