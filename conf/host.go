package conf

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// DefaultHostPath is where LoadHost looks when given no path.
const DefaultHostPath = "/etc/xen/kemari.toml"

// defaultHostPath is DefaultHostPath, a variable so that tests need not
// depend on the machine's /etc.
var defaultHostPath = DefaultHostPath

// Host is the host-wide configuration, /etc/xen/kemari.toml.
type Host struct {
	// Path is the file read, or "" when none was (built-in defaults).
	Path string
	// Listen is the address of the standby listener, "HOST:PORT"; default
	// ":8011", every address.
	Listen string
	// SSHCommand runs the ssh transport, split on blanks; default "ssh".
	SSHCommand string
	// TLSCert, TLSKey and TLSCA are the PEM files of the tls transport:
	// this host's certificate and key and the CA that signs its peers'.
	TLSCert, TLSKey, TLSCA string
	// LogFile is where logs go; "" (the default) means standard error.
	LogFile string
	// LogLevel is debug, info (default), warn or error.
	LogLevel string
	// MetricsListen is the address of the Prometheus endpoint; "" (the
	// default) turns it off.
	MetricsListen string
	// Defaults are the protection settings of domains whose kemari entries
	// do not say otherwise: Defaults() overlaid with the [defaults] table.
	Defaults Protection
	// Origins maps each host setting's dotted key (e.g. "tls.cert") to
	// where its value came from.
	Origins map[string]Origin
}

// hostKeys lists the host settings in display order, as dotted TOML keys.
var hostKeys = []string{"listen", "ssh-command", "tls.cert", "tls.key", "tls.ca", "log.file", "log.level", "metrics.listen"}

var logLevels = []string{"debug", "info", "warn", "error"}

// DefaultHost returns the configuration used when kemari.toml is absent.
func DefaultHost() *Host {
	h := &Host{
		Listen:     ":" + strconv.Itoa(DefaultPort),
		SSHCommand: "ssh",
		LogLevel:   "info",
		Defaults:   Defaults(),
		Origins:    map[string]Origin{},
	}
	for _, k := range hostKeys {
		h.Origins[k] = Origin{Source: SourceDefault}
	}
	return h
}

func (h *Host) field(key string) *string {
	switch key {
	case "listen":
		return &h.Listen
	case "ssh-command":
		return &h.SSHCommand
	case "tls.cert":
		return &h.TLSCert
	case "tls.key":
		return &h.TLSKey
	case "tls.ca":
		return &h.TLSCA
	case "log.file":
		return &h.LogFile
	case "log.level":
		return &h.LogLevel
	case "metrics.listen":
		return &h.MetricsListen
	}
	return nil
}

// Settings lists the host settings with their values and origins; the
// protection defaults are in h.Defaults.Settings().
func (h *Host) Settings() []Setting {
	out := make([]Setting, 0, len(hostKeys))
	for _, k := range hostKeys {
		out = append(out, Setting{Name: k, Value: *h.field(k), Origin: h.Origins[k]})
	}
	return out
}

// LoadHost reads kemari.toml. With path "", it reads DefaultHostPath and a
// missing file means built-in defaults; a path given explicitly must exist.
// Every problem is reported, joined, each a *PosError.
func LoadHost(path string) (*Host, error) {
	explicit := path != ""
	if !explicit {
		path = defaultHostPath
	}
	src, err := os.ReadFile(path)
	if err != nil {
		if !explicit && errors.Is(err, fs.ErrNotExist) {
			return DefaultHost(), nil
		}
		return nil, readError(path, "host configuration", err)
	}
	return ParseHost(path, src)
}

// ParseHost parses src as kemari.toml named name. Unknown keys, values of
// the wrong type or form, and conflicts are all errors; on any error it
// returns nil and the joined problems.
func ParseHost(name string, src []byte) (*Host, error) {
	h := DefaultHost()
	h.Path = name
	var raw map[string]any
	if _, err := toml.Decode(string(src), &raw); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			pos := Pos{File: name, Line: pe.Position.Line, Col: max(pe.Position.Col, 1)}
			return nil, (errorList{{Pos: pos, Msg: "toml: " + pe.Message, Err: ErrSyntax}}).err()
		}
		return nil, (errorList{{Pos: Pos{File: name, Line: 1, Col: 1}, Msg: err.Error(), Err: ErrSyntax}}).err()
	}
	loc := locateTOML(name, src)
	var errs errorList
	tables := map[string][]string{
		"tls":     {"cert", "key", "ca"},
		"log":     {"file", "level"},
		"metrics": {"listen"},
	}
	top := []string{"listen", "ssh-command", "tls", "log", "metrics", "defaults"}
	for _, k := range sortedKeys(raw) {
		v := raw[k]
		switch k {
		case "listen", "ssh-command":
			h.setString(k, v, loc, &errs)
		case "tls", "log", "metrics":
			sub, ok := v.(map[string]any)
			if !ok {
				errs.add(loc.key(k), ErrInvalidValue, "%s must be a table ([%s])", k, k)
				continue
			}
			for _, sk := range sortedKeys(sub) {
				if !slices.Contains(tables[k], sk) {
					errs.add(loc.key(k+"."+sk), ErrUnknownKey, "unknown key %q in [%s]%s", sk, k, didYouMean(sk, tables[k]))
					continue
				}
				h.setString(k+"."+sk, sub[sk], loc, &errs)
			}
		case "defaults":
			sub, ok := v.(map[string]any)
			if !ok {
				errs.add(loc.key(k), ErrInvalidValue, "defaults must be a table ([defaults])")
				continue
			}
			for _, sk := range sortedKeys(sub) {
				h.setDefault(sk, sub[sk], loc, &errs)
			}
		default:
			hint := didYouMean(k, top)
			if _, ok := FieldByName(k); ok {
				hint = "; protection settings go in the [defaults] table"
			}
			if t, sk, ok := strings.Cut(strings.ReplaceAll(k, "-", "_"), "_"); ok && slices.Contains(tables[t], sk) {
				// metrics_listen, log-file, ...: flat spellings of a table's key.
				hint = fmt.Sprintf("; write it as %s in the [%s] table", sk, t)
			}
			errs.add(loc.key(k), ErrUnknownKey, "unknown key %q%s", k, hint)
		}
	}
	h.check(loc, &errs)
	if err := errs.err(); err != nil {
		return nil, err
	}
	return h, nil
}

