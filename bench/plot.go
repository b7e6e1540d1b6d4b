package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// WritePlot writes a self-contained HTML page (inline SVG drawn here, no
// script, nothing fetched; well-formed XML too) that plots the run: grants per second over time
// (offered, accepted, booked, errors) and latency percentiles over time
// (p50, p90, p99, p99.9, max; under Config.Rate from schedule, with the
// service time's p99 dashed beside them), both from r.Series, then the
// latency distribution by percentile (from schedule and service time, as
// WriteHDR and WriteServiceHDR write them) and the report's text. A dashed
// vertical line marks the end of the send window.
func (r *Report) WritePlot(w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprint(bw, `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8"/>
<title>redrain bench</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
svg { background: #fff; border: 1px solid #ddd; }
svg text { font: 12px system-ui, sans-serif; fill: #333; }
pre { background: #f6f6f6; padding: 12px; overflow-x: auto; }
</style>
</head>
<body>
<h1>redrain bench</h1>
`)
	what := "latency from send to answer"
	if r.LatencyFromSchedule {
		what = "latency from schedule: from each request's slot in the --rate schedule to its answer, so that a request " +
			"sent late because of a stall is charged its wait (service time, dashed: from the actual send)"
	}
	fmt.Fprintf(bw, "<p>%s.</p>\n", html.EscapeString(what))

	// Both charts over time span the whole series, the drain included.
	end := r.Duration.Seconds()
	tp, lat := r.throughputChart(end), r.latencyChart(end)
	if n := len(r.Series); n > 0 {
		tp.xmax, lat.xmax = r.Series[n-1].T, r.Series[n-1].T
	}
	fmt.Fprint(bw, "<h2>Throughput</h2>\n")
	bw.WriteString(tp.svg())
	fmt.Fprint(bw, "<h2>Latency over time</h2>\n")
	bw.WriteString(lat.svg())
	fmt.Fprint(bw, "<h2>Latency by percentile</h2>\n")
	bw.WriteString(r.percentileChart().svg())

	var text bytes.Buffer
	r.WriteText(&text)
	fmt.Fprintf(bw, "<h2>Report</h2>\n<pre>%s</pre>\n</body>\n</html>\n", html.EscapeString(text.String()))
	return bw.Flush()
}

// Colors of the plot's series.
const (
	colorOffered  = "#1f77b4"
	colorAccepted = "#2ca02c"
	colorBooked   = "#9467bd"
	colorErrors   = "#d62728"
	colorP50      = "#2ca02c"
	colorP90      = "#1f77b4"
	colorP99      = "#ff7f0e"
	colorP999     = "#d62728"
	colorMax      = "#7f7f7f"
	colorService  = "#8c564b"
)

func (r *Report) throughputChart(end float64) chart {
	c := chart{title: "grants per second", xLabel: "seconds since the start", vline: end}
	offered := plotLine{name: "offered", color: colorOffered}
	accepted := plotLine{name: "accepted", color: colorAccepted}
	booked := plotLine{name: "booked", color: colorBooked}
	errs := plotLine{name: "errors", color: colorErrors}
	for _, s := range r.Series {
		offered.add(s.T, s.OfferedPerS)
		accepted.add(s.T, s.AcceptedPerS)
		if s.BookedPerS != nil {
			booked.add(s.T, *s.BookedPerS)
		} else {
			booked.gap()
		}
		var n int64
		for _, v := range s.Errors {
			n += v
		}
		errs.add(s.T, float64(n)/max(s.IntervalS, 1e-3))
	}
	c.lines = []plotLine{offered, accepted, booked, errs}
	return c
}

