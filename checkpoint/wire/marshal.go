package wire

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

var le = binary.LittleEndian

// pad8 is the number of zero octets that pad n to a multiple of 8.
func pad8(n int) int { return -n & 7 }

// Fixed body sizes.
const (
	helloFixed      = 48
	domainFixed     = 32
	epochBeginSize  = 16
	pagesFixed      = 16
	stateFixed      = 8
	diskFixed       = 16
	epochEndSize    = 48
	ackSize         = 16
	heartbeatSize   = 32
	goodbyeFixed    = 4
	nackFixed       = 12
	minNICSize      = 6 + 2 + 4 + 4 + 4
	minAddrSize     = 1 + 4
	minDiskDescSize = 8 + 1 + 3 + 4
)

// numChunks is the chunk count of a compressed data area.
func numChunks(rawLen uint32, shift uint8) int {
	c := 1 << shift
	return (int(rawLen) + c - 1) / c
}

// pagesPrefixLen is the length of a PAGES body without its data area.
func pagesPrefixLen(p *Pages) int {
	c := len(p.PFNs)
	n := pagesFixed + 8*c + c + pad8(c)
	if p.Codec != CodecNone {
		n += 4*len(p.Chunks) + pad8(4*len(p.Chunks))
	}
	return n
}

// checkPages validates the structure of p against the wire rules and lim.
func checkPages(p *Pages, lim *Limits) error {
	c := len(p.PFNs)
	if c == 0 || len(p.Enc) != c {
		return fmt.Errorf("%w: pages: %d pfns, %d encodings", ErrMalformed, c, len(p.Enc))
	}
	if c > lim.MaxPages {
		return fmt.Errorf("%w: pages: %d pages, limit %d", ErrTooLarge, c, lim.MaxPages)
	}
	if uint64(p.RawLen) > uint64(c)*PageSize {
		return fmt.Errorf("%w: pages: raw_len %d over %d pages", ErrMalformed, p.RawLen, c)
	}
	switch p.Codec {
	case CodecNone:
		if p.ChunkShift != 0 || len(p.Chunks) != 0 || int(p.RawLen) != len(p.Data) {
			return fmt.Errorf("%w: pages: uncompressed area with chunks or raw_len %d != %d", ErrMalformed, p.RawLen, len(p.Data))
		}
	case CodecLZ4, CodecZstd:
		if p.ChunkShift < 16 || p.ChunkShift > 22 {
			return fmt.Errorf("%w: pages: chunk shift %d", ErrMalformed, p.ChunkShift)
		}
		if len(p.Chunks) != numChunks(p.RawLen, p.ChunkShift) {
			return fmt.Errorf("%w: pages: %d chunks for raw_len %d", ErrMalformed, len(p.Chunks), p.RawLen)
		}
		sum := 0
		for i, cl := range p.Chunks {
			raw := chunkRaw(p, i)
			n := int(cl &^ ChunkStored)
			if cl&ChunkStored != 0 && n != raw || n == 0 {
				return fmt.Errorf("%w: pages: chunk %d length %#x", ErrMalformed, i, cl)
			}
			sum += n
		}
		if sum != len(p.Data) {
			return fmt.Errorf("%w: pages: chunks sum to %d, area %d", ErrMalformed, sum, len(p.Data))
		}
	default:
		return fmt.Errorf("%w: pages: codec %d", ErrMalformed, p.Codec)
	}
	for i, e := range p.Enc {
		if e < EncZero || e > EncXOR {
			return fmt.Errorf("%w: pages: entry %d encoding %d", ErrMalformed, i, e)
		}
	}
	return nil
}

// chunkRaw is the uncompressed length of chunk i.
func chunkRaw(p *Pages, i int) int {
	c := 1 << p.ChunkShift
	if rest := int(p.RawLen) - i*c; rest < c {
		return rest
	}
	return c
}

