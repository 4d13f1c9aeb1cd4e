package nbd

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
)

// The kernel's NBD generic-netlink interface, from Linux
// include/uapi/linux/nbd-netlink.h (family "nbd", version 1; the enums
// NBD_ATTR_*, NBD_SOCK_ITEM*, NBD_SOCK_*, NBD_DEVICE_ITEM*, NBD_DEVICE_*,
// NBD_CMD_*) and include/uapi/linux/nbd.h (NBD_CFLAG_*). Attribute types
// as in drivers/block/nbd.c nbd_attr_policy: INDEX u32, SIZE_BYTES,
// BLOCK_SIZE_BYTES, TIMEOUT, SERVER_FLAGS, CLIENT_FLAGS and
// DEAD_CONN_TIMEOUT u64, SOCKETS and DEVICE_LIST nested,
// BACKEND_IDENTIFIER string; NBD_SOCK_FD u32; NBD_DEVICE_INDEX u32,
// NBD_DEVICE_CONNECTED u8. TIMEOUT and DEAD_CONN_TIMEOUT are seconds.
const (
	genlName    = "nbd"
	genlVersion = 1

	nlCmdConnect     = 1
	nlCmdDisconnect  = 2
	nlCmdReconfigure = 3
	nlCmdLinkDead    = 4 // multicast by the kernel when a socket dies
	nlCmdStatus      = 5

	nlAttrIndex             = 1
	nlAttrSizeBytes         = 2
	nlAttrBlockSizeBytes    = 3
	nlAttrTimeout           = 4
	nlAttrServerFlags       = 5
	nlAttrClientFlags       = 6
	nlAttrSockets           = 7
	nlAttrDeadConnTimeout   = 8
	nlAttrDeviceList        = 9
	nlAttrBackendIdentifier = 10

	nlSockItem = 1 // in NBD_ATTR_SOCKETS
	nlSockFD   = 1 // in NBD_SOCK_ITEM

	nlDeviceItem      = 1 // in NBD_ATTR_DEVICE_LIST
	nlDeviceIndex     = 1 // in NBD_DEVICE_ITEM
	nlDeviceConnected = 2
)

// Client flags (NBD_ATTR_CLIENT_FLAGS).
const (
	// ClientDestroyOnDisconnect removes /dev/nbdN when it disconnects.
	ClientDestroyOnDisconnect uint64 = 1 << 0
	// ClientDisconnectOnClose disconnects the device when the netlink
	// socket that connected it closes. Not for xl-kemari: a restarted
	// daemon must find the device still there, to reconfigure it.
	ClientDisconnectOnClose uint64 = 1 << 1
)

// ErrNoModule means the kernel has no nbd generic-netlink family (module
// not loaded or not built).
var ErrNoModule = errors.New("nbd: kernel has no nbd netlink family (no nbd module)")

// DeviceConfig is what NBD_CMD_CONNECT tells the kernel: the result of a
// handshake that did not happen on the socket.
type DeviceConfig struct {
	// Index selects /dev/nbdIndex; nil lets the kernel pick a free one.
	Index       *uint32
	Size        uint64 // bytes
	BlockSize   uint64 // logical block size: 512..PAGE_SIZE, power of 2
	ServerFlags uint16 // the server's transmission flags
	ClientFlags uint64
	// Timeout is the per-request timeout (whole seconds; 0: the kernel
	// waits forever, logging stuck requests). On expiry with one socket
	// the kernel marks the socket dead and requeues the I/O.
	Timeout time.Duration
	// DeadConnTimeout is how long requeued I/O waits for a reconfigure
	// with a new socket before it fails.
	DeadConnTimeout time.Duration
	// BackendID, if set, is checked by the kernel against later configs.
	BackendID string
	// FDs are the kernel ends of the sockets (one per connection; more
	// than one needs FlagCanMultiConn).
	FDs []int
}

func seconds(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	return uint64((d + time.Second - 1) / time.Second)
}

func encodeSockets(ae *netlink.AttributeEncoder, fds []int) {
	ae.Nested(nlAttrSockets, func(nae *netlink.AttributeEncoder) error {
		for _, fd := range fds {
			nae.Nested(nlSockItem, func(s *netlink.AttributeEncoder) error {
				s.Uint32(nlSockFD, uint32(fd))
				return nil
			})
		}
		return nil
	})
}

