package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The stalled run: a node that stops answering for stallFor once, at its
// stallAt-th grant request, under --rate. Every request that reaches it
// during the stall is answered when it ends, as after a pause of the
// whole process.
const (
	stallFor  = 300 * time.Millisecond
	stallAt   = 300
	stallRate = 1000
)

type stalledRun struct {
	rep *Report
	// The files the run wrote.
	hdr, serviceHDR, series, plot []byte
}

// TestRunStalled runs the stalled run once, 1.5 s at 1000 grants/s over
// 2 connections × 2 requests writing the HDR, series and plot files, for
// the subtests that read it.
func TestRunStalled(t *testing.T) {
	s, err := runStalled(t)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.rep.Err(); err != nil {
		t.Fatal(err)
	}
	t.Run("LatencyFromSchedule", func(t *testing.T) { testLatencyFromSchedule(t, s) })
	t.Run("HDR", func(t *testing.T) { testHDR(t, s) })
	t.Run("Series", func(t *testing.T) { testSeries(t, s) })
	t.Run("Plot", func(t *testing.T) { testPlot(t, s) })
}

// runStalled runs the stalled run against a fake node and reads back the
// files it wrote.
func runStalled(t *testing.T) (stalledRun, error) {
	c, urls := newFakeCluster(t, 1)
	var stallEnd atomic.Int64 // Unix ns; 0 until the stall starts.
	c.onGrant = func(requests int64) {
		if requests == stallAt {
			stallEnd.Store(time.Now().Add(stallFor).UnixNano())
		}
		if end := stallEnd.Load(); end != 0 {
			time.Sleep(time.Until(time.Unix(0, end)))
		}
	}
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name) }
	rep, err := Run(context.Background(), Config{
		Targets:      urls,
		Users:        5000,
		Duration:     1500 * time.Millisecond,
		Rate:         stallRate,
		Conns:        2,
		Pipeline:     2,
		UserPrefix:   c.prefix,
		DrainTimeout: 10 * time.Second,
		Seed:         1,
		HDRFile:      path("latency.hgrm"),
		SeriesFile:   path("series.jsonl"),
		PlotFile:     path("plot.html"),
	})
	if err != nil {
		return stalledRun{}, err
	}
	s := stalledRun{rep: rep}
	for _, f := range []struct {
		dst  *[]byte
		name string
	}{{&s.hdr, "latency.hgrm"}, {&s.serviceHDR, "latency.service.hgrm"}, {&s.series, "series.jsonl"}, {&s.plot, "plot.html"}} {
		if *f.dst, err = os.ReadFile(path(f.name)); err != nil {
			return stalledRun{}, err
		}
	}
	return s, nil
}

// countAbove returns how many values of s are at least v µs.
func countAbove(s *histSnapshot, v uint64) uint64 {
	var n uint64
	for i, c := range s.counts {
		if lower, _ := histBounds(i); lower >= v {
			n += c
		}
	}
	return n
}

