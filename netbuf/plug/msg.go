package plug

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// Plug qdisc actions (include/uapi/linux/pkt_sched.h); x/sys/unix does not
// define them.
const (
	TCQPlugBuffer            int32 = 0
	TCQPlugReleaseOne        int32 = 1
	TCQPlugReleaseIndefinite int32 = 2
	TCQPlugLimit             int32 = 3
)

const (
	tcHRoot    = 0xffffffff
	tcaKind    = 1
	tcaOptions = 2
)

// qdiscMsg encodes the body of an RTM_NEWQDISC request for a plug qdisc on
// ifindex with handle, as root: struct tcmsg, then TCA_KIND "plug" and
// TCA_OPTIONS struct tc_plug_qopt{int action; __u32 limit}, in host byte
// order as the kernel reads them.
func qdiscMsg(ifindex int32, handle uint32, action int32, limit uint32) []byte {
	b := make([]byte, 0, 44)
	ne := binary.NativeEndian
	b = append(b, unix.AF_UNSPEC, 0, 0, 0)
	b = ne.AppendUint32(b, uint32(ifindex))
	b = ne.AppendUint32(b, handle)
	b = ne.AppendUint32(b, tcHRoot)
	b = ne.AppendUint32(b, 0)
	b = ne.AppendUint16(b, 4+5)
	b = ne.AppendUint16(b, tcaKind)
	b = append(b, 'p', 'l', 'u', 'g', 0, 0, 0, 0) // NUL and padding to 4
	b = ne.AppendUint16(b, 4+8)
	b = ne.AppendUint16(b, tcaOptions)
	b = ne.AppendUint32(b, uint32(action))
	b = ne.AppendUint32(b, limit)
	return b
}
