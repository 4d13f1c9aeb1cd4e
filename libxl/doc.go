// Package libxl is the hypervisor contract of xl-kemari: the small set of
// operations the checkpoint engine needs from a hypervisor, split by role.
//
// The primary side sees a [Source]: it pauses a running domain, turns on
// log-dirty mode, reads and clears the dirty log, copies pages out in
// batches and captures vCPU and device state as opaque blobs. The standby
// side sees a [Sink]: it creates a paused replica, writes pages and state
// into it as each epoch commits, and finally activates or destroys it.
//
// Implementations register themselves by name ([Register], [Lookup]), the
// way gVisor's platforms do:
//
//   - "sim" (package libxl/sim) is a simulated Xen written in pure Go. The
//     demo, the tests and the benchmarks run on it.
//   - "xen" (package libxl/xen, build tag xen) binds Xen 4.17 with cgo.
//
// This package imports no cgo and nothing else of the project; the engine
// (package checkpoint) depends only on it.
//
// A typical epoch on the primary, as the engine drives it:
//
//	src.Suspend(dom)                 // guest stops; output barrier follows
//	src.ReadAndClearDirty(dom, bm)   // pages written since last epoch
//	src.ReadPages(dom, pfns, buf)    // copy into a staging buffer
//	st, _ := src.CaptureState(dom)   // vCPU + device blobs
//	src.Resume(dom)                  // guest runs epoch k+1
//	// ... ship, wait for the standby's ack, release output of epoch k
//
// and on the standby:
//
//	r, _ := sink.CreateReplica(info) // paused, empty
//	sink.WritePages(r, pfns, data)   // per committed epoch
//	sink.RestoreState(r, st)
//	sink.Activate(r)                 // failover: unpause and announce
package libxl
