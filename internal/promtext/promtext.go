// Package promtext reads the Prometheus text exposition that the admin endpoints serve at
// /metrics, for tests and benchmarks that assert on or report metric values, and for the
// UI, which reads the telemetry gateway's merged endpoint. It wraps
// prometheus/common/expfmt so that nobody splits exposition lines by hand.
package promtext

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Sample is one series of an exposition. Histograms and summaries are flattened into their
// _bucket, _sum and _count series, as Prometheus stores them.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Samples are the series of one exposition: families sorted by name, series within a family
// in exposition order.
type Samples []Sample

// Fetch GETs a plain-HTTP /metrics URL with client and parses it; an answer other than
// 200 is an error that names the URL and quotes the body's start.
func Fetch(ctx context.Context, client *http.Client, url string) (Samples, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("request %s: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("get %s: HTTP %d: %s", url, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	s, err := Parse(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", url, err)
	}
	return s, nil
}

// Parse reads a text exposition.
func Parse(r io.Reader) (Samples, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	var out Samples
	for _, name := range slices.Sorted(maps.Keys(fams)) {
		vec, err := expfmt.ExtractSamples(&expfmt.DecodeOptions{}, fams[name])
		if err != nil {
			return nil, fmt.Errorf("metric family %s: %w", name, err)
		}
		for _, s := range vec {
			labels := make(map[string]string, len(s.Metric))
			for k, v := range s.Metric {
				if k != model.MetricNameLabel {
					labels[string(k)] = string(v)
				}
			}
			out = append(out, Sample{Name: string(s.Metric[model.MetricNameLabel]), Labels: labels, Value: float64(s.Value)})
		}
	}
	return out, nil
}

// Values returns the value of every series named name whose labels include every selector,
// written as in the exposition (`cluster="a"`).
func (s Samples) Values(name string, selectors ...string) ([]float64, error) {
	want := make(map[string]string, len(selectors))
	for _, sel := range selectors {
		k, quoted, ok := strings.Cut(sel, "=")
		v, err := strconv.Unquote(quoted)
		if !ok || k == "" || err != nil {
			return nil, fmt.Errorf("label selector %q: want name=\"value\"", sel)
		}
		want[k] = v
	}
	var out []float64
	for _, x := range s {
		if x.Name != name {
			continue
		}
		match := true
		for k, v := range want {
			if got, ok := x.Labels[k]; !ok || got != v {
				match = false
				break
			}
		}
		if match {
			out = append(out, x.Value)
		}
	}
	return out, nil
}

// Sum is the sum of every series named name (0 when there is none).
func (s Samples) Sum(name string) float64 {
	sum := 0.0
	for _, x := range s {
		if x.Name == name {
			sum += x.Value
		}
	}
	return sum
}

// By sums the series named name per value of one label (series without it are left out).
func (s Samples) By(name, label string) map[string]float64 {
	out := map[string]float64{}
	for _, x := range s {
		if v, ok := x.Labels[label]; ok && x.Name == name {
			out[v] += x.Value
		}
	}
	return out
}