// testLatencyFromSchedule is coordinated omission: while the node
// stalls, every worker waits on it and the slots of the schedule pile up;
// the requests of those slots, sent once it answers again, are charged
// from their slots (the latency), not from their late sends (the service
// time), so the stall shows in the latency's p99, not just its max.
func testLatencyFromSchedule(t *testing.T, s stalledRun) {
	rep := s.rep
	var text bytes.Buffer
	rep.WriteText(&text)
	t.Logf("report:\n%s", text.String())

	if !rep.LatencyFromSchedule {
		t.Fatal("a run at a rate reports LatencyFromSchedule false")
	}
	if rep.Requests < 500 {
		t.Fatalf("%d requests answered, want hundreds (1.5 s at 1000/s)", rep.Requests)
	}
	// The stalled requests themselves wait out the stall in both.
	if rep.LatencyMax < stallFor*5/6 || rep.ServiceMax < stallFor*5/6 {
		t.Errorf("max latency %v, max service time %v; want both >= %v with a stall of %v",
			rep.LatencyMax, rep.ServiceMax, stallFor*5/6, stallFor)
	}
	if rep.ServiceMax > rep.LatencyMax {
		t.Errorf("max service time %v > max latency %v: a request cannot be sent before its slot", rep.ServiceMax, rep.LatencyMax)
	}
	// Only the requests in flight during the stall, one per worker (4),
	// are served slowly; the ~300 slots due during the stall are charged
	// it, from 300 ms down. Both counts with wide margins (a loaded
	// machine may hold up a few more requests).
	const slow = 100_000 // µs
	if n := countAbove(rep.service, slow); n > 12 {
		t.Errorf("%d service times >= 100ms, want about the 4 requests in flight during the stall", n)
	}
	if n := countAbove(rep.latency, slow); n < 50 {
		t.Errorf("%d latencies from schedule >= 100ms, want >= 50: the slots due during a %v stall at %d/s",
			n, stallFor, stallRate)
	}
	// So the p99 shows the stall from schedule, and not from the send.
	if rep.LatencyP99 < stallFor/2 {
		t.Errorf("p99 from schedule %v, want >= %v with a %v stall holding up ~%d of %d requests",
			rep.LatencyP99, stallFor/2, stallFor, stallRate*stallFor/time.Second, rep.Requests)
	}
	if rep.ServiceP99*3 > rep.LatencyP99 {
		t.Errorf("service p99 %v is not under a third of the p99 from schedule %v", rep.ServiceP99, rep.LatencyP99)
	}
	for _, want := range []string{"(from schedule: ", "service time p50=", "(from send: "} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("WriteText lacks %q", want)
		}
	}
}

// hgrmRow is a row of a percentile distribution file.
type hgrmRow struct {
	value, percentile float64
	count             int64
}

// readHgrm parses an HdrHistogram percentile distribution file strictly:
// the header, rows of four columns but the last (at 100%, three), then
// the trailer, which it returns as name → value.
func readHgrm(t *testing.T, path string, b []byte) ([]hgrmRow, map[string]float64) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) < 5 || strings.Join(strings.Fields(lines[0]), " ") != "Value Percentile TotalCount 1/(1-Percentile)" || lines[1] != "" {
		t.Fatalf("%s: no header:\n%s", path, b)
	}
	var rows []hgrmRow
	trailer := map[string]float64{}
	for i, l := range lines[2:] {
		if strings.HasPrefix(l, "#[") {
			// #[Mean    =        0.123, StdDeviation   =        0.045]
			for _, kv := range strings.Split(strings.Trim(l, "#[]"), ",") {
				name, v, ok := strings.Cut(kv, "=")
				f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
				if !ok || err != nil {
					t.Fatalf("%s: trailer line %q", path, l)
				}
				trailer[strings.TrimSpace(name)] = f
			}
			continue
		}
		if len(trailer) > 0 {
			t.Fatalf("%s: row %q after the trailer", path, l)
		}
		f := strings.Fields(l)
		last := len(f) == 3
		if len(f) != 4 && !last {
			t.Fatalf("%s: row %q", path, l)
		}
		var r hgrmRow
		var err1, err2, err3 error
		r.value, err1 = strconv.ParseFloat(f[0], 64)
		r.percentile, err2 = strconv.ParseFloat(f[1], 64)
		r.count, err3 = strconv.ParseInt(f[2], 10, 64)
		if err := errors.Join(err1, err2, err3); err != nil {
			t.Fatalf("%s: row %q: %v", path, l, err)
		}
		if !last {
			inv, err := strconv.ParseFloat(f[3], 64)
			if err != nil || math.Abs(inv-1/(1-r.percentile)) > 0.01 {
				t.Fatalf("%s: row %q: 1/(1-Percentile) is %v", path, l, inv)
			}
		} else if r.percentile != 1 || i != len(lines)-2-4 {
			t.Fatalf("%s: a three-column row %q that is not the last, at 100%%", path, l)
		}
		if n := len(rows); n > 0 && (r.value < rows[n-1].value || r.percentile <= rows[n-1].percentile || r.count < rows[n-1].count) {
			t.Fatalf("%s: row %q goes down from %+v", path, l, rows[n-1])
		}
		rows = append(rows, r)
	}
	for _, name := range []string{"Mean", "StdDeviation", "Max", "Total count", "Buckets", "SubBuckets"} {
		if _, ok := trailer[name]; !ok {
			t.Fatalf("%s: the trailer lacks %s", path, name)
		}
	}
	return rows, trailer
}

