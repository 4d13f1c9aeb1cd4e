package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/xl-kemari/xl-kemari/checkpoint"
)

// states maps a protector's state to the number the xl_kemari_state
// metric exports, so alerts need no string matching: 0 means "not
// protected right now" on a primary.
var stateValues = map[string]float64{
	"idle": 0, "connecting": 0, "syncing": 1, "protected": 2, "reconnecting": 1, "arbitrating": 0,
	"unprotected": 0, "stopping": 1, "stopped": 0, "fenced": -1, "stalled": 1,
	"waiting": 0, "ready": 2, "activating": 3, "active": 3, "denied": -1,
}

// statusMetric is one exported series per protector.
type statusMetric struct {
	desc *prometheus.Desc
	kind prometheus.ValueType
	val  func(checkpoint.Status) float64
}

// statusCollector exports the protectors' statuses, read afresh at every
// scrape. Every series is labelled by domain and role only: a counter
// must not change its labels when the protector changes state, or a rate
// over it breaks at every transition. The state's name is a label of
// xl_kemari_state_info alone.
type statusCollector struct {
	statuses func() []checkpoint.Status
	metrics  []statusMetric
	info     *prometheus.Desc
}

func newStatusCollector(statuses func() []checkpoint.Status) *statusCollector {
	labels := []string{"domain", "role"}
	sec := func(d checkpoint.Dur) float64 { return time.Duration(d).Seconds() }
	m := func(name, help string, kind prometheus.ValueType, val func(checkpoint.Status) float64) statusMetric {
		return statusMetric{prometheus.NewDesc(name, help, labels, nil), kind, val}
	}
	g, c := prometheus.GaugeValue, prometheus.CounterValue
	return &statusCollector{
		statuses: statuses,
		info: prometheus.NewDesc("xl_kemari_state_info", "the protection state by name (value always 1)",
			[]string{"domain", "role", "state"}, nil),
		metrics: []statusMetric{
			m("xl_kemari_state", "protection state: 2 protected/ready, 1 syncing/reconnecting/stalled (output held), 0 unprotected, 3 activating/active (failed over), -1 fenced/denied", g,
				func(s checkpoint.Status) float64 { return stateValues[s.State] }),
			m("xl_kemari_epoch", "last acknowledged (primary) or committed (standby) epoch", g, func(s checkpoint.Status) float64 { return float64(s.Epoch) }),
			m("xl_kemari_checkpoints_total", "checkpoints taken (primary) or committed (standby)", c, func(s checkpoint.Status) float64 { return float64(s.Checkpoints) }),
			m("xl_kemari_epoch_rate_hz", "checkpoints per second over the last seconds", g, func(s checkpoint.Status) float64 { return s.EpochRate }),
			m("xl_kemari_pause_seconds_last", "guest pause of the last checkpoint", g, func(s checkpoint.Status) float64 { return sec(s.LastPause) }),
			m("xl_kemari_pause_seconds_avg", "average guest pause per checkpoint", g, func(s checkpoint.Status) float64 { return sec(s.AvgPause) }),
			m("xl_kemari_pause_seconds_max", "longest guest pause", g, func(s checkpoint.Status) float64 { return sec(s.MaxPause) }),
			m("xl_kemari_dirty_pages_last", "dirty pages in the last checkpoint", g, func(s checkpoint.Status) float64 { return float64(s.LastDirty) }),
			m("xl_kemari_bytes_raw_total", "page bytes shipped before compression", c, func(s checkpoint.Status) float64 { return float64(s.BytesRaw) }),
			m("xl_kemari_bytes_wire_total", "page bytes shipped after compression", c, func(s checkpoint.Status) float64 { return float64(s.BytesWire) }),
			m("xl_kemari_commit_latency_seconds", "average time from an epoch's barrier to its release", g, func(s checkpoint.Status) float64 { return sec(s.CommitLatency) }),
			m("xl_kemari_output_held_frames", "frames held now", g, func(s checkpoint.Status) float64 { return float64(s.OutputHeld) }),
			m("xl_kemari_output_released_frames_total", "frames released", c, func(s checkpoint.Status) float64 { return float64(s.Released) }),
			m("xl_kemari_epochs_discarded_total", "epochs the standby discarded (torn, corrupt)", c, func(s checkpoint.Status) float64 { return float64(s.Discarded) }),
			m("xl_kemari_activation_seconds", "standby: from the decision to activate the replica (timeout, arbiter grant, failover by hand) until it ran; 0 before", g, func(s checkpoint.Status) float64 { return sec(s.Activation) }),
			m("xl_kemari_timeout_seconds", "the failure-detection timeout in use (configured, the default until measured, derived, or announced by the primary)", g, func(s checkpoint.Status) float64 { return sec(s.Timeout) }),
			m("xl_kemari_unprotected_seconds", "seconds since protection was lost (0 while protected)", g, func(s checkpoint.Status) float64 {
				if s.UnprotectedSince.IsZero() {
					return 0
				}
				return time.Since(s.UnprotectedSince).Seconds()
			}),
		},
	}
}

// Describe implements prometheus.Collector.
func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.info
	for _, m := range c.metrics {
		ch <- m.desc
	}
}

// Collect implements prometheus.Collector. Label values are the domain's
// name as the peer declared it: made valid UTF-8 here (the exposition
// format allows nothing else), escaped by the library's encoder.
func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.statuses() {
		dom, role := labelValue(s.Domain), labelValue(s.Role)
		for _, m := range c.metrics {
			if pm, err := prometheus.NewConstMetric(m.desc, m.kind, m.val(s), dom, role); err == nil {
				ch <- pm
			} else {
				ch <- prometheus.NewInvalidMetric(m.desc, fmt.Errorf("metrics: %s of domain %q: %w", m.desc, s.Domain, err))
			}
		}
		if pm, err := prometheus.NewConstMetric(c.info, prometheus.GaugeValue, 1, dom, role, labelValue(s.State)); err == nil {
			ch <- pm
		}
	}
}

// labelValue keeps the valid UTF-8 of s and writes every other byte as
// \xHH (a backslash and hex digits, which the encoder escapes in turn).
func labelValue(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		if r == utf8.RuneError && n <= 1 {
			fmt.Fprintf(&b, `\x%02x`, s[0])
			s = s[1:]
			continue
		}
		b.WriteString(s[:n])
		s = s[n:]
	}
	return b.String()
}

// metricsHandler serves statuses in the Prometheus text format, through
// client_golang's registry and encoder.
func metricsHandler(statuses func() []checkpoint.Status) (http.Handler, error) {
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(newStatusCollector(statuses)); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	// One protector's bad series must not cost the scrape the others.
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}), nil
}

// serveMetrics serves /metrics on addr until stop is called. Off unless
// an address is configured (--metrics, or metrics_listen in kemari.toml):
// it is a read-only, unauthenticated HTTP endpoint that exposes counters
// and the domain's name, never guest data; bind it to a management
// network or loopback.
func serveMetrics(addr string, statuses func() []checkpoint.Status, log *slog.Logger) (bound string, stop func(), err error) {
	if addr == "" {
		return "", func() {}, nil
	}
	h, err := metricsHandler(statuses)
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
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
