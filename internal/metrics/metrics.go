// Package metrics is a small Prometheus registry: counters, gauges and
// histograms with labels, written in the Prometheus text exposition format
// (version 0.0.4). It has no dependencies; vellum exposes few metrics and
// needs nothing more.
package metrics

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Registry holds metric families in registration order.
type Registry struct {
	mu       sync.Mutex
	families []family
	names    map[string]bool
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{names: map[string]bool{}} }

type family interface {
	write(w *bufio.Writer)
}

func (r *Registry) add(name string, f family) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.names[name] {
		panic("metrics: " + name + " registered twice")
	}
	r.names[name] = true
	r.families = append(r.families, f)
}

// WriteText writes every metric in the text exposition format.
func (r *Registry) WriteText(w io.Writer) error {
	r.mu.Lock()
	fs := slices.Clone(r.families)
	r.mu.Unlock()
	bw := bufio.NewWriter(w)
	for _, f := range fs {
		f.write(bw)
	}
	return bw.Flush()
}

// Handler serves the registry (GET /metrics).
func (r *Registry) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		r.WriteText(w)
	})
}

// header writes HELP and TYPE lines.
func header(w *bufio.Writer, name, help, typ string) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(help), name, typ)
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)

// labelString is {a="x",b="y"} (empty without labels); extra is appended
// (the le of a histogram bucket).
func labelString(names, values []string, extra ...string) string {
	if len(names) == 0 && len(extra) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(n + `="` + labelEscaper.Replace(values[i]) + `"`)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		b.WriteString(extra[i] + `="` + labelEscaper.Replace(extra[i+1]) + `"`)
	}
	b.WriteByte('}')
	return b.String()
}

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// vec is the labelled children of a family.
type vec[T any] struct {
	name, help string
	labels     []string
	mu         sync.Mutex
	children   map[string]*T
	values     map[string][]string
	limit      int
	newChild   func() *T
}

func newVec[T any](name, help string, labels []string, newChild func() *T) *vec[T] {
	return &vec[T]{name: name, help: help, labels: labels, children: map[string]*T{}, values: map[string][]string{}, limit: 10000, newChild: newChild}
}

// overflowValue replaces the label values of new children once a family
// has its limit of children: a flood of distinct values (log names chosen
// by clients, say) cannot grow memory without bound.
const overflowValue = "_other"

func (v *vec[T]) child(lv []string) *T {
	if len(lv) != len(v.labels) {
		panic(fmt.Sprintf("metrics: %s takes %d label values, got %d", v.name, len(v.labels), len(lv)))
	}
	k := strings.Join(lv, "\xff")
	v.mu.Lock()
	defer v.mu.Unlock()
	if c, ok := v.children[k]; ok {
		return c
	}
	if len(v.children) >= v.limit {
		lv = slices.Repeat([]string{overflowValue}, len(lv))
		k = strings.Join(lv, "\xff")
		if c, ok := v.children[k]; ok {
			return c
		}
	}
	c := v.newChild()
	v.children[k] = c
	v.values[k] = slices.Clone(lv)
	return c
}

// sorted returns the children in label order.
func (v *vec[T]) sorted() (keys []string, children []*T, values [][]string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for k := range v.children {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		children = append(children, v.children[k])
		values = append(values, v.values[k])
	}
	return keys, children, values
}

type counter struct {
	mu sync.Mutex
	v  float64
}

// CounterVec is a counter family.
type CounterVec struct{ v *vec[counter] }

// Counter registers a counter family with the given label names.
func (r *Registry) Counter(name, help string, labels ...string) *CounterVec {
	c := &CounterVec{newVec(name, help, labels, func() *counter { return &counter{} })}
	r.add(name, c)
	return c
}

// Add adds d (≥ 0) to the counter with these label values.
func (c *CounterVec) Add(d float64, labelValues ...string) {
	if d < 0 {
		panic("metrics: counter " + c.v.name + " decreased")
	}
	ch := c.v.child(labelValues)
	ch.mu.Lock()
	ch.v += d
	ch.mu.Unlock()
}

// Inc adds 1.
func (c *CounterVec) Inc(labelValues ...string) { c.Add(1, labelValues...) }

// Value is the counter's current value (for tests).
func (c *CounterVec) Value(labelValues ...string) float64 {
	ch := c.v.child(labelValues)
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.v
}

