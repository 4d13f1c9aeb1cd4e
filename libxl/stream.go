package libxl

// StreamCapture is an optional interface of a Hypervisor whose capture of
// some domain types is produced by the hypervisor's own save engine as one
// continuous stream, rather than read page by page: Xen's PV guests, whose
// page tables and vCPU state only libxenguest's xc_domain_save can make
// portable (route (a), package libxl/xen). Such a backend still implements
// Source and Sink, and the engine drives it the usual way, but with the
// rules below. The engine asks its Source (primary) and its Sink (standby)
// with a type assertion, for the domain's type; a backend that does not
// implement it, or answers false, has none of these rules.
type StreamCapture interface {
	// StreamCaptured reports whether domains of type t are captured as a
	// stream. If so:
	//
	//   - Source.SetLogDirty(dom, true) starts the stream (and its own
	//     log-dirty mode); SetLogDirty(dom, false) ends it. A stream
	//     cannot be resumed: every (re)connection needs a full sync into a
	//     fresh replica (Sink.CreateReplica), never a resync of a replica
	//     the standby already holds, because the new stream opens with
	//     headers a restore in progress cannot take.
	//   - Source.ReadAndClearDirty on a running domain returns the pages of
	//     one pre-copy round of the save engine and may block for it; on a
	//     suspended domain, or on the first call after the Resume that
	//     ends a suspension, the pages of the checkpoint that suspension
	//     took (the engine resumes the guest first: the save engine wrote
	//     the checkpoint while the guest was suspended).
	//   - Source.ReadPages returns the pages as the stream carries them
	//     (for PV, page tables canonicalised), and Sink.ReadPages the same
	//     form: digests compare, but the bytes are not raw guest memory.
	//   - Source.CaptureState must be called exactly once per checkpoint,
	//     after the checkpoint's ReadPages, and its blobs (which include the
	//     page types) must reach Sink.RestoreState of the same epoch whole
	//     and in order; pages of pre-copy rounds are covered by the first
	//     checkpoint's blobs.
	//   - A checkpoint is a private copy once its suspension ended: its
	//     ReadAndClearDirty, ReadPages and CaptureState work after
	//     Source.Resume too, until the next Suspend, and the engine makes
	//     them with the guest running (reading it then costs no pause).
	//   - Sink.RestoreState hands the committed epoch to the hypervisor's
	//     restore, and Sink.Activate ends the stream so that the restore
	//     finishes from the last complete checkpoint, then unpauses.
	StreamCaptured(t DomainType) bool
}

// ReplicaRoom is an optional interface of a Sink that can tell whether the
// host has room for one more replica of info beside those it holds. The
// standby asks it before it keeps its replica as the fallback while a new
// one is built (checkpoint, protocol §7.4), which holds two copies of the
// guest for a while; a Sink without it is assumed to have room.
type ReplicaRoom interface {
	// RoomFor returns nil if a replica of info fits now, else an error
	// saying what is short (for the log).
	RoomFor(info DomainInfo) error
}

// ActivationPreparer is an optional interface of a Sink whose Activate
// has a slow part that runs nothing: Xen's stream-fed PV replicas, which
// libxl builds into a domain (the last checkpoint applied, devices and
// their hotplug scripts) only once the stream ends. The standby calls
// PrepareActivate when it has decided to activate, alongside its check
// of the replica's digest (Sink.ReadPages, from another goroutine), and
// then Activate, which is left with the rename and the unpause.
type ActivationPreparer interface {
	// PrepareActivate ends the replica's stream and has it built, still
	// paused.
	//
	// Preconditions: as Activate's; no WritePages or RestoreState of dom
	// after it. Concurrency: it may run while another goroutine calls
	// ReadPages of dom. Success: Activate(dom) may follow (a replica that
	// is never activated must still be Destroyed). Failure: as Activate's;
	// Activate then fails with the same cause.
	PrepareActivate(dom DomID) error
}
