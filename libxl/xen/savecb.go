package xen

// SaveCallbacks are the Go side of libxenguest's struct save_callbacks for
// a REMUS checkpointed stream. They run on the goroutine that called
// DomainSaveRemus, inside xc_domain_save; they may block (that is how the
// engine paces epochs) but must not call DomainSaveRemus again.
type SaveCallbacks struct {
	// Precopy decides after each live pre-copy round of the first
	// checkpoint (iteration, pages dirty in it; -1 before the count is
	// known): true sends another round while the guest runs, false stops
	// and copies (suspend, then the last dirty pages). Nil stops at once:
	// one live round of all memory, then the suspended round.
	Precopy func(iteration int, dirty int64) bool
	// Suspend suspends the guest (e.g. libxl_domain_suspend_only). It is
	// called when libxc wants the next checkpoint's consistent state.
	Suspend func() error
	// Postcopy is called once the checkpoint's records, CHECKPOINT
	// included, are written to the stream: resume the guest here.
	Postcopy func() error
	// Checkpoint is called after Postcopy: true takes another checkpoint
	// (its Suspend follows), false ends the stream.
	Checkpoint func() bool
}
