package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
	"github.com/xl-kemari/xl-kemari/checkpoint"
)

func init() {
	register(&command{
		Name:    "status",
		Summary: "show every protection on this host: role, peer, state, rates, pauses",
		Usage:   "status [--json] [--run-dir DIR] [<Domain>]",
		Run:     runStatus,
	})
}

// statusEntry is one protection as `status --json` prints it: the
// protector's pid and socket, then checkpoint.Status's fields.
type statusEntry struct {
	PID    int    `json:"pid"`
	Socket string `json:"socket"`
	checkpoint.Status
}

func runStatus(e *env, args []string) int {
	fs := pflag.NewFlagSet("status", pflag.ContinueOnError)
	fs.SetOutput(e.Stderr)
	asJSON := fs.Bool("json", false, "print a JSON array, one object per protection")
	runDir := fs.String("run-dir", "", "directory of the control sockets (default $KEMARI_RUN_DIR or "+defaultRunDir+")")
	timeout := fs.Duration("wait", 5*time.Second, "how long to wait for each protector's answer")
	fs.Usage = func() {
		fmt.Fprintf(e.Stderr, "Usage: xl kemari status [options] [<Domain>]\n\nShow every protection on this host (primaries and standbys), or those of\n<Domain>.\n\nOptions:\n%s", fs.FlagUsages())
	}
	if code, ok := parseArgs(e, fs, args); !ok {
		return code
	}
	if fs.NArg() > 1 {
		e.errorf("status: at most one domain, got %d arguments", fs.NArg())
		fs.Usage()
		return exitUsage
	}
	dir := resolveRunDir(e, *runDir)
	ps, err := survey(dir, *timeout)
	if err != nil {
		e.errorf("status: %v", err)
		return exitFailure
	}
	var entries []statusEntry
	for _, p := range ps {
		for _, st := range p.Status {
			if fs.NArg() == 1 && st.Domain != fs.Arg(0) {
				continue
			}
			entries = append(entries, statusEntry{PID: p.PID, Socket: p.Socket, Status: st})
		}
	}
	if fs.NArg() == 1 && len(entries) == 0 {
		e.errorf("status: %s is not protected on this host (no primary or standby for it in %s)", fs.Arg(0), dir)
		return exitNotFound
	}
	if *asJSON {
		if entries == nil {
			entries = []statusEntry{}
		}
		enc := json.NewEncoder(e.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(entries); err != nil {
			return exitFailure
		}
		return exitOK
	}
	if len(entries) == 0 {
		fmt.Fprintf(e.Stdout, "no protections on this host (%s)\n", dir)
		return exitOK
	}
	writeStatusTable(e.Stdout, entries, time.Now())
	return exitOK
}

// statusColumns are the table's headings.
var statusColumns = []string{"DOMAIN", "ROLE", "PEER", "STATE", "EPOCH", "RATE", "PAUSE LAST/AVG", "DIRTY", "BANDWIDTH", "COMPR", "COMMIT", "UNPROTECTED"}

func writeStatusTable(w io.Writer, entries []statusEntry, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for i, c := range statusColumns {
		if i > 0 {
			fmt.Fprint(tw, "\t")
		}
		fmt.Fprint(tw, c)
	}
	fmt.Fprintln(tw)
	for _, en := range entries {
		s := en.Status
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			dash(s.Domain), s.Role, dash(s.Peer), stateText(s), s.Epoch, rateText(s.EpochRate),
			pauseText(s), dirtyText(s), bytesRate(s.Bandwidth), ratioText(s.Compression),
			durText(time.Duration(s.CommitLatency)), sinceText(s.UnprotectedSince, now))
	}
	tw.Flush()
	// The timeout each uses, and where it comes from (derived from what the
	// primary measured, announced, configured): too long for a column.
	for _, en := range entries {
		if s := en.Status; s.TimeoutWhy != "" {
			fmt.Fprintf(w, "%s (%s): %s\n", dash(s.Domain), s.Role, s.TimeoutWhy)
		}
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// stateText adds the sync progress and, for an activated standby, the
// epoch it resumed at.
func stateText(s checkpoint.Status) string {
	switch {
	case s.State == "syncing" && s.Role == "primary" && s.NotYetProtected && s.Protection != "" && s.DiskSyncPercent > 0 && s.DiskSyncPercent < 100:
		return fmt.Sprintf("%s (disks %.0f%%)", s.Protection, s.DiskSyncPercent)
	case s.State == "syncing" && s.Role == "primary" && s.NotYetProtected && s.Protection != "":
		return s.Protection
	case s.State == "syncing" && s.Role == "primary" && s.DiskSyncPercent > 0 && s.DiskSyncPercent < 100:
		return fmt.Sprintf("syncing %.0f%% (disks %.0f%%)", s.SyncPercent, s.DiskSyncPercent)
	case s.State == "syncing" && s.Role == "primary":
		return fmt.Sprintf("syncing %.0f%%", s.SyncPercent)
	case s.State == "activating":
		return fmt.Sprintf("activating epoch %d: %s, last heard %s", s.Epoch, dash(s.Reason), durText(time.Duration(s.LastHeard)))
	case s.State == "active" && s.Role == "standby":
		if s.Activation != 0 {
			return fmt.Sprintf("active (failed over at epoch %d in %s)", s.ActivatedEpoch, durText(time.Duration(s.Activation)))
		}
		return fmt.Sprintf("active (failed over at epoch %d)", s.ActivatedEpoch)
	case s.State == "syncing" && s.FallbackEpoch != 0:
		return fmt.Sprintf("syncing (fallback at epoch %d)", s.FallbackEpoch)
	}
	return dash(s.State)
}

func rateText(hz float64) string {
	if hz == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f/s", hz)
}

func durText(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%dus", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
	return d.Round(10 * time.Millisecond).String()
}

func pauseText(s checkpoint.Status) string {
	if s.LastPause == 0 && s.AvgPause == 0 {
		return "-"
	}
	return durText(time.Duration(s.LastPause)) + "/" + durText(time.Duration(s.AvgPause))
}

func dirtyText(s checkpoint.Status) string {
	if s.LastDirty == 0 && s.AvgDirty == 0 {
		return "-"
	}
	if s.AvgDirty == 0 {
		return fmt.Sprintf("%d", s.LastDirty)
	}
	return fmt.Sprintf("%d/%.0f", s.LastDirty, s.AvgDirty)
}

func bytesRate(bps float64) string {
	if bps == 0 {
		return "-"
	}
	units := []string{"B/s", "KiB/s", "MiB/s", "GiB/s"}
	i := 0
	for bps >= 1024 && i < len(units)-1 {
		bps /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %s", bps, units[i])
}

func ratioText(r float64) string {
	if r == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fx", r)
}

func sinceText(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return now.Sub(t).Round(time.Second).String() + " ago"
}
