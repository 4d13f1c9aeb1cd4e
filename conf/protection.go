package conf

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultPort is the TCP port of the standby listener when a standby is
// given without one. 8011 sits beside xend's old relocation port 8002 and
// the 80xx block that Xen tools have used, and is unassigned by IANA.
const DefaultPort = 8011

// Field names one protection setting; its String is the key used in kemari
// entries, in kemari.toml's [defaults] table and on the command line.
type Field int

// The protection settings, in the order they are listed.
const (
	FieldStandby Field = iota
	FieldMode
	FieldInterval
	FieldMinInterval
	FieldTimeout
	FieldInflight
	FieldNetbuf
	FieldDisk
	FieldCompress
	FieldArbiter
	FieldTransport
	FieldAutostart
	FieldReprotect
	FieldUnsafe
	// NumFields is the number of fields; it sizes Origins.
	NumFields
)

var fieldNames = [NumFields]string{
	"standby", "mode", "interval", "min-interval", "timeout", "inflight",
	"netbuf", "disk", "compress", "arbiter", "transport",
	"autostart", "reprotect", "unsafe",
}

// String returns the key of f, e.g. "min-interval".
func (f Field) String() string {
	if f < 0 || f >= NumFields {
		return fmt.Sprintf("Field(%d)", int(f))
	}
	return fieldNames[f]
}

// FieldNames returns every key in display order.
func FieldNames() []string { return fieldNames[:] }

// FieldByName returns the field whose key is name.
func FieldByName(name string) (Field, bool) {
	for i, n := range fieldNames {
		if n == name {
			return Field(i), true
		}
	}
	return 0, false
}

// Source says which layer an effective value came from. Later layers win:
// command line > xl.cfg entry > kemari.toml > built-in default.
type Source int

// The layers, lowest precedence first.
const (
	SourceDefault Source = iota
	SourceHost
	SourceDomain
	SourceCommandLine
)

// String names the layer as the config subcommand prints it.
func (s Source) String() string {
	switch s {
	case SourceHost:
		return "kemari.toml"
	case SourceDomain:
		return "xl.cfg"
	case SourceCommandLine:
		return "command line"
	}
	return "default"
}

// Origin is where an effective value was set: its layer and, for files and
// the command line, its position.
type Origin struct {
	Source Source // the layer
	Pos    Pos    // where in that layer; zero for SourceDefault
}

// String is "default", "command line", or the position of the value in its
// file, e.g. "domU.cfg:21:20".
func (o Origin) String() string {
	switch {
	case o.Source == SourceDefault:
		return "default"
	case o.Source == SourceCommandLine:
		return "command line"
	case o.Pos.IsValid():
		return o.Pos.String()
	}
	return o.Source.String()
}

// MarshalJSON writes {"source": ..., "file": ..., "line": ..., "column": ...},
// leaving out the position of built-in defaults.
func (o Origin) MarshalJSON() ([]byte, error) {
	type pos struct {
		Source string `json:"source"`
		File   string `json:"file,omitempty"`
		Line   int    `json:"line,omitempty"`
		Column int    `json:"column,omitempty"`
	}
	return json.Marshal(pos{o.Source.String(), o.Pos.File, o.Pos.Line, o.Pos.Col})
}

// Origins records the origin of each field of a Protection.
type Origins [NumFields]Origin

// Protection is the effective protection setting of one domain toward one
// standby.
type Protection struct {
	Standby     string        // host or host:port; "" if not set
	Mode        string        // "epoch" | "event"
	Interval    time.Duration // epoch mode: checkpoint period; event mode: max interval
	MinInterval time.Duration // event mode: minimum spacing of checkpoints
	Timeout     time.Duration // peer declared dead after this long without frames/acks
	Inflight    int           // checkpoints in flight (key "inflight", default 1)
	Netbuf      string        // auto|plug|nfqueue|none
	Disk        string        // replicate|shared|none
	Compress    string        // none|lz4|zstd
	Arbiter     string        // none | file:PATH | etcd://HOST:PORT/PREFIX
	Transport   string        // ssh|tls

	Autostart bool // start protection when the domain is started by the service
	Reprotect bool // protect again automatically once a standby is reachable
	Unsafe    bool // allow settings that give up output commit or disk safety

	// Origins says where each field's value came from.
	Origins Origins
}

// Defaults returns the built-in protection settings; docs/configuration.md
// and xl-kemari.cfg(5) give the reason for each.
func Defaults() Protection {
	return Protection{
		Mode:        "epoch",
		Interval:    100 * time.Millisecond,
		MinInterval: 5 * time.Millisecond,
		Timeout:     time.Second,
		Inflight:    1,
		Netbuf:      "auto",
		Disk:        "replicate",
		Compress:    "lz4",
		Arbiter:     "none",
		Transport:   "ssh",
		Reprotect:   true,
	}
}

