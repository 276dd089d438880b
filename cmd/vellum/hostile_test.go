package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/client"
	"github.com/vellum-audit/vellum/internal/entry"
)

// TestHostileInput is a black-box suite against a running server process:
// malformed and adversarial requests, signed with a valid key or sent raw.
// Every one gets a 4xx with a JSON error body (or, where Go's HTTP server
// answers before vellum sees the request, its 4xx), never a 5xx; the
// server stays up; nothing is stored in the user logs; and every refusal
// of a request that presented a key is recorded in _access.
func TestHostileInput(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	srv := startChild(t, append([]string{"serve", "--data", dir, "--listen", "127.0.0.1:0", "--name", "test.example/hostile", "--log-level", "error"}, testStoreArgs(t)...)...)
	tokB, err := os.ReadFile(filepath.Join(dir, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(tokB))
	c, err := client.New(srv.url(), tok, client.WithRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateLog(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	tr, err := client.NewTransport(tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	signed := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	plain := &http.Client{Timeout: 30 * time.Second}
	accessBefore := logLen(t, c, api.AccessLog)

	nested := strings.Repeat(`{"a":`, 5000) + "1" + strings.Repeat("}", 5000)
	// Events with a key id and a signature of the right shape, so that the
	// event itself is parsed (a signature over unparsable bytes cannot be
	// checked; its parse fails first).
	sig := strings.Repeat("A", 86) + "=="
	ev := func(inner string) string {
		return `{"events":[{"event":` + inner + `,"key_id":"` + c.KeyID() + `","sig":"` + sig + `"}]}`
	}
	type req struct {
		name, method, path, ctype string
		body                      []byte
		keyed                     bool
		anon                      bool // refused before the key is known: recorded as anonymous
	}
	cases := []req{
		{"broken JSON", "POST", "/v1/logs/app/entries", "application/json", []byte(`{"events":[{"event":`), true, false},
		{"not an object", "POST", "/v1/logs/app/entries", "application/json", []byte(`[1,2,3]`), true, false},
		{"deeply nested metadata", "POST", "/v1/logs/app/entries", "application/json", []byte(ev(`{"action":"a.b","actor":{"id":"x"},"metadata":` + nested + `}`)), true, false},
		{"deeply nested body", "POST", "/v1/logs/app/entries", "application/json", []byte(nested), true, false},
		{"duplicate keys", "POST", "/v1/logs/app/entries", "application/json", []byte(ev(`{"action":"a.b","action":"c.d","actor":{"id":"x"}}`)), true, false},
		{"duplicate keys in metadata", "POST", "/v1/logs/app/entries", "application/json", []byte(ev(`{"action":"a.b","actor":{"id":"x"},"metadata":{"k":1,"k":2}}`)), true, false},
		{"huge number", "POST", "/v1/logs/app/entries", "application/json", []byte(ev(`{"action":"a.b","actor":{"id":"x"},"metadata":{"n":1e400}}`)), true, false},
		{"huge integer", "POST", "/v1/logs/app/entries", "application/json", []byte(ev(`{"action":"a.b","actor":{"id":"x"},"metadata":{"n":` + strings.Repeat("9", 400) + `}}`)), true, false},
		{"invalid UTF-8", "POST", "/v1/logs/app/entries", "application/json", []byte(ev("{\"action\":\"a.b\",\"actor\":{\"id\":\"x\xff\xfe\"}}")), true, false},
		{"raw NUL byte", "POST", "/v1/logs/app/entries", "application/json", []byte(ev("{\"action\":\"a.b\",\"actor\":{\"id\":\"x\x00y\"}}")), true, false},
		{"escaped NUL in action", "POST", "/v1/logs/app/entries", "application/json", []byte(ev(`{"action":"a.b\u0000","actor":{"id":"x"}}`)), true, false},
		{"lone surrogate", "POST", "/v1/logs/app/entries", "application/json", []byte(ev(`{"action":"a.b","actor":{"id":"\ud800"}}`)), true, false},
		{"trailing garbage", "POST", "/v1/logs/app/entries", "application/json", []byte(ev(`{"action":"a.b","actor":{"id":"x"}}`) + `{}`), true, false},
		{"too many events", "POST", "/v1/logs/app/entries", "application/json", []byte(`{"events":[` + strings.TrimSuffix(strings.Repeat(strings.TrimSuffix(strings.TrimPrefix(ev(`{"action":"a.b","actor":{"id":"x"}}`), `{"events":[`), `]}`)+",", api.MaxBatch+1), ",") + `]}`), true, false},
		{"bad signature", "POST", "/v1/logs/app/entries", "application/json", []byte(ev(`{"action":"a.b","actor":{"id":"x"}}`)), true, false},
		{"body over the limit", "POST", "/v1/logs/app/entries", "application/json", bytes.Repeat([]byte(" "), api.MaxBodySize+1), true, true},
		{"empty body", "POST", "/v1/logs/app/entries", "application/json", nil, true, false},
		{"wrong content type", "POST", "/v1/logs/app/entries", "text/plain", []byte(ev(`{"action":"a.b","actor":{"id":"x"}}`)), true, false},
		{"form content type", "POST", "/v1/logs/app/entries", "application/x-www-form-urlencoded", []byte("events=1"), true, false},
		{"path traversal, encoded", "GET", "/v1/logs/..%2f..%2fetc%2fpasswd/entries/0", "", nil, true, false},
		{"path traversal", "GET", "/v1/logs/app/../../etc/passwd", "", nil, true, false},
		{"double slash", "GET", "/v1//logs/app", "", nil, true, false},
		{"fullwidth log name", "GET", "/v1/logs/%EF%BD%8C%EF%BD%8F%EF%BD%87/entries/0", "", nil, true, false},
		{"right-to-left override in log name", "GET", "/v1/logs/app%E2%80%AEx/entries/0", "", nil, true, false},
		{"NUL in log name", "GET", "/v1/logs/app%00/entries/0", "", nil, true, false},
		{"upper-case log name", "POST", "/v1/logs", "application/json", []byte(`{"name":"APP"}`), true, false},
		{"odd Unicode log name", "POST", "/v1/logs", "application/json", []byte(`{"name":"l\u00f6g"}`), true, false},
		{"slash in log name", "POST", "/v1/logs", "application/json", []byte(`{"name":"a/b"}`), true, false},
		{"reserved log name", "POST", "/v1/logs", "application/json", []byte(`{"name":"_evil"}`), true, false},
		{"append to _system", "POST", "/v1/logs/_system/entries", "application/json", []byte(ev(`{"action":"key.revoke","actor":{"id":"x"}}`)), true, false},
		{"unknown method", "PATCH", "/v1/logs/app", "", nil, true, false},
		{"made-up method", "FROB", "/v1/logs/app/entries", "", nil, true, false},
		{"DELETE an entry", "DELETE", "/v1/logs/app/entries/0", "", nil, true, false},
		{"PUT an entry", "PUT", "/v1/logs/app/entries/0", "application/json", []byte(`{}`), true, false},
		{"unknown query parameter", "GET", "/v1/logs/app/entries?evil=1", "", nil, true, false},
		{"negative index", "GET", "/v1/logs/app/entries/-1", "", nil, true, false},
		{"huge index", "GET", "/v1/logs/app/entries/99999999999999999999999", "", nil, true, false},
		{"unsigned append", "POST", "/v1/logs/app/entries", "application/json", []byte(ev(`{"action":"a.b","actor":{"id":"x"}}`)), false, false},
		{"garbage signature", "POST", "/v1/logs/app/entries", "application/json", []byte(ev(`{"action":"a.b","actor":{"id":"x"}}`)), false, false},
	}
	keyedRefusals := 0
	for _, tc := range cases {
		var rd io.Reader
		if tc.body != nil {
			rd = bytes.NewReader(tc.body)
		}
		r, err := http.NewRequest(tc.method, srv.url()+tc.path, rd)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if tc.ctype != "" {
			r.Header.Set("Content-Type", tc.ctype)
		}
		hc := plain
		if tc.keyed {
			hc = signed
		}
		if tc.name == "garbage signature" {
			r.Header.Set("Signature-Input", `sig1=("@method");created=1;keyid="vlm_0000000000000000";alg="ed25519"`)
			r.Header.Set("Signature", "sig1=:AAAA:")
		}
		resp, err := hc.Do(r)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e api.Error
		switch {
		case resp.StatusCode < 400 || resp.StatusCode >= 500:
			t.Errorf("%s: status %d, want a 4xx: %s", tc.name, resp.StatusCode, body)
		case json.Unmarshal(body, &e) != nil || e.Error.Code == "" || e.Error.Message == "":
			t.Errorf("%s: %d with a body that is not a JSON error: %q", tc.name, resp.StatusCode, body)
		default:
			t.Logf("%-36s %d %s", tc.name, resp.StatusCode, e.Error.Message)
		}
		if tc.keyed && !tc.anon {
			keyedRefusals++
		}
	}

	// Requests Go's HTTP server refuses before vellum sees them: a 4xx,
	// and the server is still up.
	raw := []struct{ name, req string }{
		{"header injection (bare CR)", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: b\rInjected: c\r\n\r\n"},
		{"header injection (NUL)", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: b\x00c\r\n\r\n"},
		{"oversized headers", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 200<<10) + "\r\n\r\n"},
		{"no Host", "GET /healthz HTTP/1.1\r\n\r\n"},
		{"bad request line", "GET\r\n\r\n"},
		{"bad Content-Length", "POST /v1/logs/app/entries HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"},
		{"two Content-Lengths", "POST /v1/logs/app/entries HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"},
	}
	for _, tc := range raw {
		conn, err := net.DialTimeout("tcp", strings.TrimPrefix(srv.url(), "http://"), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(conn, tc.req)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		conn.Close()
		if err != nil {
			t.Errorf("%s: no HTTP answer: %v", tc.name, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Errorf("%s: status %d, want a 4xx", tc.name, resp.StatusCode)
		} else {
			t.Logf("%-36s %d (Go's HTTP server)", tc.name, resp.StatusCode)
		}
	}

	// Still up, nothing stored, every keyed refusal on the record.
	resp, err := plain.Get(srv.url() + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz after the suite: %v %v\n%s", resp, err, srv.logs.String())
	}
	resp.Body.Close()
	if n := logLen(t, c, "app"); n != 0 {
		t.Errorf("log app holds %d entries after hostile requests only", n)
	}
	logs, err := c.Logs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range logs {
		if l.Name != "app" && !strings.HasPrefix(l.Name, "_") {
			t.Errorf("a log %q was created", l.Name)
		}
	}
	access := logLen(t, c, api.AccessLog)
	es, err := c.Entries(ctx, api.AccessLog, accessBefore, access)
	if err != nil {
		t.Fatal(err)
	}
	refused := 0
	for _, e := range es {
		pe, err := entry.Parse(e.Data)
		if err != nil {
			t.Fatal(err)
		}
		var ev api.Event
		json.Unmarshal(pe.Event, &ev)
		if ev.Action == "access.refused" && ev.Actor.ID == c.KeyID() {
			refused++
		}
	}
	if refused < keyedRefusals {
		t.Errorf("_access holds %d refusals of the admin key's requests, want at least %d (one per keyed hostile request)", refused, keyedRefusals)
	}
	if strings.Contains(srv.logs.String(), "panic") {
		t.Errorf("the server logged a panic:\n%s", srv.logs.String())
	}
}

func logLen(t *testing.T, c *client.Client, log string) int64 {
	t.Helper()
	ls, err := c.Logs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		if l.Name == log {
			return l.Size
		}
	}
	t.Fatalf("no log %q", log)
	return 0
}