// encodeConnect returns the attributes of NBD_CMD_CONNECT.
func encodeConnect(c DeviceConfig) ([]byte, error) {
	if c.Size == 0 {
		return nil, errors.New("nbd: connect: size 0")
	}
	if c.BlockSize < 512 || c.BlockSize&(c.BlockSize-1) != 0 {
		return nil, fmt.Errorf("nbd: connect: block size %d is not a power of 2 of at least 512", c.BlockSize)
	}
	if c.Size%c.BlockSize != 0 {
		return nil, fmt.Errorf("nbd: connect: size %d is not a multiple of block size %d", c.Size, c.BlockSize)
	}
	if len(c.FDs) == 0 {
		return nil, errors.New("nbd: connect: no socket")
	}
	if len(c.FDs) > 1 && c.ServerFlags&FlagCanMultiConn == 0 {
		return nil, fmt.Errorf("nbd: connect: %d sockets without CAN_MULTI_CONN", len(c.FDs))
	}
	ae := netlink.NewAttributeEncoder()
	if c.Index != nil {
		ae.Uint32(nlAttrIndex, *c.Index)
	}
	ae.Uint64(nlAttrSizeBytes, c.Size)
	ae.Uint64(nlAttrBlockSizeBytes, c.BlockSize)
	ae.Uint64(nlAttrServerFlags, uint64(c.ServerFlags))
	ae.Uint64(nlAttrClientFlags, c.ClientFlags)
	ae.Uint64(nlAttrTimeout, seconds(c.Timeout))
	ae.Uint64(nlAttrDeadConnTimeout, seconds(c.DeadConnTimeout))
	if c.BackendID != "" {
		ae.String(nlAttrBackendIdentifier, c.BackendID)
	}
	encodeSockets(ae, c.FDs)
	return ae.Encode()
}

// Reconfig is what NBD_CMD_RECONFIGURE changes on a connected device.
// The kernel puts each new socket in the place of a dead one (so a
// restarted daemon's socket replaces the one that died with it).
type Reconfig struct {
	Index           uint32
	FDs             []int
	Timeout         time.Duration // 0: unchanged
	DeadConnTimeout time.Duration // 0: unchanged
	ClientFlags     *uint64       // nil: unchanged
	// BackendID must repeat the device's NBD_ATTR_BACKEND_IDENTIFIER if
	// it was connected with one: Linux refuses a reconfigure without it
	// (EINVAL, "must specify backend", seen on 6.1 in the lab).
	BackendID string
}

func encodeReconfigure(r Reconfig) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(nlAttrIndex, r.Index)
	if r.Timeout > 0 {
		ae.Uint64(nlAttrTimeout, seconds(r.Timeout))
	}
	if r.DeadConnTimeout > 0 {
		ae.Uint64(nlAttrDeadConnTimeout, seconds(r.DeadConnTimeout))
	}
	if r.ClientFlags != nil {
		ae.Uint64(nlAttrClientFlags, *r.ClientFlags)
	}
	if len(r.FDs) > 0 {
		encodeSockets(ae, r.FDs)
	}
	if r.BackendID != "" {
		ae.String(nlAttrBackendIdentifier, r.BackendID)
	}
	return ae.Encode()
}

func encodeIndex(index uint32) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(nlAttrIndex, index)
	return ae.Encode()
}

// DeviceStatus is one entry of NBD_CMD_STATUS.
type DeviceStatus struct {
	Index     uint32
	Connected bool
}

func decodeStatus(b []byte) ([]DeviceStatus, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil, fmt.Errorf("nbd: status reply: %w", err)
	}
	var out []DeviceStatus
	for ad.Next() {
		if ad.Type() != nlAttrDeviceList {
			continue
		}
		ad.Nested(func(list *netlink.AttributeDecoder) error {
			for list.Next() {
				if list.Type() != nlDeviceItem {
					continue
				}
				var d DeviceStatus
				list.Nested(func(item *netlink.AttributeDecoder) error {
					for item.Next() {
						switch item.Type() {
						case nlDeviceIndex:
							d.Index = item.Uint32()
						case nlDeviceConnected:
							d.Connected = item.Uint8() != 0
						}
					}
					return nil
				})
				out = append(out, d)
			}
			return nil
		})
	}
	if err := ad.Err(); err != nil {
		return nil, fmt.Errorf("nbd: status reply: %w", err)
	}
	return out, nil
}

func decodeIndex(b []byte) (uint32, bool, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return 0, false, err
	}
	var idx uint32
	found := false
	for ad.Next() {
		if ad.Type() == nlAttrIndex {
			idx, found = ad.Uint32(), true
		}
	}
	return idx, found, ad.Err()
}

// Kernel is a generic-netlink connection to the kernel's nbd driver.
//
// Concurrency: one goroutine at a time.
type Kernel struct {
	c   *genetlink.Conn
	fam genetlink.Family
}

// OpenKernel dials generic netlink and resolves the "nbd" family. It
// returns an error wrapping ErrNoModule when the family is absent.
func OpenKernel() (*Kernel, error) {
	c, err := genetlink.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("nbd: dial generic netlink: %w", err)
	}
	fam, err := c.GetFamily(genlName)
	if err != nil {
		c.Close()
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: %v", ErrNoModule, err)
		}
		return nil, fmt.Errorf("nbd: resolve generic netlink family %q: %w", genlName, err)
	}
	return &Kernel{c: c, fam: fam}, nil
}

