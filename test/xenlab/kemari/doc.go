// Package kemari holds the Xen lab's end-to-end test of the engine on real
// Xen (build tags xen and integration): a primary and a standby driver,
// both on the lab host, protect a PV guest through the xen backend's route
// (a) (libxenguest's save stream into a replica under
// libxl_domain_create_restore); then the primary dies and the replica
// must carry on from the last committed checkpoint.
//
// It is built and run by run.sh (see README.md):
//
//	test/xenlab/kemari/run.sh engine TestEnginePV
package kemari
