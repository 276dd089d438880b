package node_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/client"
)

// TestMetrics: GET /metrics answers keys that may read _system with the
// Prometheus text format, counting appends and events by outcome, commits,
// queue depth and authentication refusals by reason; other keys get 403.
func TestMetrics(t *testing.T) {
	url, adminTok, stop := startNode(t, t.TempDir())
	defer stop()
	admin := newClient(t, url, adminTok)
	createLog(t, admin, "billing")
	mustAppend(t, admin, "billing", event("user.create", "alice"))
	// An event sent twice: appended, then a duplicate (idempotent retry).
	se, err := admin.Sign("billing", event("user.delete", "bob"))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := admin.AppendSigned(t.Context(), "billing", []api.SignedEvent{se}); err != nil {
			t.Fatal(err)
		}
	}
	// A refusal: an unsigned request.
	resp, err := http.Post(url+"/v1/logs/billing/entries", "application/json", strings.NewReader(`{"events":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	raw := newRaw(t, url, adminTok)
	resp, body := raw.send(t, "GET", "/metrics", "", nil)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("GET /metrics: %d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	text := string(body)
	for _, want := range []string{
		`vellum_appends_total{log="billing",outcome="ok"} `,
		`vellum_events_total{log="billing",outcome="appended"} 2` + "\n",
		`vellum_events_total{log="billing",outcome="duplicate"} 1` + "\n",
		`vellum_appends_total{log="billing",outcome="ok"} 3` + "\n",
		`vellum_commit_seconds_count{log="billing"} `,
		`vellum_commit_entries_bucket{log="billing",le="+Inf"} `,
		`vellum_queue_events{log="billing"} 0` + "\n",
		`vellum_log_size{log="billing"} 2` + "\n",
		`vellum_auth_refusals_total{reason="unsigned"} 1` + "\n",
		`vellum_append_request_events_count `,
		"vellum_build_info{",
		"process_resident_memory_bytes ",
		"go_goroutines ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if !usePostgres() { // the SQLite search indexer's state
		for _, want := range []string{
			"# TYPE vellum_search_index_behind_entries gauge\n",
			"vellum_search_index_queued_bytes ",
			"# TYPE vellum_search_index_log_reads_total counter\nvellum_search_index_log_reads_total ",
		} {
			if !strings.Contains(text, want) {
				t.Errorf("/metrics lacks %q", want)
			}
		}
	}
	if strings.Contains(text, adminTok) {
		t.Errorf("/metrics shows a token")
	}

	w := mustCreateKey(t, admin, client.KeyOptions{Name: "w", Role: "writer"})
	resp, body = newRaw(t, url, w.Token).send(t, "GET", "/metrics", "", nil)
	checkAPIError(t, resp, body, http.StatusForbidden, "")
	aud := mustCreateKey(t, admin, client.KeyOptions{Name: "a", Role: "auditor"})
	if resp, body := newRaw(t, url, aud.Token).send(t, "GET", "/metrics", "", nil); resp.StatusCode != 200 {
		t.Errorf("auditor: GET /metrics %d %s", resp.StatusCode, body)
	}
}
