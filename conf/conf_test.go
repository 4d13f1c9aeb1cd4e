package conf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	inputs := map[string][]byte{}
	for _, path := range corpus(t, "testdata/xlcfg/good/*.cfg") {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		inputs[path] = b
	}
	for i, s := range edgeCases {
		inputs[fmt.Sprintf("edge-%03d", i)] = []byte(s)
	}
	for name, src := range inputs {
		f, err := ParseXLCfg("a.cfg", src)
		if err != nil {
			continue
		}
		checkRoundTrip(t, name, f)
	}
}

// checkRoundTrip requires Format to give text that parses to the same
// statements and effective values.
func checkRoundTrip(t *testing.T, name string, f *File) {
	t.Helper()
	out := f.Format()
	g, err := ParseXLCfg("b.cfg", out)
	if err != nil {
		t.Fatalf("%s: formatted text does not parse: %v\n%s", name, err, out)
	}
	if len(g.Statements) != len(f.Statements) {
		t.Fatalf("%s: %d statements after round trip, want %d", name, len(g.Statements), len(f.Statements))
	}
	for i, s := range f.Statements {
		r := g.Statements[i]
		if r.Key != s.Key || r.Op != s.Op || dump(r.Value) != dump(s.Value) || dump(r.Effective()) != dump(s.Effective()) {
			t.Fatalf("%s: statement %d: %s %s %s became %s %s %s", name, i, s.Key, s.Op, dump(s.Value), r.Key, r.Op, dump(r.Value))
		}
	}
	if again := g.Format(); string(again) != string(out) {
		t.Fatalf("%s: Format is not stable:\n%s\n---\n%s", name, out, again)
	}
}

func TestQuote(t *testing.T) {
	for _, s := range []string{"", "plain", `a"b`, `a'b`, `a'b"c`, "tab\there", "\a\b\f\n\r\t\v\\", "caf\xc3\xa9", "\x01"} {
		f, err := ParseXLCfg("q.cfg", []byte("k = "+Quote(s)+"\n"))
		if err != nil {
			t.Fatalf("Quote(%q) = %s does not parse: %v", s, Quote(s), err)
		}
		if got := f.Get("k").Str; got != s {
			t.Errorf("Quote(%q) reads back as %q", s, got)
		}
	}
}