func appendStr(b []byte, s string) []byte {
	b = le.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func appendBytes(b, s []byte) []byte {
	b = le.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func checkStr(what, s string, lim *Limits) error {
	if len(s) > lim.MaxString {
		return fmt.Errorf("%w: %s is %d octets, limit %d", ErrTooLarge, what, len(s), lim.MaxString)
	}
	return nil
}

// checkHello validates h against lim before it is written.
func checkHello(h *Hello, lim *Limits) error {
	if h.Role != RolePrimary && h.Role != RoleStandby {
		return fmt.Errorf("%w: hello: role %d", ErrMalformed, h.Role)
	}
	if h.Codec > CodecZstd {
		return fmt.Errorf("%w: hello: codec %d", ErrMalformed, h.Codec)
	}
	if h.Inflight == 0 {
		return fmt.Errorf("%w: hello: inflight 0", ErrMalformed)
	}
	d := &h.Domain
	for _, s := range [...]struct{ what, s string }{{"domain name", d.Name}, {"domain type", d.Type}, {"workload", d.Workload}} {
		if err := checkStr(s.what, s.s, lim); err != nil {
			return err
		}
	}
	if len(d.Config) > lim.MaxConfig {
		return fmt.Errorf("%w: domain config is %d octets, limit %d", ErrTooLarge, len(d.Config), lim.MaxConfig)
	}
	if len(d.NICs) > lim.MaxNICs || len(d.Disks) > lim.MaxDisks {
		return fmt.Errorf("%w: %d nics, %d disks", ErrTooLarge, len(d.NICs), len(d.Disks))
	}
	for i := range d.NICs {
		n := &d.NICs[i]
		if len(n.Addrs) > lim.MaxAddrs {
			return fmt.Errorf("%w: nic %d has %d addresses", ErrTooLarge, i, len(n.Addrs))
		}
		for _, a := range n.Addrs {
			if !a.IsValid() || len(a.Zone()) > 255-16 {
				return fmt.Errorf("%w: nic %d address %v", ErrMalformed, i, a)
			}
		}
		if err := checkStr("nic bridge", n.Bridge, lim); err != nil {
			return err
		}
		if err := checkStr("nic backend", n.Backend, lim); err != nil {
			return err
		}
	}
	for i := range d.Disks {
		if err := checkStr("disk target", d.Disks[i].Target, lim); err != nil {
			return err
		}
	}
	return nil
}

func appendHello(b []byte, h *Hello) []byte {
	b = le.AppendUint32(b, h.Version)
	b = append(b, byte(h.Role), byte(h.Codec), 0, 0)
	b = le.AppendUint32(b, h.Inflight)
	b = le.AppendUint32(b, h.Flags)
	b = append(b, h.Session[:]...)
	b = le.AppendUint64(b, h.Committed)
	b = le.AppendUint64(b, h.MemDigest)
	d := &h.Domain
	b = append(b, d.UUID[:]...)
	b = le.AppendUint64(b, d.Pages)
	b = le.AppendUint32(b, d.VCPUs)
	b = le.AppendUint32(b, 0)
	b = appendStr(b, d.Name)
	b = appendStr(b, d.Type)
	b = appendStr(b, d.Workload)
	b = appendBytes(b, d.Config)
	b = le.AppendUint32(b, uint32(len(d.NICs)))
	for i := range d.NICs {
		n := &d.NICs[i]
		b = append(b, n.MAC[:]...)
		b = append(b, 0, 0)
		b = le.AppendUint32(b, uint32(len(n.Addrs)))
		for _, a := range n.Addrs {
			// netip's binary form is exactly the wire form: 4, 16 or
			// 16+zone octets; the length octet in front makes it parseable.
			at := len(b)
			b = append(b, 0)
			b, _ = a.AppendBinary(b)
			b[at] = byte(len(b) - at - 1)
		}
		b = appendStr(b, n.Bridge)
		b = appendStr(b, n.Backend)
	}
	b = le.AppendUint32(b, uint32(len(d.Disks)))
	for i := range d.Disks {
		k := &d.Disks[i]
		b = le.AppendUint64(b, k.Sectors)
		w := byte(0)
		if k.Writable {
			w = 1
		}
		b = append(b, w, 0, 0, 0)
		b = appendStr(b, k.Target)
	}
	return b
}

// appendBody appends rec's body to b, except a PAGES data area, which it
// returns as tail so that the writer can send it without copying.
func appendBody(b []byte, rec Record, lim *Limits) (out, tail []byte, err error) {
	switch r := rec.(type) {
	case *Hello:
		if err := checkHello(r, lim); err != nil {
			return b, nil, err
		}
		return appendHello(b, r), nil, nil
	case *EpochBegin:
		if r.Flags&^(EpochInitial|EpochResync) != 0 || r.Flags&EpochInitial != 0 && r.Epoch != 0 {
			return b, nil, fmt.Errorf("%w: epoch begin: epoch %d flags %#x", ErrMalformed, r.Epoch, r.Flags)
		}
		b = le.AppendUint64(b, r.Epoch)
		b = le.AppendUint32(b, r.Flags)
		return le.AppendUint32(b, 0), nil, nil
	case *Pages:
		if err := checkPages(r, lim); err != nil {
			return b, nil, err
		}
		c := len(r.PFNs)
		b = le.AppendUint32(b, uint32(c))
		b = append(b, byte(r.Codec), r.ChunkShift, 0, 0)
		b = le.AppendUint32(b, r.RawLen)
		b = le.AppendUint32(b, uint32(len(r.Data)))
		for _, pfn := range r.PFNs {
			b = le.AppendUint64(b, pfn)
		}
		for _, e := range r.Enc {
			b = append(b, byte(e))
		}
		b = append(b, zeros[:pad8(c)]...)
		if r.Codec != CodecNone {
			for _, cl := range r.Chunks {
				b = le.AppendUint32(b, cl)
			}
			b = append(b, zeros[:pad8(4*len(r.Chunks))]...)
		}
		return b, r.Data, nil
	case *State:
		if r.Kind == 0 {
			return b, nil, fmt.Errorf("%w: state: kind 0", ErrMalformed)
		}
		b = le.AppendUint32(b, r.Kind)
		b = le.AppendUint32(b, r.Index)
		return b, r.Data, nil
	case *Disk:
		if len(r.Data) == 0 || len(r.Data)%SectorSize != 0 || len(r.Data) > lim.MaxDiskWrite {
			return b, nil, fmt.Errorf("%w: disk write of %d octets", ErrMalformed, len(r.Data))
		}
		b = le.AppendUint32(b, r.Disk)
		b = le.AppendUint32(b, 0)
		b = le.AppendUint64(b, r.Sector)
		return b, r.Data, nil
	case *EpochEnd:
		b = le.AppendUint64(b, r.Epoch)
		b = le.AppendUint64(b, r.Pages)
		b = le.AppendUint64(b, r.States)
		b = le.AppendUint64(b, r.DiskWrites)
		b = le.AppendUint64(b, r.Digest)
		return le.AppendUint64(b, r.MemDigest), nil, nil
	case *Ack:
		b = le.AppendUint64(b, r.Epoch)
		return le.AppendUint64(b, r.MemDigest), nil, nil
	case *Heartbeat:
		b = le.AppendUint64(b, r.Seq)
		b = le.AppendUint64(b, uint64(r.SentNanos))
		b = le.AppendUint64(b, r.Epoch)
		return le.AppendUint64(b, r.Flushed), nil, nil
	case *Goodbye:
		if err := checkStr("goodbye message", r.Message, lim); err != nil {
			return b, nil, err
		}
		b = le.AppendUint32(b, r.Code)
		return append(b, r.Message...), nil, nil
	case *Nack:
		if err := checkStr("nack message", r.Message, lim); err != nil {
			return b, nil, err
		}
		b = le.AppendUint64(b, r.Epoch)
		b = le.AppendUint32(b, r.Code)
		return append(b, r.Message...), nil, nil
	case *Timeout:
		if r.Nanos == 0 {
			return b, nil, fmt.Errorf("%w: timeout of 0 ns", ErrMalformed)
		}
		return le.AppendUint64(b, r.Nanos), nil, nil
	case *Opaque:
		if r.T == 0 || r.T.known() {
			return b, nil, fmt.Errorf("%w: opaque record of type %v", ErrMalformed, r.T)
		}
		return b, r.Body, nil
	case nil:
		return b, nil, fmt.Errorf("%w: nil record", ErrMalformed)
	}
	return b, nil, fmt.Errorf("%w: record %T of type %v", ErrMalformed, rec, rec.Type())
}

var zeros [8]byte

// dec reads a body front to back; the first problem sticks in err.
type dec struct {
	b   []byte
	off int
	err error
}

func (d *dec) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

func (d *dec) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b)-d.off {
		d.fail("%w: field of %d octets at body offset %d overruns %d-octet body", ErrMalformed, n, d.off, len(d.b))
		return nil
	}
	s := d.b[d.off : d.off+n : d.off+n]
	d.off += n
	return s
}

