//go:build !race

package checkpointtest

const raceEnabled = false
