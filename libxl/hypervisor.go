package libxl

// Source is the primary-side view of a hypervisor: what the engine needs to
// capture a running domain epoch by epoch.
//
// Concurrency: one goroutine (the domain's primary loop) calls the methods
// for a given domain; calls for different domains may run concurrently.
type Source interface {
	// Describe returns the shape of the domain.
	//
	// Preconditions: dom exists.
	// Success: the description, whatever the domain's run state.
	// Failure: ErrNoDomain.
	Describe(dom DomID) (DomainInfo, error)

	// Suspend stops the domain's vCPUs at an instruction boundary, with
	// the guest's cooperation where the backend supports it. After it
	// returns no guest memory, disk or network output changes until Resume.
	//
	// Preconditions: dom is running.
	// Success: dom is suspended; its state is consistent for capture.
	// Failure: ErrNoDomain, ErrBadState (already suspended), or a backend
	// error (e.g. the guest did not answer the suspend request); the
	// domain is left running.
	Suspend(dom DomID) error

	// Resume lets a suspended domain run again (suspend-cancel where the
	// guest supports it: the guest continues as if nothing happened).
	//
	// Preconditions: dom is suspended by Suspend.
	// Success: dom is running.
	// Failure: ErrNoDomain, ErrBadState; the domain stays suspended.
	Resume(dom DomID) error

	// SetLogDirty turns log-dirty mode on or off. Turning it on marks every
	// page dirty, so the first read returns the whole memory (initial sync).
	//
	// Preconditions: dom exists.
	// Success: mode changed; off discards the log.
	// Failure: ErrNoDomain, ErrUnsupported; mode unchanged.
	SetLogDirty(dom DomID, on bool) error

	// ReadAndClearDirty ORs into dst the pages written since the previous
	// call (or since SetLogDirty(true)) and clears the log, atomically with
	// respect to guest writes.
	//
	// Preconditions: log-dirty on; dst.Len() >= DomainInfo.Pages. It may be
	// called on a running domain (pre-copy rounds) or a suspended one
	// (epochs).
	// Success: dst holds the dirty set.
	// Failure: ErrNoDomain, ErrBadState (log-dirty off); the log is
	// unchanged, so a retry loses nothing.
	ReadAndClearDirty(dom DomID, dst *Bitmap) error

	// ReadPages copies pages pfns into dst, PageSize bytes each, in order.
	//
	// Preconditions: len(dst) >= len(pfns)*PageSize. For a consistent
	// checkpoint dom must be suspended; on a running domain (pre-copy) a
	// page may be torn, which the dirty log then reports again.
	// Success: dst filled.
	// Failure: ErrNoDomain, ErrRange; dst contents undefined.
	ReadPages(dom DomID, pfns []PFN, dst []byte) error

	// CaptureState appends the vCPU, platform and device state of dom to
	// dst and returns it.
	//
	// Preconditions: dom suspended.
	// Success: blobs that RestoreState on a replica of the same shape
	// accepts. Failure: ErrNoDomain, ErrBadState.
	CaptureState(dom DomID, dst []State) ([]State, error)

	// Destroy ends the domain at once (fencing a primary that lost the
	// arbiter, or `xl kemari stop --destroy`).
	//
	// Success: dom no longer exists. Failure: ErrNoDomain.
	Destroy(dom DomID) error
}

// Sink is the standby-side view: it holds a paused replica and applies
// committed epochs to it.
//
// Concurrency: one goroutine (the domain's standby loop) calls the methods
// for a given replica.
type Sink interface {
	// CreateReplica creates a paused domain of the shape info describes,
	// with zeroed memory. It does not start the guest.
	//
	// Success: the replica's DomID. Failure: a backend error; nothing is
	// left behind.
	CreateReplica(info DomainInfo) (DomID, error)

	// WritePages writes len(pfns) pages from data into the replica.
	//
	// Preconditions: the replica is paused (never activated);
	// len(data) >= len(pfns)*PageSize.
	// Success: pages written. Failure: ErrNoDomain, ErrRange, ErrBadState;
	// the replica may be partly written, so the caller must not activate it
	// (the engine applies only verified epochs, so this means a backend
	// fault, reported as fatal for the replica).
	WritePages(dom DomID, pfns []PFN, data []byte) error

	// ReadPages copies pages of the replica into dst, like Source.ReadPages.
	// The engine uses it to verify the replica (digests) and tests use it
	// to compare replica and primary byte for byte.
	ReadPages(dom DomID, pfns []PFN, dst []byte) error

	// RestoreState loads vCPU, platform and device state into the replica.
	//
	// Preconditions: replica paused; blobs from a Source of the same
	// backend. Failure: ErrBadState, or a backend error for a blob it
	// cannot parse (named in the error).
	RestoreState(dom DomID, st []State) error

	// Activate starts the replica from its current memory and state:
	// unpause, attach its NICs and disks on this host and announce its
	// addresses. Called once, on failover.
	//
	// Preconditions: state restored at least once.
	// Success: the guest runs here. Failure: the replica stays paused.
	Activate(dom DomID) error

	// Destroy discards the replica (protection stopped, or superseded).
	Destroy(dom DomID) error
}

// Capabilities says what a backend can do, so the engine and the command
// can refuse early with a clear reason instead of failing mid-epoch.
type Capabilities struct {
	SuspendCancel bool         // Resume continues the guest without a resume hook
	LogDirty      bool         // ReadAndClearDirty works
	Types         []DomainType // domain types it can protect
}

// Hypervisor is one backend: the sim, or Xen.
type Hypervisor interface {
	// Name is the registry name ("sim", "xen").
	Name() string
	Capabilities() Capabilities
	// Lookup resolves a domain name or numeric id to a DomID.
	Lookup(name string) (DomID, error)
	Source() Source
	Sink() Sink
	// Close releases the backend's handles. Domains keep running.
	Close() error
}
