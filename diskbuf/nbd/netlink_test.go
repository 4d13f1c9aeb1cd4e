package nbd

import (
	"testing"
	"time"

	"github.com/mdlayher/genetlink"
)

// Golden netlink attributes, written by hand from the netlink attribute
// layout (struct nlattr: u16 length including the 4-byte header, u16
// type, payload padded to 4; NLA_F_NESTED = 0x8000; host byte order,
// little-endian here) and the constants of linux/nbd-netlink.h.
func TestGoldenConnect(t *testing.T) {
	idx := uint32(3)
	data, err := encodeConnect(DeviceConfig{
		Index: &idx, Size: 1 << 20, BlockSize: 512, ServerFlags: 0x016d,
		Timeout: 30 * time.Second, DeadConnTimeout: 2 * time.Minute, FDs: []int{7},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := hx(`
		08000100 03000000                   NBD_ATTR_INDEX u32 3
		0c000200 00001000 00000000          NBD_ATTR_SIZE_BYTES u64 0x100000
		0c000300 00020000 00000000          NBD_ATTR_BLOCK_SIZE_BYTES u64 512
		0c000500 6d010000 00000000          NBD_ATTR_SERVER_FLAGS u64 0x16d
		0c000600 00000000 00000000          NBD_ATTR_CLIENT_FLAGS u64 0
		0c000400 1e000000 00000000          NBD_ATTR_TIMEOUT u64 30
		0c000800 78000000 00000000          NBD_ATTR_DEAD_CONN_TIMEOUT u64 120
		10000780                            NBD_ATTR_SOCKETS, nested, 16 bytes
		  0c000180                          NBD_SOCK_ITEM, nested, 12 bytes
		    08000100 07000000               NBD_SOCK_FD u32 7
	`)
	if string(data) != string(want) {
		t.Fatalf("NBD_CMD_CONNECT attributes\n got % x\nwant % x", data, want)
	}
	msg, err := genetlink.Message{Header: genetlink.Header{Command: nlCmdConnect, Version: genlVersion}, Data: data}.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if string(msg[:4]) != string(hx(`01010000`)) { // cmd CONNECT=1, version 1, reserved
		t.Fatalf("genetlink header % x", msg[:4])
	}
}

func TestGoldenConnectNoIndexTwoSockets(t *testing.T) {
	data, err := encodeConnect(DeviceConfig{Size: 4096, BlockSize: 4096, ServerFlags: FlagHasFlags | FlagCanMultiConn,
		ClientFlags: ClientDestroyOnDisconnect, BackendID: "xvda", FDs: []int{5, 6}})
	if err != nil {
		t.Fatal(err)
	}
	want := hx(`
		0c000200 00100000 00000000   SIZE_BYTES 4096
		0c000300 00100000 00000000   BLOCK_SIZE_BYTES 4096
		0c000500 01010000 00000000   SERVER_FLAGS 0x101
		0c000600 01000000 00000000   CLIENT_FLAGS DESTROY_ON_DISCONNECT
		0c000400 00000000 00000000   TIMEOUT 0
		0c000800 00000000 00000000   DEAD_CONN_TIMEOUT 0
		09000a00 78766461 00000000   BACKEND_IDENTIFIER "xvda\0", padded
		1c000780                     SOCKETS
		  0c000180 08000100 05000000
		  0c000180 08000100 06000000
	`)
	if string(data) != string(want) {
		t.Fatalf("NBD_CMD_CONNECT attributes\n got % x\nwant % x", data, want)
	}
}

func TestGoldenReconfigureDisconnect(t *testing.T) {
	data, err := encodeReconfigure(Reconfig{Index: 2, FDs: []int{9}, DeadConnTimeout: 90 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	want := hx(`
		08000100 02000000            INDEX 2
		0c000800 5a000000 00000000   DEAD_CONN_TIMEOUT 90
		10000780 0c000180 08000100 09000000   SOCKETS { ITEM { FD 9 } }
	`)
	if string(data) != string(want) {
		t.Fatalf("NBD_CMD_RECONFIGURE attributes\n got % x\nwant % x", data, want)
	}
	data, err = encodeReconfigure(Reconfig{Index: 2, FDs: []int{9}, BackendID: "xvda"})
	if err != nil {
		t.Fatal(err)
	}
	want = hx(`
		08000100 02000000            INDEX 2
		10000780 0c000180 08000100 09000000   SOCKETS { ITEM { FD 9 } }
		09000a00 78766461 00000000   BACKEND_IDENTIFIER "xvda"
	`)
	if string(data) != string(want) {
		t.Fatalf("NBD_CMD_RECONFIGURE attributes with a backend\n got % x\nwant % x", data, want)
	}
	d, _ := encodeIndex(11)
	if want := hx(`08000100 0b000000`); string(d) != string(want) {
		t.Fatalf("NBD_CMD_DISCONNECT attributes % x", d)
	}
}

func TestConnectConfigErrors(t *testing.T) {
	for _, c := range []DeviceConfig{
		{Size: 0, BlockSize: 512, FDs: []int{1}},
		{Size: 4096, BlockSize: 1000, FDs: []int{1}},
		{Size: 4096, BlockSize: 256, FDs: []int{1}},
		{Size: 4097, BlockSize: 512, FDs: []int{1}},
		{Size: 4096, BlockSize: 512},
		{Size: 4096, BlockSize: 512, FDs: []int{1, 2}}, // two sockets, no CAN_MULTI_CONN
	} {
		if _, err := encodeConnect(c); err == nil {
			t.Errorf("encodeConnect(%+v) accepted", c)
		}
	}
}

func TestDecodeStatus(t *testing.T) {
	// NBD_ATTR_DEVICE_LIST { ITEM { INDEX 0, CONNECTED 1 }, ITEM { INDEX 4, CONNECTED 0 } },
	// as nbd_genl_status builds it (the kernel sets no NESTED flag there).
	b := hx(`
		2c000900
		  14000100 08000100 00000000 05000200 01000000
		  14000100 08000100 04000000 05000200 00000000
	`)
	got, err := decodeStatus(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != (DeviceStatus{0, true}) || got[1] != (DeviceStatus{4, false}) {
		t.Fatalf("decodeStatus = %+v", got)
	}
	if idx, ok, err := decodeIndex(hx(`08000100 07000000`)); err != nil || !ok || idx != 7 {
		t.Fatalf("decodeIndex = %d %v %v", idx, ok, err)
	}
	if _, err := decodeStatus(hx(`ff00`)); err == nil {
		t.Fatal("truncated status accepted")
	}
}