func TestPositions(t *testing.T) {
	src := "name = \"db1\"\nkemari = [\n\t'standby=a',\n  \"standby=b,\\tmode=event\" ]\n"
	f, err := ParseXLCfg("p.cfg", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	s := f.Lookup("kemari")
	if s.KeyPos != (Pos{"p.cfg", 2, 1}) || s.Value.Pos != (Pos{"p.cfg", 2, 10}) {
		t.Errorf("kemari at %v, value at %v", s.KeyPos, s.Value.Pos)
	}
	second := s.Value.List[1]
	if second.Pos != (Pos{"p.cfg", 4, 3}) {
		t.Errorf("second entry at %v", second.Pos)
	}
	// Byte 10 of the decoded string is the tab written as \t (two bytes),
	// so "mode" (decoded byte 11) is at column 3+1+10+2 = 16.
	if got := second.PosAt(strings.Index(second.Str, "mode")); got != (Pos{"p.cfg", 4, 16}) {
		t.Errorf("mode at %v, want 4:16", got)
	}
}

func TestParseKemariSpec(t *testing.T) {
	tests := []struct {
		spec string
		want func(*Protection)
		err  string
	}{
		{spec: "", want: func(*Protection) {}},
		{spec: "standby=h2", want: func(p *Protection) { p.Standby = "h2" }},
		{spec: " standby = h2:9000 , mode=event,", want: func(p *Protection) { p.Standby = "h2:9000"; p.Mode = "event" }},
		{spec: "interval=25ms,min-interval=0s,timeout=1.5s", want: func(p *Protection) {
			p.Interval = 25 * time.Millisecond
			p.MinInterval = 0
			p.Timeout = 1500 * time.Millisecond
		}},
		{spec: "autostart=yes,reprotect=off,unsafe=1,netbuf=none", want: func(p *Protection) {
			p.Autostart, p.Reprotect, p.Unsafe, p.Netbuf = true, false, true, "none"
		}},
		{spec: "arbiter=etcd://[2001:db8::1]:2379/kemari/a", want: func(p *Protection) { p.Arbiter = "etcd://[2001:db8::1]:2379/kemari/a" }},
		{spec: "standby=fe80::1", want: func(p *Protection) { p.Standby = "fe80::1" }},
		{spec: "standby=h2,,,standby=h3", err: "<spec>:1:14: standby is set twice in this entry (first at column 1)"},
		{spec: "h2", err: `<spec>:1:1: expected key=value in kemari entry, found "h2"; to name the standby write standby=h2`},
		{spec: "interval", err: `<spec>:1:1: expected key=value in kemari entry, found "interval"; interval needs a value`},
		{spec: "min_interval=5ms", err: `<spec>:1:1: unknown kemari key "min_interval"; did you mean "min-interval"?`},
		{spec: "mode=evnet", err: `<spec>:1:6: mode must be "epoch" or "event", not "evnet"; did you mean "event"?`},
		{spec: "interval=100", err: `<spec>:1:13: interval "100" has no unit; write e.g. 100ms or 100s`},
		{spec: "interval=2m", err: `<spec>:1:10: interval must be between 1ms and 1m, not 2m0s`},
		{spec: "standby=a..b", err: `<spec>:1:9: standby "a..b" is not a valid host name`},
		{spec: "standby=-h", err: `<spec>:1:9: standby "-h": '-' is not allowed in a host name`},
		{spec: "standby=[::1]", err: `<spec>:1:9: standby "[::1]": an IPv6 address in brackets needs a port, e.g. [::1]:8011`},
		{spec: "arbiter=etcd://e:2379", err: `<spec>:1:22: arbiter "etcd://e:2379": expected a key prefix after the endpoint, e.g. etcd://e:2379/xl-kemari`},
		{spec: "arbiter=etcd://e/x", err: `<spec>:1:16: arbiter "etcd://e/x": the etcd endpoint needs a port, e.g. e:2379`},
		{spec: "arbiter=lease", err: `<spec>:1:9: arbiter must be "none", "file:PATH" or "etcd://HOST:PORT/PREFIX", not "lease"`},
		{spec: "inflight=17", err: `<spec>:1:10: inflight must be a whole number from 1 to 16, not "17"`},
	}
	for _, tt := range tests {
		got, err := ParseKemariSpec(tt.spec, Defaults())
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("ParseKemariSpec(%q) error = %v, want %s", tt.spec, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseKemariSpec(%q): %v", tt.spec, err)
			continue
		}
		want := Defaults()
		tt.want(&want)
		got.Origins = Origins{}
		if got != want {
			t.Errorf("ParseKemariSpec(%q) = %+v, want %+v", tt.spec, got, want)
		}
	}
}

func TestSpecRoundTrip(t *testing.T) {
	p, err := ParseKemariSpec("standby=[::1]:9,mode=event,interval=1.5s,min-interval=0s,timeout=10s,inflight=3,netbuf=nfqueue,disk=none,compress=zstd,arbiter=file:/l,transport=tls,autostart=1,reprotect=0,unsafe=1", Defaults())
	if err != nil {
		t.Fatal(err)
	}
	q, err := ParseKemariSpec(p.Spec(), Defaults())
	if err != nil {
		t.Fatalf("Spec() %q does not parse: %v", p.Spec(), err)
	}
	p.Origins, q.Origins = Origins{}, Origins{}
	if p != q {
		t.Errorf("round trip through %q: %+v != %+v", p.Spec(), p, q)
	}
	if Defaults().Spec() != "" {
		t.Errorf("Defaults().Spec() = %q, want empty", Defaults().Spec())
	}
}

func TestDefaultsAreValid(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestPrecedence sets interval in every layer and removes them from the
// top down: each time the next layer's value and origin show through.
func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	hostFile := filepath.Join(dir, "kemari.toml")
	os.WriteFile(hostFile, []byte("[defaults]\ninterval = \"200ms\"\nnetbuf = \"plug\"\n"), 0o644)
	host, err := LoadHost(hostFile)
	if err != nil {
		t.Fatal(err)
	}
	withEntry := []byte("name = \"d\"\nkemari = \"standby=h2,interval=50ms\"\n")
	noEntry := []byte("name = \"d\"\n")
	cli := Overrides{}
	cli.Set("interval", "20ms")

	tests := []struct {
		name   string
		src    []byte
		host   *Host
		cli    Overrides
		want   time.Duration
		source Source
		pos    Pos
	}{
		{"command line", withEntry, host, cli, 20 * time.Millisecond, SourceCommandLine, Pos{CommandLineFile, 1, 10}},
		{"xl.cfg", withEntry, host, Overrides{}, 50 * time.Millisecond, SourceDomain, Pos{"d.cfg", 2, 31}},
		{"kemari.toml", noEntry, host, Overrides{}, 200 * time.Millisecond, SourceHost, Pos{hostFile, 2, 12}},
		{"default", noEntry, nil, Overrides{}, 100 * time.Millisecond, SourceDefault, Pos{}},
	}
	for _, tt := range tests {
		d, err := ParseDomain("d.cfg", tt.src, tt.host, tt.cli)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		p := d.Kemari[0]
		if p.Interval != tt.want || p.Origin(FieldInterval) != (Origin{tt.source, tt.pos}) {
			t.Errorf("%s: interval %v from %+v, want %v from %v %v", tt.name, p.Interval, p.Origin(FieldInterval), tt.want, tt.source, tt.pos)
		}
	}
	// Layers mix per field: netbuf still comes from kemari.toml.
	d, _ := ParseDomain("d.cfg", withEntry, host, cli)
	if p := d.Kemari[0]; p.Netbuf != "plug" || p.Origin(FieldNetbuf).Source != SourceHost || p.Origin(FieldStandby).Source != SourceDomain || p.Origin(FieldMode).Source != SourceDefault {
		t.Errorf("mixed layers: %+v", p)
	}
}

func TestOverridesPickStandby(t *testing.T) {
	src := []byte("name = \"d\"\nkemari = [ \"standby=h2,interval=50ms\", \"standby=h3:8011,interval=70ms\" ]\n")
	var cli Overrides
	cli.Set("standby", "h3")
	d, err := ParseDomain("d.cfg", src, nil, cli)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Kemari) != 1 || d.Kemari[0].Interval != 70*time.Millisecond || d.Kemari[0].Origin(FieldStandby).Source != SourceCommandLine {
		t.Errorf("picked %+v", d.Kemari)
	}
	cli = Overrides{}
	cli.Set("standby", "h4")
	_, err = ParseDomain("d.cfg", src, nil, cli)
	if err == nil || err.Error() != "<command line>:1:9: standby h4 has no kemari entry in d.cfg (entries: h2, h3:8011)" {
		t.Errorf("unknown standby: %v", err)
	}
	// With one entry or none, the command line simply names the standby.
	d, err = ParseDomain("d.cfg", []byte("name=\"d\"\nkemari=\"standby=h2\"\n"), nil, cli)
	if err != nil || d.Kemari[0].Standby != "h4" {
		t.Errorf("single entry: %v %+v", err, d)
	}
}

