// Package cli holds the multi-process tests of the command as
// administrators use it (design §9 tier 4): the real xl-kemari binary,
// built once in TestMain, driven through the dist/xl dispatch shim with a
// fake real xl beside it, on the simulator over loopback.
//
// Walk-through: newCluster gives each test its own run directory (the
// control sockets) and PATH; c.xl runs `xl ARGS...` to completion; c.spawn
// starts a long-running protector (receive, listen, start -F) that the
// test may SIGKILL; c.waitState polls `xl kemari status --json` until a
// protection reaches a state or a deadline passes. Nothing sleeps to let
// things settle: every wait is a poll of status with a deadline.
package cli