// Close closes the netlink socket (the devices stay as they are, unless
// connected with ClientDisconnectOnClose).
func (k *Kernel) Close() error { return k.c.Close() }

// exec sends cmd and reads its answer. Commands the kernel answers with a
// message of their own (CONNECT, STATUS) are sent without NLM_F_ACK: with
// it the kernel sends the acknowledgement as a second datagram after the
// reply, Execute returns on the reply, and the stale acknowledgement is
// read as the answer to the next command on this socket ("mismatched
// sequence in netlink reply", seen on Linux 6.1 in the lab). A failure is
// reported as an NLMSG_ERROR either way.
func (k *Kernel) exec(cmd uint8, data []byte, what string) ([]genetlink.Message, error) {
	flags := netlink.Request | netlink.Acknowledge
	if cmd == nlCmdConnect || cmd == nlCmdStatus {
		flags = netlink.Request
	}
	msgs, err := k.c.Execute(genetlink.Message{
		Header: genetlink.Header{Command: cmd, Version: genlVersion},
		Data:   data,
	}, k.fam.ID, flags)
	if err != nil {
		return nil, fmt.Errorf("nbd: netlink %s: %w", what, err)
	}
	return msgs, nil
}

// Connect sends NBD_CMD_CONNECT and returns the device's index
// (/dev/nbdIndex). The kernel takes its own reference on each socket:
// the caller may close its copies of c.FDs afterwards.
func (k *Kernel) Connect(c DeviceConfig) (uint32, error) {
	data, err := encodeConnect(c)
	if err != nil {
		return 0, err
	}
	msgs, err := k.exec(nlCmdConnect, data, "NBD_CMD_CONNECT")
	if err != nil {
		return 0, err
	}
	for _, m := range msgs {
		if idx, ok, err := decodeIndex(m.Data); err == nil && ok {
			return idx, nil
		}
	}
	if c.Index != nil {
		return *c.Index, nil
	}
	return 0, errors.New("nbd: netlink NBD_CMD_CONNECT: reply has no NBD_ATTR_INDEX")
}

// Reconfigure sends NBD_CMD_RECONFIGURE.
func (k *Kernel) Reconfigure(r Reconfig) error {
	data, err := encodeReconfigure(r)
	if err != nil {
		return err
	}
	_, err = k.exec(nlCmdReconfigure, data, fmt.Sprintf("NBD_CMD_RECONFIGURE /dev/nbd%d", r.Index))
	return err
}

// Disconnect sends NBD_CMD_DISCONNECT for /dev/nbdIndex.
func (k *Kernel) Disconnect(index uint32) error {
	data, _ := encodeIndex(index)
	_, err := k.exec(nlCmdDisconnect, data, fmt.Sprintf("NBD_CMD_DISCONNECT /dev/nbd%d", index))
	return err
}

// Status sends NBD_CMD_STATUS for one device, or all with index nil.
func (k *Kernel) Status(index *uint32) ([]DeviceStatus, error) {
	var data []byte
	if index != nil {
		data, _ = encodeIndex(*index)
	}
	msgs, err := k.exec(nlCmdStatus, data, "NBD_CMD_STATUS")
	if err != nil {
		return nil, err
	}
	var out []DeviceStatus
	for _, m := range msgs {
		ds, err := decodeStatus(m.Data)
		if err != nil {
			return nil, err
		}
		out = append(out, ds...)
	}
	return out, nil
}

// WatchLinkDead joins the nbd multicast group ("nbd_mc_group"), on which
// the kernel announces NBD_CMD_LINK_DEAD when a device's socket dies.
// Use a Kernel of its own for watching: NextLinkDead blocks.
func (k *Kernel) WatchLinkDead() error {
	for _, g := range k.fam.Groups {
		if g.Name == "nbd_mc_group" {
			if err := k.c.JoinGroup(g.ID); err != nil {
				return fmt.Errorf("nbd: join netlink group %s: %w", g.Name, err)
			}
			return nil
		}
	}
	return errors.New("nbd: netlink family nbd has no group nbd_mc_group")
}

// NextLinkDead blocks until the kernel announces a dead socket and
// returns the device's index. deadline zero means none.
func (k *Kernel) NextLinkDead(deadline time.Time) (uint32, error) {
	if err := k.c.SetReadDeadline(deadline); err != nil {
		return 0, err
	}
	for {
		msgs, _, err := k.c.Receive()
		if err != nil {
			return 0, fmt.Errorf("nbd: receive NBD_CMD_LINK_DEAD: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Command != nlCmdLinkDead {
				continue
			}
			if idx, ok, err := decodeIndex(m.Data); err == nil && ok {
				return idx, nil
			}
		}
	}
}