// at returns the value of the first row at or above percentile p, and of
// the last row below it.
func at(rows []hgrmRow, p float64) (below, atOrAbove time.Duration) {
	ms := func(v float64) time.Duration { return time.Duration(math.Round(v*1e3)) * time.Microsecond }
	for i, r := range rows {
		if r.percentile >= p {
			if i == 0 {
				return ms(r.value), ms(r.value)
			}
			return ms(rows[i-1].value), ms(r.value)
		}
	}
	return 0, 0
}

// testHDR reads back the HDR files of the stalled run: their
// percentiles are the report's.
func testHDR(t *testing.T, s stalledRun) {
	rep := s.rep
	for _, f := range []struct {
		path                 string
		file                 []byte
		p50, p99, p999, maxv time.Duration
	}{
		{"latency.hgrm", s.hdr, rep.LatencyP50, rep.LatencyP99, rep.LatencyP999, rep.LatencyMax},
		{"latency.service.hgrm", s.serviceHDR, rep.ServiceP50, rep.ServiceP99, rep.ServiceP999, rep.ServiceMax},
	} {
		rows, trailer := readHgrm(t, f.path, f.file)
		last := rows[len(rows)-1]
		if last.count != rep.Requests || trailer["Total count"] != float64(rep.Requests) {
			t.Errorf("%s: total count %d (trailer %v), want the %d requests answered", f.path, last.count, trailer["Total count"], rep.Requests)
		}
		if trailer["Buckets"] != 24 || trailer["SubBuckets"] != 256 {
			t.Errorf("%s: buckets %v, sub-buckets %v; want 24 and 256, HdrHistogram's layout at 2 digits up to 2^31 µs",
				f.path, trailer["Buckets"], trailer["SubBuckets"])
		}
		// p50 is a row of its own, and the max is the last row and the trailer's.
		if _, got := at(rows, 0.5); got != f.p50 {
			t.Errorf("%s: value at 50%% %v, the report's p50 %v", f.path, got, f.p50)
		}
		if got := time.Duration(math.Round(trailer["Max"]*1e3)) * time.Microsecond; got != f.maxv {
			t.Errorf("%s: max %v, the report's %v", f.path, got, f.maxv)
		}
		if got := time.Duration(math.Round(last.value*1e3)) * time.Microsecond; got != f.maxv {
			t.Errorf("%s: the 100%% row %v, the report's max %v", f.path, got, f.maxv)
		}
		// p99 and p99.9 fall between the rows around them.
		for _, p := range []struct {
			q    float64
			want time.Duration
		}{{0.99, f.p99}, {0.999, f.p999}} {
			lo, hi := at(rows, p.q)
			if p.want < lo || p.want > hi {
				t.Errorf("%s: the report's p%v %v is not between the rows around it, %v and %v", f.path, p.q*100, p.want, lo, hi)
			}
		}
		if mean := trailer["Mean"]; !(mean > 0 && time.Duration(mean*1e6) <= f.maxv) {
			t.Errorf("%s: mean %vms outside (0, max]", f.path, mean)
		}
	}
}

