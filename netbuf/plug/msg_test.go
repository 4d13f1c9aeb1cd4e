package plug

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func TestQdiscMsgGolden(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("golden bytes are for little-endian hosts")
	}
	got := qdiscMsg(7, 0x00010000, TCQPlugReleaseOne, 10000000)
	want := []byte{
		0, 0, 0, 0, // tcm_family AF_UNSPEC, padding
		7, 0, 0, 0, // tcm_ifindex
		0, 0, 1, 0, // tcm_handle 1:0
		0xff, 0xff, 0xff, 0xff, // tcm_parent TC_H_ROOT
		0, 0, 0, 0, // tcm_info
		9, 0, 1, 0, 'p', 'l', 'u', 'g', 0, 0, 0, 0, // TCA_KIND "plug\0", padded
		12, 0, 2, 0, // TCA_OPTIONS, 8 bytes of tc_plug_qopt
		1, 0, 0, 0, // action TCQ_PLUG_RELEASE_ONE
		0x80, 0x96, 0x98, 0, // limit 10,000,000 bytes
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got  %v\nwant %v", got, want)
	}
}
