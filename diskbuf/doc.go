// Package diskbuf is the disk path of xl-kemari: it captures a guest's
// disk writes per epoch on the primary and applies them per committed
// epoch on the standby, in one of two modes (design §7):
//
//   - Replicate: each host has its own copy of the disk. The primary
//     writes through to its copy and ships each epoch's writes with the
//     checkpoint; the standby stages them and applies them on commit, so
//     its copy always equals the primary's at the last committed epoch.
//   - Shared: one disk (SAN, NFS) both hosts can reach, as Kemari assumed.
//     A write is output: it is held on the primary until the epoch that
//     made it is acknowledged, and reads see held writes. Writes are also
//     shipped, so a standby that takes over can finish flushing epochs
//     that were acknowledged but not yet written when the primary died.
//
// The primary loop calls Barrier at each checkpoint (guest suspended),
// ships what it returns, and calls Release after the ack; the standby
// calls Stage for each shipped write, Commit or Discard at the epoch's
// end, and Activate on failover.
package diskbuf