func (r *Report) latencyChart(end float64) chart {
	c := chart{title: "latency (ms, log scale), per second", xLabel: "seconds since the start", logY: true, vline: end}
	from := ""
	if r.LatencyFromSchedule {
		from = " from schedule"
	}
	lines := []plotLine{
		{name: "p50" + from, color: colorP50},
		{name: "p90" + from, color: colorP90},
		{name: "p99" + from, color: colorP99},
		{name: "p99.9" + from, color: colorP999},
		{name: "max" + from, color: colorMax},
	}
	service := plotLine{name: "p99 service time (from send)", color: colorService, dashed: true}
	for _, s := range r.Series {
		if s.Responses == 0 {
			for i := range lines {
				lines[i].gap()
			}
			service.gap()
			continue
		}
		for i, v := range []float64{s.P50Ms, s.P90Ms, s.P99Ms, s.P999Ms, s.MaxMs} {
			lines[i].add(s.T, v)
		}
		if s.ServiceP99Ms != nil {
			service.add(s.T, *s.ServiceP99Ms)
		}
	}
	if r.LatencyFromSchedule {
		lines = append(lines, service)
	}
	c.lines = lines
	return c
}

// percentileChart plots the latency against the percentile, x on a log
// scale of 1/(1-percentile) as HdrHistogram's plotter does.
func (r *Report) percentileChart() chart {
	c := chart{title: "latency (ms, log scale) by percentile, whole run", logX: true, logY: true, vline: -1}
	add := func(name, color string, dashed bool, s *histSnapshot) {
		if s == nil {
			return
		}
		l := plotLine{name: name, color: color, dashed: dashed}
		s.percentiles(func(level float64, v, _ uint64) {
			if level < 100 {
				l.add(1/(1-level/100), float64(v)/1e3)
			}
		})
		c.lines = append(c.lines, l)
	}
	if r.LatencyFromSchedule {
		add("latency from schedule", colorP99, false, r.latency)
		add("service time (from send)", colorService, true, r.service)
	} else {
		add("latency", colorP99, false, r.latency)
	}
	return c
}

// chart is one SVG line chart.
type chart struct {
	title, xLabel string
	logX, logY    bool    // logX is for percentiles: x is 1/(1-p).
	vline         float64 // x of a dashed vertical line; < 0 for none.
	xmax          float64 // The x axis reaches at least this far.
	lines         []plotLine
}

// plotLine is one series of a chart: segments of points, split where a
// value is missing.
type plotLine struct {
	name, color string
	dashed      bool
	segments    [][][2]float64
	open        bool // The last segment takes more points.
}

func (l *plotLine) add(x, y float64) {
	if !l.open {
		l.segments = append(l.segments, nil)
		l.open = true
	}
	last := &l.segments[len(l.segments)-1]
	*last = append(*last, [2]float64{x, y})
}

func (l *plotLine) gap() { l.open = false }

// Layout of a chart, in pixels.
const (
	chartWidth, chartHeight = 960, 340
	chartLeft, chartRight   = 70, 230 // The legend is on the right.
	chartTop, chartBottom   = 30, 45
)

