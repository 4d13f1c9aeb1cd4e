package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/xl-kemari/xl-kemari/checkpoint"
)

// states maps a protector's state to the number the xl_kemari_state
// metric exports, so alerts need no string matching: 0 means "not
// protected right now" on a primary.
var stateValues = map[string]float64{
	"idle": 0, "connecting": 0, "syncing": 1, "protected": 2, "reconnecting": 1, "arbitrating": 0,
	"unprotected": 0, "stopping": 1, "stopped": 0, "fenced": -1,
	"waiting": 0, "ready": 2, "active": 3, "denied": -1,
}

// writeMetrics renders statuses in the Prometheus text exposition format
// (version 0.0.4). It needs no client library: a few gauges and counters.
func writeMetrics(w io.Writer, sts []checkpoint.Status) {
	type metric struct {
		name, help, kind string
		val              func(checkpoint.Status) float64
	}
	sec := func(d checkpoint.Dur) float64 { return time.Duration(d).Seconds() }
	ms := []metric{
		{"xl_kemari_state", "protection state: 2 protected/ready, 1 syncing, 0 unprotected, 3 active (failed over), -1 fenced/denied", "gauge",
			func(s checkpoint.Status) float64 { return stateValues[s.State] }},
		{"xl_kemari_epoch", "last acknowledged (primary) or committed (standby) epoch", "gauge", func(s checkpoint.Status) float64 { return float64(s.Epoch) }},
		{"xl_kemari_checkpoints_total", "checkpoints taken (primary) or committed (standby)", "counter", func(s checkpoint.Status) float64 { return float64(s.Checkpoints) }},
		{"xl_kemari_epoch_rate_hz", "checkpoints per second over the last seconds", "gauge", func(s checkpoint.Status) float64 { return s.EpochRate }},
		{"xl_kemari_pause_seconds_last", "guest pause of the last checkpoint", "gauge", func(s checkpoint.Status) float64 { return sec(s.LastPause) }},
		{"xl_kemari_pause_seconds_avg", "average guest pause per checkpoint", "gauge", func(s checkpoint.Status) float64 { return sec(s.AvgPause) }},
		{"xl_kemari_pause_seconds_max", "longest guest pause", "gauge", func(s checkpoint.Status) float64 { return sec(s.MaxPause) }},
		{"xl_kemari_dirty_pages_last", "dirty pages in the last checkpoint", "gauge", func(s checkpoint.Status) float64 { return float64(s.LastDirty) }},
		{"xl_kemari_bytes_raw_total", "page bytes shipped before compression", "counter", func(s checkpoint.Status) float64 { return float64(s.BytesRaw) }},
		{"xl_kemari_bytes_wire_total", "page bytes shipped after compression", "counter", func(s checkpoint.Status) float64 { return float64(s.BytesWire) }},
		{"xl_kemari_commit_latency_seconds", "average time from an epoch's barrier to its release", "gauge", func(s checkpoint.Status) float64 { return sec(s.CommitLatency) }},
		{"xl_kemari_output_held_frames", "frames held now", "gauge", func(s checkpoint.Status) float64 { return float64(s.OutputHeld) }},
		{"xl_kemari_output_released_frames_total", "frames released", "counter", func(s checkpoint.Status) float64 { return float64(s.Released) }},
		{"xl_kemari_epochs_discarded_total", "epochs the standby discarded (torn, corrupt)", "counter", func(s checkpoint.Status) float64 { return float64(s.Discarded) }},
		{"xl_kemari_unprotected_seconds", "seconds since protection was lost (0 while protected)", "gauge", func(s checkpoint.Status) float64 {
			if s.UnprotectedSince.IsZero() {
				return 0
			}
			return time.Since(s.UnprotectedSince).Seconds()
		}},
	}
	for _, m := range ms {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", m.name, m.help, m.name, m.kind)
		for _, s := range sts {
			fmt.Fprintf(w, "%s{domain=%q,role=%q,state=%q} %g\n", m.name, labelEscape(s.Domain), s.Role, s.State, m.val(s))
		}
	}
}

func labelEscape(s string) string { return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s) }

// serveMetrics serves /metrics on addr until stop is called. Off unless
// an address is configured (--metrics, or metrics_listen in kemari.toml):
// it is a read-only, unauthenticated HTTP endpoint that exposes counters
// and the domain's name, never guest data; bind it to a management
// network or loopback.
func serveMetrics(addr string, statuses func() []checkpoint.Status, log *slog.Logger) (bound string, stop func(), err error) {
	if addr == "" {
		return "", func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		writeMetrics(w, statuses())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("metrics endpoint stopped", "err", err)
		}
	}()
	log.Info("metrics endpoint", "addr", ln.Addr().String())
	return ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}