func TestValidate(t *testing.T) {
	at := Origin{Source: SourceDomain, Pos: Pos{"x.cfg", 3, 4}}
	tests := []struct {
		name string
		mod  func(*Protection)
		err  string // substring; "" for valid
	}{
		{"defaults", func(*Protection) {}, ""},
		{"netbuf none", func(p *Protection) { p.Netbuf = "none"; p.Origins[FieldNetbuf] = at }, "x.cfg:3:4: netbuf=none lets"},
		{"netbuf none unsafe", func(p *Protection) { p.Netbuf, p.Unsafe = "none", true }, ""},
		{"event min > max", func(p *Protection) {
			p.Mode, p.MinInterval = "event", 200*time.Millisecond
			p.Origins[FieldMinInterval] = at
		}, "x.cfg:3:4: min-interval 200ms is larger than interval 100ms"},
		{"epoch ignores min", func(p *Protection) { p.MinInterval = 200 * time.Millisecond }, ""},
		{"timeout", func(p *Protection) { p.Timeout = 299 * time.Millisecond; p.Origins[FieldTimeout] = at }, "x.cfg:3:4: timeout 299ms is not comfortably larger than interval 100ms"},
		{"timeout edge", func(p *Protection) { p.Timeout = 300 * time.Millisecond }, ""},
	}
	for _, tt := range tests {
		p := Defaults()
		tt.mod(&p)
		err := p.Validate()
		if tt.err == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrConflict) {
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.err)
		}
	}
}

func TestAllErrorsAtOnce(t *testing.T) {
	_, err := LoadDomain("testdata/xlcfg/bad/many-errors.cfg", nil, Overrides{Args: []string{"intervall=5ms", "netbuf=none"}})
	errs := Errors(err)
	if len(errs) != 7 {
		t.Fatalf("got %d errors, want 7:\n%v", len(errs), err)
	}
	for _, e := range errs {
		if !e.Pos.IsValid() || !strings.HasPrefix(e.Error(), e.Pos.File+":") {
			t.Errorf("error without a position: %v", e)
		}
	}
	if !errors.Is(err, ErrSyntax) || !errors.Is(err, ErrUnknownKey) || !errors.Is(err, ErrInvalidValue) || !errors.Is(err, ErrConflict) {
		t.Errorf("sentinels not all reachable with errors.Is: %v", err)
	}
}