// TestHDRRows checks the rows against HdrHistogram's percentile
// iteration on a known distribution: values 1..1000 µs, one each.
func TestHDRRows(t *testing.T) {
	var h histogram
	for v := uint64(1); v <= 1000; v++ {
		h.record(v)
	}
	s := new(histSnapshot)
	s.add(&h)
	var b bytes.Buffer
	if err := s.writeHDR(&b); err != nil {
		t.Fatal(err)
	}
	rows, trailer := readHgrm(t, "1..1000µs", b.Bytes())
	// HdrHistogram's levels: 0, 10, ..., 50, then 55, 60, ..., 75, then
	// 77.5, ...: five a halving of the distance to 100%.
	wantLevels := []float64{0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.775, 0.8, 0.825, 0.85, 0.875}
	for i, want := range wantLevels {
		if math.Abs(rows[i].percentile-want) > 1e-9 {
			t.Fatalf("row %d at %v, want %v: %+v", i, rows[i].percentile, want, rows[:len(wantLevels)])
		}
	}
	// Each row's value is the quantile at its level, and its count the
	// values up to that value's bucket.
	for _, r := range rows {
		v := s.quantile(r.percentile)
		if got := uint64(math.Round(r.value * 1e3)); got != v {
			t.Errorf("row at %v: value %dµs, quantile %dµs", r.percentile, got, v)
		}
		if r.count < int64(math.Ceil(r.percentile*1000)) {
			t.Errorf("row at %v: count %d below the level", r.percentile, r.count)
		}
	}
	if trailer["Max"] != 1 || trailer["Total count"] != 1000 || math.Abs(trailer["Mean"]-0.5005) > 0.002 {
		t.Errorf("trailer %v, want max 1 (ms), 1000 values, mean ~0.5005", trailer)
	}
	// An empty distribution has a header and a trailer only.
	b.Reset()
	if err := new(histSnapshot).writeHDR(&b); err != nil || strings.Count(b.String(), "\n") != 5 {
		t.Errorf("empty: %v\n%s", err, b.String())
	}
}

// testSeries reads back the series of the stalled run: one JSON object
// a line, a second apart, adding up to the report, with the stall in the
// latencies of its second.
func testSeries(t *testing.T, s stalledRun) {
	rep := s.rep
	var series []Second
	sc := bufio.NewScanner(bytes.NewReader(s.series))
	for sc.Scan() {
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		var sec Second
		if err := dec.Decode(&sec); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if _, err := dec.Token(); err != io.EOF {
			t.Fatalf("line %q holds more than one object", sc.Text())
		}
		series = append(series, sec)
	}
	if len(series) < 2 {
		t.Fatalf("%d seconds in the series of a 1.5 s run", len(series))
	}
	var offered, accepted, responses int64
	errs := map[string]int64{}
	stallSeen, drainSeen := false, false
	prevT := 0.0
	for i, sec := range series {
		last := i == len(series)-1
		if sec.T <= prevT || (!last && math.Abs(sec.IntervalS-1) > 0.3) || math.Abs(sec.T-prevT-sec.IntervalS) > 0.002 {
			t.Errorf("second %d: t=%v after %v, interval %v; want a second apart", i, sec.T, prevT, sec.IntervalS)
		}
		prevT = sec.T
		switch sec.Phase {
		case "send":
			if drainSeen {
				t.Errorf("second %d: send after drain", i)
			}
		case "drain":
			drainSeen = true
		default:
			t.Errorf("second %d: phase %q", i, sec.Phase)
		}
		offered += sec.Offered
		accepted += sec.Accepted
		responses += sec.Responses
		for code, n := range sec.Errors {
			errs[code] += n
		}
		if math.Abs(sec.OfferedPerS-float64(sec.Offered)/sec.IntervalS) > 1+0.01*sec.OfferedPerS {
			t.Errorf("second %d: offered %d in %vs is not %v/s", i, sec.Offered, sec.IntervalS, sec.OfferedPerS)
		}
		if sec.Responses > 0 && !(sec.P50Ms <= sec.P90Ms && sec.P90Ms <= sec.P99Ms && sec.P99Ms <= sec.P999Ms && sec.P999Ms <= sec.MaxMs) {
			t.Errorf("second %d: percentiles out of order: %+v", i, sec)
		}
		if sec.Responses > 0 && sec.ServiceP99Ms == nil {
			t.Errorf("second %d: no service p99 in a paced run", i)
		}
		if sec.Booked == nil || sec.BookedPerS == nil || sec.BookingLag == nil {
			t.Errorf("second %d: no booked count or lag, though the node's stats answer", i)
		}
		if sec.MaxMs >= float64(stallFor.Milliseconds())*5/6 {
			stallSeen = true
		}
	}
	if !stallSeen {
		t.Errorf("no second of the series has a max latency near the %v stall", stallFor)
	}
	if offered != rep.Offered || accepted != rep.Accepted || responses != rep.Requests || !maps.Equal(errs, rep.Errors) {
		t.Errorf("the series adds up to offered %d, accepted %d, %d responses, errors %v; the report says %d, %d, %d, %v",
			offered, accepted, responses, errs, rep.Offered, rep.Accepted, rep.Requests, rep.Errors)
	}
	if !slicesEqualSeries(rep.Series, series) {
		t.Errorf("Report.Series differs from the file")
	}
}