func (d *dec) u8() uint8 {
	if s := d.take(1); s != nil {
		return s[0]
	}
	return 0
}

func (d *dec) u32() uint32 {
	if s := d.take(4); s != nil {
		return le.Uint32(s)
	}
	return 0
}

func (d *dec) u64() uint64 {
	if s := d.take(8); s != nil {
		return le.Uint64(s)
	}
	return 0
}

// count reads a u32 count of elements of at least minSize octets each and
// bounds it by limit and by what the body can still hold, so that no slice
// is ever sized from an unchecked number.
func (d *dec) count(what string, limit, minSize int) int {
	n := d.u32()
	if d.err != nil {
		return 0
	}
	if uint64(n) > uint64(limit) {
		d.fail("%w: %d %s, limit %d", ErrTooLarge, n, what, limit)
		return 0
	}
	if uint64(n)*uint64(minSize) > uint64(len(d.b)-d.off) {
		d.fail("%w: %d %s cannot fit in %d octets", ErrMalformed, n, what, len(d.b)-d.off)
		return 0
	}
	return int(n)
}

func (d *dec) str(what string, limit int) string {
	n := d.u32()
	if d.err == nil && uint64(n) > uint64(limit) {
		d.fail("%w: %s is %d octets, limit %d", ErrTooLarge, what, n, limit)
	}
	return string(d.take(int(n)))
}

