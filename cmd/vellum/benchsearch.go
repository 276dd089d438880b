package main

import (
	"context"
	"fmt"
	"net/url"
	"sort"
	"time"
)

// benchSearch times the search workloads of BENCHMARKS.md against a
// seeded log: wall-clock latency seen by the client, including the _access
// record every read writes.
func (m *Main) benchSearch(ctx context.Context, args []string) error {
	fs := m.newFlagSet("bench search", "bench search --log NAME [--n 50]")
	cf := m.clientFlagsOn(fs)
	logName := fs.String("log", "seed", "a log filled by 'vellum bench seed'")
	n := fs.Int("n", 50, "repetitions of each query")
	if err := parseFlags(fs, args); err != nil {
		return helpOK(err)
	}
	c, err := m.newClient(cf)
	if err != nil {
		return err
	}
	type result struct {
		name string
		lat  []time.Duration
		hits int
	}
	run := func(name string, q func(i int) url.Values) (result, error) {
		r := result{name: name}
		for i := 0; i < *n; i++ {
			start := time.Now()
			el, err := c.Search(ctx, *logName, q(i))
			if err != nil {
				return r, fmt.Errorf("%s: %w", name, err)
			}
			r.lat = append(r.lat, time.Since(start))
			r.hits += len(el.Entries)
		}
		return r, nil
	}
	var results []result
	add := func(r result, err error) error {
		if err != nil {
			return err
		}
		results = append(results, r)
		return nil
	}
	if err := add(run("actor, all time, first page of 100", func(i int) url.Values {
		return url.Values{"actor": {fmt.Sprintf("user-%04d", (i*37)%3000)}, "limit": {"100"}}
	})); err != nil {
		return err
	}
	prefixes := []string{"user.*", "role.*", "invoice.*", "deploy.*", "secret.*"}
	if err := add(run("action prefix in a 24 h window, page of 100", func(i int) url.Values {
		return url.Values{"action": {prefixes[i%len(prefixes)]}, "since": {"24h"}, "limit": {"100"}}
	})); err != nil {
		return err
	}
	words := []string{"alpha", "tango", "incident", "migration bravo", "quarterly review", "emergency", "zulu xray"}
	if err := add(run("full text, page of 100", func(i int) url.Values {
		return url.Values{"q": {words[i%len(words)]}, "limit": {"100"}}
	})); err != nil {
		return err
	}
	if err := add(run("target id, page of 100", func(i int) url.Values {
		return url.Values{"target": {fmt.Sprint((i * 7919) % 100000)}, "limit": {"100"}}
	})); err != nil {
		return err
	}
	// Deep pagination: follow the cursor of one broad query to page 500.
	deep := result{name: "deep pagination: page 500 (outcome=success, 100 a page)"}
	first := result{name: "deep pagination: page 1 of the same query"}
	for rep := 0; rep < max(1, *n/25); rep++ {
		q := url.Values{"outcome": {"success"}, "limit": {"100"}}
		for page := 1; page <= 500; page++ {
			start := time.Now()
			el, err := c.Search(ctx, *logName, q)
			if err != nil {
				return err
			}
			d := time.Since(start)
			if page == 1 {
				first.lat = append(first.lat, d)
				first.hits += len(el.Entries)
			}
			if page >= 490 {
				deep.lat = append(deep.lat, d)
				deep.hits += len(el.Entries)
			}
			if el.NextCursor == "" {
				return fmt.Errorf("deep pagination: the log has fewer than 500 pages of successes; seed more")
			}
			q.Set("cursor", el.NextCursor)
		}
	}
	results = append(results, first, deep)
	fmt.Fprintf(m.Stdout, "%-55s %6s %9s %9s %9s %9s\n", "QUERY", "RUNS", "P50", "P95", "MAX", "HITS/RUN")
	for _, r := range results {
		sort.Slice(r.lat, func(i, j int) bool { return r.lat[i] < r.lat[j] })
		pct := func(p float64) time.Duration { return r.lat[min(len(r.lat)-1, int(p*float64(len(r.lat))))] }
		fmt.Fprintf(m.Stdout, "%-55s %6d %9s %9s %9s %9.1f\n", r.name, len(r.lat), pct(0.5).Round(10*time.Microsecond), pct(0.95).Round(10*time.Microsecond), r.lat[len(r.lat)-1].Round(10*time.Microsecond), float64(r.hits)/float64(len(r.lat)))
	}
	return nil
}
