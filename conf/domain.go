package conf

import (
	"os"
	"strconv"
	"strings"
)

// Domain is what xl-kemari needs from one xl.cfg plus its kemari entries.
type Domain struct {
	// Name is the domain name ("name", required, as xl requires it).
	Name string
	// Type is "pv", "pvh" or "hvm" ("type", or the deprecated "builder";
	// xl's default is "pv").
	Type string
	// MemoryMiB is the initial memory ("memory"); 32 when unset, libxl's
	// default.
	MemoryMiB int
	// VCPUs is the number of vCPUs online at start ("vcpus"); default 1.
	VCPUs int
	// VIFs and Disks are the "vif" and "disk" specs, unparsed.
	VIFs  []string // "vif" entries
	Disks []string // "disk" entries
	// Kemari holds the effective protection toward each standby: one per
	// kemari entry, or a single one made of the other layers when the file
	// has no entry. It is never empty.
	Kemari []Protection
	// File is the parsed xl.cfg, with every key.
	File *File
}

// Defaults xl applies to keys a domain leaves out.
const (
	defaultMemoryMiB = 32 // libxl__domain_build_info_setdefault
	defaultVCPUs     = 1
)

// LoadDomain reads the xl.cfg file at path and works out the effective
// protection settings of the domain, layering cli over the file's kemari
// entries over host's [defaults] over the built-in defaults. host may be
// nil for built-in defaults.
//
// Every problem in every layer is reported, joined, each a *PosError; on
// any problem it returns nil, so a bad file never half-applies.
func LoadDomain(path string, host *Host, cli Overrides) (*Domain, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, readError(path, "domain configuration", err)
	}
	return ParseDomain(path, src, host, cli)
}