// Limits on values, chosen so that a typo (a missing "m" in "100ms") is
// caught rather than obeyed.
const (
	IntervalMin = time.Millisecond // below this, pause overhead is the whole epoch
	IntervalMax = time.Minute      // above this, it is not fault tolerance any more
	TimeoutMin  = 10 * time.Millisecond
	TimeoutMax  = time.Hour
	InflightMax = 16 // the standby stages every checkpoint in flight in memory
	// TimeoutFactor is how many intervals timeout must at least span, so
	// that one late or lost epoch is never mistaken for a dead peer.
	TimeoutFactor = 3
)

var (
	modeValues      = []string{"epoch", "event"}
	netbufValues    = []string{"auto", "plug", "nfqueue", "none"}
	diskValues      = []string{"replicate", "shared", "none"}
	compressValues  = []string{"none", "lz4", "zstd"}
	transportValues = []string{"ssh", "tls"}
)

// Value returns field f of p in the syntax of a kemari entry.
func (p Protection) Value(f Field) string {
	switch f {
	case FieldStandby:
		return p.Standby
	case FieldMode:
		return p.Mode
	case FieldInterval:
		return p.Interval.String()
	case FieldMinInterval:
		return p.MinInterval.String()
	case FieldTimeout:
		return p.Timeout.String()
	case FieldInflight:
		return strconv.Itoa(p.Inflight)
	case FieldNetbuf:
		return p.Netbuf
	case FieldDisk:
		return p.Disk
	case FieldCompress:
		return p.Compress
	case FieldArbiter:
		return p.Arbiter
	case FieldTransport:
		return p.Transport
	case FieldAutostart:
		return boolText(p.Autostart)
	case FieldReprotect:
		return boolText(p.Reprotect)
	case FieldUnsafe:
		return boolText(p.Unsafe)
	}
	return ""
}

