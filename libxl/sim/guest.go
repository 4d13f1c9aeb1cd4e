package sim

import (
	"encoding/binary"
	"net/netip"

	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/sim/svc"
)

// Guest memory layout. Everything a guest program knows lives at fixed
// places in its memory, so the pages plus the registers are its whole
// state:
//
//	page 0                  header: magic, step counter (the guest's "jiffies")
//	pages 1 ...             per NIC: a ring page (rx prod/cons, tx prod/cons),
//	                        rxRingPages of rx slots, txRingPages of tx slots
//	service only            state page (counter, journal head, statistics),
//	                        KV table, per-client dedup table
//	dataBase ... Pages-1    the writer workloads' data
//
// A ring slot holds one datagram: its length, the peer address (source
// on rx, destination on tx) and the payload.
const (
	slotSize     = 1024
	slotsPerPage = libxl.PageSize / slotSize
	ringSlots    = 32
	ringPages    = ringSlots / slotsPerPage
	nicPages     = 1 + 2*ringPages
	slotHeader   = 24
	// MaxPayload is the largest datagram a sim NIC carries; larger ones
	// are dropped on receive and refused on transmit, like an MTU.
	MaxPayload = slotSize - slotHeader

	kvEntries       = 2048
	kvEntrySize     = 32
	kvPages         = kvEntries * kvEntrySize / libxl.PageSize
	dedupEntries    = 1024
	dedupEntrySize  = 64
	dedupPages      = dedupEntries * dedupEntrySize / libxl.PageSize
	journalMagic    = 0x314c4e524a4b4c58 // "XLKJRNL1"
	headerMagic     = 0x31304d49534b4c58 // "XLKSIM01"
	svcMagic        = 0x3143565353494d58 // "XMISSVC1"
	svcBudget       = ringSlots          // requests per NIC per quantum: tx never overflows
	maxPagesPerStep = 1 << 20
)

// Offsets in the ring page of a NIC.
const (
	ringRxProd = 0
	ringRxCons = 8
	ringTxProd = 16
	ringTxCons = 24
)

// Offsets in the service state page.
const (
	svcOffMagic     = 0
	svcOffCounter   = 8
	svcOffJournal   = 16
	svcOffApplied   = 24
	svcOffDupes     = 32
	svcOffStale     = 40
	svcOffMalformed = 48
	svcOffKeys      = 56
	svcOffClients   = 64
	svcOffIOErrors  = 72
	svcOffFull      = 80
)

type layout struct {
	nicBase   libxl.PFN
	svcState  libxl.PFN
	kvBase    libxl.PFN
	dedupBase libxl.PFN
	dataBase  libxl.PFN
}

func newLayout(c *DomainConfig) layout {
	l := layout{nicBase: 1}
	next := l.nicBase + libxl.PFN(nicPages*len(c.NICs))
	if c.Workload == WorkloadService {
		l.svcState = next
		l.kvBase = next + 1
		l.dedupBase = l.kvBase + kvPages
		next = l.dedupBase + dedupPages
	}
	l.dataBase = next
	return l
}

func (l layout) ring(nic int) libxl.PFN { return l.nicBase + libxl.PFN(nic*nicPages) }

// slot locates one ring slot in guest memory.
type slot struct {
	p   libxl.PFN
	off int
}

func (l layout) rxSlot(nic int, i uint64) slot {
	s := i % ringSlots
	return slot{l.ring(nic) + 1 + libxl.PFN(s/slotsPerPage), int(s%slotsPerPage) * slotSize}
}

func (l layout) txSlot(nic int, i uint64) slot {
	s := i % ringSlots
	return slot{l.ring(nic) + 1 + ringPages + libxl.PFN(s/slotsPerPage), int(s%slotsPerPage) * slotSize}
}

// vcpu is the register file of one virtual CPU: everything of the guest
// program that is not in memory.
type vcpu struct {
	rng    uint64 // xorshift64* state, never 0
	acc    uint64 // fractional pages owed, in page·ns (rate accounting)
	cursor uint64 // stream writer position within the data pages
	ticks  uint64 // quanta this vCPU ran
}

