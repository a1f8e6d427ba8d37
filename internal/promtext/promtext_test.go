package promtext

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// exposition renders a real registry, so the test reads what the admin endpoints serve.
func exposition(t *testing.T) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	sent := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshrelay_relay_pull_resources_sent_total", Help: "h"}, []string{"cluster", "reason"})
	sent.WithLabelValues("a", "ok").Add(3)
	sent.WithLabelValues("a", "nack").Add(1)
	sent.WithLabelValues("ab", "ok").Add(5)
	up := prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshrelay_store_up", Help: "h"})
	up.Set(1)
	dur := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "meshrelay_translation_duration_seconds", Help: "h", Buckets: []float64{0.1, 1}})
	dur.Observe(0.5)
	dur.Observe(2)
	reg.MustRegister(sent, up, dur)
	var b strings.Builder
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if _, err := expfmt.MetricFamilyToText(&b, f); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

func TestParse(t *testing.T) {
	s, err := Parse(strings.NewReader(exposition(t)))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		selectors []string
		want      []float64
	}{
		{"meshrelay_store_up", nil, []float64{1}},
		{"meshrelay_relay_pull_resources_sent_total", []string{`cluster="a"`}, []float64{1, 3}},
		{"meshrelay_relay_pull_resources_sent_total", []string{`cluster="a"`, `reason="ok"`}, []float64{3}},
		{"meshrelay_relay_pull_resources_sent_total", []string{`cluster="b"`}, nil},
		{"meshrelay_translation_duration_seconds_sum", nil, []float64{2.5}},
		{"meshrelay_translation_duration_seconds_count", nil, []float64{2}},
		{"meshrelay_translation_duration_seconds_bucket", []string{`le="1"`}, []float64{1}},
		{"meshrelay_translation_duration_seconds", nil, nil},
		{"meshrelay_store", nil, nil},
	}
	for _, tt := range tests {
		got, err := s.Values(tt.name, tt.selectors...)
		if err != nil {
			t.Fatalf("%s %v: %v", tt.name, tt.selectors, err)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("Values(%s, %v) = %v, want %v", tt.name, tt.selectors, got, tt.want)
		}
	}
	if got := s.Sum("meshrelay_relay_pull_resources_sent_total"); got != 9 {
		t.Errorf("Sum = %v, want 9", got)
	}
	by := s.By("meshrelay_relay_pull_resources_sent_total", "cluster")
	if len(by) != 2 || by["a"] != 4 || by["ab"] != 5 {
		t.Errorf("By cluster = %v", by)
	}
}

func TestBadInput(t *testing.T) {
	if _, err := Parse(strings.NewReader("meshrelay_store_up one\n")); err == nil {
		t.Error("Parse accepted a sample without a number")
	}
	s, err := Parse(strings.NewReader("meshrelay_store_up 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, sel := range []string{`cluster=a`, `cluster`, `="a"`} {
		if _, err := s.Values("meshrelay_store_up", sel); err == nil || !strings.Contains(err.Error(), strconv.Quote(sel)) {
			t.Errorf("selector %q: error %v, want one naming it", sel, err)
		}
	}
}