func (h *Host) setString(key string, v any, loc *tomlLocator, errs *errorList) {
	s, ok := v.(string)
	if !ok {
		errs.add(loc.value(key), ErrInvalidValue, "%s must be a string, not %s", key, tomlType(v))
		return
	}
	*h.field(key) = s
	h.Origins[key] = Origin{Source: SourceHost, Pos: loc.value(key)}
}

func (h *Host) setDefault(key string, v any, loc *tomlLocator, errs *errorList) {
	dkey := "defaults." + key
	f, ok := FieldByName(key)
	if !ok {
		errs.add(loc.key(dkey), ErrUnknownKey, "unknown key %q in [defaults]%s", key, didYouMean(key, fieldNames[:]))
		return
	}
	var text string
	switch x := v.(type) {
	case bool:
		if f != FieldAutostart && f != FieldReprotect && f != FieldUnsafe {
			errs.add(loc.value(dkey), ErrInvalidValue, "%s must be a string, not a boolean", key)
			return
		}
		text = boolText(x)
	case int64:
		if f == FieldAutostart || f == FieldReprotect || f == FieldUnsafe {
			errs.add(loc.value(dkey), ErrInvalidValue, "%s must be a boolean (true or false), not an integer", key)
			return
		}
		if f != FieldInflight {
			errs.add(loc.value(dkey), ErrInvalidValue, "%s must be a string such as %q, not an integer", key, Defaults().Value(f))
			return
		}
		text = strconv.FormatInt(x, 10)
	case string:
		if f == FieldAutostart || f == FieldReprotect || f == FieldUnsafe || f == FieldInflight {
			errs.add(loc.value(dkey), ErrInvalidValue, "%s must be a %s, not a string", key, map[bool]string{true: "number", false: "boolean (true or false)"}[f == FieldInflight])
			return
		}
		text = x
	default:
		errs.add(loc.value(dkey), ErrInvalidValue, "%s must be a string, not %s", key, tomlType(v))
		return
	}
	vpos := loc.value(dkey)
	if e := h.Defaults.setText(f, text, Origin{Source: SourceHost, Pos: vpos}); e != nil {
		if _, isString := v.(string); isString {
			vpos.Col += 1 + e.Off // past the opening quote
		}
		errs.add(vpos, ErrInvalidValue, "%s", e.Msg)
	}
}

// check validates the host settings together.
func (h *Host) check(loc *tomlLocator, errs *errorList) {
	for _, k := range []string{"listen", "metrics.listen"} {
		v := *h.field(k)
		if v == "" && k == "metrics.listen" {
			continue
		}
		if _, port, err := net.SplitHostPort(v); err != nil {
			errs.add(loc.value(k), ErrInvalidValue, "%s must be HOST:PORT (e.g. \":%d\" for every address), not %q", k, DefaultPort, v)
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			errs.add(loc.value(k), ErrInvalidValue, "%s: port must be 1 to 65535, not %q", k, port)
		}
	}
	if strings.TrimSpace(h.SSHCommand) == "" {
		errs.add(loc.value("ssh-command"), ErrInvalidValue, "ssh-command must not be empty")
	}
	if !slices.Contains(logLevels, h.LogLevel) {
		errs.add(loc.value("log.level"), ErrInvalidValue, "log.level must be %s, not %q%s", quoteList(logLevels), h.LogLevel, didYouMean(h.LogLevel, logLevels))
	}
	if err := h.Defaults.Validate(); err != nil {
		for _, pe := range Errors(err) {
			*errs = append(*errs, pe)
		}
	}
	if h.Defaults.Transport == "tls" {
		h.checkTLS(h.Defaults.Origin(FieldTransport).Pos, errs)
	}
}

// checkTLS reports a tls transport without its certificate files.
func (h *Host) checkTLS(at Pos, errs *errorList) {
	var missing []string
	for _, k := range []string{"tls.cert", "tls.key", "tls.ca"} {
		if *h.field(k) == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		where := "kemari.toml"
		if h.Path != "" {
			where = h.Path
		}
		errs.add(at, ErrConflict, "transport=tls needs %s set in the [tls] table of %s", strings.Join(missing, ", "), where)
	}
}

func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case map[string]any:
		return "a table"
	case []any, []map[string]any:
		return "an array"
	}
	return fmt.Sprintf("a %T", v)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
