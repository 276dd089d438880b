package node_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
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
	"sync"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" driver, for TestTamper

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/client"
	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/httpsig"
	"github.com/vellum-audit/vellum/internal/jcs"
	"github.com/vellum-audit/vellum/internal/keys"
	"github.com/vellum-audit/vellum/internal/node"
)

const testOriginPrefix = "test.example/vellum"

// startNode opens (initialising if needed) the data directory dir and serves
// it on 127.0.0.1. It returns the server's URL, the first admin token and a
// function that stops the server and closes the node; stop is also
// registered as a cleanup, and may be called more than once.
func startNode(t *testing.T, dir string) (url string, adminToken string, stop func()) {
	t.Helper()
	return startNodeWith(t, dir, nil)
}

// startNodeWith is startNode with the node's configuration changed by
// configure (if not nil) before the node opens.
func startNodeWith(t *testing.T, dir string, configure func(*node.Config)) (url string, adminToken string, stop func()) {
	t.Helper()
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	}
	cfg := node.Config{Dir: dir, OriginPrefix: testOriginPrefix, Version: "test", Logger: logger, OpenStore: storeOpener(t, dir)}
	if configure != nil {
		configure(&cfg)
	}
	n, err := node.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("node.Open(%s): %v", dir, err)
	}
	tok, err := os.ReadFile(filepath.Join(dir, node.AdminKeyFile))
	if err != nil {
		n.Close()
		t.Fatalf("reading the admin token: %v", err)
	}
	srv := httptest.NewServer(n.Handler)
	var once sync.Once
	stop = func() {
		once.Do(func() {
			srv.Close() // waits for outstanding requests
			if err := n.Close(); err != nil {
				t.Errorf("closing the node: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return srv.URL, strings.TrimSpace(string(tok)), stop
}

func newClient(t *testing.T, url, token string) *client.Client {
	t.Helper()
	c, err := client.New(url, token)
	if err != nil {
		t.Fatalf("client.New: %v", err)
	}
	return c
}

// verifierFor fetches the server's verifier key and checks it against the
// one in the data directory.
func verifierFor(t *testing.T, c *client.Client, dir string) *client.Verifier {
	t.Helper()
	si, err := c.ServerInfo(context.Background())
	if err != nil {
		t.Fatalf("ServerInfo: %v", err)
	}
	if si.OriginPrefix != testOriginPrefix {
		t.Errorf("origin prefix = %q, want %q", si.OriginPrefix, testOriginPrefix)
	}
	onDisk, err := os.ReadFile(filepath.Join(dir, node.VerifierKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(onDisk)) != si.VerifierKey {
		t.Errorf("server info verifier key %q differs from %s %q", si.VerifierKey, node.VerifierKeyFile, onDisk)
	}
	v, err := client.NewVerifier(si.VerifierKey)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return v
}

func createLog(t *testing.T, c *client.Client, name string) {
	t.Helper()
	l, err := c.CreateLog(context.Background(), name)
	if err != nil {
		t.Fatalf("CreateLog(%q): %v", name, err)
	}
	if l.Name != name || l.Size != 0 || l.Origin != testOriginPrefix+"/"+name {
		t.Fatalf("CreateLog(%q) = %+v", name, l)
	}
}

func logSize(t *testing.T, c *client.Client, name string) int64 {
	t.Helper()
	l, err := c.Log(context.Background(), name)
	if err != nil {
		t.Fatalf("Log(%q): %v", name, err)
	}
	return l.Size
}

// event is a valid event with the given action and actor; extra fields
// (JSON members without braces) are added verbatim.
func event(action, actor string, extra ...string) json.RawMessage {
	s := fmt.Sprintf(`{"action":%q,"actor":{"id":%q,"type":"user"},"outcome":"success","time":"2026-01-02T15:04:05Z"`, action, actor)
	for _, e := range extra {
		s += "," + e
	}
	return json.RawMessage(s + "}")
}

func mustAppend(t *testing.T, c *client.Client, log string, events ...json.RawMessage) []api.Receipt {
	t.Helper()
	rs, err := c.Append(context.Background(), log, events...)
	if err != nil {
		t.Fatalf("Append(%q, %d events): %v", log, len(events), err)
	}
	if len(rs) != len(events) {
		t.Fatalf("Append(%q): %d receipts for %d events", log, len(rs), len(events))
	}
	return rs
}

func asClientError(t *testing.T, err error) *client.Error {
	t.Helper()
	var ce *client.Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T) is not a *client.Error", err, err)
	}
	return ce
}

func TestAppendVerifyReceipt(t *testing.T) {
	dir := t.TempDir()
	url, tok, _ := startNode(t, dir)
	c := newClient(t, url, tok)
	v := verifierFor(t, c, dir)
	createLog(t, c, "app")

	one := mustAppend(t, c, "app", event("user.login", "alice"))
	var batch []json.RawMessage
	for i := range 250 {
		batch = append(batch, event("doc.read", fmt.Sprintf("user-%03d", i), fmt.Sprintf(`"targets":[{"id":"doc-%d"}]`, i)))
	}
	many := mustAppend(t, c, "app", batch...)

	all := append(one, many...)
	for i, r := range all {
		if r.Log != "app" || r.Index != int64(i) || r.Duplicate {
			t.Errorf("receipt %d: log %q index %d duplicate %v", i, r.Log, r.Index, r.Duplicate)
		}
		cp, err := v.VerifyReceipt(r, c.PublicKey())
		if err != nil {
			t.Fatalf("receipt %d does not verify: %v", i, err)
		}
		if cp.Origin != v.Origin("app") || cp.Size <= r.Index {
			t.Errorf("receipt %d: checkpoint %q size %d", i, cp.Origin, cp.Size)
		}
		// The receipt's entry carries the event the client signed.
		e, err := entry.Parse(r.Entry)
		if err != nil {
			t.Fatalf("receipt %d entry: %v", i, err)
		}
		if e.KeyID != c.KeyID() || e.Auth != entry.AuthSignature {
			t.Errorf("receipt %d: key %q auth %q", i, e.KeyID, e.Auth)
		}
	}
	// The receipts' checkpoints are the ones of the commits: the batch's is
	// the log's current checkpoint.
	cur, err := c.Latest(context.Background(), v, "app", nil)
	if err != nil {
		t.Fatal(err)
	}
	if cur.Size != 251 {
		t.Errorf("log size %d, want 251", cur.Size)
	}
	last, _ := v.VerifyReceipt(all[250], nil)
	if last.Size != cur.Size || last.Hash != cur.Hash {
		t.Errorf("last receipt checkpoint (%d) differs from the latest (%d)", last.Size, cur.Size)
	}

	// A receipt verified with the wrong key, or altered, fails.
	other, _ := keys.NewToken()
	if _, err := v.VerifyReceipt(all[3], other.PublicKey()); !errors.Is(err, client.ErrVerification) {
		t.Errorf("receipt with the wrong event key: %v, want a verification error", err)
	}
	bad := all[3]
	bad.Entry = bytes.Replace(bytes.Clone(bad.Entry), []byte(`"user-002"`), []byte(`"user-00X"`), 1)
	if _, err := v.VerifyReceipt(bad, nil); err == nil {
		t.Error("altered receipt entry verified")
	}
}

func TestIdempotentRetry(t *testing.T) {
	dir := t.TempDir()
	url, tok, _ := startNode(t, dir)
	c := newClient(t, url, tok)
	v := verifierFor(t, c, dir)
	ctx := context.Background()
	createLog(t, c, "idem")
	mustAppend(t, c, "idem", event("warmup", "w"))

	t.Run("id duplicate", func(t *testing.T) {
		e := event("user.create", "alice", `"id":"evt-1"`)
		first := mustAppend(t, c, "idem", e)[0]
		size := logSize(t, c, "idem")
		second := mustAppend(t, c, "idem", e)[0]
		if first.Duplicate || !second.Duplicate {
			t.Errorf("duplicate flags: first %v, second %v", first.Duplicate, second.Duplicate)
		}
		if second.Index != first.Index || second.LeafHash != first.LeafHash || !bytes.Equal(second.Entry, first.Entry) {
			t.Errorf("retry receipt index %d leaf %s, original index %d leaf %s", second.Index, second.LeafHash, first.Index, first.LeafHash)
		}
		if _, err := v.VerifyReceipt(second, c.PublicKey()); err != nil {
			t.Errorf("duplicate receipt does not verify: %v", err)
		}
		if got := logSize(t, c, "idem"); got != size {
			t.Errorf("size after retry %d, want %d", got, size)
		}
	})

	t.Run("id duplicate within one batch", func(t *testing.T) {
		e := event("user.create", "bob", `"id":"evt-batch"`)
		size := logSize(t, c, "idem")
		rs := mustAppend(t, c, "idem", e, e)
		if rs[0].Duplicate || !rs[1].Duplicate || rs[0].Index != rs[1].Index || rs[0].Index != size {
			t.Errorf("receipts %+v / %+v", rs[0], rs[1])
		}
		if got := logSize(t, c, "idem"); got != size+1 {
			t.Errorf("size %d, want %d", got, size+1)
		}
	})

	t.Run("id conflict", func(t *testing.T) {
		size := logSize(t, c, "idem")
		_, err := c.Append(ctx, "idem", event("user.delete", "alice", `"id":"evt-1"`))
		ce := asClientError(t, err)
		if ce.Status != http.StatusConflict || ce.Code != api.CodeConflict {
			t.Errorf("error %v, want 409 conflict", ce)
		}
		if got := logSize(t, c, "idem"); got != size {
			t.Errorf("size after refused append %d, want %d", got, size)
		}
	})

	t.Run("seq", func(t *testing.T) {
		e5 := event("job.run", "cron", `"source":"svc-a"`, `"seq":5`)
		first := mustAppend(t, c, "idem", e5)[0]
		size := logSize(t, c, "idem")

		again := mustAppend(t, c, "idem", e5)[0]
		if !again.Duplicate || again.Index != first.Index || again.LeafHash != first.LeafHash {
			t.Errorf("seq retry: %+v, original index %d", again, first.Index)
		}

		for _, tc := range []struct {
			name string
			ev   json.RawMessage
		}{
			{"same seq, different bytes", event("job.fail", "cron", `"source":"svc-a"`, `"seq":5`)},
			{"seq below the last", event("job.run", "cron", `"source":"svc-a"`, `"seq":3`)},
			{"seq zero below the last", event("job.run", "cron", `"source":"svc-a"`, `"seq":0`)},
		} {
			_, err := c.Append(ctx, "idem", tc.ev)
			ce := asClientError(t, err)
			if ce.Status != http.StatusConflict {
				t.Errorf("%s: %v, want 409", tc.name, ce)
			}
		}
		if got := logSize(t, c, "idem"); got != size {
			t.Errorf("size %d, want %d", got, size)
		}

		// Another source has its own numbering; a higher seq is accepted.
		mustAppend(t, c, "idem", event("job.run", "cron", `"source":"svc-b"`, `"seq":1`))
		r := mustAppend(t, c, "idem", event("job.run", "cron", `"source":"svc-a"`, `"seq":6`))[0]
		if r.Duplicate || r.Index != size+1 {
			t.Errorf("seq 6: %+v, want a new entry at %d", r, size+1)
		}
	})

	t.Run("batch with one conflict is refused whole", func(t *testing.T) {
		size := logSize(t, c, "idem")
		fresh := event("user.create", "carol", `"id":"evt-fresh"`)
		_, err := c.Append(ctx, "idem",
			fresh,
			event("user.create", "dave"),
			event("user.delete", "alice", `"id":"evt-1"`), // conflicts
			event("user.create", "erin"),
		)
		ce := asClientError(t, err)
		if ce.Status != http.StatusConflict {
			t.Fatalf("error %v, want 409", ce)
		}
		if ce.Index == nil || *ce.Index != 2 {
			t.Errorf("error index %v, want 2", ce.Index)
		}
		if got := logSize(t, c, "idem"); got != size {
			t.Errorf("size %d after a refused batch, want %d", got, size)
		}
		// Nothing of the batch was recorded: its first event is new now.
		r := mustAppend(t, c, "idem", fresh)[0]
		if r.Duplicate || r.Index != size {
			t.Errorf("first event of the refused batch: %+v, want a new entry at %d", r, size)
		}
	})

	t.Run("batch with a seq conflict is refused whole", func(t *testing.T) {
		size := logSize(t, c, "idem")
		_, err := c.Append(ctx, "idem",
			event("job.run", "cron", `"source":"svc-c"`, `"seq":1`),
			event("job.run", "cron", `"source":"svc-c"`, `"seq":1`, `"metadata":{"x":1}`),
		)
		if ce := asClientError(t, err); ce.Status != http.StatusConflict {
			t.Errorf("error %v, want 409", ce)
		}
		if got := logSize(t, c, "idem"); got != size {
			t.Errorf("size %d, want %d", got, size)
		}
		// svc-c has no recorded seq yet: seq 1 is accepted now.
		if r := mustAppend(t, c, "idem", event("job.run", "cron", `"source":"svc-c"`, `"seq":1`))[0]; r.Duplicate {
			t.Errorf("svc-c seq 1: duplicate %+v", r)
		}
	})

	// Everything recorded still audits.
	reg, _, err := c.AuditSystem(ctx, v, nil)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := c.Latest(ctx, v, "idem", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AuditLog(ctx, v, "idem", cp, reg, nil); err != nil {
		t.Fatalf("AuditLog: %v", err)
	}
}

// rawHTTP sends requests signed by the admin key but built by hand.
type rawHTTP struct {
	base string
	hc   *http.Client
}

func newRaw(t *testing.T, url, token string) rawHTTP {
	t.Helper()
	tr, err := client.NewTransport(token, nil)
	if err != nil {
		t.Fatal(err)
	}
	return rawHTTP{base: url, hc: &http.Client{Transport: tr}}
}

func (r rawHTTP) send(t *testing.T, method, path, contentType string, body []byte) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, r.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return doRequest(t, r.hc, req)
}

func doRequest(t *testing.T, hc *http.Client, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL.Path, err)
	}
	return resp, b
}

// checkAPIError checks an error answer: the status, a JSON body of exactly
// the form {"error":{"code","message"[,"index"]}} and, if set, the code.
func checkAPIError(t *testing.T, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("status %d, want %d (body %.300s)", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Index   *int   `json:"index"`
		} `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Errorf("error body %.300q is not {\"error\":{...}}: %v", body, err)
		return
	}
	if e.Error.Code == "" || e.Error.Message == "" {
		t.Errorf("error body %.300q lacks code or message", body)
	}
	if code != "" && e.Error.Code != code {
		t.Errorf("error code %q, want %q (message %q)", e.Error.Code, code, e.Error.Message)
	}
}

// appendBody builds an append request body from events written verbatim
// (they need not be valid), each signed by tok for log (over the canonical
// form when there is one).
func appendBody(tok *keys.Token, log string, events ...string) []byte {
	var b strings.Builder
	b.WriteString(`{"events":[`)
	for i, ev := range events {
		if i > 0 {
			b.WriteByte(',')
		}
		canon, err := jcs.Canonicalize([]byte(ev))
		if err != nil {
			canon = []byte(ev)
		}
		sig := ed25519.Sign(tok.SigningKey(), entry.Message(log, canon))
		fmt.Fprintf(&b, `{"event":%s,"key_id":%q,"sig":%q}`, ev, tok.ID(), base64.StdEncoding.EncodeToString(sig))
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

// joinBodies concatenates the events of append request bodies made by
// appendBody.
func joinBodies(bodies ...[]byte) []byte {
	var parts []string
	for _, b := range bodies {
		parts = append(parts, strings.TrimSuffix(strings.TrimPrefix(string(b), `{"events":[`), `]}`))
	}
	return []byte(`{"events":[` + strings.Join(parts, ",") + `]}`)
}

func signedBody(t *testing.T, c *client.Client, log string, events ...json.RawMessage) []byte {
	t.Helper()
	req := api.AppendRequest{}
	for _, e := range events {
		se, err := c.Sign(log, e)
		if err != nil {
			t.Fatal(err)
		}
		req.Events = append(req.Events, se)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(req); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	url, tokStr, _ := startNode(t, dir)
	c := newClient(t, url, tokStr)
	tok, err := keys.ParseToken(tokStr)
	if err != nil {
		t.Fatal(err)
	}
	raw := newRaw(t, url, tokStr)
	const log = "bad"
	createLog(t, c, log)
	mustAppend(t, c, log, event("first", "alice"))
	const entriesPath = "/v1/logs/" + log + "/entries"
	valid := string(event("user.login", "alice"))

	many := make([]json.RawMessage, api.MaxBatch+1)
	for i := range many {
		many[i] = event("bulk", fmt.Sprintf("u%d", i))
	}
	big := event("blob.put", "alice", `"metadata":{"blob":"`+strings.Repeat("a", 64<<10)+`"}`)
	wrongSig := func() []byte {
		b := signedBody(t, c, log, event("user.login", "alice"))
		var req api.AppendRequest
		if err := json.Unmarshal(b, &req); err != nil {
			t.Fatal(err)
		}
		sig, _ := base64.StdEncoding.DecodeString(req.Events[0].Sig)
		sig[5] ^= 1
		req.Events[0].Sig = base64.StdEncoding.EncodeToString(sig)
		out, _ := json.Marshal(req)
		return out
	}
	other, _ := keys.NewToken()

	cases := []struct {
		name   string
		path   string // default entriesPath
		ctype  string // default application/json
		body   []byte
		status int
		code   string
		index  int // expected error index, -1 for none checked
	}{
		{name: "malformed JSON", body: []byte(`{"events":[{"event":`), status: 400, code: api.CodeBadRequest},
		{name: "not JSON at all", body: []byte(`events=1`), status: 400, code: api.CodeBadRequest},
		{name: "empty body", body: []byte(` `), status: 400, code: api.CodeBadRequest},
		{name: "no events", body: []byte(`{"events":[]}`), status: 400, code: api.CodeBadRequest},
		{name: "unknown request field", body: []byte(`{"events":[],"more":1}`), status: 400, code: api.CodeBadRequest},
		{name: "trailing data", body: append(appendBody(tok, log, valid), `{}`...), status: 400, code: api.CodeBadRequest},
		{name: "unknown event field", body: appendBody(tok, log, `{"action":"a","actor":{"id":"u"},"colour":"red"}`), status: 400, code: api.CodeInvalidEvent},
		{name: "missing action", body: appendBody(tok, log, `{"actor":{"id":"u"}}`), status: 400, code: api.CodeInvalidEvent},
		{name: "missing actor.id", body: appendBody(tok, log, `{"action":"a","actor":{"type":"user"}}`), status: 400, code: api.CodeInvalidEvent},
		{name: "duplicate keys in event", body: appendBody(tok, log, `{"action":"a","actor":{"id":"u"},"action":"b"}`), status: 400, code: api.CodeInvalidEvent},
		{name: "duplicate keys in actor", body: appendBody(tok, log, `{"action":"a","actor":{"id":"u","id":"v"}}`), status: 400, code: api.CodeInvalidEvent},
		{name: "bad outcome", body: appendBody(tok, log, `{"action":"a","actor":{"id":"u"},"outcome":"maybe"}`), status: 400, code: api.CodeInvalidEvent},
		{name: "bad time", body: appendBody(tok, log, `{"action":"a","actor":{"id":"u"},"time":"yesterday"}`), status: 400, code: api.CodeInvalidEvent},
		{name: "event not an object", body: appendBody(tok, log, `["a"]`), status: 400, code: api.CodeInvalidEvent},
		{name: "sig not base64", body: []byte(`{"events":[{"event":` + valid + `,"key_id":"` + tok.ID() + `","sig":"!!"}]}`), status: 400, code: api.CodeBadRequest},
		{name: "missing sig", body: []byte(`{"events":[{"event":` + valid + `,"key_id":"` + tok.ID() + `"}]}`), status: 400, code: api.CodeBadRequest},
		{name: "body over 4 MiB", body: []byte(`{"events":[` + strings.Repeat(" ", api.MaxBodySize) + `]}`), status: 413, code: api.CodeTooLarge},
		{name: "more than 1000 events", body: signedBody(t, c, log, many...), status: 413, code: api.CodeTooLarge},
		{name: "entry over 64 KiB", body: signedBody(t, c, log, event("ok", "alice"), big), status: 413, code: api.CodeTooLarge, index: 1},
		{name: "wrong event signature", body: wrongSig(), status: 400, code: api.CodeInvalidEvent},
		{name: "signature for another log", body: appendBody(tok, "other", valid, valid), status: 400, code: api.CodeInvalidEvent},
		{name: "second event of a batch by another key", body: joinBodies(appendBody(tok, log, valid), appendBody(other, log, valid)), status: 403, code: api.CodeForbidden, index: 1},
		{name: "second event of a batch badly signed", body: joinBodies(appendBody(tok, log, valid), appendBody(tok, "other", valid)), status: 400, code: api.CodeInvalidEvent, index: 1},
		{name: "event of another key", body: appendBody(other, log, valid), status: 403, code: api.CodeForbidden},
		{name: "unknown log", path: "/v1/logs/no-such-log/entries", body: appendBody(tok, "no-such-log", valid), status: 404, code: api.CodeNotFound},
		{name: "invalid log name", path: "/v1/logs/Bad/entries", body: appendBody(tok, "Bad", valid), status: 400, code: api.CodeBadRequest},
		{name: "invalid log name, too long", path: "/v1/logs/" + strings.Repeat("a", 64) + "/entries", body: appendBody(tok, strings.Repeat("a", 64), valid), status: 400, code: api.CodeBadRequest},
		{name: "reserved log", path: "/v1/logs/_system/entries", body: appendBody(tok, "_system", valid), status: 403, code: api.CodeForbidden},
		{name: "wrong content type", ctype: "text/plain", body: appendBody(tok, log, valid), status: 415, code: api.CodeUnsupported},
	}
	sysSize := logSize(t, c, api.SystemLog)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.index == 0 {
				tc.index = -1
			}
			path, ctype := tc.path, tc.ctype
			if path == "" {
				path = entriesPath
			}
			if ctype == "" {
				ctype = "application/json"
			}
			resp, body := raw.send(t, http.MethodPost, path, ctype, tc.body)
			checkAPIError(t, resp, body, tc.status, tc.code)
			if tc.index >= 0 {
				var e api.Error
				json.Unmarshal(body, &e)
				if e.Error.Index == nil || *e.Error.Index != tc.index {
					t.Errorf("error index %v, want %d", e.Error.Index, tc.index)
				}
			}
			if got := logSize(t, c, log); got != 1 {
				t.Errorf("log size %d after a refused request, want 1", got)
			}
		})
	}
	if got := logSize(t, c, api.SystemLog); got != sysSize {
		t.Errorf("_system size %d, want %d", got, sysSize)
	}

	// Authentication: requests built and signed by hand, sent unsigned by
	// the transport.
	plain := &http.Client{}
	signed := func(t *testing.T, method, path string, body []byte, keyID string, key ed25519.PrivateKey, now time.Time) *http.Request {
		t.Helper()
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequest(method, url+path, rd)
		if err != nil {
			t.Fatal(err)
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if err := httpsig.Sign(req, body, keyID, key, now); err != nil {
			t.Fatal(err)
		}
		return req
	}
	clone := func(t *testing.T, req *http.Request, body []byte) *http.Request {
		t.Helper()
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		r2, err := http.NewRequest(req.Method, req.URL.String(), rd)
		if err != nil {
			t.Fatal(err)
		}
		r2.Header = req.Header.Clone()
		return r2
	}
	authCases := []struct {
		name string
		req  func(t *testing.T) *http.Request
	}{
		{"unsigned GET", func(t *testing.T) *http.Request {
			req, _ := http.NewRequest(http.MethodGet, url+"/v1/logs/"+log, nil)
			return req
		}},
		{"unsigned append", func(t *testing.T) *http.Request {
			req, _ := http.NewRequest(http.MethodPost, url+entriesPath, bytes.NewReader(appendBody(tok, log, valid)))
			req.Header.Set("Content-Type", "application/json")
			return req
		}},
		{"tampered Content-Digest", func(t *testing.T) *http.Request {
			body := appendBody(tok, log, valid)
			req := signed(t, http.MethodPost, entriesPath, body, tok.ID(), tok.SigningKey(), time.Now())
			other := appendBody(tok, log, string(event("user.login", "mallory")))
			r2 := clone(t, req, other)
			r2.Header.Set("Content-Digest", httpsig.ContentDigest(other))
			return r2
		}},
		{"body changed under the signed digest", func(t *testing.T) *http.Request {
			body := appendBody(tok, log, valid)
			req := signed(t, http.MethodPost, entriesPath, body, tok.ID(), tok.SigningKey(), time.Now())
			return clone(t, req, appendBody(tok, log, string(event("user.login", "mallory"))))
		}},
		{"Content-Digest removed", func(t *testing.T) *http.Request {
			body := appendBody(tok, log, valid)
			req := signed(t, http.MethodPost, entriesPath, body, tok.ID(), tok.SigningKey(), time.Now())
			req.Header.Del("Content-Digest")
			return req
		}},
		{"signed for another path", func(t *testing.T) *http.Request {
			req := signed(t, http.MethodGet, "/v1/logs/"+log, nil, tok.ID(), tok.SigningKey(), time.Now())
			r2 := clone(t, req, nil)
			r2.URL.Path = "/v1/logs/" + log + "/checkpoint"
			return r2
		}},
		{"stale created", func(t *testing.T) *http.Request {
			return signed(t, http.MethodGet, "/v1/logs/"+log, nil, tok.ID(), tok.SigningKey(), time.Now().Add(-10*time.Minute))
		}},
		{"created in the future", func(t *testing.T) *http.Request {
			return signed(t, http.MethodGet, "/v1/logs/"+log, nil, tok.ID(), tok.SigningKey(), time.Now().Add(10*time.Minute))
		}},
		{"unknown key", func(t *testing.T) *http.Request {
			return signed(t, http.MethodGet, "/v1/logs/"+log, nil, other.ID(), other.SigningKey(), time.Now())
		}},
		{"admin key id, another key's signature", func(t *testing.T) *http.Request {
			return signed(t, http.MethodGet, "/v1/logs/"+log, nil, tok.ID(), other.SigningKey(), time.Now())
		}},
	}
	for _, tc := range authCases {
		t.Run("auth/"+tc.name, func(t *testing.T) {
			resp, body := doRequest(t, plain, tc.req(t))
			checkAPIError(t, resp, body, http.StatusUnauthorized, api.CodeUnauthorized)
			if got := logSize(t, c, log); got != 1 {
				t.Errorf("log size %d, want 1", got)
			}
		})
	}

	t.Run("auth/replayed request", func(t *testing.T) {
		size := logSize(t, c, log)
		body := appendBody(tok, log, string(event("user.login", "replay")))
		req := signed(t, http.MethodPost, entriesPath, body, tok.ID(), tok.SigningKey(), time.Now())
		again := clone(t, req, body)
		resp, b := doRequest(t, plain, req)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("first request: %d %s", resp.StatusCode, b)
		}
		resp, b = doRequest(t, plain, again)
		checkAPIError(t, resp, b, http.StatusUnauthorized, api.CodeUnauthorized)
		if got := logSize(t, c, log); got != size+1 {
			t.Errorf("log size %d, want %d", got, size+1)
		}
		// A replayed GET is refused too.
		get := signed(t, http.MethodGet, "/v1/logs/"+log, nil, tok.ID(), tok.SigningKey(), time.Now())
		get2 := clone(t, get, nil)
		if resp, b := doRequest(t, plain, get); resp.StatusCode != http.StatusOK {
			t.Fatalf("first GET: %d %s", resp.StatusCode, b)
		}
		resp, b = doRequest(t, plain, get2)
		checkAPIError(t, resp, b, http.StatusUnauthorized, api.CodeUnauthorized)
	})
}

func TestRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	url, tok, stop := startNode(t, dir)
	c := newClient(t, url, tok)
	v := verifierFor(t, c, dir)
	createLog(t, c, "chain")
	var evs []json.RawMessage
	for i := range 13 {
		evs = append(evs, event("before.restart", fmt.Sprintf("u%d", i), fmt.Sprintf(`"id":"e%d"`, i)))
	}
	before := mustAppend(t, c, "chain", evs...)
	mustAppend(t, c, "chain", event("before.restart", "last"))
	cp1, err := c.Latest(ctx, v, "chain", nil)
	if err != nil {
		t.Fatal(err)
	}
	sys1, err := c.Latest(ctx, v, api.SystemLog, nil)
	if err != nil {
		t.Fatal(err)
	}
	stop()

	url, tok2, _ := startNode(t, dir)
	if tok2 != tok {
		t.Fatal("the admin token changed across a restart")
	}
	c = newClient(t, url, tok)
	v2 := verifierFor(t, c, dir)
	if v2.Key() != v.Key() {
		t.Fatalf("verifier key changed across a restart: %q, then %q", v.Key(), v2.Key())
	}
	if got := logSize(t, c, "chain"); got != cp1.Size {
		t.Fatalf("size after restart %d, want %d", got, cp1.Size)
	}
	// Idempotency survives the restart.
	r := mustAppend(t, c, "chain", evs[4])[0]
	if !r.Duplicate || r.Index != before[4].Index {
		t.Errorf("retry after restart: %+v, want duplicate of %d", r, before[4].Index)
	}
	var more []json.RawMessage
	for i := range 300 {
		more = append(more, event("after.restart", fmt.Sprintf("u%d", i)))
	}
	after := mustAppend(t, c, "chain", more...)
	if after[0].Index != cp1.Size {
		t.Errorf("first index after restart %d, want %d", after[0].Index, cp1.Size)
	}
	for _, r := range after {
		if _, err := v.VerifyReceipt(r, c.PublicKey()); err != nil {
			t.Fatalf("receipt %d: %v", r.Index, err)
		}
	}

	// The chain continues across the restart.
	cp2, err := c.Latest(ctx, v, "chain", nil)
	if err != nil {
		t.Fatal(err)
	}
	var prev [32]byte
	for start := int64(0); start < cp2.Size; {
		es, err := c.Entries(ctx, "chain", start, cp2.Size)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			pe, err := entry.Parse(e.Data)
			if err != nil {
				t.Fatalf("entry %d: %v", e.Index, err)
			}
			if pe.Index != e.Index || pe.Prev != prev {
				t.Fatalf("entry %d: index %d, prev %s, want prev %x", e.Index, pe.Index, pe.Prev, prev)
			}
			prev = entry.LeafHash(e.Data)
		}
		start += int64(len(es))
	}

	// The checkpoint before the restart is consistent with the one after.
	proof, err := c.ConsistencyProof(ctx, "chain", cp1.Size, cp2.Size)
	if err != nil {
		t.Fatal(err)
	}
	if err := client.VerifyConsistency(cp1, cp2, proof.Hashes); err != nil {
		t.Errorf("checkpoints across the restart are not consistent: %v", err)
	}
	if _, err := c.Latest(ctx, v, api.SystemLog, &sys1); err != nil {
		t.Errorf("_system across the restart: %v", err)
	}
	// And the whole thing audits.
	reg, _, err := c.AuditSystem(ctx, v, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AuditLog(ctx, v, "chain", cp2, reg, nil); err != nil {
		t.Errorf("AuditLog: %v", err)
	}
}

func TestTamper(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	url, tok, stop := startNode(t, dir)
	c := newClient(t, url, tok)
	v := verifierFor(t, c, dir)
	createLog(t, c, "tamper")
	var evs []json.RawMessage
	for i := range 20 {
		evs = append(evs, event("doc.read", fmt.Sprintf("user-a%02d", i)))
	}
	mustAppend(t, c, "tamper", evs...)
	stop()

	// Change one byte of entry 7's actor id behind the server's back.
	old := []byte(`"actor":{"id":"user-a07"`)
	forged := tamperEntry(t, dir, "tamper", 7, func(data []byte) []byte {
		i := bytes.Index(data, old)
		if i < 0 {
			t.Fatalf("entry 7 %s lacks %s", data, old)
		}
		f := bytes.Clone(data)
		f[i+len(`"actor":{"id":"user-`)] = 'b'
		return f
	})

	url, tok, _ = startNode(t, dir)
	c = newClient(t, url, tok)
	reg, _, err := c.AuditSystem(ctx, v, nil)
	if err != nil {
		t.Fatalf("AuditSystem: %v", err)
	}
	cp, err := c.Latest(ctx, v, "tamper", nil)
	if err != nil {
		t.Fatal(err)
	}
	err = c.AuditLog(ctx, v, "tamper", cp, reg, nil)
	var ee *client.EntryError
	if !errors.As(err, &ee) {
		t.Fatalf("AuditLog of a tampered log: %v, want a *client.EntryError", err)
	}
	if ee.Index != 7 || ee.Log != "tamper" || !errors.Is(err, client.ErrVerification) {
		t.Errorf("AuditLog: %v (log %q, index %d), want entry 7", err, ee.Log, ee.Index)
	}
	// The forged entry's inclusion proof does not verify either.
	e, err := c.Entry(ctx, "tamper", 7, true)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(e.Data, forged) {
		t.Fatalf("served entry 7 is not the forged one")
	}
	if _, err := v.VerifyEntry(e); err == nil {
		t.Error("the forged entry 7 verifies against the checkpoint")
	}
	// Entries before it still do.
	e, err = c.Entry(ctx, "tamper", 6, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifyEntry(e); err != nil {
		t.Errorf("entry 6: %v", err)
	}
}

func TestConcurrentAppendsRace(t *testing.T) {
	const (
		workers   = 16
		perLog    = 50 // events per worker and log
		batchSize = 10
		batches   = 3 // batches of batchSize, the rest singly
	)
	logs := []string{"race-a", "race-b", "race-c"}
	dir := t.TempDir()
	ctx := context.Background()
	url, tok, _ := startNode(t, dir)
	admin := newClient(t, url, tok)
	v := verifierFor(t, admin, dir)
	for _, l := range logs {
		createLog(t, admin, l)
	}

	type result struct {
		log string
		rs  []api.Receipt
		err error
	}
	results := make(chan result, workers*len(logs)*perLog)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := client.New(url, tok) // some workers share nothing
			if w%2 == 0 {
				c = admin // others share one client
			}
			if err != nil {
				results <- result{err: err}
				return
			}
			for _, l := range logs {
				sent := 0
				for b := range batches {
					var evs []json.RawMessage
					for i := range batchSize {
						evs = append(evs, event("race.batch", fmt.Sprintf("w%d-b%d-%d", w, b, i)))
					}
					rs, err := c.Append(ctx, l, evs...)
					results <- result{log: l, rs: rs, err: err}
					sent += batchSize
				}
				for i := sent; i < perLog; i++ {
					rs, err := c.Append(ctx, l, event("race.single", fmt.Sprintf("w%d-s%d", w, i), fmt.Sprintf(`"source":"w%d","seq":%d`, w, i)))
					results <- result{log: l, rs: rs, err: err}
				}
			}
		}()
	}
	wg.Wait()
	close(results)

	seen := map[string]map[int64]bool{}
	for _, l := range logs {
		seen[l] = map[int64]bool{}
	}
	for r := range results {
		if r.err != nil {
			t.Fatalf("append: %v", r.err)
		}
		for _, rc := range r.rs {
			if rc.Log != r.log || rc.Duplicate {
				t.Fatalf("receipt %+v for log %q", rc, r.log)
			}
			if seen[r.log][rc.Index] {
				t.Fatalf("log %q: index %d given twice", r.log, rc.Index)
			}
			seen[r.log][rc.Index] = true
			if _, err := v.VerifyReceipt(rc, admin.PublicKey()); err != nil {
				t.Fatalf("log %q receipt %d: %v", r.log, rc.Index, err)
			}
		}
	}
	reg, _, err := admin.AuditSystem(ctx, v, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range logs {
		want := int64(workers * perLog)
		if int64(len(seen[l])) != want {
			t.Errorf("log %q: %d receipts, want %d", l, len(seen[l]), want)
		}
		cp, err := admin.Latest(ctx, v, l, nil)
		if err != nil {
			t.Fatal(err)
		}
		if cp.Size != want {
			t.Errorf("log %q: size %d, want %d", l, cp.Size, want)
		}
		if err := admin.AuditLog(ctx, v, l, cp, reg, nil); err != nil {
			t.Errorf("AuditLog(%q): %v", l, err)
		}
	}
}

// TestLogWithoutCheckpoint: a log whose row was committed but whose first
// (empty) checkpoint was not, as after a crash (or a Close racing
// CreateLog) between Store.CreateLog and the sequencer's first commit.
// Such a log must not break the API: it should be served as an empty log
// with a signed checkpoint.
func TestLogWithoutCheckpoint(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	url, tok, stop := startNode(t, dir)
	c := newClient(t, url, tok)
	v := verifierFor(t, c, dir)
	createLog(t, c, "ok")
	stop()

	insertBareLog(t, dir, "half")

	url, tok, _ = startNode(t, dir)
	c = newClient(t, url, tok)
	if _, err := c.Logs(ctx); err != nil {
		t.Errorf("Logs: %v", err)
	}
	if l, err := c.Log(ctx, "half"); err != nil || l.Size != 0 {
		t.Errorf("Log(half) = %+v, %v", l, err)
	}
	if cp, err := c.Latest(ctx, v, "half", nil); err != nil || cp.Size != 0 {
		t.Errorf("Latest(half) = %+v, %v", cp, err)
	}
}
