package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/vellum-audit/vellum/internal/node"
)

func TestBench(t *testing.T) {
	ctx := context.Background()
	n, err := node.Open(ctx, node.Config{Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	srv := httptest.NewServer(n.Handler)
	t.Cleanup(srv.Close)
	tok, err := os.ReadFile(n.Init.AdminKeyPath)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"VELLUM_URL": srv.URL, "VELLUM_KEY": strings.TrimSpace(string(tok))}

	for _, wl := range []string{"single", "concurrent", "batch"} {
		t.Run(wl, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			m := &Main{Stdout: &stdout, Stderr: &stderr, Getenv: func(k string) string { return env[k] }}
			args := []string{"bench", "--workload", wl, "--duration", "300ms", "--producers", "4", "--batch-size", "50", "--max-events", "2000", "--json"}
			if err := m.Run(ctx, args); err != nil {
				t.Fatalf("%v\nstderr:\n%s", err, stderr.String())
			}
			var rep benchReport
			if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
				t.Fatalf("output is not JSON: %v\n%s", err, stdout.String())
			}
			if len(rep.Workloads) != 1 || rep.Workloads[0].Workload != wl {
				t.Fatalf("workloads = %+v, want one %q", rep.Workloads, wl)
			}
			r := rep.Workloads[0]
			if r.Events <= 0 || r.Requests <= 0 || r.EventsPerSec <= 0 || r.Latency.Max <= 0 {
				t.Errorf("no progress: %+v", r)
			}
			if r.ErrorCount != 0 || r.Duplicates != 0 {
				t.Errorf("errors %v (first: %s), duplicates %d", r.Errors, r.FirstError, r.Duplicates)
			}
		})
	}

	t.Run("logs", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		m := &Main{Stdout: &stdout, Stderr: &stderr, Getenv: func(k string) string { return env[k] }}
		args := []string{"bench", "--workload", "concurrent", "--log", "spread", "--logs", "3", "--urls", srv.URL + "," + srv.URL, "--duration", "300ms", "--producers", "6", "--max-events", "600", "--json"}
		if err := m.Run(ctx, args); err != nil {
			t.Fatalf("%v\nstderr:\n%s", err, stderr.String())
		}
		var rep benchReport
		if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
			t.Fatalf("output is not JSON: %v\n%s", err, stdout.String())
		}
		if r := rep.Workloads[0]; r.Events <= 0 || r.ErrorCount != 0 {
			t.Fatalf("events %d, errors %v (first: %s)", r.Events, r.Errors, r.FirstError)
		}
		var total int64
		for _, name := range []string{"spread-0", "spread-1", "spread-2"} {
			li, err := n.Store.Log(ctx, name)
			if err != nil || li.Size < 1 {
				t.Errorf("log %s: %+v, %v; want appends from its producers", name, li, err)
			}
			total += li.Size
		}
		if got := rep.Workloads[0].Events; total < got {
			t.Errorf("the logs hold %d entries, the bench counted %d acknowledged events", total, got)
		}
		var bad bytes.Buffer
		m = &Main{Stdout: &bad, Stderr: &bad, Getenv: func(k string) string { return env[k] }}
		if err := m.Run(ctx, []string{"bench", "--logs", "0"}); err == nil || !strings.Contains(err.Error(), "--logs") {
			t.Errorf("--logs 0: %v, want a usage error naming --logs", err)
		}
	})
}
