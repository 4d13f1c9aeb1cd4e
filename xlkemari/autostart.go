package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/spf13/pflag"
	"github.com/xl-kemari/xl-kemari/conf"
	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/sim"
)

func init() {
	register(&command{
		Name:    "autostart",
		Summary: "protect every running domain whose configuration says autostart=1",
		Usage:   "autostart [options] [<config>...]",
		Run:     runAutostart,
	})
}

// defaultAutoDir is where xendomains finds the domains it starts at boot.
const defaultAutoDir = "/etc/xen/auto"

func runAutostart(e *env, args []string) int {
	fs := pflag.NewFlagSet("autostart", pflag.ContinueOnError)
	fs.SetOutput(e.Stderr)
	dirs := fs.StringArray("config-dir", []string{defaultAutoDir}, "read every *.cfg in this `directory` (repeatable)")
	tomlPath := fs.String("toml", "", "host configuration `file` (default "+conf.DefaultHostPath+", which may be absent)")
	hvName := fs.String("hypervisor", "xen", "hypervisor backend")
	dryRun := fs.Bool("dry-run", false, "print what would be protected, protect nothing")
	runDir := fs.String("run-dir", "", "directory of the control sockets (default $KEMARI_RUN_DIR or "+defaultRunDir+")")
	fs.Usage = func() {
		fmt.Fprintf(e.Stderr, "Usage: xl kemari autostart [options] [<config>...]\n\nProtect every running domain whose xl.cfg (in %s, or named) has a kemari\nentry with autostart=1, each by its own `xl kemari start -C CONFIG DOMAIN`\nin the background. Domains already protected are left alone. Run at boot\nafter xendomains (xl-kemari-autostart.service).\n\nOptions:\n%s", defaultAutoDir, fs.FlagUsages())
	}
	if code, ok := parseArgs(e, fs, args); !ok {
		return code
	}
	host, err := conf.LoadHost(*tomlPath)
	if err != nil {
		printConfigErrors(e.Stderr, err)
		return exitConfig
	}
	files := slices.Clone(fs.Args())
	for _, d := range *dirs {
		m, _ := filepath.Glob(filepath.Join(d, "*.cfg"))
		files = append(files, m...)
	}
	code := exitOK
	type cand struct{ file, name string }
	var cands []cand
	for _, file := range files {
		dom, err := conf.LoadDomain(file, host, conf.Overrides{})
		if err != nil {
			printConfigErrors(e.Stderr, err)
			code = exitConfig
			continue
		}
		for _, p := range dom.Kemari {
			if p.Autostart {
				cands = append(cands, cand{file, dom.Name})
				break
			}
		}
	}
	if len(cands) == 0 {
		fmt.Fprintf(e.Stdout, "autostart: no domain configuration asks for autostart=1 (%d file(s) read)\n", len(files))
		return code
	}
	if *hvName == sim.BackendName && !*dryRun {
		for _, c := range cands {
			fmt.Fprintf(e.Stdout, "autostart: skipping %s (%s): the sim hypervisor has no running domains outside an xl-kemari process; use start --hypervisor=sim\n", c.name, c.file)
		}
		return code
	}
	var hv libxl.Hypervisor
	if !*dryRun {
		if hv, err = libxl.Open(*hvName, nil); err != nil {
			e.errorf("autostart: %v", err)
			return exitFailure
		}
		defer hv.Close()
	}
	dir := resolveRunDir(e, *runDir)
	self, err := os.Executable()
	if err != nil {
		e.errorf("autostart: %v", err)
		return exitFailure
	}
	for _, c := range cands {
		if ps, _ := find(dir, "primary", c.name, 5*time.Second); len(ps) > 0 {
			fmt.Fprintf(e.Stdout, "autostart: %s is already protected (pid %d)\n", c.name, ps[0].PID)
			continue
		}
		if *dryRun {
			fmt.Fprintf(e.Stdout, "autostart: would protect %s (%s)\n", c.name, c.file)
			continue
		}
		if _, err := hv.Lookup(c.name); err != nil {
			fmt.Fprintf(e.Stdout, "autostart: %s is not running; not protected (%v)\n", c.name, err)
			continue
		}
		cmd := exec.Command(self, "start", "--no-wait", "--hypervisor="+*hvName, "--run-dir="+dir, "-C", c.file, c.name)
		if *tomlPath != "" {
			cmd.Args = append(cmd.Args[:2], append([]string{"--toml=" + *tomlPath}, cmd.Args[2:]...)...)
		}
		cmd.Stdout, cmd.Stderr = e.Stdout, e.Stderr
		if err := cmd.Run(); err != nil {
			e.errorf("autostart: %s: %v", c.name, err)
			code = max(code, exitFailure)
			continue
		}
		fmt.Fprintf(e.Stdout, "autostart: protecting %s\n", c.name)
	}
	return code
}
