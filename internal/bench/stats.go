package bench

import (
	"fmt"
	"math"
	"sort"
)

// Dist summarizes durations in milliseconds.
type Dist struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50Ms"`
	P90  float64 `json:"p90Ms"`
	P99  float64 `json:"p99Ms"`
	Max  float64 `json:"maxMs"`
	Mean float64 `json:"meanMs"`
}

// NewDist summarizes samples given in milliseconds (nearest-rank percentiles).
func NewDist(Ms []float64) Dist {
	if len(Ms) == 0 {
		return Dist{}
	}
	s := append([]float64(nil), Ms...)
	sort.Float64s(s)
	rank := func(p float64) float64 {
		i := int(math.Ceil(p/100*float64(len(s)))) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	sum := 0.0
	for _, v := range s {
		sum += v
	}
	return Dist{N: len(s), P50: rank(50), P90: rank(90), P99: rank(99), Max: s[len(s)-1], Mean: sum / float64(len(s))}
}

// Ordered reports whether the percentiles are in order (a sanity check).
func (d Dist) Ordered() bool { return d.P50 <= d.P90 && d.P90 <= d.P99 && d.P99 <= d.Max }

func (d Dist) String() string {
	if d.N == 0 {
		return "-"
	}
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  max %s  (n=%d)", Ms(d.P50), Ms(d.P90), Ms(d.P99), Ms(d.Max), d.N)
}

// Ms formats a duration in milliseconds for a table (ms, or s from a second).
func Ms(v float64) string {
	switch {
	case v >= 10000:
		return fmt.Sprintf("%.1f s", v/1000)
	case v >= 1000:
		return fmt.Sprintf("%.2f s", v/1000)
	case v >= 10:
		return fmt.Sprintf("%.0f ms", v)
	default:
		return fmt.Sprintf("%.1f ms", v)
	}
}

// MiB formats a size in bytes for a table (KiB, MiB or GiB).
func MiB(b float64) string {
	switch {
	case math.Abs(b) >= 1<<30:
		return fmt.Sprintf("%.2f GiB", b/(1<<30))
	case math.Abs(b) >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	default:
		return fmt.Sprintf("%.1f KiB", b/(1<<10))
	}
}
