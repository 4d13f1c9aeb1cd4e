package checkpoint

import (
	"errors"

	"github.com/xl-kemari/xl-kemari/checkpoint/epoch"
	"github.com/xl-kemari/xl-kemari/checkpoint/wire"
	"github.com/xl-kemari/xl-kemari/diskbuf"
	"github.com/xl-kemari/xl-kemari/libxl"
)

// errSyncAborted: the connection went away under a sync.
var errSyncAborted = errors.New("checkpoint: sync aborted")

// startSync carries out ActSync. A resync is one checkpoint carrying the
// dirty sets and disk writes of every epoch the standby did not commit;
// it runs on the loop. A full sync is an iterative pre-copy on its own
// goroutine, ending in a checkpoint the loop takes.
func (p *Primary) startSync(a epoch.Action) error {
	if p.syncing != nil {
		<-p.syncing // a previous sync still unwinding
		p.syncing = nil
	}
	if p.conn == nil {
		return nil // already disconnected; the machine will notice
	}
	if !a.Full {
		var extra []libxl.PFN
		var writes []diskbuf.Write
		for _, h := range p.history {
			if h.epoch > a.Since {
				extra = append(extra, h.pfns...)
				writes = append(writes, h.writes...)
			}
		}
		p.history = p.history[:0]
		if err := p.checkpoint(a.Epoch, wire.EpochResync, true, extra, writes); err != nil {
			return err
		}
		p.local = append(p.local, epoch.Event{Kind: epoch.EvSyncDone, Epoch: a.Epoch})
		return nil
	}
	p.history = p.history[:0]
	clear(p.barriers)
	done := make(chan struct{})
	p.syncing = done
	pc := p.conn
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(done)
		extra, err := p.precopy(pc)
		if err != nil {
			if !errors.Is(err, errSyncAborted) {
				pc.fail(p, err)
			}
			return
		}
		p.post(pevent{gen: pc.gen, final: a.Epoch, extra: extra})
	}()
	return nil
}

// precopy sends memory (and, replicating, disk) while the guest runs, in
// rounds (epoch 0, INITIAL: docs/protocol.md §7.2), until a round's dirty
// set is small or stops shrinking. It returns the pages dirtied in the
// last round read, which the sync's checkpoint must carry.
//
// The stop rule: at most SyncStopPages dirty pages (the pause the final
// checkpoint costs is then about one epoch's), or SyncMaxRounds rounds, or
// two rounds in a row that shrank the dirty set by less than 10% (the guest
// dirties memory as fast as it is copied; waiting longer gains nothing).
func (p *Primary) precopy(pc *pconn) ([]libxl.PFN, error) {
	dom := p.cfg.Domain
	p.digest.reset()
	if p.disk != nil {
		// Capture (and, shared, hold) writes from here: the copy below may
		// race with them, and the final checkpoint ships them all.
		p.disk.Protect()
	}
	p.src.SetLogDirty(dom, false)
	if err := p.src.SetLogDirty(dom, true); err != nil {
		return nil, err
	}
	total := float64(max(p.info.Pages, 1))
	var (
		prev    = ^uint64(0)
		stalled int
		buf     []byte
		sent    uint64 // pages sent in this sync
	)
	if msg, unheld := p.noteSyncRound(1, 0); unheld {
		p.log.Warn("initial sync: output is not held until its checkpoint; should this host fail before the standby acknowledges that checkpoint, there is no replica to fail over to", "protection", msg)
	}
	for round := 0; ; round++ {
		p.dirty.Reset()
		if err := p.src.ReadAndClearDirty(dom, p.dirty); err != nil {
			return nil, err
		}
		n := p.dirty.Count()
		pfns := p.dirty.AppendSet(make([]libxl.PFN, 0, n))
		if round > 0 {
			if n*10 > prev*9 {
				stalled++
			} else {
				stalled = 0
			}
			if n <= uint64(p.cfg.SyncStopPages) || round >= p.cfg.SyncMaxRounds || stalled >= 2 {
				return pfns, nil
			}
		}
		prev = n
		if !pc.send(sendItem{kind: itemBegin, epoch: 0, flags: wire.EpochInitial}) {
			return nil, errSyncAborted
		}
		for i := 0; i < len(pfns); i += wire.MaxPagesPerRecord {
			j := min(i+wire.MaxPagesPerRecord, len(pfns))
			n := int64(j-i) * libxl.PageSize
			if !pc.reserve(n) {
				return nil, errSyncAborted
			}
			buf = make([]byte, n) // the sender owns it once queued
			if err := p.src.ReadPages(dom, pfns[i:j], buf); err != nil {
				return nil, err
			}
			p.digest.update(pfns[i:j], buf)
			if !pc.send(sendItem{kind: itemPages, pfns: pfns[i:j], data: buf, reserved: min(n, syncBudget)}) {
				return nil, errSyncAborted
			}
			sent += uint64(j - i)
			pct := 95.0
			if round == 0 {
				pct = 95 * float64(j) / total
				p.status.update(func(s *Status) { s.SyncPercent = pct })
			}
			if j%(64*wire.MaxPagesPerRecord) == 0 || j == len(pfns) {
				msg, _ := p.noteSyncRound(round+1, sent)
				p.observe(Observation{Kind: ObsSync, Percent: pct, Pages: j, Round: round + 1, Msg: msg})
			}
		}
		if round == 0 && p.disk != nil && !p.cfg.SharedDisk {
			if err := p.copyDisks(pc); err != nil {
				return nil, err
			}
		}
		if !pc.send(sendItem{kind: itemEnd, epoch: 0, digest: p.digest.sum}) {
			return nil, errSyncAborted
		}
	}
}

// copyDisks ships every non-zero MiB of each disk (replicate mode's first
// copy; writes racing with it are shipped again by the final checkpoint).
func (p *Primary) copyDisks(pc *pconn) error {
	const chunk = wire.MaxDiskWrite
	var total, done int64
	for _, d := range p.info.Disks {
		total += int64(d.Sectors) * diskbuf.SectorSize
	}
	for i, d := range p.info.Disks {
		size := int64(d.Sectors) * diskbuf.SectorSize
		for off := int64(0); off < size; off += chunk {
			n := min(chunk, size-off)
			done += n
			if done == total || (done/chunk)%64 == 0 {
				pct := 100 * float64(done) / float64(total)
				p.status.update(func(s *Status) { s.DiskSyncPercent = pct })
			}
			b := make([]byte, n)
			if _, err := p.disk.Device(i).ReadAt(b, off); err != nil {
				return err
			}
			if isZeroPage(b) {
				continue
			}
			w := diskbuf.Write{Disk: uint32(i), Sector: uint64(off / diskbuf.SectorSize), Data: b}
			if !pc.send(sendItem{kind: itemWrites, writes: []diskbuf.Write{w}}) {
				return errSyncAborted
			}
		}
	}
	return nil
}
