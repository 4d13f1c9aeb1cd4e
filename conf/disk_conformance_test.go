//go:build xen

package conf

import (
	"testing"

	"github.com/xl-kemari/xl-kemari/conf/internal/xlutil"
)

// ParseDiskAccess agrees with libxlutil's xlu_disk_parse on every disk
// spec of the table, and the table's expectations are libxlutil's. Run
// with: go test -tags xen ./conf/...
func TestDiskAccessConformance(t *testing.T) {
	for _, c := range diskCases {
		xl := xlutil.ParseDisk(c.spec)
		if xl.Errno != 0 {
			t.Errorf("xl rejects %q (errno %d): not a case for the table", c.spec, xl.Errno)
			continue
		}
		if xl.Target != c.target || xl.Writable != c.writable {
			t.Errorf("%q: xl says target %q writable %v, the table %q %v", c.spec, xl.Target, xl.Writable, c.target, c.writable)
		}
		if got := ParseDiskAccess(c.spec); got.Target != xl.Target || got.Writable != xl.Writable {
			t.Errorf("%q: ParseDiskAccess %+v, xl target %q writable %v", c.spec, got, xl.Target, xl.Writable)
		}
	}
}