func (d *dec) end(what string) {
	if d.err == nil && d.off != len(d.b) {
		d.fail("%w: %s: %d trailing octets", ErrMalformed, what, len(d.b)-d.off)
	}
}

func decodeHello(b []byte, h *Hello, lim *Limits) error {
	d := dec{b: b}
	*h = Hello{}
	h.Version = d.u32()
	h.Role = Role(d.u8())
	h.Codec = Codec(d.u8())
	d.take(2)
	h.Inflight = d.u32()
	h.Flags = d.u32()
	copy(h.Session[:], d.take(16))
	h.Committed = d.u64()
	h.MemDigest = d.u64()
	dd := &h.Domain
	copy(dd.UUID[:], d.take(16))
	dd.Pages = d.u64()
	dd.VCPUs = d.u32()
	d.take(4)
	dd.Name = d.str("domain name", lim.MaxString)
	dd.Type = d.str("domain type", lim.MaxString)
	dd.Workload = d.str("workload", lim.MaxString)
	if n := d.count("config octets", lim.MaxConfig, 1); d.err == nil {
		dd.Config = append([]byte(nil), d.take(n)...)
	}
	if n := d.count("nics", lim.MaxNICs, minNICSize); n > 0 {
		dd.NICs = make([]NICDesc, n)
		for i := range dd.NICs {
			nic := &dd.NICs[i]
			copy(nic.MAC[:], d.take(6))
			d.take(2)
			if na := d.count("addresses", lim.MaxAddrs, minAddrSize); na > 0 {
				nic.Addrs = make([]netip.Addr, na)
				for j := range nic.Addrs {
					l := int(d.u8())
					raw := d.take(l)
					if d.err != nil {
						break
					}
					if l != 4 && l < 16 {
						d.fail("%w: nic %d address of %d octets", ErrMalformed, i, l)
						break
					}
					if err := nic.Addrs[j].UnmarshalBinary(raw); err != nil {
						d.fail("%w: nic %d address: %v", ErrMalformed, i, err)
					}
				}
			}
			nic.Bridge = d.str("nic bridge", lim.MaxString)
			nic.Backend = d.str("nic backend", lim.MaxString)
			if d.err != nil {
				break
			}
		}
	}
	if n := d.count("disks", lim.MaxDisks, minDiskDescSize); n > 0 {
		dd.Disks = make([]DiskDesc, n)
		for i := range dd.Disks {
			k := &dd.Disks[i]
			k.Sectors = d.u64()
			switch w := d.u8(); w {
			case 0, 1:
				k.Writable = w == 1
			default:
				d.fail("%w: disk %d writable %d", ErrMalformed, i, w)
			}
			d.take(3)
			k.Target = d.str("disk target", lim.MaxString)
			if d.err != nil {
				break
			}
		}
	}
	d.end("hello")
	if d.err != nil {
		return d.err
	}
	switch {
	case h.Role != RolePrimary && h.Role != RoleStandby:
		return fmt.Errorf("%w: hello: role %d", ErrMalformed, h.Role)
	case h.Codec > CodecZstd:
		return fmt.Errorf("%w: hello: codec %d", ErrMalformed, h.Codec)
	case h.Inflight == 0:
		return fmt.Errorf("%w: hello: inflight 0", ErrMalformed)
	}
	return nil
}

