package metrics

import (
	"bytes"
	"fmt"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

var sampleLine = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*",?)*\})? (-?[0-9.e+-]+|\+Inf|-Inf|NaN)$`)

// checkFormat checks every line of the exposition.
func checkFormat(t *testing.T, text string) {
	t.Helper()
	for _, l := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if strings.HasPrefix(l, "# HELP ") || strings.HasPrefix(l, "# TYPE ") {
			continue
		}
		if !sampleLine.MatchString(l) {
			t.Errorf("not a valid sample line: %q", l)
		}
	}
}

func TestExposition(t *testing.T) {
	r := NewRegistry()
	c := r.Counter("vellum_events_total", "Events by log and outcome.", "log", "outcome")
	c.Add(3, "billing", "appended")
	c.Inc("billing", "duplicate")
	c.Inc(`we"ird\log`+"\n", "appended")
	h := r.Histogram("vellum_commit_seconds", "Commit latency.", []float64{0.001, 0.01, 0.1}, "log")
	for _, x := range []float64{0.0005, 0.001, 0.002, 0.05, 3} {
		h.Observe(x, "billing")
	}
	r.GaugeFunc("vellum_queue_events", "Queued events.", []string{"log"}, func(emit func(float64, ...string)) {
		emit(7, "b")
		emit(2, "a")
	})
	r.CounterFunc("vellum_reads_total", "Reads.", nil, func(emit func(float64, ...string)) { emit(11) })
	var buf bytes.Buffer
	if err := r.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	text := buf.String()
	checkFormat(t, text)
	for _, want := range []string{
		"# TYPE vellum_events_total counter\n",
		`vellum_events_total{log="billing",outcome="appended"} 3` + "\n",
		`vellum_events_total{log="billing",outcome="duplicate"} 1` + "\n",
		`vellum_events_total{log="we\"ird\\log\n",outcome="appended"} 1` + "\n",
		"# TYPE vellum_commit_seconds histogram\n",
		`vellum_commit_seconds_bucket{log="billing",le="0.001"} 2` + "\n",
		`vellum_commit_seconds_bucket{log="billing",le="0.01"} 3` + "\n",
		`vellum_commit_seconds_bucket{log="billing",le="0.1"} 4` + "\n",
		`vellum_commit_seconds_bucket{log="billing",le="+Inf"} 5` + "\n",
		`vellum_commit_seconds_count{log="billing"} 5` + "\n",
		`vellum_commit_seconds_sum{log="billing"} 3.0535` + "\n",
		"vellum_queue_events{log=\"a\"} 2\nvellum_queue_events{log=\"b\"} 7\n",
		"# TYPE vellum_queue_events gauge\n",
		"# TYPE vellum_reads_total counter\nvellum_reads_total 11\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("missing %q in\n%s", want, text)
		}
	}
	rec := httptest.NewRecorder()
	r.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q", ct)
	}
	if rec.Body.String() != text {
		t.Errorf("the handler writes something else than WriteText")
	}
}

// TestCardinalityBound: label values beyond the family's limit share one
// child, so clients choosing label values cannot grow memory.
func TestCardinalityBound(t *testing.T) {
	r := NewRegistry()
	c := r.Counter("x_total", "x", "log")
	c.v.limit = 5
	for i := range 100 {
		c.Inc(fmt.Sprint("log", i))
	}
	if n := len(c.v.children); n != 6 {
		t.Errorf("%d children, want 5 plus the overflow child", n)
	}
	if got := c.Value(overflowValue); got != 95 {
		t.Errorf("overflow child counted %v, want 95", got)
	}
}

func TestMisuse(t *testing.T) {
	r := NewRegistry()
	c := r.Counter("x_total", "x", "a")
	for name, f := range map[string]func(){
		"duplicate name":  func() { r.Counter("x_total", "again") },
		"label count":     func() { c.Inc("1", "2") },
		"negative add":    func() { c.Add(-1, "1") },
		"unsorted bucket": func() { r.Histogram("h", "h", []float64{2, 1}) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}
