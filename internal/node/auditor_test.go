package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/client"
	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/node"
)

// TestWatchman: the background auditor finds an entry changed behind the
// running server's back, records alert.tamper in _system, reports it on
// /healthz and in the metrics, and the node fails closed for that log (no
// new checkpoint: appends get 503) while reads go on with a warning and
// other logs are not affected.
func TestWatchman(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	n, err := node.Open(ctx, node.Config{Dir: dir, OriginPrefix: testOriginPrefix, Version: "test",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), OpenStore: storeOpener(t, dir),
		AuditRate: 1_000_000, AuditPause: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(n.Handler)
	defer func() {
		srv.Close()
		n.Close()
	}()
	tokB, _ := os.ReadFile(filepath.Join(dir, node.AdminKeyFile))
	tok := strings.TrimSpace(string(tokB))
	c := newClient(t, srv.URL, tok)
	createLog(t, c, "tamper")
	createLog(t, c, "other")
	var evs []json.RawMessage
	for i := range 20 {
		evs = append(evs, event("doc.read", fmt.Sprintf("user-a%02d", i)))
	}
	mustAppend(t, c, "tamper", evs...)
	mustAppend(t, c, "other", event("doc.read", "x"))
	metricsText := func() string {
		var b bytes.Buffer
		n.Metrics.WriteText(&b)
		return b.String()
	}
	waitFor(t, 20*time.Second, "the auditor to verify the log", func() bool {
		return strings.Contains(metricsText(), `vellum_auditor_verified_entries_total{log="tamper"} 20`)
	})
	health := func(q string) (int, map[string]any) {
		resp, err := http.Get(srv.URL + "/healthz" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	if code, h := health(""); code != 200 || h["status"] != "ok" {
		t.Fatalf("healthz before tampering: %d %v", code, h)
	}

	old := []byte(`"actor":{"id":"user-a07"`)
	tamperEntry(t, dir, "tamper", 7, func(data []byte) []byte {
		i := bytes.Index(data, old)
		if i < 0 {
			t.Fatalf("entry 7 %s lacks %s", data, old)
		}
		f := bytes.Clone(data)
		f[i+len(`"actor":{"id":"user-`)] = 'b'
		return f
	})

	var h map[string]any
	waitFor(t, 20*time.Second, "the auditor to report the tampered entry", func() bool {
		_, h = health("")
		return h["status"] == "integrity_failure"
	})
	fs, _ := h["integrity"].([]any)
	if len(fs) != 1 {
		t.Fatalf("healthz: %v, want one failure", h)
	}
	f := fs[0].(map[string]any)
	if f["log"] != "tamper" || f["index"] != float64(7) || !strings.Contains(f["reason"].(string), "leaf hash") {
		t.Errorf("healthz failure: %v, want log tamper, index 7, the leaf hash", f)
	}
	if code, _ := health("?strict"); code != http.StatusServiceUnavailable {
		t.Errorf("healthz?strict: %d, want 503", code)
	}

	// Fail closed: no new checkpoint over the log.
	_, err = c.Append(ctx, "tamper", event("doc.read", "late"))
	var ae *client.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || !strings.Contains(ae.Message, "integrity") {
		t.Errorf("append to the tampered log: %v, want 503 naming the integrity failure", err)
	}
	mustAppend(t, c, "other", event("doc.read", "y"))
	// Reads go on, with a warning.
	resp, body := newRaw(t, srv.URL, tok).send(t, "GET", "/v1/logs/tamper/entries/3", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Vellum-Integrity"), "failed") {
		t.Errorf("read of the tampered log: %d, Vellum-Integrity %q (%s)", resp.StatusCode, resp.Header.Get("Vellum-Integrity"), body)
	}
	if resp, _ := newRaw(t, srv.URL, tok).send(t, "GET", "/v1/logs/other/entries/0", "", nil); resp.Header.Get("Vellum-Integrity") != "" {
		t.Errorf("a read of a sound log carries an integrity warning")
	}
	// The alert is in _system.
	size := logSize(t, c, api.SystemLog)
	es, err := c.Entries(ctx, api.SystemLog, 0, size)
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, e := range es {
		pe, err := entry.Parse(e.Data)
		if err != nil {
			t.Fatal(err)
		}
		var ev api.Event
		json.Unmarshal(pe.Event, &ev)
		if ev.Action == "alert.tamper" {
			found++
			if len(ev.Targets) != 1 || ev.Targets[0].ID != "tamper" || !strings.Contains(string(ev.Metadata), `"index":7`) || !strings.Contains(string(ev.Metadata), `"found_by":"auditor"`) || !strings.Contains(string(ev.Metadata), `"detector":"tamper"`) || !strings.Contains(string(ev.Metadata), `"severity":"critical"`) {
				t.Errorf("alert entry: %s", pe.Event)
			}
		}
	}
	if found != 1 {
		t.Errorf("%d alert.tamper entries in _system, want 1 (alerts are not repeated)", found)
	}
	if !strings.Contains(metricsText(), `vellum_integrity_failures_total{log="tamper"} 1`) {
		t.Errorf("metrics lack the integrity failure")
	}
}
