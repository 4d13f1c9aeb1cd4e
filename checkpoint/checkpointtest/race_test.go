//go:build race

package checkpointtest

// The race detector randomises the scheduler's choices (runnext, select)
// to shake races out: no run reproduces another under it.
const raceEnabled = true