func slicesEqualSeries(a, b []Second) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// testPlot checks the plot of the stalled run: a well-formed page
// (parsed strictly as XML) with an SVG chart per figure that names its
// series, and nothing fetched.
func testPlot(t *testing.T, s stalledRun) {
	b := s.plot
	page := string(b)
	if !strings.HasPrefix(page, "<!DOCTYPE html>") {
		t.Errorf("the plot does not start with <!DOCTYPE html>")
	}
	dec := xml.NewDecoder(bytes.NewReader(b))
	dec.Strict = true
	var svgs, polylines int
	var texts []string
	var stack []string
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("the plot is not well formed: %v", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			stack = append(stack, tok.Name.Local)
			switch tok.Name.Local {
			case "svg":
				svgs++
			case "polyline":
				polylines++
			case "script", "link", "img", "iframe":
				t.Errorf("the plot has a <%s>: it must be self-contained", tok.Name.Local)
			}
			for _, a := range tok.Attr {
				if a.Name.Local == "src" || a.Name.Local == "href" {
					t.Errorf("the plot refers to %s=%q", a.Name.Local, a.Value)
				}
			}
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 && stack[len(stack)-1] == "text" {
				texts = append(texts, string(tok))
			}
		}
	}
	if len(stack) != 0 || !strings.Contains(page, "</html>") {
		t.Errorf("the plot's elements are not all closed: %v", stack)
	}
	if svgs != 3 || polylines < 10 {
		t.Errorf("%d <svg> and %d <polyline>, want 3 charts (throughput, latency over time, by percentile) with their lines", svgs, polylines)
	}
	for _, name := range []string{"offered", "accepted", "booked", "errors", "p50 from schedule", "p99 from schedule",
		"p99.9 from schedule", "max from schedule", "p99 service time (from send)", "latency from schedule", "service time (from send)",
		"send window ends"} {
		if !slices.Contains(texts, name) {
			t.Errorf("no chart names %q; texts: %q", name, texts)
		}
	}
}

// TestRunFilesRefused: a path that cannot be created fails the run before
// anything is sent, and the comparisons refuse the files.
func TestRunFilesRefused(t *testing.T) {
	c, urls := newFakeCluster(t, 1)
	cfg := Config{Targets: urls, UserPrefix: c.prefix, Duration: time.Second,
		SeriesFile: filepath.Join(t.TempDir(), "no", "such", "dir", "s.jsonl")}
	if _, err := Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "no such") {
		t.Errorf("Run with a series file in a missing directory: %v", err)
	}
	c.mu.Lock()
	requests := c.requests
	c.mu.Unlock()
	if requests != 0 {
		t.Errorf("%d requests sent before failing on the file", requests)
	}
	cfg.SeriesFile, cfg.PlotFile = "", filepath.Join(t.TempDir(), "p.html")
	if _, err := CompareCeiling(context.Background(), CeilingConfig{Run: cfg}); err == nil {
		t.Error("CompareCeiling took a plot file")
	}
	if _, err := CompareHot(context.Background(), HotConfig{Run: cfg}); err == nil {
		t.Error("CompareHot took a plot file")
	}
}