func boolText(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Origin returns where field f's value came from.
func (p Protection) Origin(f Field) Origin { return p.Origins[f] }

// Spec returns p as a kemari entry: the fields not at their built-in
// default, comma separated, in field order. ParseKemariSpec(p.Spec(),
// Defaults()) gives p back, origins aside.
func (p Protection) Spec() string {
	d := Defaults()
	var parts []string
	for f := Field(0); f < NumFields; f++ {
		if v := p.Value(f); v != d.Value(f) {
			parts = append(parts, f.String()+"="+v)
		}
	}
	return strings.Join(parts, ",")
}

// StandbyAddr returns the standby as host:port, adding DefaultPort when
// the setting names no port, or "" if no standby is set.
func (p Protection) StandbyAddr() string {
	if p.Standby == "" {
		return ""
	}
	if host, port, err := net.SplitHostPort(p.Standby); err == nil {
		return net.JoinHostPort(host, port)
	}
	return net.JoinHostPort(strings.Trim(p.Standby, "[]"), strconv.Itoa(DefaultPort))
}

// Setting is one effective value with its origin, for display.
type Setting struct {
	Name   string `json:"setting"` // the key, e.g. "min-interval" or "tls.cert"
	Value  string `json:"value"`   // in the syntax of a kemari entry
	Origin Origin `json:"origin"`  // where the value came from
}

// Settings lists every field of p with its value and origin.
func (p Protection) Settings() []Setting {
	out := make([]Setting, NumFields)
	for f := Field(0); f < NumFields; f++ {
		out[f] = Setting{Name: f.String(), Value: p.Value(f), Origin: p.Origins[f]}
	}
	return out
}

// valueError is a problem with a value, at byte Off of its text.
type valueError struct {
	Off int
	Msg string
}

func badValue(off int, format string, args ...any) *valueError {
	return &valueError{Off: off, Msg: fmt.Sprintf(format, args...)}
}

// setText parses s as the value of f and stores it with origin o.
func (p *Protection) setText(f Field, s string, o Origin) *valueError {
	var err *valueError
	switch f {
	case FieldStandby:
		err = checkStandby(s)
		if err == nil {
			p.Standby = s
		}
	case FieldMode:
		p.Mode, err = oneOf(f, s, modeValues)
	case FieldInterval:
		p.Interval, err = parseDuration(f, s, IntervalMin, IntervalMax)
	case FieldMinInterval:
		p.MinInterval, err = parseDuration(f, s, 0, IntervalMax)
	case FieldTimeout:
		p.Timeout, err = parseDuration(f, s, TimeoutMin, TimeoutMax)
	case FieldInflight:
		n, e := strconv.Atoi(s)
		if e != nil || n < 1 || n > InflightMax {
			return badValue(0, "inflight must be a whole number from 1 to %d, not %q", InflightMax, s)
		}
		p.Inflight = n
	case FieldNetbuf:
		p.Netbuf, err = oneOf(f, s, netbufValues)
	case FieldDisk:
		p.Disk, err = oneOf(f, s, diskValues)
	case FieldCompress:
		p.Compress, err = oneOf(f, s, compressValues)
	case FieldArbiter:
		err = checkArbiter(s)
		if err == nil {
			p.Arbiter = s
		}
	case FieldTransport:
		p.Transport, err = oneOf(f, s, transportValues)
	case FieldAutostart:
		p.Autostart, err = parseBool(f, s)
	case FieldReprotect:
		p.Reprotect, err = parseBool(f, s)
	case FieldUnsafe:
		p.Unsafe, err = parseBool(f, s)
	default:
		return badValue(0, "no such setting")
	}
	if err == nil {
		p.Origins[f] = o
	}
	return err
}

func oneOf(f Field, s string, choices []string) (string, *valueError) {
	for _, c := range choices {
		if s == c {
			return s, nil
		}
	}
	return "", badValue(0, "%s must be %s, not %q%s", f, quoteList(choices), s, didYouMean(s, choices))
}

func parseBool(f Field, s string) (bool, *valueError) {
	switch strings.ToLower(s) {
	case "1", "yes", "true", "on":
		return true, nil
	case "0", "no", "false", "off":
		return false, nil
	}
	return false, badValue(0, "%s must be 0 or 1, not %q", f, s)
}

func parseDuration(f Field, s string, lo, hi time.Duration) (time.Duration, *valueError) {
	if s == "" {
		return 0, badValue(0, "%s needs a duration, such as 100ms", f)
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return 0, badValue(len(s), "%s %q has no unit; write e.g. %sms or %ss", f, s, s, s)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, badValue(0, "%s must be a duration with a unit (us, ms, s, m), such as 100ms, not %q", f, s)
	}
	if d < lo || d > hi {
		return 0, badValue(0, "%s must be between %s and %s, not %s", f, fmtDuration(lo), fmtDuration(hi), d)
	}
	return d, nil
}

// checkStandby accepts host, host:port, [v6addr]:port and a bare IPv6
// address. Host names follow RFC 1123 (plus "_", which some sites use).
func checkStandby(s string) *valueError {
	if s == "" {
		return badValue(0, "standby needs a host name or address")
	}
	host, port := s, ""
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
	} else if strings.Count(s, ":") == 1 {
		return badValue(0, "standby %q: %v", s, err)
	} else if strings.HasPrefix(s, "[") {
		return badValue(0, "standby %q: an IPv6 address in brackets needs a port, e.g. %s:%d", s, s, DefaultPort)
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return badValue(strings.LastIndex(s, ":")+1, "standby port must be 1 to 65535, not %q", port)
		}
	}
	if net.ParseIP(host) != nil {
		return nil
	}
	if strings.Contains(host, ":") {
		return badValue(0, "standby %q is not a valid IPv6 address", host)
	}
	if len(host) > 253 {
		return badValue(0, "standby host name is longer than 253 bytes")
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 {
			return badValue(0, "standby %q is not a valid host name", host)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			ok := isLower(c) || ('A' <= c && c <= 'Z') || isDigit(c) || c == '_' || (c == '-' && i > 0 && i < len(label)-1)
			if !ok {
				return badValue(strings.Index(s, label)+i, "standby %q: %q is not allowed in a host name", host, c)
			}
		}
	}
	return nil
}

// checkArbiter accepts none, file:/ABSOLUTE/PATH and etcd://HOST:PORT/PREFIX.
func checkArbiter(s string) *valueError {
	switch {
	case s == "none":
		return nil
	case strings.HasPrefix(s, "file:"):
		path := s[len("file:"):]
		if !strings.HasPrefix(path, "/") {
			return badValue(len("file:"), "arbiter file:PATH needs an absolute path on storage shared by both hosts, not %q", path)
		}
		return nil
	case strings.HasPrefix(s, "etcd://"):
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return badValue(0, "arbiter %q: expected etcd://HOST:PORT/PREFIX", s)
		}
		if u.Port() == "" {
			return badValue(len("etcd://"), "arbiter %q: the etcd endpoint needs a port, e.g. %s:2379", s, u.Host)
		}
		if len(u.Path) < 2 {
			return badValue(len(s), "arbiter %q: expected a key prefix after the endpoint, e.g. etcd://%s/xl-kemari", s, u.Host)
		}
		if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return badValue(0, "arbiter %q: expected etcd://HOST:PORT/PREFIX without user, query or fragment", s)
		}
		return nil
	}
	return badValue(0, `arbiter must be "none", "file:PATH" or "etcd://HOST:PORT/PREFIX", not %q`, s)
}

// fmtDuration is time.Duration.String without the zero units of round
// values ("1h" rather than "1h0m0s").
func fmtDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	}
	return d.String()
}
