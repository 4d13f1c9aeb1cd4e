// Package netbuf is the output-buffer contract of xl-kemari: it holds a
// guest's network output so that nothing the guest sent during epoch k
// leaves the host before the standby has acknowledged checkpoint k
// (invariant I1 of docs/design.md).
//
// A [Buffer] holds the frames of one guest NIC. The primary loop drives it
// through the checkpoint-device lifecycle Xen's own netbuffer uses:
//
//	buf, _ := backend.Open(dev)   // setup: start holding every frame
//	buf.Barrier(k)                // postsuspend: frames so far belong to epochs <= k
//	buf.Release(k)                // commit: ack k arrived, let them out
//	buf.Unprotect()               // standby lost: release all, pass through
//	buf.Close()                   // teardown: drop whatever is still held
//
// Backends: mem (in process, for the simulator; package netbuf/mem), plug
// (IFB + sch_plug over netlink) and nfqueue (NFQUEUE with batch verdicts);
// the kernel backends live in their own packages. Every backend holds every
// protocol (IPv4, IPv6, ARP, anything) and fails closed: if the holder goes
// away, held frames are dropped, never released.
package netbuf
