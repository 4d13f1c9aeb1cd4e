// Package auto chooses the output buffer for a host (netbuf=auto) and
// clears what a crashed earlier run left behind.
//
// Walk-through, at start of the primary:
//
//	if err := auto.Cleanup(""); err != nil { log it }     // stale IFBs, qdiscs, rules
//	be, err := auto.Select(auto.Options{Mode: "auto"})     // plug, else nfqueue, else refuse
//	buf, err := be.Open(dev)
//
// Select refuses with an error that wraps netbuf.ErrUnsupported and names
// every missing kernel option and tool of each backend it tried. Mode
// "none" (no buffering, output leaves at once: no output commit) is
// accepted only with Unsafe set.
package auto
