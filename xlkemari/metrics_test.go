package main

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/xl-kemari/xl-kemari/checkpoint"
)

// scrape serves sts on a loopback endpoint and returns the body.
func scrape(t *testing.T, sts []checkpoint.Status) (string, http.Header) {
	t.Helper()
	addr, stop, err := serveMetrics("127.0.0.1:0", func() []checkpoint.Status { return sts }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s\n%s", resp.Status, body)
	}
	return string(body), resp.Header
}

func TestMetricsEndpoint(t *testing.T) {
	st := checkpoint.Status{Role: "primary", Domain: "web1", State: "protected", Epoch: 42,
		Checkpoints: 40, AvgPause: checkpoint.Dur(1500 * time.Microsecond)}
	sb := checkpoint.Status{Role: "standby", Domain: "web2", State: "active", Activation: checkpoint.Dur(250 * time.Millisecond),
		Timeout: checkpoint.Dur(410 * time.Millisecond)}
	out, hdr := scrape(t, []checkpoint.Status{st, sb})
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("content type %q", ct)
	}
	for _, want := range []string{
		"# TYPE xl_kemari_state gauge",
		"# TYPE xl_kemari_checkpoints_total counter",
		`xl_kemari_state{domain="web1",role="primary"} 2`,
		`xl_kemari_state_info{domain="web1",role="primary",state="protected"} 1`,
		`xl_kemari_epoch{domain="web1",role="primary"} 42`,
		`xl_kemari_checkpoints_total{domain="web1",role="primary"} 40`,
		`xl_kemari_pause_seconds_avg{domain="web1",role="primary"} 0.0015`,
		`xl_kemari_activation_seconds{domain="web2",role="standby"} 0.25`,
		`xl_kemari_state{domain="web2",role="standby"} 3`,
		`xl_kemari_timeout_seconds{domain="web2",role="standby"} 0.41`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %q:\n%s", want, out)
		}
	}
}

// A domain's name comes from the peer's hello: whatever it holds, the
// exposition parses (Prometheus's own parser), each name reads back as
// itself (invalid UTF-8 as \xHH text), and no series but the info one
// carries the state, so counters keep their identity across states.
func TestMetricsHostileDomainName(t *testing.T) {
	names := map[string]string{
		`web"1`:        `web"1`,
		`back\slash`:   `back\slash`,
		"new\nline":    "new\nline",
		"bad\xffbyte":  `bad\xffbyte`,
		"ünïcødé":      "ünïcødé",
		`"} 1` + "\n#": `"} 1` + "\n#",
	}
	var sts []checkpoint.Status
	for n := range names {
		sts = append(sts, checkpoint.Status{Role: "standby", Domain: n, State: "ready", Checkpoints: 7})
	}
	out, _ := scrape(t, sts)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(out))
	if err != nil {
		t.Fatalf("the Prometheus text parser rejects the exposition: %v\n%s", err, out)
	}
	for _, fname := range []string{"xl_kemari_checkpoints_total", "xl_kemari_state"} {
		fam := fams[fname]
		if fam == nil {
			t.Fatalf("no %s in\n%s", fname, out)
		}
		got := map[string]bool{}
		for _, m := range fam.GetMetric() {
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "domain":
					got[l.GetValue()] = true
				case "state":
					t.Errorf("%s carries a state label", fname)
				}
			}
		}
		for sent, want := range names {
			if !got[want] {
				t.Errorf("%s: domain %q does not read back as %q; read %v", fname, sent, want, got)
			}
		}
	}
}

func TestMetricsOffByDefault(t *testing.T) {
	_, stop, err := serveMetrics("", nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	stop()
	if _, _, err := serveMetrics("256.0.0.1:bad", nil, slog.New(slog.DiscardHandler)); err == nil {
		t.Error("a bad address was accepted")
	}
}
