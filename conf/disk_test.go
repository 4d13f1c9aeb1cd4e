package conf

import "testing"

// The expectations are what libxlutil 4.17's xlu_disk_parse leaves in
// libxl_device_disk (pdev_path, readwrite && !is_cdrom) for each spec,
// recorded from Debian 12's libxen-dev.
func TestParseDiskAccess(t *testing.T) {
	for _, c := range diskCases {
		got := ParseDiskAccess(c.spec)
		if got.Target != c.target || got.Writable != c.writable {
			t.Errorf("ParseDiskAccess(%q) = %+v, want target %q writable %v", c.spec, got, c.target, c.writable)
		}
	}
}

// diskCases are disk specs xl accepts, with what xlu_disk_parse makes of
// them; disk_conformance_test.go holds them to libxlutil itself.
var diskCases = []struct {
	spec     string
	target   string
	writable bool
}{
	{"phy:/dev/vg/lv,xvda,w", "/dev/vg/lv", true},
	{"phy:/dev/vg/lv,xvda,r", "/dev/vg/lv", false},
	{"/img,raw,xvda,rw", "/img", true},
	{"/img,raw,xvda,ro", "/img", false},
	{"/img,raw,xvda", "/img", true},
	{"/x.img,,xvda", "/x.img", true},
	{"format=raw, vdev=xvda, access=ro, target=/a,b", "/a,b", false},
	{"vdev=hdc, devtype=cdrom, target=/x.iso", "/x.iso", false},
	{"/x.iso,raw,hdc:cdrom,r", "/x.iso", false},
	{"/x.iso,raw,hdc:cdrom,w", "/x.iso", false},
	{"file:/x.img,xvda,w", "/x.img", true},
	{"tap:aio:/x.img,xvda,r", "/x.img", false},
	{"access=r,/img,raw,xvda", "/img", false},
	{",raw,hdc:cdrom,r", "", false},
	{"cdrom,/x.iso,raw,hdc", "/x.iso", false},
	{"vdev=xvdb, access=rw, target=/dev/vg/b", "/dev/vg/b", true},
	{"vdev=xvdb,access=r,target=/dev/vg/b", "/dev/vg/b", false},
	{"/dev/vg/c,,xvdc,r", "/dev/vg/c", false},
	{"phy:/dev/vg/lv,xvda,w,discard", "/dev/vg/lv", true},
	{"tap:qcow2:/x.qcow2,xvda,r", "/x.qcow2", false},
	{"backend=dom0, /img, raw, xvda, rw", "/img", true},
	{"script=block-kemari, /img, raw, xvda, ro", "/img", false},
}