func (c *CounterVec) write(w *bufio.Writer) {
	header(w, c.v.name, c.v.help, "counter")
	_, chs, vals := c.v.sorted()
	for i, ch := range chs {
		ch.mu.Lock()
		x := ch.v
		ch.mu.Unlock()
		fmt.Fprintf(w, "%s%s %s\n", c.v.name, labelString(c.v.labels, vals[i]), formatFloat(x))
	}
}

// GaugeFunc is a gauge family whose samples are collected when written
// (or a counter family: CounterFunc).
type GaugeFunc struct {
	name, help string
	typ        string // "gauge" or "counter"
	labels     []string
	collect    func(emit func(v float64, labelValues ...string))
}

// GaugeFunc registers a gauge family read at collection time: collect
// calls emit once per sample.
func (r *Registry) GaugeFunc(name, help string, labels []string, collect func(emit func(v float64, labelValues ...string))) {
	r.add(name, &GaugeFunc{name: name, help: help, typ: "gauge", labels: labels, collect: collect})
}

// CounterFunc registers a counter family read at collection time, for a
// count kept elsewhere (it must never decrease).
func (r *Registry) CounterFunc(name, help string, labels []string, collect func(emit func(v float64, labelValues ...string))) {
	r.add(name, &GaugeFunc{name: name, help: help, typ: "counter", labels: labels, collect: collect})
}

func (g *GaugeFunc) write(w *bufio.Writer) {
	header(w, g.name, g.help, g.typ)
	type sample struct {
		l string
		v float64
	}
	var ss []sample
	g.collect(func(v float64, lv ...string) {
		if len(lv) != len(g.labels) {
			panic(fmt.Sprintf("metrics: %s takes %d label values, got %d", g.name, len(g.labels), len(lv)))
		}
		ss = append(ss, sample{labelString(g.labels, lv), v})
	})
	slices.SortFunc(ss, func(a, b sample) int { return strings.Compare(a.l, b.l) })
	for _, s := range ss {
		fmt.Fprintf(w, "%s%s %s\n", g.name, s.l, formatFloat(s.v))
	}
}

type histogram struct {
	mu     sync.Mutex
	counts []uint64 // per bucket, not cumulative; the last is +Inf
	sum    float64
	n      uint64
}

// HistogramVec is a histogram family.
type HistogramVec struct {
	v       *vec[histogram]
	buckets []float64
}

// Histogram registers a histogram family with the given upper bounds
// (sorted, without +Inf) and label names.
func (r *Registry) Histogram(name, help string, buckets []float64, labels ...string) *HistogramVec {
	if !slices.IsSorted(buckets) || len(buckets) == 0 {
		panic("metrics: " + name + ": buckets must be sorted and not empty")
	}
	b := slices.Clone(buckets)
	h := &HistogramVec{v: newVec(name, help, labels, func() *histogram { return &histogram{counts: make([]uint64, len(b)+1)} }), buckets: b}
	r.add(name, h)
	return h
}

// Observe records x in the histogram with these label values.
func (h *HistogramVec) Observe(x float64, labelValues ...string) {
	ch := h.v.child(labelValues)
	i, _ := slices.BinarySearch(h.buckets, x) // first bucket with bound ≥ x
	ch.mu.Lock()
	ch.counts[i]++
	ch.sum += x
	ch.n++
	ch.mu.Unlock()
}

// Count is how many values were observed with these label values (for
// tests).
func (h *HistogramVec) Count(labelValues ...string) uint64 {
	ch := h.v.child(labelValues)
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.n
}

func (h *HistogramVec) write(w *bufio.Writer) {
	header(w, h.v.name, h.v.help, "histogram")
	_, chs, vals := h.v.sorted()
	for i, ch := range chs {
		ch.mu.Lock()
		counts, sum, n := slices.Clone(ch.counts), ch.sum, ch.n
		ch.mu.Unlock()
		var cum uint64
		for j, bound := range h.buckets {
			cum += counts[j]
			fmt.Fprintf(w, "%s_bucket%s %d\n", h.v.name, labelString(h.v.labels, vals[i], "le", formatFloat(bound)), cum)
		}
		fmt.Fprintf(w, "%s_bucket%s %d\n", h.v.name, labelString(h.v.labels, vals[i], "le", "+Inf"), n)
		fmt.Fprintf(w, "%s_sum%s %s\n", h.v.name, labelString(h.v.labels, vals[i]), formatFloat(sum))
		fmt.Fprintf(w, "%s_count%s %d\n", h.v.name, labelString(h.v.labels, vals[i]), n)
	}
}

// ExponentialBuckets is n bounds from start, each factor times the last.
func ExponentialBuckets(start, factor float64, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = start
		start *= factor
	}
	return out
}
