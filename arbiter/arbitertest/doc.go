// Package arbitertest is the contract suite every arbiter backend must
// pass, with the fault hooks and the fake clock its cases need, and a
// remote arbiter that serves one side from another process (so that the
// file backend is tested with two processes contending for its lock).
//
// A backend's test builds a Pair per case and calls Run:
//
//	func TestContract(t *testing.T) {
//		arbitertest.Run(t, func(t *testing.T) *arbitertest.Pair { ... })
//	}
//
// The cases: both roles acquiring at once get exactly one grant, stable
// on asking again; the owner is granted again; distinct sessions are
// independent; one live lease per session, the other role's Acquire
// waits (ErrHeld) while it lives, Release is seen at once; Hold respects
// the session's owner; WaitLapsed returns at once without a lease and
// waits while one lives; a renewing holder keeps its lease; a holder
// whose renewals hang is not Valid ttl-margin after Hold returned, sees
// Done, and the peer sees the lapse and takes over; on a hung backend
// every operation returns by its ctx's deadline. No case sleeps to let
// things settle: waits are on channels, on the fake clock, or polls under
// a generous deadline.
package arbitertest