// TestRunUnpacedFiles: without a rate there is no schedule, the
// latencies are service times, and only one HDR file is written.
func TestRunUnpacedFiles(t *testing.T) {
	c, urls := newFakeCluster(t, 1)
	dir := t.TempDir()
	rep, err := Run(context.Background(), Config{Targets: urls, UserPrefix: c.prefix, Users: 2000, Duration: 300 * time.Millisecond,
		Conns: 2, Pipeline: 2, DrainTimeout: 10 * time.Second,
		HDRFile: filepath.Join(dir, "l.hgrm"), PlotFile: filepath.Join(dir, "p.html")})
	if err != nil {
		t.Fatal(err)
	}
	if rep.LatencyFromSchedule || rep.ServiceP99 != rep.LatencyP99 || rep.ServiceMax != rep.LatencyMax || rep.ScheduledNotSent != 0 {
		t.Errorf("unpaced: from schedule %v, service p99 %v max %v against latency %v %v, %d not sent",
			rep.LatencyFromSchedule, rep.ServiceP99, rep.ServiceMax, rep.LatencyP99, rep.LatencyMax, rep.ScheduledNotSent)
	}
	if _, err := os.Stat(filepath.Join(dir, "l.service.hgrm")); !os.IsNotExist(err) {
		t.Errorf("unpaced run wrote a service HDR file: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "l.hgrm"))
	if err != nil {
		t.Fatal(err)
	}
	rows, _ := readHgrm(t, "l.hgrm", b)
	if rows[len(rows)-1].count != rep.Requests {
		t.Errorf("HDR file counts %d, the report %d requests", rows[len(rows)-1].count, rep.Requests)
	}
	var text bytes.Buffer
	rep.WriteText(&text)
	if !strings.Contains(text.String(), "(from send to answer)") || strings.Contains(text.String(), "service time") {
		t.Errorf("unpaced report:\n%s", text.String())
	}
	if len(rep.Series) == 0 {
		t.Error("a plot file but no series")
	}
}

// TestScheduledNotSent: a target too slow for the rate leaves slots of
// the window untaken, and the report says so.
func TestScheduledNotSent(t *testing.T) {
	c, urls := newFakeCluster(t, 1)
	c.onGrant = func(int64) { time.Sleep(20 * time.Millisecond) }
	// One worker answered every 20 ms at most can send 50 a second, not
	// the 500 scheduled.
	rep, err := Run(context.Background(), Config{Targets: urls, UserPrefix: c.prefix, Users: 2000, Duration: time.Second,
		Rate: 500, Conns: 1, Pipeline: 1, DrainTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if rep.ScheduledNotSent < 250 || rep.Offered+rep.ScheduledNotSent > 501 {
		t.Errorf("offered %d, %d scheduled not sent; want most of the 500 slots not sent, and no more than 500 in all",
			rep.Offered, rep.ScheduledNotSent)
	}
	// The last requests were due long before they were sent.
	if rep.LatencyMax < 500*time.Millisecond || rep.ServiceMax > rep.LatencyMax/5 {
		t.Errorf("max latency %v, max service time %v; want the backlog's wait (~1s) in the first only", rep.LatencyMax, rep.ServiceMax)
	}
	var text bytes.Buffer
	rep.WriteText(&text)
	if !strings.Contains(text.String(), "BEHIND ") {
		t.Errorf("report does not say the run fell behind:\n%s", text.String())
	}
}