// svg draws c. Values that a log axis cannot show (<= 0) are drawn at
// the axis's bottom.
func (c chart) svg() string {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img">`+"\n",
		chartWidth, chartHeight, chartWidth, chartHeight)
	fmt.Fprintf(&b, "<title>%s</title>\n", html.EscapeString(c.title))
	fmt.Fprintf(&b, `<text x="%d" y="18" font-weight="bold">%s</text>`+"\n", chartLeft, html.EscapeString(c.title))

	// Extent of the data.
	xmin, xmax := math.Inf(1), math.Inf(-1)
	ymin, ymax := math.Inf(1), math.Inf(-1)
	for _, l := range c.lines {
		for _, seg := range l.segments {
			for _, p := range seg {
				xmin, xmax = min(xmin, p[0]), max(xmax, p[0])
				if !c.logY || p[1] > 0 {
					ymin, ymax = min(ymin, p[1]), max(ymax, p[1])
				}
			}
		}
	}
	if math.IsInf(xmin, 1) {
		fmt.Fprintf(&b, `<text x="%d" y="%d">no data</text>`+"\n</svg>\n", chartLeft, chartHeight/2)
		return b.String()
	}
	if !c.logX {
		xmin = 0
		xmax = max(xmax, c.vline, c.xmax)
	}
	xAxis := newAxis(xmin, xmax, c.logX, chartLeft, chartWidth-chartRight)
	if math.IsInf(ymin, 1) {
		ymin, ymax = 1, 1
	}
	if !c.logY {
		ymin = 0
	}
	yAxis := newAxis(ymin, ymax, c.logY, chartHeight-chartBottom, chartTop)

	// Grid and ticks.
	for _, t := range yAxis.ticks {
		y := yAxis.pos(t)
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#eee"/>`+"\n", chartLeft, chartWidth-chartRight, y, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", chartLeft-6, y+4, formatTick(t))
	}
	for _, t := range xAxis.ticks {
		x := xAxis.pos(t)
		label := formatTick(t)
		if c.logX {
			label = formatPercentile(t)
		}
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#eee"/>`+"\n", x, x, chartTop, chartHeight-chartBottom)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, chartHeight-chartBottom+16, label)
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>`+"\n",
		chartLeft, chartTop, chartWidth-chartRight-chartLeft, chartHeight-chartBottom-chartTop)
	xLabel := c.xLabel
	if c.logX {
		xLabel = "percentile"
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n",
		(chartLeft+chartWidth-chartRight)/2, chartHeight-8, html.EscapeString(xLabel))
	if c.vline >= 0 && !c.logX {
		x := xAxis.pos(c.vline)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#555" stroke-dasharray="4 4"><title>end of the send window</title></line>`+"\n",
			x, x, chartTop, chartHeight-chartBottom)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="end">send window ends</text>`+"\n", x-4, chartTop+14)
	}

	// Lines and legend.
	for i, l := range c.lines {
		dash := ""
		if l.dashed {
			dash = ` stroke-dasharray="6 3"`
		}
		for _, seg := range l.segments {
			var pts strings.Builder
			for _, p := range seg {
				y := p[1]
				if c.logY && y <= 0 {
					y = ymin
				}
				fmt.Fprintf(&pts, "%.1f,%.1f ", xAxis.pos(p[0]), yAxis.pos(y))
			}
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.6"%s points="%s"><title>%s</title></polyline>`+"\n",
				l.color, dash, strings.TrimSpace(pts.String()), html.EscapeString(l.name))
		}
		y := chartTop + 8 + 20*i
		x := chartWidth - chartRight + 14
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="3"%s/>`+"\n", x, x+22, y, y, l.color, dash)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", x+28, y+4, html.EscapeString(l.name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// axis maps values to pixels, linearly or on a log scale.
type axis struct {
	lo, hi   float64 // In the axis's units: log10 of values on a log axis.
	from, to float64 // Pixels.
	log      bool
	ticks    []float64 // Values.
}

func newAxis(vmin, vmax float64, log bool, from, to int) axis {
	a := axis{from: float64(from), to: float64(to), log: log}
	if log {
		a.lo, a.hi = math.Floor(math.Log10(vmin)), math.Ceil(math.Log10(vmax))
		if a.hi <= a.lo {
			a.hi = a.lo + 1
		}
		for e := a.lo; e <= a.hi; e++ {
			a.ticks = append(a.ticks, math.Pow(10, e))
		}
		return a
	}
	step := niceStep((vmax - vmin) / 5)
	a.lo, a.hi = math.Floor(vmin/step)*step, math.Ceil(vmax/step)*step
	if a.hi <= a.lo {
		a.hi = a.lo + step
	}
	for t := a.lo; t <= a.hi+step/2; t += step {
		a.ticks = append(a.ticks, t)
	}
	return a
}

// pos returns the pixel of v.
func (a axis) pos(v float64) float64 {
	if a.log {
		v = math.Log10(v)
	}
	return a.from + (v-a.lo)/(a.hi-a.lo)*(a.to-a.from)
}

// niceStep returns 1, 2 or 5 times a power of ten, at least d.
func niceStep(d float64) float64 {
	if d <= 0 || math.IsNaN(d) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(d)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= d {
			return m * p
		}
	}
	return 10 * p
}

// formatTick writes an axis value without needless digits.
func formatTick(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%gM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%gk", v/1e3)
	}
	return fmt.Sprintf("%g", math.Round(v*1e3)/1e3)
}

// formatPercentile writes x = 1/(1-p) as the percentile p: 90%, 99.9%.
func formatPercentile(x float64) string {
	return fmt.Sprintf("%g%%", math.Round((1-1/x)*100*1e4)/1e4)
}