// decodePages parses a PAGES body into p, reusing p's slices. p.Data aliases b.
func decodePages(b []byte, p *Pages, lim *Limits) error {
	if len(b) < pagesFixed {
		return fmt.Errorf("%w: pages body of %d octets", ErrMalformed, len(b))
	}
	c := int(le.Uint32(b))
	p.Codec = Codec(b[4])
	p.ChunkShift = b[5]
	p.RawLen = le.Uint32(b[8:])
	areaLen := le.Uint32(b[12:])
	if c > lim.MaxPages {
		return fmt.Errorf("%w: pages: %d pages, limit %d", ErrTooLarge, c, lim.MaxPages)
	}
	if c == 0 {
		return fmt.Errorf("%w: pages: count 0", ErrMalformed)
	}
	nch := 0
	if p.Codec != CodecNone {
		if p.ChunkShift < 16 || p.ChunkShift > 22 {
			return fmt.Errorf("%w: pages: chunk shift %d", ErrMalformed, p.ChunkShift)
		}
		if uint64(p.RawLen) > uint64(c)*PageSize {
			return fmt.Errorf("%w: pages: raw_len %d over %d pages", ErrMalformed, p.RawLen, c)
		}
		nch = numChunks(p.RawLen, p.ChunkShift)
	}
	want := uint64(pagesFixed+8*c+c+pad8(c)) + uint64(areaLen)
	if p.Codec != CodecNone {
		want += uint64(4*nch + pad8(4*nch))
	}
	if want != uint64(len(b)) {
		return fmt.Errorf("%w: pages: body of %d octets, layout says %d", ErrMalformed, len(b), want)
	}
	off := pagesFixed
	p.PFNs = p.PFNs[:0]
	for i := 0; i < c; i++ {
		p.PFNs = append(p.PFNs, le.Uint64(b[off+8*i:]))
	}
	off += 8 * c
	p.Enc = p.Enc[:0]
	for i := 0; i < c; i++ {
		p.Enc = append(p.Enc, PageEnc(b[off+i]))
	}
	if !allZero(b[off+c : off+c+pad8(c)]) {
		return fmt.Errorf("%w: pages: non-zero encoding padding", ErrMalformed)
	}
	off += c + pad8(c)
	p.Chunks = p.Chunks[:0]
	if p.Codec != CodecNone {
		for i := 0; i < nch; i++ {
			p.Chunks = append(p.Chunks, le.Uint32(b[off+4*i:]))
		}
		off += 4 * nch
		if !allZero(b[off : off+pad8(4*nch)]) {
			return fmt.Errorf("%w: pages: non-zero chunk table padding", ErrMalformed)
		}
		off += pad8(4 * nch)
	}
	p.Data = b[off:len(b):len(b)]
	return checkPages(p, lim)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// decodeBody parses body b of known type t into the reader's record of that
// type and returns it.
func (r *Reader) decodeBody(t Type, b []byte) (Record, error) {
	lim := &r.lim
	switch t {
	case TypeHello:
		return &r.helloRec, decodeHello(b, &r.helloRec, lim)
	case TypeEpochBegin:
		if len(b) != epochBeginSize {
			return nil, fmt.Errorf("%w: epoch begin body of %d octets", ErrMalformed, len(b))
		}
		r.epochBegin = EpochBegin{Epoch: le.Uint64(b), Flags: le.Uint32(b[8:])}
		if f := r.epochBegin.Flags; f&^(EpochInitial|EpochResync) != 0 || f&EpochInitial != 0 && r.epochBegin.Epoch != 0 {
			return nil, fmt.Errorf("%w: epoch begin: epoch %d flags %#x", ErrMalformed, r.epochBegin.Epoch, f)
		}
		return &r.epochBegin, nil
	case TypePages:
		return &r.pagesRec, decodePages(b, &r.pagesRec, lim)
	case TypeState:
		if len(b) < stateFixed {
			return nil, fmt.Errorf("%w: state body of %d octets", ErrMalformed, len(b))
		}
		r.state = State{Kind: le.Uint32(b), Index: le.Uint32(b[4:]), Data: b[stateFixed:len(b):len(b)]}
		if r.state.Kind == 0 {
			return nil, fmt.Errorf("%w: state: kind 0", ErrMalformed)
		}
		return &r.state, nil
	case TypeDisk:
		if len(b) < diskFixed {
			return nil, fmt.Errorf("%w: disk body of %d octets", ErrMalformed, len(b))
		}
		n := len(b) - diskFixed
		if n > lim.MaxDiskWrite {
			return nil, fmt.Errorf("%w: disk write of %d octets, limit %d", ErrTooLarge, n, lim.MaxDiskWrite)
		}
		if n == 0 || n%SectorSize != 0 {
			return nil, fmt.Errorf("%w: disk write of %d octets", ErrMalformed, n)
		}
		r.disk = Disk{Disk: le.Uint32(b), Sector: le.Uint64(b[8:]), Data: b[diskFixed:len(b):len(b)]}
		return &r.disk, nil
	case TypeEpochEnd:
		if len(b) != epochEndSize {
			return nil, fmt.Errorf("%w: epoch end body of %d octets", ErrMalformed, len(b))
		}
		r.epochEnd = EpochEnd{Epoch: le.Uint64(b), Pages: le.Uint64(b[8:]), States: le.Uint64(b[16:]),
			DiskWrites: le.Uint64(b[24:]), Digest: le.Uint64(b[32:]), MemDigest: le.Uint64(b[40:])}
		return &r.epochEnd, nil
	case TypeAck:
		if len(b) != ackSize {
			return nil, fmt.Errorf("%w: ack body of %d octets", ErrMalformed, len(b))
		}
		r.ack = Ack{Epoch: le.Uint64(b), MemDigest: le.Uint64(b[8:])}
		return &r.ack, nil
	case TypeHeartbeat:
		if len(b) != heartbeatSize {
			return nil, fmt.Errorf("%w: heartbeat body of %d octets", ErrMalformed, len(b))
		}
		r.heartbeat = Heartbeat{Seq: le.Uint64(b), SentNanos: int64(le.Uint64(b[8:])), Epoch: le.Uint64(b[16:]), Flushed: le.Uint64(b[24:])}
		return &r.heartbeat, nil
	case TypeGoodbye:
		if len(b) < goodbyeFixed {
			return nil, fmt.Errorf("%w: goodbye body of %d octets", ErrMalformed, len(b))
		}
		if n := len(b) - goodbyeFixed; n > lim.MaxString {
			return nil, fmt.Errorf("%w: goodbye message of %d octets", ErrTooLarge, n)
		}
		r.goodbye = Goodbye{Code: le.Uint32(b), Message: string(b[goodbyeFixed:])}
		return &r.goodbye, nil
	case TypeNack:
		if len(b) < nackFixed {
			return nil, fmt.Errorf("%w: nack body of %d octets", ErrMalformed, len(b))
		}
		if n := len(b) - nackFixed; n > lim.MaxString {
			return nil, fmt.Errorf("%w: nack message of %d octets", ErrTooLarge, n)
		}
		r.nack = Nack{Epoch: le.Uint64(b), Code: le.Uint32(b[8:]), Message: string(b[nackFixed:])}
		return &r.nack, nil
	case TypeTimeout:
		if len(b) != 8 {
			return nil, fmt.Errorf("%w: timeout body of %d octets", ErrMalformed, len(b))
		}
		r.timeout = Timeout{Nanos: le.Uint64(b)}
		if r.timeout.Nanos == 0 {
			return nil, fmt.Errorf("%w: timeout of 0 ns", ErrMalformed)
		}
		return &r.timeout, nil
	}
	return nil, fmt.Errorf("%w: %v", ErrUnknownType, t)
}
