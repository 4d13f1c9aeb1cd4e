// Package conf reads xl-kemari's configuration: the domain's own xl.cfg
// file with its "kemari = ..." entries, the host-wide /etc/xen/kemari.toml,
// and command-line overrides, and works out the effective protection
// settings of a domain with the origin of every value.
//
// Three layers, lowest precedence first, on top of the built-in Defaults:
//
//	/etc/xen/kemari.toml    [defaults] table        LoadHost
//	domU.cfg                kemari = "k=v,k=v"      LoadDomain
//	xl-kemari ... --set k=v                         Overrides
//
// A walk-through:
//
//	host, err := conf.LoadHost("")                  // missing default file: built-in defaults
//	dom, err := conf.LoadDomain("/etc/xen/domU.cfg", host, conf.Overrides{Args: []string{"interval=50ms"}})
//	if err != nil {
//		for _, pe := range conf.Errors(err) {   // every problem, FILE:LINE:COLUMN: message
//			fmt.Fprintln(os.Stderr, pe)
//		}
//	}
//	p := dom.Kemari[0]                             // one Protection per standby
//	p.Interval, p.Origin(conf.FieldInterval)       // 50ms, "command line"
//
// The xl.cfg reader, ParseXLCfg, accepts exactly the files that xl's own
// parser (libxlutil) accepts and yields the same values, quirks included
// (see xl-kemari.cfg(5), BUGS); a conformance test built with -tags xen runs
// the test corpus through libxlutil to prove it. It keeps every key, not only
// those xl-kemari reads, with the line and column of every value.
//
// Every function that reads configuration reports all the problems it finds
// at once, joined with errors.Join, each a *PosError whose text starts with
// FILE:LINE:COLUMN and which unwraps to one of the sentinels (ErrSyntax,
// ErrUnknownKey, ErrInvalidValue, ErrConflict, ErrMissing, ErrRead). On any
// problem nothing is returned for use: a bad file never half-applies.
//
// The package depends only on the standard library and BurntSushi/toml.
package conf
