package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/xl-kemari/xl-kemari/conf"
	"github.com/xl-kemari/xl-kemari/libxl"
)

func init() {
	register(&command{
		Name:    "config",
		Summary: "check a domain's configuration and print its effective protection settings",
		Usage:   "config [--json] [--toml PATH] [--set KEY=VALUE]... DOMAIN-CONFIG",
		Run:     runConfig,
	})
}

// runConfig loads DOMAIN-CONFIG the way `start` would and prints every
// effective setting with where it came from, or every problem, one per line
// as FILE:LINE:COLUMN: message, with exit code exitConfig: the file's own
// and what `start` would refuse about the domain on Xen.
func runConfig(e *env, args []string) int {
	fs := pflag.NewFlagSet("config", pflag.ContinueOnError)
	fs.SetOutput(e.Stderr)
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	tomlPath := fs.String("toml", "", "host configuration `file` (default "+conf.DefaultHostPath+", which may be absent)")
	sets := fs.StringArray("set", nil, "override a protection setting, as on the command line of start (`KEY=VALUE`, repeatable)")
	fs.Usage = func() {
		fmt.Fprintf(e.Stderr, "Usage: xl kemari config [--json] [--toml PATH] [--set KEY=VALUE]... DOMAIN-CONFIG\n\n")
		fmt.Fprintf(e.Stderr, "Reads DOMAIN-CONFIG (an xl.cfg file) and the host configuration and prints the\n")
		fmt.Fprintf(e.Stderr, "effective protection settings and the source of each. See xl-kemari.cfg(5).\n\n")
		fs.PrintDefaults()
	}
	if code, ok := parseArgs(e, fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		e.errorf("config: want one DOMAIN-CONFIG, got %d arguments", fs.NArg())
		fs.Usage()
		return exitUsage
	}
	host, err := conf.LoadHost(*tomlPath)
	if err != nil {
		printConfigErrors(e.Stderr, err)
		return exitConfig
	}
	dom, err := conf.LoadDomain(fs.Arg(0), host, conf.Overrides{Args: *sets})
	if err != nil {
		printConfigErrors(e.Stderr, err)
		return exitConfig
	}
	if refused := startRefusals(dom); len(refused) > 0 {
		for _, r := range refused {
			fmt.Fprintln(e.Stderr, r)
		}
		return exitConfig
	}
	if *asJSON {
		err = writeConfigJSON(e.Stdout, dom, host)
	} else {
		err = writeConfigTable(e.Stdout, dom, host)
	}
	if err != nil {
		e.errorf("config: %v", err)
		return exitFailure
	}
	return exitOK
}

// startRefusals is what `start` would refuse about dom on Xen (see
// checkProtectable), each as "FILE:LINE:COLUMN: message" at the setting
// to change, in the words start uses.
func startRefusals(dom *conf.Domain) []string {
	t, diskPos := configTarget(dom)
	typePos := conf.Pos{File: dom.File.Name, Line: 1, Col: 1}
	for _, k := range []string{"type", "builder"} {
		if v := dom.File.Get(k); v != nil {
			typePos = v.Pos
			break
		}
	}
	var out []string
	seen := map[string]bool{}
	for _, p := range dom.Kemari {
		err := checkProtectable(t, xenBackendName, xenProtects, p)
		for _, e := range unjoin(err) {
			pos := typePos
			switch {
			case errors.Is(e, errWritableDisk):
				if i := slices.IndexFunc(t.Disks, func(d libxl.Disk) bool { return d.Writable }); i >= 0 && i < len(diskPos) {
					pos = diskPos[i]
				}
				if o := p.Origin(conf.FieldDisk); o.Source > conf.SourceDefault && o.Pos.IsValid() {
					pos = o.Pos
				}
			case errors.Is(e, errArbiter):
				pos = p.Origin(conf.FieldArbiter).Pos
			}
			line := pos.String() + ": " + e.Error()
			if !seen[line] {
				seen[line] = true
				out = append(out, line)
			}
		}
	}
	return out
}

// unjoin lists the errors of an errors.Join, or err alone.
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// printConfigErrors prints each problem on a line of its own, so that
// editors and scripts can jump to FILE:LINE:COLUMN.
func printConfigErrors(w io.Writer, err error) {
	for _, pe := range conf.Errors(err) {
		fmt.Fprintln(w, pe)
	}
}

func hostSource(h *conf.Host) string {
	if h.Path == "" {
		return "built-in defaults (" + conf.DefaultHostPath + " not found)"
	}
	return h.Path
}

func writeConfigTable(w io.Writer, d *conf.Domain, h *conf.Host) error {
	fmt.Fprintf(w, "domain %s (%s, %d MiB, %d vCPU(s), %d vif(s), %d disk(s)) from %s\n",
		d.Name, d.Type, d.MemoryMiB, d.VCPUs, len(d.VIFs), len(d.Disks), d.File.Name)
	fmt.Fprintf(w, "host configuration: %s\n", hostSource(h))
	for i, p := range d.Kemari {
		to := p.StandbyAddr()
		if to == "" {
			to = "the standby named on the command line of start"
		}
		fmt.Fprintf(w, "\nprotection %d of %d, toward %s:\n", i+1, len(d.Kemari), to)
		if err := settingsTable(w, p.Settings()); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "\nhost:\n")
	return settingsTable(w, h.Settings())
}

func settingsTable(w io.Writer, settings []conf.Setting) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "  SETTING\tVALUE\tSOURCE\n")
	for _, s := range settings {
		v := s.Value
		if v == "" {
			v = "-"
		}
		src := s.Origin.String()
		if s.Name == "timeout" && s.Origin.Source == conf.SourceDefault {
			// start derives it (xl-kemari(1), --timeout).
			src = "default until measured; then derived by start from its measurements"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", s.Name, v, src)
	}
	return tw.Flush()
}

func writeConfigJSON(w io.Writer, d *conf.Domain, h *conf.Host) error {
	type protection struct {
		StandbyAddr string         `json:"standby_addr"`
		Settings    []conf.Setting `json:"settings"`
	}
	type domain struct {
		Name      string   `json:"name"`
		Type      string   `json:"type"`
		MemoryMiB int      `json:"memory_mib"`
		VCPUs     int      `json:"vcpus"`
		VIFs      []string `json:"vifs"`
		Disks     []string `json:"disks"`
		File      string   `json:"file"`
	}
	out := struct {
		Domain      domain         `json:"domain"`
		HostConfig  string         `json:"host_config"`
		Protections []protection   `json:"protections"`
		Host        []conf.Setting `json:"host"`
	}{
		Domain:     domain{d.Name, d.Type, d.MemoryMiB, d.VCPUs, nonNil(d.VIFs), nonNil(d.Disks), d.File.Name},
		HostConfig: h.Path,
		Host:       h.Settings(),
	}
	for _, p := range d.Kemari {
		out.Protections = append(out.Protections, protection{p.StandbyAddr(), p.Settings()})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
