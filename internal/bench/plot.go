package bench

import (
	"bytes"
	"fmt"
	"html"
	"math"
)

// Series is one named latency distribution of a plot.
type Series struct {
	Name string
	Dist Dist
}

// plotColors are told apart in light and dark viewers alike (and by their order in the
// legend, for readers who do not tell colours apart).
var plotColors = []string{"#2b6cb0", "#38a169", "#dd6b20", "#805ad5", "#c53030"}

// LatencySVG draws the distributions side by side as an SVG image for the README: for each
// of p50, p90, p99 and max, one bar per series on a common linear scale, with the value in
// milliseconds at the end of each bar. It is self-contained (no scripts, no fonts to load)
// and has a white background, so it reads the same in light and dark pages.
func LatencySVG(title string, series []Series) []byte {
	const (
		width, left, right  = 760.0, 70.0, 110.0
		barH, gap, groupGap = 14.0, 3.0, 14.0
		top                 = 58.0
	)
	stats := []struct {
		name string
		get  func(Dist) float64
	}{{"p50", func(d Dist) float64 { return d.P50 }}, {"p90", func(d Dist) float64 { return d.P90 }},
		{"p99", func(d Dist) float64 { return d.P99 }}, {"max", func(d Dist) float64 { return d.Max }}}
	maxV := 0.0
	for _, s := range series {
		maxV = math.Max(maxV, s.Dist.Max)
	}
	if maxV <= 0 {
		maxV = 1
	}
	group := float64(len(series))*(barH+gap) + groupGap
	legendH := float64(len(series)) * 18
	height := top + float64(len(stats))*group + 30 + legendH
	scale := (width - left - right) / maxV
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" role="img" aria-labelledby="t d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<title id="t">%s</title>`+"\n", html.EscapeString(title))
	fmt.Fprintf(&b, `<desc id="d">`)
	for i, s := range series {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: p50 %s, p90 %s, p99 %s, max %s (n=%d)", html.EscapeString(s.Name), Ms(s.Dist.P50), Ms(s.Dist.P90), Ms(s.Dist.P99), Ms(s.Dist.Max), s.Dist.N)
	}
	b.WriteString("</desc>\n")
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#ffffff"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="24" font-size="15" font-weight="bold" fill="#1a202c">%s</text>`+"\n", left, html.EscapeString(title))
	// Grid: five ticks on the linear scale.
	for i := 0; i <= 4; i++ {
		v := maxV * float64(i) / 4
		x := left + v*scale
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#cbd5e0" stroke-width="1"/>`+"\n", x, top-8, x, top+float64(len(stats))*group-groupGap)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle" fill="#4a5568">%s</text>`+"\n", x, top-12, html.EscapeString(Ms(v)))
	}
	for gi, st := range stats {
		y0 := top + float64(gi)*group
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end" fill="#1a202c" font-weight="bold">%s</text>`+"\n", left-10, y0+float64(len(series))*(barH+gap)/2+4, st.name)
		for si, s := range series {
			v := st.get(s.Dist)
			y := y0 + float64(si)*(barH+gap)
			fmt.Fprintf(&b, `<rect x="%.0f" y="%.1f" width="%.1f" height="%.0f" fill="%s"><title>%s %s: %s</title></rect>`+"\n",
				left, y, math.Max(v*scale, 1), barH, plotColors[si%len(plotColors)], html.EscapeString(s.Name), st.name, html.EscapeString(Ms(v)))
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#1a202c">%s</text>`+"\n", left+math.Max(v*scale, 1)+4, y+barH-3, html.EscapeString(Ms(v)))
		}
	}
	ly := top + float64(len(stats))*group + 10
	for si, s := range series {
		y := ly + float64(si)*18
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="12" height="12" fill="%s"/>`+"\n", left, y, plotColors[si%len(plotColors)])
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="#1a202c">%d. %s (n=%d)</text>`+"\n", left+18, y+10, si+1, html.EscapeString(s.Name), s.Dist.N)
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}
