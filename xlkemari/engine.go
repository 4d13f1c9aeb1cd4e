package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/spf13/pflag"
	"github.com/xl-kemari/xl-kemari/checkpoint"
	"github.com/xl-kemari/xl-kemari/checkpoint/epoch"
	"github.com/xl-kemari/xl-kemari/checkpoint/wire"
	"github.com/xl-kemari/xl-kemari/conf"
	"github.com/xl-kemari/xl-kemari/libxl"
)

// engineFlags are the protection settings both ends take.
type engineFlags struct {
	mode      string
	interval  time.Duration
	minInt    time.Duration
	timeout   time.Duration
	inflight  int
	compress  string
	hv        string
	events    string
	logLevel  string
	simOpts   []string
	reprotect bool
}

func (f *engineFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.mode, "mode", "epoch", "checkpoint trigger: epoch (fixed interval) or event (on output)")
	fs.DurationVar(&f.interval, "interval", 100*time.Millisecond, "checkpoint interval (event mode: maximum)")
	fs.DurationVar(&f.minInt, "min-interval", 5*time.Millisecond, "event mode: minimum spacing of checkpoints")
	fs.DurationVar(&f.timeout, "timeout", time.Second, "peer declared lost after this long without frames (unset: start derives it from what it measures, 1s until then, and receive takes the primary's; see xl-kemari(1))")
	fs.IntVar(&f.inflight, "inflight", 1, "checkpoints in flight before back-pressure")
	fs.StringVar(&f.compress, "compress", "lz4", "page compression: none, lz4 or zstd")
	fs.StringVar(&f.hv, "hypervisor", "xen", "hypervisor backend (xen, or sim for the built-in simulator)")
	fs.StringVar(&f.events, "events", "", "append every observation as a JSON line to this file")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringArrayVar(&f.simOpts, "sim", nil, "simulator domain option KEY=VALUE (repeatable; --hypervisor=sim)")
	fs.BoolVar(&f.reprotect, "reprotect", true, "re-protect automatically when the standby is back")
}

func (f *engineFlags) epochConfig() (epoch.Config, error) {
	c := epoch.Config{Interval: epoch.Duration(f.interval), MinInterval: epoch.Duration(f.minInt),
		Timeout: epoch.Duration(f.timeout), Inflight: f.inflight, Reprotect: f.reprotect}
	switch f.mode {
	case "epoch":
	case "event":
		c.Mode = epoch.ModeEvent
	default:
		return c, fmt.Errorf("--mode %q: want epoch or event", f.mode)
	}
	if f.timeout < 2*f.interval && f.mode == "epoch" {
		return c, fmt.Errorf("--timeout %v must be at least twice --interval %v", f.timeout, f.interval)
	}
	return c, c.Validate()
}

// codecByName maps a compress setting to the wire codec.
func codecByName(name string) (wire.Codec, error) {
	switch name {
	case "none":
		return wire.CodecNone, nil
	case "lz4":
		return wire.CodecLZ4, nil
	case "zstd":
		return wire.CodecZstd, nil
	}
	return 0, fmt.Errorf("--compress %q: want none, lz4 or zstd", name)
}

// epochFromProtection is the epoch machine's configuration for the
// effective protection settings of a domain.
func epochFromProtection(p conf.Protection) (epoch.Config, error) {
	c := epoch.Config{Interval: epoch.Duration(p.Interval), MinInterval: epoch.Duration(p.MinInterval),
		Timeout: epoch.Duration(p.Timeout), Inflight: p.Inflight, Reprotect: p.Reprotect}
	if p.Mode == "event" {
		c.Mode = epoch.ModeEvent
	}
	return c, c.Validate()
}

func (f *engineFlags) simOptions() libxl.Options {
	o := libxl.Options{}
	for _, kv := range f.simOpts {
		k, v, _ := cutEq(kv)
		o[k] = v
	}
	return o
}

func cutEq(s string) (string, string, bool) {
	for i := range len(s) {
		if s[i] == '=' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// eventLog writes observations as JSON lines (for the demo, tests and
// anyone tailing them).
type eventLog struct {
	mu sync.Mutex
	// Protected by mu.
	f *os.File
}

type eventLine struct {
	T       int64   `json:"t"` // Unix nanoseconds
	Kind    string  `json:"kind"`
	Epoch   uint64  `json:"epoch,omitempty"`
	State   string  `json:"state,omitempty"`
	PauseNs int64   `json:"pause_ns,omitempty"`
	Pages   int     `json:"pages,omitempty"`
	Percent float64 `json:"percent,omitempty"`
	TookNs  int64   `json:"took_ns,omitempty"` // activate: from the decision (activating) until the replica ran
	Digest  string  `json:"digest,omitempty"`
	Msg     string  `json:"msg,omitempty"`
}

var obsNames = map[checkpoint.ObsKind]string{checkpoint.ObsState: "state", checkpoint.ObsCheckpoint: "checkpoint",
	checkpoint.ObsRelease: "release", checkpoint.ObsCommit: "commit", checkpoint.ObsSync: "sync",
	checkpoint.ObsActivate: "activate", checkpoint.ObsError: "error", checkpoint.ObsWarning: "warning",
	checkpoint.ObsActivating: "activating", checkpoint.ObsTimeout: "timeout"}

func openEventLog(path string) (*eventLog, error) {
	if path == "" {
		return nil, nil
	}
	f, err := openAppend(path, 0o600)
	if err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	return &eventLog{f: f}, nil
}

func (l *eventLog) observe(o checkpoint.Observation) {
	if l == nil {
		return
	}
	line := eventLine{T: o.Time.UnixNano(), Kind: obsNames[o.Kind], Epoch: o.Epoch, State: o.State,
		PauseNs: int64(o.Pause), Pages: o.Pages, Percent: o.Percent, TookNs: int64(o.Took), Msg: o.Msg}
	if o.Digest != 0 {
		line.Digest = fmt.Sprintf("%016x", o.Digest)
	}
	b, _ := json.Marshal(line)
	l.mu.Lock()
	l.f.Write(append(b, '\n'))
	l.mu.Unlock()
}