// ParseDomain is LoadDomain for a file already read; name is used in
// positions.
func ParseDomain(name string, src []byte, host *Host, cli Overrides) (*Domain, error) {
	if host == nil {
		host = DefaultHost()
	}
	f, perr := ParseXLCfg(name, src)
	var errs errorList
	errs = append(errs, Errors(perr)...)
	d := &Domain{File: f, Type: "pv", MemoryMiB: defaultMemoryMiB, VCPUs: defaultVCPUs}
	start := Pos{File: name, Line: 1, Col: 1}

	if v := f.Get("name"); v == nil {
		if perr == nil {
			errs.add(start, ErrMissing, `the domain has no name: add name = "..." as xl requires`)
		}
	} else if s, ok := stringValue(v, "name", &errs); ok {
		d.Name = s
	}
	d.Type = domainType(f, &errs)
	if n, ok := numberSetting(f, "memory", 1, 1<<40, &errs); ok {
		d.MemoryMiB = n
	}
	if n, ok := numberSetting(f, "vcpus", 1, 1<<20, &errs); ok {
		d.VCPUs = n
	}
	d.VIFs = listSetting(f, "vif", &errs)
	d.Disks = listSetting(f, "disk", &errs)
	if v := f.Get("pci"); v != nil && (v.Kind == KindString || len(v.List) > 0) {
		errs.add(v.Pos, ErrConflict, "PCI passthrough devices keep state outside guest memory that cannot be checkpointed; a domain with pci devices cannot be protected")
	}
	for _, k := range f.Keys() {
		if k != KemariKey && osaDistance(k, KemariKey) <= 2 && len(k) >= 4 {
			errs.add(f.Lookup(k).KeyPos, ErrUnknownKey, "unknown key %q; did you mean %q? (xl ignores keys it does not know, so this entry would be lost)", k, KemariKey)
		}
	}

	d.Kemari = protections(f, host, cli, &errs)
	for i := range d.Kemari {
		p := &d.Kemari[i]
		p.validate(&errs)
		if p.Disk == "none" && len(d.Disks) > 0 && !p.Unsafe {
			errs.add(p.blame(FieldDisk, FieldUnsafe), ErrConflict,
				"disk=none leaves this domain's %d disk(s) unreplicated, so the standby would resume on stale disks; add unsafe=1 to accept that, or use disk=replicate or disk=shared", len(d.Disks))
		}
		if p.Transport == "tls" {
			host.checkTLS(p.Origin(FieldTransport).Pos, &errs)
		}
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	return d, nil
}

// protections layers the kemari entries of f between host and cli.
func protections(f *File, host *Host, cli Overrides, errs *errorList) []Protection {
	var entries []Protection
	v := f.Get(KemariKey)
	if v != nil {
		var specs []*Value
		if v.Kind == KindString {
			specs = []*Value{v}
		} else {
			for _, e := range v.List {
				if e.Kind != KindString {
					errs.add(e.Pos, ErrInvalidValue, "a kemari entry must be a string of key=value pairs, not a list")
					continue
				}
				specs = append(specs, e)
			}
		}
		for _, s := range specs {
			p := host.Defaults
			applySpec(&p, s.Str, s.PosAt, SourceDomain, errs)
			entries = append(entries, p)
		}
		if len(entries) > 1 {
			seen := map[string]Pos{}
			for i, p := range entries {
				if p.Origins[FieldStandby].Source != SourceDomain {
					errs.add(specs[i].Pos, ErrMissing, "with several kemari entries, each needs its own standby=HOST")
					continue
				}
				at := p.Origins[FieldStandby].Pos
				if prev, dup := seen[p.StandbyAddr()]; dup {
					errs.add(at, ErrConflict, "standby %s already has an entry at %d:%d", p.StandbyAddr(), prev.Line, prev.Col)
				}
				seen[p.StandbyAddr()] = at
			}
		}
	}
	if len(entries) == 0 {
		entries = []Protection{host.Defaults}
	}

	over, set := cli.parse(errs)
	if set[FieldStandby] && len(entries) > 1 {
		// Naming a standby on the command line picks its entry.
		var picked []Protection
		var names []string
		for _, p := range entries {
			names = append(names, p.Standby)
			if p.StandbyAddr() == over.StandbyAddr() {
				picked = append(picked, p)
			}
		}
		if len(picked) == 0 {
			errs.add(over.Origins[FieldStandby].Pos, ErrConflict, "standby %s has no kemari entry in %s (entries: %s)", over.Standby, f.Name, strings.Join(names, ", "))
		} else {
			entries = picked
		}
	}
	for i := range entries {
		for fl := Field(0); fl < NumFields; fl++ {
			if set[fl] {
				// The text form of a parsed value always parses back.
				entries[i].setText(fl, over.Value(fl), over.Origins[fl])
			}
		}
	}
	return entries
}

func stringValue(v *Value, key string, errs *errorList) (string, bool) {
	if v.Kind != KindString {
		errs.add(v.Pos, ErrInvalidValue, "%s must be a single value, not a list", key)
		return "", false
	}
	return v.Str, true
}

func domainType(f *File, errs *errorList) string {
	if v := f.Get("type"); v != nil {
		s, ok := stringValue(v, "type", errs)
		switch {
		case !ok:
		case s == "pv" || s == "pvh" || s == "hvm":
			return s
		default:
			errs.add(v.Pos, ErrInvalidValue, `type must be "pv", "pvh" or "hvm", not %q%s`, s, didYouMean(s, []string{"pv", "pvh", "hvm"}))
		}
		return "pv"
	}
	if v := f.Get("builder"); v != nil {
		s, ok := stringValue(v, "builder", errs)
		switch {
		case !ok:
		case s == "hvm":
			return "hvm"
		case s == "generic":
			return "pv"
		default:
			errs.add(v.Pos, ErrInvalidValue, `builder must be "generic" or "hvm", not %q`, s)
		}
	}
	return "pv"
}

// numberSetting reads key as xl's xlu_cfg_get_long does: a string or number
// read by C's strtol with base 0 (so 0x10 and 010 are 16 and 8), never
// with "+=".
func numberSetting(f *File, key string, lo, hi int64, errs *errorList) (int, bool) {
	st := f.Lookup(key)
	if st == nil {
		return 0, false
	}
	v := st.Effective()
	s, ok := stringValue(v, key, errs)
	if !ok {
		return 0, false
	}
	if st.Op == Append {
		errs.add(st.Value.Pos, ErrInvalidValue, "xl can't use += with numbers, as for %s here", key)
		return 0, false
	}
	// strtol skips leading white space; Go's parser would not.
	s = strings.TrimLeft(s, " \t\n\v\f\r")
	n, err := strconv.ParseInt(s, 0, 64)
	if err != nil || strings.HasPrefix(s, "0o") || strings.HasPrefix(s, "0b") || strings.Contains(s, "_") {
		errs.add(v.Pos, ErrInvalidValue, "%s must be a number, not %q", key, s)
		return 0, false
	}
	if n < lo || n > hi {
		errs.add(v.Pos, ErrInvalidValue, "%s must be between %d and %d, not %d", key, lo, hi, n)
		return 0, false
	}
	return int(n), true
}

// listSetting reads a list of strings, as xl's
// xlu_cfg_get_list_as_string_list does.
func listSetting(f *File, key string, errs *errorList) []string {
	v := f.Get(key)
	if v == nil {
		return nil
	}
	if v.Kind != KindList {
		errs.add(v.Pos, ErrInvalidValue, "%s must be a list, e.g. %s = [ %s ]", key, key, v.String())
		return nil
	}
	out := make([]string, 0, len(v.List))
	for _, e := range v.List {
		if e.Kind != KindString {
			errs.add(e.Pos, ErrInvalidValue, "%s entries must be strings, not lists", key)
			continue
		}
		out = append(out, e.Str)
	}
	return out
}