func (v *vcpu) next() uint64 {
	x := v.rng
	x ^= x >> 12
	x ^= x << 25
	x ^= x >> 27
	v.rng = x
	return x * 2685821657736338717
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// boot sets up the registers and the memory a freshly created guest has.
// Preconditions: d.mu held (or d not yet shared).
func (d *Domain) boot() {
	dataPages := d.cfg.Pages - uint64(d.lay.dataBase)
	for i := range d.vcpus {
		v := &d.vcpus[i]
		v.rng = splitmix(d.cfg.Seed + uint64(i)*0x9e3779b97f4a7c15)
		if v.rng == 0 {
			v.rng = 1
		}
		if dataPages > 0 {
			v.cursor = uint64(i) * dataPages / uint64(len(d.vcpus))
		}
	}
	d.mem.putU64(0, 0, headerMagic)
	d.mem.putU64(0, 24, d.cfg.Pages)
	if d.cfg.Workload == WorkloadService {
		d.mem.putU64(d.lay.svcState, svcOffMagic, svcMagic)
	}
}

// quantum runs the guest for one step: deliver received datagrams into
// the rx rings, run each vCPU's share of the workload, hand transmitted
// frames to the NICs' egress. Preconditions: d.mu held.
func (d *Domain) quantum() {
	d.plat.steps++
	d.mem.putU64(0, 8, d.plat.steps)
	for i, n := range d.nics {
		n.deliver(d, i)
	}
	for i := range d.vcpus {
		v := &d.vcpus[i]
		v.ticks++
		switch {
		case isWriter(d.cfg.Workload):
			d.writerStep(i, v)
		case d.cfg.Workload == WorkloadService && i == 0:
			d.serviceStep()
		}
	}
	for i, n := range d.nics {
		n.drain(d, i)
	}
}

// writerStep dirties this vCPU's share of Rate pages for one quantum.
func (d *Domain) writerStep(i int, v *vcpu) {
	share := uint64(d.cfg.Rate / len(d.vcpus))
	if i < d.cfg.Rate%len(d.vcpus) {
		share++
	}
	v.acc += share * uint64(d.cfg.Quantum.Nanoseconds())
	n := v.acc / 1e9
	v.acc %= 1e9
	n = min(n, maxPagesPerStep)
	base := uint64(d.lay.dataBase)
	span := d.cfg.Pages - base
	if d.cfg.Workload == WorkloadHotset {
		span = d.cfg.HotPages
	}
	if span == 0 {
		return
	}
	for range n {
		var off uint64
		switch d.cfg.Workload {
		case WorkloadStream:
			off = v.cursor % span
			v.cursor = (v.cursor + 1) % span
		default:
			off = v.next() % span
		}
		d.mutate(libxl.PFN(base+off), v)
	}
}

// mutate changes page p the ways real guests do, so that the wire codec
// sees the mix it would: mostly small edits (a counter, a list link),
// structured fills (compressible), zeroed pages, and some random data.
func (d *Domain) mutate(p libxl.PFN, v *vcpu) {
	r := v.next()
	step := d.plat.steps
	switch k := r % 100; {
	case k < 55:
		pg := d.mem.writable(p)
		off := int(r>>8%(libxl.PageSize/8)) * 8
		words := 1 + int(r>>24%8)
		for w := 0; w < words && off+8*w < libxl.PageSize; w++ {
			binary.LittleEndian.PutUint64(pg[off+8*w:], step<<20^uint64(p)<<4^uint64(w))
		}
	case k < 80:
		pg := d.mem.writable(p)
		var rec [64]byte
		copy(rec[16:], "xl-kemari sim record; the quick brown fox ")
		binary.LittleEndian.PutUint64(rec[0:], step)
		binary.LittleEndian.PutUint64(rec[8:], uint64(p))
		for off := 0; off < libxl.PageSize; off += len(rec) {
			copy(pg[off:], rec[:])
			rec[63]++
		}
	case k < 90:
		d.mem.zero(p)
	default:
		pg := d.mem.writable(p)
		for off := 0; off < libxl.PageSize; off += 8 {
			binary.LittleEndian.PutUint64(pg[off:], v.next())
		}
	}
}

// serviceStep consumes requests from every NIC's rx ring and queues the
// replies on the same NIC's tx ring.
func (d *Domain) serviceStep() {
	m := &d.mem
	for nic := range d.nics {
		ring := d.lay.ring(nic)
		for range svcBudget {
			cons, prod := m.u64(ring, ringRxCons), m.u64(ring, ringRxProd)
			if cons == prod {
				break
			}
			from, payload := d.readSlot(d.lay.rxSlot(nic, cons))
			m.putU64(ring, ringRxCons, cons+1)
			req, err := svc.DecodeRequest(payload)
			if err != nil {
				d.svcAdd(svcOffMalformed, 1)
				continue
			}
			rep := d.serve(req)
			b, err := svc.AppendReply(d.scratch[:0], rep)
			if err != nil {
				continue // not reachable: serve builds valid replies
			}
			txp := m.u64(ring, ringTxProd)
			d.writeSlot(d.lay.txSlot(nic, txp), from, b)
			m.putU64(ring, ringTxProd, txp+1)
		}
	}
}

func (d *Domain) svcAdd(off int, n uint64) {
	d.mem.putU64(d.lay.svcState, off, d.mem.u64(d.lay.svcState, off)+n)
}

// entry addresses entry i of a table of fixed-size entries at base.
func entry(base libxl.PFN, size, i int) (libxl.PFN, int) {
	b := i * size
	return base + libxl.PFN(b/libxl.PageSize), b % libxl.PageSize
}

// probe finds key in an open-addressing table whose entries start with
// {used, key}: the index of its entry, or of the free entry where it would
// go (found false), or -1 if the table is full.
func (d *Domain) probe(base libxl.PFN, size, n int, key uint64) (int, bool) {
	h := int((key * 0x9e3779b97f4a7c15) >> 40 % uint64(n))
	for k := range n {
		i := (h + k) % n
		p, off := entry(base, size, i)
		if d.mem.u64(p, off) == 0 {
			return i, false
		}
		if d.mem.u64(p, off+8) == key {
			return i, true
		}
	}
	return -1, false
}

// serve applies one request at most once and returns its reply.
func (d *Domain) serve(req svc.Request) svc.Reply {
	m := &d.mem
	st := d.lay.svcState
	rep := svc.Reply{Client: req.Client, Seq: req.Seq}
	di, known := d.probe(d.lay.dedupBase, dedupEntrySize, dedupEntries, req.Client)
	if known {
		p, off := entry(d.lay.dedupBase, dedupEntrySize, di)
		last := m.u64(p, off+16)
		switch {
		case req.Seq == last:
			d.svcAdd(svcOffDupes, 1)
			rep.Status = svc.Status(m.u64(p, off+24))
			rep.Value = m.u64(p, off+32)
			return rep
		case req.Seq < last:
			d.svcAdd(svcOffStale, 1)
			rep.Status = svc.StatusStale
			return rep
		}
	} else if di < 0 {
		d.svcAdd(svcOffFull, 1)
		rep.Status = svc.StatusFull
		return rep
	}

	counter := m.u64(st, svcOffCounter)
	rep.Status = svc.StatusOK
	kvi, kvFound := -1, false
	switch req.Op {
	case svc.OpIncr:
		rep.Value = counter + 1
	case svc.OpGet:
		rep.Value = counter
	case svc.OpPut:
		kvi, kvFound = d.probe(d.lay.kvBase, kvEntrySize, kvEntries, req.Key)
		rep.Value = req.Value
		if kvi < 0 {
			rep.Status, rep.Value = svc.StatusFull, 0
			d.svcAdd(svcOffFull, 1)
		}
	case svc.OpGetKey:
		kvi, kvFound = d.probe(d.lay.kvBase, kvEntrySize, kvEntries, req.Key)
		if kvFound {
			p, off := entry(d.lay.kvBase, kvEntrySize, kvi)
			rep.Value = m.u64(p, off+16)
		} else {
			rep.Status = svc.StatusNotFound
		}
	}

	// Journal first: a request whose journal entry could not be written
	// is not applied, and not remembered, so its retry may still succeed.
	if err := d.journal(req, rep); err != nil {
		d.svcAdd(svcOffIOErrors, 1)
		return svc.Reply{Client: req.Client, Seq: req.Seq, Status: svc.StatusIOError}
	}
	if rep.Status == svc.StatusOK {
		switch req.Op {
		case svc.OpIncr:
			m.putU64(st, svcOffCounter, rep.Value)
		case svc.OpPut:
			p, off := entry(d.lay.kvBase, kvEntrySize, kvi)
			if !kvFound {
				m.putU64(p, off, 1)
				m.putU64(p, off+8, req.Key)
				d.svcAdd(svcOffKeys, 1)
			}
			m.putU64(p, off+16, req.Value)
		}
	}
	p, off := entry(d.lay.dedupBase, dedupEntrySize, di)
	if !known {
		m.putU64(p, off, 1)
		m.putU64(p, off+8, req.Client)
		d.svcAdd(svcOffClients, 1)
	}
	m.putU64(p, off+16, req.Seq)
	m.putU64(p, off+24, uint64(rep.Status))
	m.putU64(p, off+32, rep.Value)
	d.svcAdd(svcOffApplied, 1)
	return rep
}

// journal appends one sector describing the request to disk 0, a ring
// over the whole disk. No disk: nothing to do.
func (d *Domain) journal(req svc.Request, rep svc.Reply) error {
	if len(d.disks) == 0 {
		return nil
	}
	dk := d.disks[0]
	head := d.mem.u64(d.lay.svcState, svcOffJournal)
	var sec [libxl.SectorSize]byte
	le := binary.LittleEndian
	le.PutUint64(sec[0:], journalMagic)
	le.PutUint64(sec[8:], head)
	le.PutUint64(sec[16:], d.plat.steps)
	le.PutUint64(sec[24:], req.Client)
	le.PutUint64(sec[32:], req.Seq)
	le.PutUint64(sec[40:], uint64(req.Op))
	le.PutUint64(sec[48:], req.Key)
	le.PutUint64(sec[56:], req.Value)
	le.PutUint64(sec[64:], uint64(rep.Status))
	le.PutUint64(sec[72:], rep.Value)
	if err := dk.guestWrite(head%dk.sectors, sec[:]); err != nil {
		return err
	}
	d.mem.putU64(d.lay.svcState, svcOffJournal, head+1)
	return nil
}

// readSlot returns the peer address and payload of a ring slot. The
// payload aliases d.slotBuf. A corrupt length (only possible if the guest
// memory was garbage) yields an empty payload.
func (d *Domain) readSlot(sl slot) (netip.AddrPort, []byte) {
	pg := d.mem.get(sl.p)
	if pg == nil {
		return netip.AddrPort{}, nil
	}
	s := pg[sl.off : sl.off+slotSize]
	n := int(binary.LittleEndian.Uint16(s[0:]))
	port := binary.LittleEndian.Uint16(s[2:])
	var addr netip.Addr
	switch s[4] {
	case 4:
		addr = netip.AddrFrom4([4]byte(s[8:12]))
	case 6:
		addr = netip.AddrFrom16([16]byte(s[8:24]))
	}
	if n > MaxPayload {
		n = 0
	}
	m := copy(d.slotBuf[:], s[slotHeader:slotHeader+n])
	return netip.AddrPortFrom(addr, port), d.slotBuf[:m]
}

// writeSlot stores a datagram in a ring slot.
// Preconditions: len(payload) <= MaxPayload.
func (d *Domain) writeSlot(sl slot, peer netip.AddrPort, payload []byte) {
	s := d.mem.writable(sl.p)[sl.off : sl.off+slotSize]
	binary.LittleEndian.PutUint16(s[0:], uint16(len(payload)))
	binary.LittleEndian.PutUint16(s[2:], peer.Port())
	a := peer.Addr().Unmap()
	clear(s[4:slotHeader])
	switch {
	case a.Is4():
		s[4] = 4
		b := a.As4()
		copy(s[8:], b[:])
	case a.Is6():
		s[4] = 6
		b := a.As16()
		copy(s[8:], b[:])
	}
	copy(s[slotHeader:], payload)
}
