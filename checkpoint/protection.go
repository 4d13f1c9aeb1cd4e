package checkpoint

import "fmt"

// What the primary protects while it is not yet protected: the initial
// synchronisation's account (Status.NotYetProtected, Protection).
//
// Output produced during the pre-copy is not held. Holding it would stall
// every client for the whole pre-copy, which on a guest of gigabytes over
// a shared link is seconds to minutes (TCP retransmits, timeouts of the
// guest's own clients), for no failover gained: until the standby commits
// the sync's checkpoint it holds nothing it could resume, so a failure of
// this host loses the domain either way. What holding would buy is that no
// client saw a reply of a domain that then vanished; what not holding
// costs is exactly that, and it is reported instead: status, start's
// progress and the log say "not yet protected" until the first checkpoint
// is acknowledged. From the sync checkpoint's barrier on, output is held
// (protect in checkpoint), as in every later epoch.

// noteUnheld records that output flows unheld (start, a lost standby):
// the next sync reports itself as not yet protected.
func (p *Primary) noteUnheld() {
	p.status.update(func(s *Status) {
		s.NotYetProtected = true
		s.Protection = "not yet protected (output flows unheld until the initial sync's checkpoint)"
		s.SyncRound, s.SyncSent = 0, 0
	})
}

// noteSyncRound records the pre-copy's progress: round (from 1) and the
// pages sent in this sync so far.
func (p *Primary) noteSyncRound(round int, sent uint64) (msg string, unheld bool) {
	pct := 100 * float64(sent) / float64(max(p.info.Pages, 1))
	p.status.update(func(s *Status) {
		s.SyncRound, s.SyncSent = round, pct
		if s.NotYetProtected {
			s.Protection = fmt.Sprintf("not yet protected (initial sync, round %d, %.0f%% of memory sent)", round, pct)
			msg, unheld = s.Protection, true
		}
	})
	return msg, unheld
}

// noteHeld records the sync's checkpoint e: output is held from its
// barrier on; protection begins with its ack.
func (p *Primary) noteHeld(e uint64) {
	if p.tune != nil {
		p.tune.syncCk = e
	}
	p.status.update(func(s *Status) {
		if s.NotYetProtected {
			s.Protection = fmt.Sprintf("not yet protected (initial sync: checkpoint %d taken, output held from it until the standby acknowledges it)", e)
		}
	})
}

// noteProtected clears the account: a checkpoint was acknowledged.
func noteProtected(s *Status) {
	s.NotYetProtected, s.Protection = false, ""
	s.SyncRound, s.SyncSent = 0, 0
}