func TestLoadHostMissing(t *testing.T) {
	dir := t.TempDir()
	defaultHostPath = filepath.Join(dir, "absent.toml")
	t.Cleanup(func() { defaultHostPath = DefaultHostPath })
	h, err := LoadHost("")
	if err != nil || h.Path != "" || h.Listen != ":8011" {
		t.Errorf("missing default file: %+v, %v", h, err)
	}
	explicit := filepath.Join(dir, "explicit.toml")
	_, err = LoadHost(explicit)
	if !errors.Is(err, ErrRead) {
		t.Errorf("missing explicit file: %v, want ErrRead", err)
	}
	// The file named, no line or column (there is none), and why.
	if want := explicit + ": the host configuration does not exist"; err == nil || err.Error() != want {
		t.Errorf("missing explicit file: %q, want %q", err, want)
	}
}

func TestLoadDomainMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.cfg")
	_, err := LoadDomain(path, nil, Overrides{})
	if !errors.Is(err, ErrRead) {
		t.Errorf("got %v, want ErrRead", err)
	}
	if want := path + ": the domain configuration does not exist"; err == nil || err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
	// A directory exists but cannot be read as a file: the reason, once.
	dir := t.TempDir()
	_, err = LoadDomain(dir, nil, Overrides{})
	if want := dir + ": cannot read domain configuration: is a directory"; err == nil || err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
}

// kemari.toml's flat spellings of a table's key (metrics_listen, as
// xl.conf would write it) are refused with the table form to use.
func TestHostFlatTableKey(t *testing.T) {
	for src, want := range map[string]string{
		"metrics_listen = \"127.0.0.1:9811\"\n": `k.toml:1:1: unknown key "metrics_listen"; write it as listen in the [metrics] table`,
		"log-file = \"/x\"\n":                   `k.toml:1:1: unknown key "log-file"; write it as file in the [log] table`,
	} {
		_, err := ParseHost("k.toml", []byte(src))
		if err == nil || err.Error() != want {
			t.Errorf("%q: %v, want %s", src, err, want)
		}
	}
	h, err := ParseHost("k.toml", []byte("[metrics]\nlisten = \"127.0.0.1:9811\"\n"))
	if err != nil || h.MetricsListen != "127.0.0.1:9811" {
		t.Errorf("[metrics] listen: %+v, %v", h, err)
	}
}

func TestSuggest(t *testing.T) {
	for word, want := range map[string]string{
		"intervall": "interval", "intreval": "interval", "min_interval": "min-interval",
		"Standby": "standby", "netbuff": "netbuf", "xyzzy": "", "a": "", "arbitor": "arbiter",
	} {
		if got := suggest(word, fieldNames[:]); got != want {
			t.Errorf("suggest(%q) = %q, want %q", word, got, want)
		}
	}
}

func TestStandbyAddr(t *testing.T) {
	for in, want := range map[string]string{
		"": "", "h2": "h2:8011", "h2:9": "h2:9", "10.0.0.2": "10.0.0.2:8011",
		"fe80::1": "[fe80::1]:8011", "[fe80::1]:9": "[fe80::1]:9",
	} {
		if got := (Protection{Standby: in}).StandbyAddr(); got != want {
			t.Errorf("StandbyAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestExampleTOML keeps dist/kemari.toml.example honest: it must load, and
// the values it shows must be the built-in defaults.
func TestExampleTOML(t *testing.T) {
	h, err := LoadHost("../dist/kemari.toml.example")
	if err != nil {
		t.Fatal(err)
	}
	d := DefaultHost()
	for i, s := range h.Settings() {
		if s.Value != d.Settings()[i].Value {
			t.Errorf("%s = %q in the example, default %q", s.Name, s.Value, d.Settings()[i].Value)
		}
	}
	for i, s := range h.Defaults.Settings() {
		if s.Value != d.Defaults.Settings()[i].Value {
			t.Errorf("defaults.%s = %q in the example, default %q", s.Name, s.Value, d.Defaults.Settings()[i].Value)
		}
	}
}

func BenchmarkLoadDomain(b *testing.B) {
	src, err := os.ReadFile("testdata/xlcfg/good/pvh-web.cfg")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		if _, err := ParseDomain("pvh-web.cfg", src, nil, Overrides{}); err != nil {
			b.Fatal(err)
		}
	}
}
