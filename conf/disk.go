package conf

import "strings"

// DiskAccess is what xl-kemari needs from one xl.cfg disk spec.
type DiskAccess struct {
	// Target is the backing path or device ("target"; "" for an empty
	// CD-ROM drive).
	Target string
	// Writable is true unless the spec says access=ro (r, ro) or the
	// device is a CD-ROM, as libxl decides readwrite.
	Writable bool
	// Script is the hotplug script (script=), "" if none.
	Script string
}

// ParseDiskAccess reads the target and the access mode of one disk spec
// as libxlutil's xlu_disk_parse does (xl-disk-configuration(5)): keyword
// parameters KEY=VALUE anywhere, "target=" taking the rest of the spec,
// and the positional parameters target, format, vdev and access in that
// order, where a deprecated prefix ("phy:", "file:", "tap:aio:", ...) on
// the target stands for the format. A devtype of cdrom (devtype=cdrom, or
// a vdev suffix ":cdrom") is read-only whatever the access says. It never
// fails: a spec xl rejects is reported by xl itself.
func ParseDiskAccess(spec string) DiskAccess {
	d := DiskAccess{Writable: true}
	cdrom := false
	pos := 0
	hadPrefix := false
	rest := spec
	for rest != "" {
		var tok string
		if strings.HasPrefix(strings.TrimLeft(rest, " \t\n"), "target=") {
			d.Target = strings.TrimPrefix(strings.TrimLeft(rest, " \t\n"), "target=")
			break
		}
		tok, rest, _ = strings.Cut(rest, ",")
		tok = strings.TrimSpace(tok)
		if k, v, ok := strings.Cut(tok, "="); ok {
			switch strings.TrimSpace(k) {
			case "access":
				d.Writable = writableAccess(v)
			case "script":
				d.Script = strings.TrimSpace(v)
			case "devtype":
				cdrom = v == "cdrom"
			case "vdev":
				if strings.HasSuffix(v, ":cdrom") {
					cdrom = true
				}
			}
			continue
		}
		switch tok {
		case "cdrom":
			cdrom = true
			continue
		case "discard", "no-discard", "direct-io-safe", "colo", "trusted", "untrusted":
			continue
		}
		switch {
		case pos == 0:
			d.Target, hadPrefix = stripDiskPrefix(tok)
			pos = 1
			if hadPrefix {
				pos = 2 // the prefix was the format
			}
		case pos == 1:
			pos = 2 // format
		case pos == 2:
			if strings.HasSuffix(tok, ":cdrom") {
				cdrom = true
			}
			pos = 3
		case pos == 3:
			d.Writable = writableAccess(tok)
			pos = 4
		}
	}
	if cdrom {
		d.Writable = false
	}
	return d
}

func writableAccess(a string) bool {
	switch strings.TrimSpace(a) {
	case "r", "ro":
		return false
	}
	return true
}

// stripDiskPrefix removes the deprecated format prefixes of a positional
// target, as libxlutil's DEPRECATE rules do.
func stripDiskPrefix(t string) (string, bool) {
	for _, p := range []string{"tapdisk:", "tap2:", "tap:", "aio:", "vhd:", "qcow:", "qcow2:", "raw:", "file:", "phy:", "ioemu:"} {
		if strings.HasPrefix(t, p) {
			s, _ := stripDiskPrefix(t[len(p):])
			return s, true
		}
	}
	return t, false
}
