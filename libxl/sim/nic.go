package sim

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// maxPending bounds the datagrams a NIC holds on the host side before the
// guest takes them into its rx ring (a socket receive buffer, in effect).
const maxPending = 1024

type datagram struct {
	from netip.AddrPort
	data []byte
}

// NIC is one virtual network interface. Received datagrams (from its host
// socket or Inject) wait on the host side until the guest's next quantum
// copies them into the rx ring in guest memory; nothing is written into a
// suspended guest. Frames the guest transmits leave, in order, through the
// egress function, which by default is Transmit.
//
// Concurrency: safe for concurrent use. The egress function is called
// from inside the guest's quantum, with the domain's lock held: it must
// not call back into the domain's Hypervisor methods.
type NIC struct {
	index  int
	mac    net.HardwareAddr
	listen string

	rxFrames, rxDropped, txFrames, txErrors atomic.Uint64

	frame []byte // tx scratch; used under the domain's lock

	mu sync.Mutex
	// Protected by mu.
	conn    *net.UDPConn
	egress  func([]byte)
	pending []datagram
	readers sync.WaitGroup
}

func newNIC(i int, c NICConfig) *NIC {
	mac, _ := net.ParseMAC(c.MAC) // validated by withDefaults
	return &NIC{index: i, mac: mac, listen: c.Listen, frame: make([]byte, 0, 64+MaxPayload)}
}

// Index is the NIC's position in DomainConfig.NICs.
func (n *NIC) Index() int { return n.index }

// MAC is the NIC's hardware address.
func (n *NIC) MAC() net.HardwareAddr { return n.mac }

// Addr is the bound host address, or the zero AddrPort when the NIC has no
// socket (Listen empty, or a replica not yet activated).
func (n *NIC) Addr() netip.AddrPort {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.conn == nil {
		return netip.AddrPort{}
	}
	return n.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Stats returns frames received into the guest, dropped on receive (queue
// full or too large), transmitted, and failed to transmit.
func (n *NIC) Stats() (rx, rxDropped, tx, txErrors uint64) {
	return n.rxFrames.Load(), n.rxDropped.Load(), n.txFrames.Load(), n.txErrors.Load()
}

// SetEgress routes the guest's transmitted frames to f (nil: Transmit
// directly). f gets each frame in transmit order and must copy it if it
// keeps it; see the frame layout in AppendFrame.
func (n *NIC) SetEgress(f func(frame []byte)) {
	n.mu.Lock()
	n.egress = f
	n.mu.Unlock()
}

// Transmit puts a frame on the wire: it sends the payload to the frame's
// destination from the NIC's socket.
//
// Failure: ErrFrame (malformed frame), ErrNoSocket (the NIC has no bound
// socket), or the socket's error.
func (n *NIC) Transmit(frame []byte) error {
	to, payload, err := ParseFrame(frame)
	if err != nil {
		return err
	}
	n.mu.Lock()
	conn := n.conn
	n.mu.Unlock()
	if conn == nil {
		return fmt.Errorf("%w: nic %d", ErrNoSocket, n.index)
	}
	if _, err := conn.WriteToUDPAddrPort(payload, to); err != nil {
		return fmt.Errorf("sim: nic %d: transmit to %v: %w", n.index, to, err)
	}
	return nil
}

// Inject hands the NIC a datagram as if it had arrived on its socket from
// from; the guest sees it at its next quantum. Tests and synctest bubbles
// use it instead of a socket.
//
// Failure: ErrFrame (payload above MaxPayload), ErrQueueFull.
func (n *NIC) Inject(from netip.AddrPort, payload []byte) error {
	if len(payload) > MaxPayload {
		n.rxDropped.Add(1)
		return fmt.Errorf("%w: %d-byte datagram above %d", ErrFrame, len(payload), MaxPayload)
	}
	if !n.enqueue(from, payload) {
		return fmt.Errorf("%w: nic %d", ErrQueueFull, n.index)
	}
	return nil
}

func (n *NIC) enqueue(from netip.AddrPort, payload []byte) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.pending) >= maxPending {
		n.rxDropped.Add(1)
		return false
	}
	n.pending = append(n.pending, datagram{from: from, data: append([]byte(nil), payload...)})
	return true
}

// deliver moves pending datagrams into nic i's rx ring while it has room.
// Preconditions: d.mu held.
func (n *NIC) deliver(d *Domain, i int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.pending) == 0 {
		return
	}
	ring := d.lay.ring(i)
	prod, cons := d.mem.u64(ring, ringRxProd), d.mem.u64(ring, ringRxCons)
	k := 0
	for ; k < len(n.pending) && prod-cons < ringSlots; k++ {
		dg := n.pending[k]
		d.writeSlot(d.lay.rxSlot(i, prod), dg.from, dg.data)
		prod++
		n.rxFrames.Add(1)
	}
	if k > 0 {
		d.mem.putU64(ring, ringRxProd, prod)
		rest := copy(n.pending, n.pending[k:])
		clear(n.pending[rest:])
		n.pending = n.pending[:rest]
	}
}

// drain hands every frame on nic i's tx ring to the egress.
// Preconditions: d.mu held.
func (n *NIC) drain(d *Domain, i int) {
	ring := d.lay.ring(i)
	cons, prod := d.mem.u64(ring, ringTxCons), d.mem.u64(ring, ringTxProd)
	if cons == prod {
		return
	}
	n.mu.Lock()
	egress := n.egress
	n.mu.Unlock()
	for ; cons != prod; cons++ {
		to, payload := d.readSlot(d.lay.txSlot(i, cons))
		n.frame = AppendFrame(n.frame[:0], to, payload)
		n.txFrames.Add(1)
		if egress != nil {
			egress(n.frame)
		} else if err := n.Transmit(n.frame); err != nil {
			n.txErrors.Add(1)
		}
	}
	d.mem.putU64(ring, ringTxCons, cons)
}

// bind opens the NIC's host socket, retrying while the address is in use
// (a previous owner of the service address may still be exiting) until
// retry has passed. No Listen: nothing to do.
func (n *NIC) bind(retry time.Duration) error {
	if n.listen == "" {
		return nil
	}
	ap, err := netip.ParseAddrPort(n.listen)
	if err != nil {
		return fmt.Errorf("%w: nic %d: listen %q: %v", ErrConfig, n.index, n.listen, err)
	}
	deadline := time.Now().Add(retry)
	var conn *net.UDPConn
	for {
		conn, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EADDRINUSE) || !time.Now().Before(deadline) {
			return fmt.Errorf("%w: nic %d: %s (retried %v): %w", ErrBind, n.index, n.listen, retry, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	n.mu.Lock()
	n.conn = conn
	n.readers.Add(1)
	n.mu.Unlock()
	go n.readLoop(conn)
	return nil
}

func (n *NIC) readLoop(conn *net.UDPConn) {
	defer n.readers.Done()
	buf := make([]byte, 64<<10)
	for {
		k, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if k > MaxPayload {
			n.rxDropped.Add(1)
			continue
		}
		n.enqueue(netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), buf[:k])
	}
}

// unbind closes the socket and waits for its reader to exit.
func (n *NIC) unbind() {
	n.mu.Lock()
	conn := n.conn
	n.conn = nil
	n.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
	n.readers.Wait()
}
