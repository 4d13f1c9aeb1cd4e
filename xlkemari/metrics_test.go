package main

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/xl-kemari/xl-kemari/checkpoint"
)

func TestMetricsEndpoint(t *testing.T) {
	st := checkpoint.Status{Role: "primary", Domain: `web"1`, State: "protected", Epoch: 42,
		Checkpoints: 40, AvgPause: checkpoint.Dur(1500 * time.Microsecond)}
	addr, stop, err := serveMetrics("127.0.0.1:0", func() []checkpoint.Status { return []checkpoint.Status{st} }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("content type %q", ct)
	}
	out := string(body)
	for _, want := range []string{
		"# TYPE xl_kemari_state gauge",
		`xl_kemari_state{domain="web\"1",role="primary",state="protected"} 2`,
		`xl_kemari_epoch{domain="web\"1",role="primary",state="protected"} 42`,
		`xl_kemari_pause_seconds_avg{domain="web\"1",role="primary",state="protected"} 0.0015`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %q:\n%s", want, out)
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
