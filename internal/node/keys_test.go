package node_test

// End-to-end tests of the provisioning-key lifecycle: who may do what
// (TestAccessMatrix), a stolen key (TestCompromiseDrill), rotation while
// producers write (TestRotationUnderLoad), the registry as the fold of
// _system across a restart (TestRegistryAfterRestart), bearer tokens
// (TestBearerMode) and refused lifecycle changes (TestLifecycleRefusals).

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
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/client"
	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/httpsig"
	"github.com/vellum-audit/vellum/internal/jcs"
	"github.com/vellum-audit/vellum/internal/keys"
	"github.com/vellum-audit/vellum/internal/ledger"
	"github.com/vellum-audit/vellum/internal/node"
)

// openKeysNode is startNode that also returns the node, for tests that look
// at its registry and store.
func openKeysNode(t *testing.T, dir string) (n *node.Node, url, adminToken string, stop func()) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	}
	n, err := node.Open(context.Background(), node.Config{Dir: dir, OriginPrefix: testOriginPrefix, Version: "test", Logger: logger, OpenStore: storeOpener(t, dir)})
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
			srv.Close()
			if err := n.Close(); err != nil {
				t.Errorf("closing the node: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return n, srv.URL, strings.TrimSpace(string(tok)), stop
}

func mustToken(t *testing.T, s string) *keys.Token {
	t.Helper()
	tok, err := keys.ParseToken(s)
	if err != nil {
		t.Fatalf("ParseToken: %v", err)
	}
	return tok
}

func newToken(t *testing.T) *keys.Token {
	t.Helper()
	tok, err := keys.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func mustCreateKey(t *testing.T, admin *client.Client, o client.KeyOptions) client.NewKey {
	t.Helper()
	nk, err := admin.CreateKey(context.Background(), o)
	if err != nil {
		t.Fatalf("CreateKey(%s): %v", o.Name, err)
	}
	if nk.Key.ID == "" || (o.PublicKey == nil && nk.Token == "") {
		t.Fatalf("CreateKey(%s) = %+v", o.Name, nk.Key)
	}
	return nk
}

// waitFor polls cond every 50ms until it holds or the deadline passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func keyStatus(t *testing.T, admin *client.Client, id string) string {
	t.Helper()
	k, err := admin.Key(context.Background(), id)
	if err != nil {
		t.Fatalf("Key(%s): %v", id, err)
	}
	return k.Status
}

// sysEvent is a recorded event of _system or _access, decoded.
type sysEvent struct {
	Index   int64
	KeyID   string // of the entry
	Auth    string
	Action  string       `json:"action"`
	Actor   api.Actor    `json:"actor"`
	Targets []api.Target `json:"targets"`
	Outcome string       `json:"outcome"`
	Meta    struct {
		Method string `json:"method"`
		Path   string `json:"path"`
		Query  string `json:"query"`
		Status int    `json:"status"`
		Reason string `json:"reason"`
		KeyID  string `json:"key_id"` // key.expire, key.revoke, key.update
	} `json:"metadata"`
}

// readEvents reads entries [start, size) of a server log with c and decodes
// them.
func readEvents(t *testing.T, c *client.Client, log string, start int64) []sysEvent {
	t.Helper()
	ctx := context.Background()
	size := logSize(t, c, log)
	var out []sysEvent
	for start < size {
		es, err := c.Entries(ctx, log, start, size)
		if err != nil {
			t.Fatalf("Entries(%s, %d): %v", log, start, err)
		}
		if len(es) == 0 {
			t.Fatalf("Entries(%s, %d, %d): nothing", log, start, size)
		}
		for _, e := range es {
			pe, err := entry.Parse(e.Data)
			if err != nil {
				t.Fatalf("%s entry %d: %v", log, e.Index, err)
			}
			ev := sysEvent{Index: e.Index, KeyID: pe.KeyID, Auth: pe.Auth}
			if err := json.Unmarshal(pe.Event, &ev); err != nil {
				t.Fatalf("%s entry %d: %v", log, e.Index, err)
			}
			out = append(out, ev)
		}
		start += int64(len(es))
	}
	return out
}

// accessMatches returns the _access records from start about method and
// path by actor.
func accessMatches(t *testing.T, admin *client.Client, start int64, method, path, actor string) []sysEvent {
	t.Helper()
	var out []sysEvent
	for _, ev := range readEvents(t, admin, api.AccessLog, start) {
		if ev.Meta.Method == method && ev.Meta.Path == path && ev.Actor.ID == actor {
			out = append(out, ev)
		}
	}
	return out
}

// checkRefusalRecorded checks that exactly one access.refused record from
// start is about this request, by actor, with the status and a reason.
func checkRefusalRecorded(t *testing.T, admin *client.Client, start int64, method, path, actor string, status int, reasonHas string) sysEvent {
	t.Helper()
	ms := accessMatches(t, admin, start, method, path, actor)
	if len(ms) != 1 {
		t.Fatalf("_access from %d: %d records of %s %s by %s, want 1: %+v", start, len(ms), method, path, actor, ms)
	}
	ev := ms[0]
	if ev.Action != "access.refused" || ev.Outcome != "failure" || ev.KeyID != entry.ServerKeyID || ev.Auth != entry.AuthServer {
		t.Errorf("_access %d: action %q outcome %q key %q auth %q, want access.refused, failure, by the server", ev.Index, ev.Action, ev.Outcome, ev.KeyID, ev.Auth)
	}
	if ev.Meta.Status != status {
		t.Errorf("_access %d: status %d, want %d", ev.Index, ev.Meta.Status, status)
	}
	if strings.TrimSpace(ev.Meta.Reason) == "" {
		t.Errorf("_access %d: no reason recorded", ev.Index)
	}
	if reasonHas != "" && !strings.Contains(ev.Meta.Reason, reasonHas) {
		t.Errorf("_access %d: reason %q does not mention %q", ev.Index, ev.Meta.Reason, reasonHas)
	}
	wantType := "key"
	if actor == "anonymous" {
		wantType = "anonymous"
	}
	if ev.Actor.Type != wantType || ev.Actor.IP != "127.0.0.1" {
		t.Errorf("_access %d: actor %+v, want type %q from 127.0.0.1", ev.Index, ev.Actor, wantType)
	}
	return ev
}

// lifecycleBody is the body of POST /v1/keys that the SDK sends: one
// lifecycle event signed by signer, for _system. It is built by hand so
// that records the SDK would refuse to make can be sent.
func lifecycleBody(t *testing.T, signer *keys.Token, action, target string, metadata any) []byte {
	t.Helper()
	md, err := json.Marshal(metadata)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(api.Event{
		Time: time.Now().UTC().Format(time.RFC3339Nano), Action: action,
		Actor:   api.Actor{ID: signer.ID(), Type: "key"},
		Targets: []api.Target{{ID: target, Type: "key"}},
		Outcome: "success", Source: "keys-test", Metadata: md,
	})
	if err != nil {
		t.Fatal(err)
	}
	canon, err := jcs.Canonicalize(raw)
	if err != nil {
		t.Fatal(err)
	}
	sig := ed25519.Sign(signer.SigningKey(), entry.Message(api.SystemLog, canon))
	body, err := json.Marshal(api.AppendRequest{Events: []api.SignedEvent{{Event: canon, KeyID: signer.ID(), Sig: base64.StdEncoding.EncodeToString(sig)}}})
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// specFor is a key.create spec for tok.
func specFor(tok *keys.Token, role string, scopes ...string) keys.Spec {
	if len(scopes) == 0 {
		scopes = keys.RoleScopes[role]
	}
	return keys.Spec{ID: tok.ID(), Name: "made-by-hand", PublicKey: tok.PublicKey(), Role: role, Scopes: scopes}
}

// signedRequest builds a request to base+path signed (RFC 9421) by tok.
func signedRequest(t *testing.T, method, url string, body []byte, tok *keys.Token) *http.Request {
	t.Helper()
	req := newRequest(t, method, url, body)
	if err := httpsig.Sign(req, nilIfEmpty(body), tok.ID(), tok.SigningKey(), time.Now()); err != nil {
		t.Fatal(err)
	}
	return req
}

func newRequest(t *testing.T, method, url string, body []byte) *http.Request {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}

func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

func statusOf(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return http.StatusOK
	}
	return asClientError(t, err).Status
}

// TestAccessMatrix sends a request to every endpoint as every kind of key
// (valid with each role, and each way of being refused) and checks the
// status, that every refusal and every successful read is on the record in
// _access, and that 401 answers do not say which check failed.
func TestAccessMatrix(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	url, adminTok, _ := startNode(t, dir)
	admin := newClient(t, url, adminTok)
	genesis := mustToken(t, adminTok)
	createLog(t, admin, "app")
	createLog(t, admin, "other")
	mustAppend(t, admin, "app", event("seed", "alice"))
	mustAppend(t, admin, "other", event("seed", "alice"))

	mk := func(o client.KeyOptions) *keys.Token {
		t.Helper()
		return mustToken(t, mustCreateKey(t, admin, o).Token)
	}
	// The key that expires is made first, so that waiting for it overlaps
	// with making the others.
	expired := mk(client.KeyOptions{Name: "expired", Role: keys.RoleWriter, Scopes: []string{"append:app"}, Expires: time.Now().Add(1500 * time.Millisecond)})
	writer := mk(client.KeyOptions{Name: "writer", Role: keys.RoleWriter, Scopes: []string{"append:app"}})
	reader := mk(client.KeyOptions{Name: "reader", Role: keys.RoleReader})
	auditor := mk(client.KeyOptions{Name: "auditor", Role: keys.RoleAuditor})
	admin2 := mk(client.KeyOptions{Name: "admin2", Role: keys.RoleAdmin})
	revoked := mk(client.KeyOptions{Name: "revoked", Role: keys.RoleWriter, Scopes: []string{"append:app"}})
	if _, err := admin.RevokeKey(ctx, revoked.ID(), "matrix: revoked key"); err != nil {
		t.Fatal(err)
	}
	pending := mk(client.KeyOptions{Name: "pending", Role: keys.RoleWriter, Scopes: []string{"append:app"}, NotBefore: time.Now().Add(time.Hour)})
	cidr := mk(client.KeyOptions{Name: "cidr", Role: keys.RoleAdmin, CIDRs: []string{"10.0.0.0/8"}})
	limited := mk(client.KeyOptions{Name: "limited", Role: keys.RoleReader, Rate: "1/h"})
	unknown := newToken(t) // never registered
	thief := newToken(t)   // signs requests claiming the writer's key id

	waitFor(t, 10*time.Second, "the expired key to expire", func() bool { return keyStatus(t, admin, expired.ID()) == "expired" })
	if s := keyStatus(t, admin, pending.ID()); s != "pending" {
		t.Fatalf("pending key has status %q", s)
	}
	if s := keyStatus(t, admin, revoked.ID()); s != "revoked" {
		t.Fatalf("revoked key has status %q", s)
	}

	plain := &http.Client{}
	signWith := func(id string, key ed25519.PrivateKey) func(t *testing.T, req *http.Request, body []byte) {
		return func(t *testing.T, req *http.Request, body []byte) {
			t.Helper()
			if err := httpsig.Sign(req, nilIfEmpty(body), id, key, time.Now()); err != nil {
				t.Fatal(err)
			}
		}
	}
	type state struct {
		name  string
		log   string      // the log named in log paths
		tok   *keys.Token // signs the events in bodies
		self  string      // key id for GET /v1/keys/{self}
		actor string      // actor id _access must record
		sign  func(t *testing.T, req *http.Request, body []byte)
	}
	plainState := func(name string, tok *keys.Token) state {
		return state{name: name, log: "app", tok: tok, self: tok.ID(), actor: tok.ID(), sign: signWith(tok.ID(), tok.SigningKey())}
	}
	// Column order of the matrix below.
	states := []state{
		plainState("writer", writer),
		plainState("reader", reader),
		plainState("auditor", auditor),
		plainState("admin", admin2),
		plainState("revoked", revoked),
		plainState("expired", expired),
		plainState("not-yet-valid", pending),
		plainState("unknown", unknown),
		{name: "forged", log: "app", tok: thief, self: writer.ID(), actor: writer.ID(), sign: signWith(writer.ID(), thief.SigningKey())},
		{name: "malformed", log: "app", tok: writer, self: writer.ID(), actor: "anonymous", sign: func(t *testing.T, req *http.Request, body []byte) {
			signWith(writer.ID(), writer.SigningKey())(t, req, body)
			req.Header.Set("Signature-Input", `sig1=("@method" "@target-uri";created=oops`)
		}},
		plainState("outside-cidr", cidr),
		{name: "out-of-scope", log: "other", tok: writer, self: writer.ID(), actor: writer.ID(), sign: signWith(writer.ID(), writer.SigningKey())},
		plainState("rate-limited", limited),
	}

	// The rate-limited key spends its one request (the bucket holds one token
	// and refills at one an hour).
	{
		req := signedRequest(t, http.MethodGet, url+api.PathServer, nil, limited)
		if resp, b := doRequest(t, plain, req); resp.StatusCode != http.StatusOK {
			t.Fatalf("first request of the rate-limited key: %d %s", resp.StatusCode, b)
		}
	}

	logN := 0
	type endpoint struct {
		name   string
		method string
		path   func(st state) string // with the query, if any
		body   func(t *testing.T, st state) []byte
	}
	logPath := func(suffix string) func(st state) string {
		return func(st state) string { return "/v1/logs/" + st.log + suffix }
	}
	fixed := func(p string) func(st state) string { return func(state) string { return p } }
	const (
		ok  = http.StatusOK
		crt = http.StatusCreated
		una = http.StatusUnauthorized
		frb = http.StatusForbidden
		lim = http.StatusTooManyRequests
	)
	matrix := []struct {
		ep   endpoint
		want [13]int // in the order of states
	}{
		// Columns: writer, reader, auditor, admin, revoked, expired,
		// not-yet-valid, unknown, forged, malformed, outside-cidr,
		// out-of-scope, rate-limited.
		{endpoint{"server info", "GET", fixed(api.PathServer), nil}, [13]int{ok, ok, ok, ok, una, una, una, una, una, una, frb, ok, lim}},
		{endpoint{"list logs", "GET", fixed(api.PathLogs), nil}, [13]int{ok, ok, ok, ok, una, una, una, una, una, una, frb, ok, lim}},
		{endpoint{"create log", "POST", fixed(api.PathLogs), func(t *testing.T, st state) []byte {
			logN++
			return []byte(fmt.Sprintf(`{"name":"matrix-%d"}`, logN))
		}}, [13]int{frb, frb, frb, crt, una, una, una, una, una, una, frb, frb, lim}},
		{endpoint{"get log", "GET", logPath(""), nil}, [13]int{frb, ok, ok, ok, una, una, una, una, una, una, frb, frb, lim}},
		{endpoint{"append", "POST", logPath("/entries"), func(t *testing.T, st state) []byte {
			return appendBody(st.tok, st.log, string(event("matrix.append", st.name)))
		}}, [13]int{ok, frb, frb, ok, una, una, una, una, una, una, frb, frb, frb}},
		{endpoint{"entries range", "GET", logPath("/entries?start=0&end=1"), nil}, [13]int{frb, ok, ok, ok, una, una, una, una, una, una, frb, frb, lim}},
		{endpoint{"entry", "GET", logPath("/entries/0"), nil}, [13]int{frb, ok, ok, ok, una, una, una, una, una, una, frb, frb, lim}},
		{endpoint{"checkpoint", "GET", logPath("/checkpoint"), nil}, [13]int{frb, ok, ok, ok, una, una, una, una, una, una, frb, frb, lim}},
		{endpoint{"inclusion proof", "GET", logPath("/proof/inclusion?index=0&size=1"), nil}, [13]int{frb, ok, ok, ok, una, una, una, una, una, una, frb, frb, lim}},
		{endpoint{"consistency proof", "GET", logPath("/proof/consistency?old=1&new=1"), nil}, [13]int{frb, ok, ok, ok, una, una, una, una, una, una, frb, frb, lim}},
		{endpoint{"tile", "GET", logPath("/tile/0/000.p/1"), nil}, [13]int{frb, ok, ok, ok, una, una, una, una, una, una, frb, frb, lim}},
		// A reserved log: only auditors and admins read it; the rate-limited
		// reader is refused by scope before its rate is looked at.
		{endpoint{"_access checkpoint", "GET", fixed("/v1/logs/_access/checkpoint"), nil}, [13]int{frb, frb, ok, ok, una, una, una, una, una, una, frb, frb, frb}},
		{endpoint{"list keys", "GET", fixed(api.PathKeys), nil}, [13]int{frb, frb, frb, ok, una, una, una, una, una, una, frb, frb, frb}},
		{endpoint{"create key", "POST", fixed(api.PathKeys), func(t *testing.T, st state) []byte {
			nt := newToken(t)
			return lifecycleBody(t, st.tok, keys.ActionKeyCreate, nt.ID(), keys.CreateRecord{Key: specFor(nt, keys.RoleReader)})
		}}, [13]int{frb, frb, frb, ok, una, una, una, una, una, una, frb, frb, frb}},
		{endpoint{"get own key", "GET", func(st state) string { return api.PathKeys + "/" + st.self }, nil}, [13]int{ok, ok, ok, ok, una, una, una, una, una, una, frb, ok, lim}},
		{endpoint{"get another key", "GET", fixed(api.PathKeys + "/" + genesis.ID()), nil}, [13]int{frb, frb, frb, ok, una, una, una, una, una, una, frb, frb, lim}},
	}

	if len(states) != len(matrix[0].want) {
		t.Fatalf("%d states for %d columns", len(states), len(matrix[0].want))
	}
	var body401 []byte
	appended := map[string]int64{"app": 1, "other": 1}
	for _, row := range matrix {
		for i, st := range states {
			want := row.want[i]
			t.Run(row.ep.name+"/"+st.name, func(t *testing.T) {
				pathQ := row.ep.path(st)
				path, query, _ := strings.Cut(pathQ, "?")
				var body []byte
				if row.ep.body != nil {
					body = row.ep.body(t, st)
				}
				start := logSize(t, admin, api.AccessLog)
				req := newRequest(t, row.ep.method, url+pathQ, body)
				st.sign(t, req, body)
				resp, got := doRequest(t, plain, req)
				if resp.StatusCode != want {
					t.Fatalf("%s %s as %s: %d %s, want %d", row.ep.method, pathQ, st.name, resp.StatusCode, got, want)
				}
				switch {
				case want == una:
					checkAPIError(t, resp, got, una, api.CodeUnauthorized)
					if body401 == nil {
						body401 = got
					} else if !bytes.Equal(got, body401) {
						t.Errorf("401 body %q differs from another 401's %q: it tells which check failed", got, body401)
					}
				case want == frb:
					checkAPIError(t, resp, got, frb, api.CodeForbidden)
				case want == lim:
					checkAPIError(t, resp, got, lim, api.CodeRateLimited)
					if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
						t.Errorf("429 with Retry-After %q, want a positive number of seconds", resp.Header.Get("Retry-After"))
					}
				}
				if want >= 400 {
					ev := checkRefusalRecorded(t, admin, start, row.ep.method, path, st.actor, want, "")
					if query != "" && ev.Meta.Query != query {
						t.Errorf("_access %d: query %q, want %q", ev.Index, ev.Meta.Query, query)
					}
					return
				}
				ms := accessMatches(t, admin, start, row.ep.method, path, st.actor)
				if row.ep.method != http.MethodGet {
					// Writes are on the record in their own logs, not in _access.
					if len(ms) != 0 {
						t.Errorf("successful %s %s has %d _access records, want none", row.ep.method, path, len(ms))
					}
					if row.ep.name == "append" {
						appended[st.log]++
					}
					return
				}
				if len(ms) != 1 {
					t.Fatalf("_access from %d: %d records of %s %s by %s, want 1", start, len(ms), row.ep.method, path, st.actor)
				}
				ev := ms[0]
				if ev.Action != "access.read" || ev.Outcome != "success" || ev.Meta.Status != want || ev.Meta.Reason != "" || ev.Meta.Query != query {
					t.Errorf("_access %d: %+v, want access.read, success, status %d, query %q, no reason", ev.Index, ev, want, query)
				}
				if strings.HasPrefix(path, "/v1/logs/") && path != api.PathLogs {
					l := strings.Split(strings.TrimPrefix(path, "/v1/logs/"), "/")[0]
					if len(ev.Targets) != 1 || ev.Targets[0].ID != l || ev.Targets[0].Type != "log" {
						t.Errorf("_access %d: targets %+v, want log %q", ev.Index, ev.Targets, l)
					}
				}
			})
		}
	}
	if body401 == nil {
		t.Fatal("no 401 answer was seen")
	}
	// Refused appends recorded nothing.
	for l, want := range appended {
		if got := logSize(t, admin, l); got != want {
			t.Errorf("log %q has %d entries, want %d", l, got, want)
		}
	}
	// And the record itself audits: _access holds only server entries.
	v := verifierFor(t, admin, dir)
	reg, _, err := admin.AuditSystem(ctx, v, nil)
	if err != nil {
		t.Fatalf("AuditSystem: %v", err)
	}
	for _, l := range []string{"app", api.AccessLog} {
		cp, err := admin.Latest(ctx, v, l, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := admin.AuditLog(ctx, v, l, cp, reg, nil); err != nil {
			t.Errorf("AuditLog(%s): %v", l, err)
		}
	}
}

// forgeEntry appends, behind the server's back, an event to log signed by
// tok: it opens dir's store and ledger directly (the node must be closed)
// with a key resolver that accepts tok whatever the registry says, as
// someone holding the database, the server key and a stolen token could.
// It returns the forged entry's index.
func forgeEntry(t *testing.T, dir, log string, tok *keys.Token, ev json.RawMessage) int64 {
	t.Helper()
	ctx := context.Background()
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	var cfg struct {
		OriginPrefix string `json:"origin_prefix"`
	}
	if err := json.Unmarshal([]byte(read(node.ConfigFile)), &cfg); err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(read(node.ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := note.NewVerifier(read(node.VerifierKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	st := openStore(t, dir)
	defer st.Close()
	l, err := ledger.New(ledger.Config{
		Store: st, Signer: signer, Verifier: verifier, OriginPrefix: cfg.OriginPrefix,
		Keys: func(keyID, _ string, _ time.Time) (ed25519.PublicKey, error) {
			if keyID != tok.ID() {
				return nil, fmt.Errorf("forger: unknown key %s", keyID)
			}
			return tok.PublicKey(), nil
		},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	pe, err := entry.ParseEvent(ev)
	if err != nil {
		t.Fatal(err)
	}
	sig := ed25519.Sign(tok.SigningKey(), entry.Message(log, pe.Canonical))
	rs, err := l.Append(ctx, log, []ledger.Submitted{{Event: pe, KeyID: tok.ID(), Auth: entry.AuthSignature, Sig: sig}})
	if err != nil {
		t.Fatalf("forging an entry: %v", err)
	}
	return rs[0].Index
}

// verifyFull does what `vellum verify --log L --full` does with the client:
// the latest checkpoint (consistent with trusted), then AuditSystem and
// AuditLog.
func verifyFull(ctx context.Context, c *client.Client, v *client.Verifier, log string, trusted *client.Checkpoint) error {
	cur, err := c.Latest(ctx, v, log, trusted)
	if err != nil {
		return err
	}
	reg, _, err := c.AuditSystem(ctx, v, nil)
	if err != nil {
		return err
	}
	return c.AuditLog(ctx, v, log, cur, reg, nil)
}

// TestCompromiseDrill: a writer token is stolen; the thief and the producer
// both use it until the admin revokes it. Both are refused from then on,
// with the refusals on the record; an entry later forged into the database
// with the stolen key is found by a full audit, which names it.
func TestCompromiseDrill(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	url, adminTok, stop := startNode(t, dir)
	admin := newClient(t, url, adminTok)
	v := verifierFor(t, admin, dir)
	createLog(t, admin, "app")

	nk := mustCreateKey(t, admin, client.KeyOptions{Name: "producer", Role: keys.RoleWriter, Scopes: []string{"append:app"}})
	stolen := mustToken(t, nk.Token)
	holders := []struct {
		name string
		c    *client.Client
	}{
		{"producer", newClientOpts(t, url, nk.Token, client.WithRetries(0))},
		{"thief", newClientOpts(t, url, nk.Token, client.WithRetries(0))},
	}
	for _, h := range holders {
		rs := mustAppend(t, h.c, "app", event("order.create", h.name), event("order.pay", h.name))
		for _, r := range rs {
			if _, err := v.VerifyReceipt(r, stolen.PublicKey()); err != nil {
				t.Fatalf("%s: receipt %d: %v", h.name, r.Index, err)
			}
		}
	}
	beforeRevoke, err := admin.Latest(ctx, v, "app", nil)
	if err != nil {
		t.Fatal(err)
	}

	kc, err := admin.RevokeKey(ctx, nk.Key.ID, "compromise drill: token posted to a public paste")
	if err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	if kc.Key.Status != "revoked" || kc.Key.RevokeReason == "" || kc.Receipt.Log != api.SystemLog {
		t.Fatalf("RevokeKey answered %+v", kc)
	}

	for _, h := range holders {
		t.Run("refused/"+h.name, func(t *testing.T) {
			start := logSize(t, admin, api.AccessLog)
			_, err := h.c.Append(ctx, "app", event("order.create", h.name+"-after"))
			if s := statusOf(t, err); s != http.StatusUnauthorized {
				t.Fatalf("append after revocation: %v, want 401", err)
			}
			checkRefusalRecorded(t, admin, start, http.MethodPost, "/v1/logs/app/entries", nk.Key.ID, http.StatusUnauthorized, "revoked")

			start = logSize(t, admin, api.AccessLog)
			_, err = h.c.ServerInfo(ctx)
			if s := statusOf(t, err); s != http.StatusUnauthorized {
				t.Fatalf("read after revocation: %v, want 401", err)
			}
			checkRefusalRecorded(t, admin, start, http.MethodGet, api.PathServer, nk.Key.ID, http.StatusUnauthorized, "revoked")
		})
	}
	if got := logSize(t, admin, "app"); got != beforeRevoke.Size {
		t.Fatalf("app has %d entries after refused appends, want %d", got, beforeRevoke.Size)
	}
	// The revocation is in _system, signed by the admin key, with its reason.
	var sawRevoke bool
	for _, ev := range readEvents(t, admin, api.SystemLog, 0) {
		if ev.Action == keys.ActionKeyRevoke && ev.Meta.KeyID == nk.Key.ID {
			sawRevoke = ev.KeyID == mustToken(t, adminTok).ID() && ev.Auth == entry.AuthSignature
		}
	}
	if !sawRevoke {
		t.Error("no key.revoke entry signed by the admin key in _system")
	}

	// Someone with the database, the server key and the stolen token writes
	// an entry anyway.
	stop()
	forged := forgeEntry(t, dir, "app", stolen, event("funds.transfer", "mallory", `"metadata":{"amount":1000000}`))
	if forged != beforeRevoke.Size {
		t.Fatalf("forged entry at %d, want %d", forged, beforeRevoke.Size)
	}

	url, adminTok, _ = startNode(t, dir)
	admin = newClient(t, url, adminTok)
	// Checkpoints alone cannot tell: the forger signed a consistent one.
	cur, err := admin.Latest(ctx, v, "app", &beforeRevoke)
	if err != nil {
		t.Fatalf("checkpoint after the forgery: %v", err)
	}
	if cur.Size != forged+1 {
		t.Fatalf("app size %d after the forgery, want %d", cur.Size, forged+1)
	}
	reg, _, err := admin.AuditSystem(ctx, v, nil)
	if err != nil {
		t.Fatalf("AuditSystem: %v (_system was not touched)", err)
	}
	// What was written before the revocation stays valid.
	if err := admin.AuditLog(ctx, v, "app", beforeRevoke, reg, nil); err != nil {
		t.Errorf("AuditLog up to the revocation: %v", err)
	}
	checkForged := func(t *testing.T, err error) {
		t.Helper()
		var ee *client.EntryError
		if !errors.As(err, &ee) {
			t.Fatalf("audit of the forged log: %v, want a *client.EntryError", err)
		}
		if ee.Log != "app" || ee.Index != forged || !strings.Contains(ee.Reason, "revoked") || !strings.Contains(ee.Reason, nk.Key.ID) {
			t.Errorf("audit error %v (log %q, index %d), want log app, entry %d, revoked key %s", err, ee.Log, ee.Index, forged, nk.Key.ID)
		}
		if !errors.Is(err, client.ErrVerification) {
			t.Errorf("audit error %v does not wrap ErrVerification", err)
		}
		if want := fmt.Sprintf(`log "app", entry %d:`, forged); !strings.Contains(err.Error(), want) {
			t.Errorf("audit error %q does not say %q", err, want)
		}
	}
	t.Run("AuditLog", func(t *testing.T) {
		checkForged(t, admin.AuditLog(ctx, v, "app", cur, reg, nil))
	})
	t.Run("verify --full", func(t *testing.T) {
		checkForged(t, verifyFull(ctx, admin, v, "app", &beforeRevoke))
		checkForged(t, verifyFull(ctx, admin, v, "app", nil))
	})
}

func newClientOpts(t *testing.T, url, token string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(url, token, opts...)
	if err != nil {
		t.Fatalf("client.New: %v", err)
	}
	return c
}

// TestRotationUnderLoad rotates a writer key while 8 producers append with
// it: each moves to the successor within the overlap and no append fails;
// then the old key expires, is refused, and its expiry is on the record.
func TestRotationUnderLoad(t *testing.T) {
	const (
		producers = 8
		overlap   = 2 * time.Second
	)
	dir := t.TempDir()
	ctx := context.Background()
	url, adminTok, _ := startNode(t, dir)
	admin := newClient(t, url, adminTok)
	v := verifierFor(t, admin, dir)
	createLog(t, admin, "app")
	old := mustCreateKey(t, admin, client.KeyOptions{Name: "producer", Role: keys.RoleWriter, Scopes: []string{"append:app"}})

	var current atomic.Pointer[string] // the token producers should use
	current.Store(&old.Token)
	stop := make(chan struct{})
	type failure struct {
		producer int
		at       time.Time
		key      string
		err      error
	}
	var (
		mu       sync.Mutex
		failures []failure
		byKey    = map[string]int{} // receipts per key id
		perProd  = make([]map[string]int, producers)
		switched = make([]time.Time, producers)
		nSwitch  atomic.Int32
		total    atomic.Int64
	)
	var wg sync.WaitGroup
	for p := range producers {
		perProd[p] = map[string]int{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			tokStr := *current.Load()
			c, err := client.New(url, tokStr, client.WithRetries(0))
			if err != nil {
				mu.Lock()
				failures = append(failures, failure{p, time.Now(), "", err})
				mu.Unlock()
				return
			}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if next := *current.Load(); next != tokStr {
					tokStr = next
					if c, err = client.New(url, tokStr, client.WithRetries(0)); err != nil {
						mu.Lock()
						failures = append(failures, failure{p, time.Now(), "", err})
						mu.Unlock()
						return
					}
					mu.Lock()
					switched[p] = time.Now()
					mu.Unlock()
					nSwitch.Add(1)
				}
				rs, err := c.Append(ctx, "app", event("load.tick", fmt.Sprintf("p%d", p), fmt.Sprintf(`"source":"p%d","seq":%d`, p, i)))
				mu.Lock()
				if err != nil {
					failures = append(failures, failure{p, time.Now(), c.KeyID(), err})
				} else {
					byKey[c.KeyID()] += len(rs)
					perProd[p][c.KeyID()] += len(rs)
					total.Add(int64(len(rs)))
				}
				mu.Unlock()
			}
		}()
	}
	stopProducers := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopProducers()

	waitFor(t, 10*time.Second, "every producer to append with the old key", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range perProd {
			if m[old.Key.ID] == 0 {
				return false
			}
		}
		return true
	})

	rotated := time.Now()
	nk, err := admin.RotateKey(ctx, old.Key.ID, overlap)
	if err != nil {
		t.Fatalf("RotateKey: %v", err)
	}
	if nk.Key.RotatedFrom != old.Key.ID || nk.Key.Status != "active" || !reflect.DeepEqual(nk.Key.Scopes, old.Key.Scopes) || nk.Key.Role != old.Key.Role {
		t.Fatalf("successor %+v", nk.Key)
	}
	oldKey, err := admin.Key(ctx, old.Key.ID)
	if err != nil {
		t.Fatal(err)
	}
	oldExpires, err := time.Parse(time.RFC3339, oldKey.Expires)
	if err != nil || oldKey.RotatedTo != nk.Key.ID || oldKey.Status != "active" {
		t.Fatalf("old key after rotation: %+v (%v)", oldKey, err)
	}
	if d := oldExpires.Sub(rotated); d < overlap-2*time.Second || d > overlap+2*time.Second {
		t.Errorf("old key expires %v after the rotation, want about %v", d, overlap)
	}
	// The old key still works during the overlap.
	overlapChecks := int64(0)
	if time.Until(oldExpires) > overlap/2 {
		mustAppend(t, newClient(t, url, old.Token), "app", event("overlap.check", "admin"))
		overlapChecks++
	}

	current.Store(&nk.Token)
	waitFor(t, 10*time.Second, "every producer to switch to the new key", func() bool { return nSwitch.Load() == producers })
	mu.Lock()
	for p, at := range switched {
		if !at.Before(oldExpires) {
			t.Errorf("producer %d switched at %v, after the overlap ended at %v", p, at, oldExpires)
		}
	}
	mu.Unlock()

	waitFor(t, overlap+10*time.Second, "the old key's status to be expired", func() bool { return keyStatus(t, admin, old.Key.ID) == "expired" })
	// A few more appends with the new key after the overlap.
	after := total.Load()
	waitFor(t, 10*time.Second, "appends after the overlap", func() bool { return total.Load() >= after+2*producers })
	stopProducers()

	mu.Lock()
	for _, f := range failures {
		t.Errorf("producer %d: append with key %s failed at %s (rotation at %s, overlap until %s): %v",
			f.producer, f.key, f.at.Format(time.RFC3339Nano), rotated.Format(time.RFC3339Nano), oldExpires.Format(time.RFC3339Nano), f.err)
	}
	for p, m := range perProd {
		if m[old.Key.ID] == 0 || m[nk.Key.ID] == 0 {
			t.Errorf("producer %d appended %d with the old key and %d with the new, want some of each", p, m[old.Key.ID], m[nk.Key.ID])
		}
	}
	recorded := int64(byKey[old.Key.ID] + byKey[nk.Key.ID])
	mu.Unlock()

	// After the overlap the old token is refused.
	start := logSize(t, admin, api.AccessLog)
	_, err = newClientOpts(t, url, old.Token, client.WithRetries(0)).Append(ctx, "app", event("late", "old-key"))
	if s := statusOf(t, err); s != http.StatusUnauthorized {
		t.Fatalf("append with the old key after the overlap: %v, want 401", err)
	}
	checkRefusalRecorded(t, admin, start, http.MethodPost, "/v1/logs/app/entries", old.Key.ID, http.StatusUnauthorized, "expired")

	// The server records the expiry in _system.
	var expiry *sysEvent
	waitFor(t, 10*time.Second, "a key.expire entry for the old key in _system", func() bool {
		for _, ev := range readEvents(t, admin, api.SystemLog, 0) {
			if ev.Action == keys.ActionKeyExpire && ev.Meta.KeyID == old.Key.ID {
				expiry = &ev
				return true
			}
		}
		return false
	})
	if expiry.KeyID != entry.ServerKeyID || expiry.Auth != entry.AuthServer || len(expiry.Targets) != 1 || expiry.Targets[0].ID != old.Key.ID {
		t.Errorf("key.expire entry %+v, want one by the server about %s", *expiry, old.Key.ID)
	}

	// The log audits fully, and holds exactly what was acknowledged.
	reg, _, err := admin.AuditSystem(ctx, v, nil)
	if err != nil {
		t.Fatalf("AuditSystem: %v", err)
	}
	cp, err := admin.Latest(ctx, v, "app", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.AuditLog(ctx, v, "app", cp, reg, nil); err != nil {
		t.Fatalf("AuditLog: %v", err)
	}
	if want := recorded + overlapChecks; cp.Size != want {
		t.Errorf("app has %d entries, want %d (acknowledged appends and the overlap check)", cp.Size, want)
	}
	if k, err := reg.Get(old.Key.ID); err != nil || !k.ExpiryRecorded || k.RotatedTo != nk.Key.ID {
		t.Errorf("audited registry: old key %+v, %v", k, err)
	}
}

// TestRegistryAfterRestart: after creates, updates, rotations, revocations
// and an expiry, the keys a restarted node serves are the ones it served
// before, and the live registry is the fold of _system.
func TestRegistryAfterRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	n, url, adminTok, stop := openKeysNode(t, dir)
	admin := newClient(t, url, adminTok)
	v := verifierFor(t, admin, dir)
	createLog(t, admin, "app")
	createLog(t, admin, "billing")

	mk := func(o client.KeyOptions) client.NewKey { t.Helper(); return mustCreateKey(t, admin, o) }
	writer := mk(client.KeyOptions{Name: "writer", Description: "to be updated", Role: keys.RoleWriter, Scopes: []string{"append:app"}, Expires: time.Now().Add(48 * time.Hour)})
	reader := mk(client.KeyOptions{Name: "reader", Role: keys.RoleReader})
	auditor := mk(client.KeyOptions{Name: "auditor", Role: keys.RoleAuditor, NotBefore: time.Now().Add(-time.Minute)})
	admin2 := mk(client.KeyOptions{Name: "admin2", Role: keys.RoleAdmin, Rate: "50/s"})
	slow := mk(client.KeyOptions{Name: "slow-rotation", Role: keys.RoleWriter, Scopes: []string{"append:app"}})
	quick := mk(client.KeyOptions{Name: "quick-rotation", Role: keys.RoleWriter, Scopes: []string{"append:billing"}, Expires: time.Now().Add(24 * time.Hour)})
	bearer := mk(client.KeyOptions{Name: "bearer", Role: keys.RoleWriter, Scopes: []string{"append:app"}, Bearer: true})
	external := mk(client.KeyOptions{Name: "external", Role: keys.RoleReader, PublicKey: newToken(t).PublicKey()})

	desc := "updated: rate, CIDRs, expiry and scopes"
	cidrs := []string{"127.0.0.0/8", "10.0.0.0/8"}
	rate := "100/s"
	scopes := []string{"append:app", "append:billing"}
	if _, err := admin.UpdateKey(ctx, writer.Key.ID, client.KeyUpdate{Description: &desc, CIDRs: &cidrs, Rate: &rate, Scopes: &scopes, Expires: time.Now().Add(24 * time.Hour)}); err != nil {
		t.Fatalf("UpdateKey(writer): %v", err)
	}
	far := []string{"10.0.0.0/8"}
	if _, err := admin.UpdateKey(ctx, reader.Key.ID, client.KeyUpdate{CIDRs: &far}); err != nil {
		t.Fatalf("UpdateKey(reader): %v", err)
	}
	slowNext, err := admin.RotateKey(ctx, slow.Key.ID, time.Hour)
	if err != nil {
		t.Fatalf("RotateKey(slow): %v", err)
	}
	quickNext, err := admin.RotateKey(ctx, quick.Key.ID, 500*time.Millisecond)
	if err != nil {
		t.Fatalf("RotateKey(quick): %v", err)
	}
	for id, reason := range map[string]string{
		auditor.Key.ID:  "auditor left",
		admin2.Key.ID:   "too many admins",
		slowNext.Key.ID: "successor leaked",
		bearer.Key.ID:   "bearer token in a URL",
	} {
		if _, err := admin.RevokeKey(ctx, id, reason); err != nil {
			t.Fatalf("RevokeKey(%s): %v", id, err)
		}
	}
	// Keys in use, so that last_used is set (and then ignored).
	w := newClient(t, url, writer.Token)
	mustAppend(t, w, "billing", event("invoice.create", "w"))
	mustAppend(t, newClient(t, url, quickNext.Token), "billing", event("invoice.create", "q"))
	// The quick rotation's old key expires and the server records it.
	waitFor(t, 10*time.Second, "the quick-rotation key's expiry to be recorded", func() bool {
		k, err := n.Registry.Get(quick.Key.ID)
		return err == nil && k.ExpiryRecorded
	})

	behaviour := func(t *testing.T, url string) {
		t.Helper()
		// The updated writer appends to the log its new scopes add, from an
		// address its new CIDRs allow.
		mustAppend(t, newClient(t, url, writer.Token), "billing", event("invoice.pay", "w"))
		// The reader is outside its CIDRs; revoked and expired keys are out.
		for _, tc := range []struct {
			name, token string
			want        int
		}{
			{"reader outside its CIDRs", reader.Token, http.StatusForbidden},
			{"revoked auditor", auditor.Token, http.StatusUnauthorized},
			{"revoked successor", slowNext.Token, http.StatusUnauthorized},
			{"expired rotated key", quick.Token, http.StatusUnauthorized},
			{"slow rotation's old key, in its overlap", slow.Token, http.StatusOK},
		} {
			_, err := newClientOpts(t, url, tc.token, client.WithRetries(0)).ServerInfo(ctx)
			if s := statusOf(t, err); s != tc.want {
				t.Errorf("%s: %v, want %d", tc.name, err, tc.want)
			}
		}
	}
	behaviour(t, url)

	checkFold := func(t *testing.T, n *node.Node, c *client.Client) {
		t.Helper()
		reg, err := node.Fold(ctx, n.Store)
		if err != nil {
			t.Fatalf("Fold: %v", err)
		}
		if !n.Registry.Equal(reg) {
			t.Errorf("the live registry differs from the fold of _system")
		}
		audited, _, err := c.AuditSystem(ctx, v, nil)
		if err != nil {
			t.Fatalf("AuditSystem: %v", err)
		}
		if !audited.Equal(reg) {
			t.Errorf("the auditor's registry differs from the server's fold of _system")
		}
		if got, want := reg.Len(), 11; got != want {
			t.Errorf("%d keys registered, want %d", got, want)
		}
	}
	checkFold(t, n, admin)

	before, err := admin.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sysBefore := logSize(t, admin, api.SystemLog)
	// Spot checks of what the list says.
	byID := map[string]api.Key{}
	for _, k := range before {
		byID[k.ID] = k
	}
	for _, tc := range []struct {
		name string
		got  api.Key
		ok   func(k api.Key) bool
	}{
		{"updated writer", byID[writer.Key.ID], func(k api.Key) bool {
			return k.Status == "active" && k.Rate == rate && reflect.DeepEqual(k.CIDRs, cidrs) && reflect.DeepEqual(k.Scopes, scopes) && k.Description == desc && k.Expires < writer.Key.Expires
		}},
		{"reader", byID[reader.Key.ID], func(k api.Key) bool { return k.Status == "active" && reflect.DeepEqual(k.CIDRs, far) }},
		{"revoked auditor", byID[auditor.Key.ID], func(k api.Key) bool {
			return k.Status == "revoked" && k.RevokeReason == "auditor left" && k.NotBefore != ""
		}},
		{"slow rotation, old", byID[slow.Key.ID], func(k api.Key) bool { return k.Status == "active" && k.RotatedTo == slowNext.Key.ID && k.Expires != "" }},
		{"slow rotation, new", byID[slowNext.Key.ID], func(k api.Key) bool { return k.Status == "revoked" && k.RotatedFrom == slow.Key.ID }},
		{"quick rotation, old", byID[quick.Key.ID], func(k api.Key) bool { return k.Status == "expired" && k.RotatedTo == quickNext.Key.ID }},
		{"quick rotation, new", byID[quickNext.Key.ID], func(k api.Key) bool {
			return k.Status == "active" && k.RotatedFrom == quick.Key.ID && k.Expires != "" && k.LastUsed != ""
		}},
		{"bearer", byID[bearer.Key.ID], func(k api.Key) bool { return k.Status == "revoked" && k.Bearer }},
		{"external", byID[external.Key.ID], func(k api.Key) bool { return k.Status == "active" && k.External }},
	} {
		if !tc.ok(tc.got) {
			t.Errorf("%s: %+v", tc.name, tc.got)
		}
	}

	stop()
	n, url, _, _ = openKeysNode(t, dir)
	admin = newClient(t, url, adminTok)
	after, err := admin.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	strip := func(ks []api.Key) []api.Key {
		out := make([]api.Key, len(ks))
		for i, k := range ks {
			k.LastUsed = ""
			out[i] = k
		}
		return out
	}
	if a, b := strip(before), strip(after); !reflect.DeepEqual(a, b) {
		ja, _ := json.MarshalIndent(a, "", " ")
		jb, _ := json.MarshalIndent(b, "", " ")
		t.Errorf("GET /v1/keys after the restart differs:\nbefore %s\nafter %s", ja, jb)
	}
	checkFold(t, n, admin)
	behaviour(t, url)
	// The restart recorded no lifecycle change (the expiry is recorded once).
	for _, ev := range readEvents(t, admin, api.SystemLog, sysBefore) {
		if keys.IsLifecycle(ev.Action) {
			t.Errorf("_system %d after the restart: %s %+v", ev.Index, ev.Action, ev.Meta)
		}
	}
}

// TestBearerMode: a key made for bearer use appends with a bearer token,
// with events it signs or, when it cannot sign, that the server attests;
// the log audits; bearer tokens of other keys and bearer lifecycle changes
// are refused.
func TestBearerMode(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	url, adminTok, _ := startNode(t, dir)
	admin := newClient(t, url, adminTok)
	v := verifierFor(t, admin, dir)
	createLog(t, admin, "app")

	bk := mustCreateKey(t, admin, client.KeyOptions{Name: "bearer-writer", Role: keys.RoleWriter, Scopes: []string{"append:app"}, Bearer: true})
	if !bk.Key.Bearer {
		t.Fatalf("bearer key %+v", bk.Key)
	}
	btok := mustToken(t, bk.Token)
	plainKey := mustCreateKey(t, admin, client.KeyOptions{Name: "signing-writer", Role: keys.RoleWriter, Scopes: []string{"append:app"}})
	bearerAdmin := mustCreateKey(t, admin, client.KeyOptions{Name: "bearer-admin", Role: keys.RoleAdmin, Bearer: true})

	plain := &http.Client{}
	bearerReq := func(t *testing.T, method, path, token string, body []byte) (*http.Response, []byte) {
		t.Helper()
		req := newRequest(t, method, url+path, body)
		cred := token // a bearer client sends the vlmb_ credential derived from its token
		if tk, err := keys.ParseToken(token); err == nil {
			cred = tk.BearerCredential()
		}
		req.Header.Set("Authorization", "Bearer "+cred)
		return doRequest(t, plain, req)
	}
	checkEntry := func(t *testing.T, data []byte, clientSigned bool) {
		t.Helper()
		e, err := entry.Parse(data)
		if err != nil {
			t.Fatal(err)
		}
		if e.Auth != entry.AuthBearer || e.KeyID != btok.ID() {
			t.Errorf("entry %d: auth %q key %q, want bearer by %s", e.Index, e.Auth, e.KeyID, btok.ID())
		}
		if got := ed25519.Verify(btok.PublicKey(), e.Message(), e.Sig); got != clientSigned {
			t.Errorf("entry %d: signature verifies with the key: %v, want %v", e.Index, got, clientSigned)
		}
	}

	t.Run("SDK with WithBearer", func(t *testing.T) {
		c := newClientOpts(t, url, bk.Token, client.WithBearer())
		rs := mustAppend(t, c, "app", event("bearer.sdk", "a"), event("bearer.sdk", "b"))
		for _, r := range rs {
			checkEntry(t, r.Entry, true)
			if _, err := v.VerifyReceipt(r, btok.PublicKey()); err != nil {
				t.Errorf("receipt %d: %v", r.Index, err)
			}
		}
	})
	t.Run("raw, unsigned events", func(t *testing.T) {
		for _, tc := range []struct{ name, body string }{
			{"no key_id, no sig", `{"events":[{"event":` + string(event("bearer.raw", "c")) + `}]}`},
			{"key_id, no sig", `{"events":[{"event":` + string(event("bearer.raw", "d")) + `,"key_id":"` + btok.ID() + `"}]}`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp, b := bearerReq(t, http.MethodPost, "/v1/logs/app/entries", bk.Token, []byte(tc.body))
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("bearer append: %d %s", resp.StatusCode, b)
				}
				var ar api.AppendResponse
				if err := json.Unmarshal(b, &ar); err != nil || len(ar.Receipts) != 1 {
					t.Fatalf("answer %s: %v", b, err)
				}
				checkEntry(t, ar.Receipts[0].Entry, false)
				if _, err := v.VerifyReceipt(ar.Receipts[0], nil); err != nil {
					t.Errorf("receipt: %v", err)
				}
			})
		}
	})
	t.Run("raw read", func(t *testing.T) {
		// A writer may not read, bearer or not.
		resp, b := bearerReq(t, http.MethodGet, "/v1/logs/app", bk.Token, nil)
		checkAPIError(t, resp, b, http.StatusForbidden, api.CodeForbidden)
		resp, b = bearerReq(t, http.MethodGet, api.PathServer, bk.Token, nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("server info with a bearer token: %d %s", resp.StatusCode, b)
		}
	})

	t.Run("audit", func(t *testing.T) {
		reg, _, err := admin.AuditSystem(ctx, v, nil)
		if err != nil {
			t.Fatalf("AuditSystem: %v", err)
		}
		cp, err := admin.Latest(ctx, v, "app", nil)
		if err != nil {
			t.Fatal(err)
		}
		if cp.Size != 4 {
			t.Errorf("app size %d, want 4", cp.Size)
		}
		if err := admin.AuditLog(ctx, v, "app", cp, reg, nil); err != nil {
			t.Errorf("AuditLog: %v", err)
		}
	})

	t.Run("refused", func(t *testing.T) {
		appendRaw := `{"events":[{"event":` + string(event("bearer.raw", "x")) + `}]}`
		for _, tc := range []struct {
			name, token string
		}{
			{"token of a key without bearer mode", plainKey.Token},
			{"unknown token", newToken(t).Encode()},
			{"malformed token", "vlm_0123456789abcdef_AAAA"},
			{"key id of the bearer key, another secret", func() string {
				nt := newToken(t)
				return strings.Replace(nt.Encode(), nt.ID(), btok.ID(), 1)
			}()},
		} {
			t.Run(tc.name, func(t *testing.T) {
				size := logSize(t, admin, "app")
				resp, b := bearerReq(t, http.MethodPost, "/v1/logs/app/entries", tc.token, []byte(appendRaw))
				checkAPIError(t, resp, b, http.StatusUnauthorized, api.CodeUnauthorized)
				if got := logSize(t, admin, "app"); got != size {
					t.Errorf("app size %d, want %d", got, size)
				}
			})
		}
		t.Run("the whole token instead of the credential", func(t *testing.T) {
			size := logSize(t, admin, "app")
			req := newRequest(t, http.MethodPost, url+"/v1/logs/app/entries", []byte(appendRaw))
			req.Header.Set("Authorization", "Bearer "+bk.Token)
			resp, b := doRequest(t, plain, req)
			checkAPIError(t, resp, b, http.StatusUnauthorized, api.CodeUnauthorized)
			if got := logSize(t, admin, "app"); got != size {
				t.Errorf("app size %d, want %d", got, size)
			}
		})
		t.Run("SDK WithBearer and a key without bearer mode", func(t *testing.T) {
			c := newClientOpts(t, url, plainKey.Token, client.WithBearer(), client.WithRetries(0))
			_, err := c.Append(ctx, "app", event("bearer.sdk", "nope"))
			if s := statusOf(t, err); s != http.StatusUnauthorized {
				t.Errorf("append: %v, want 401", err)
			}
			start := logSize(t, admin, api.AccessLog)
			_, err = c.ServerInfo(ctx)
			if s := statusOf(t, err); s != http.StatusUnauthorized {
				t.Errorf("server info: %v, want 401", err)
			}
			checkRefusalRecorded(t, admin, start, http.MethodGet, api.PathServer, plainKey.Key.ID, http.StatusUnauthorized, "")
		})
	})

	t.Run("lifecycle changes need signatures", func(t *testing.T) {
		sysSize := logSize(t, admin, api.SystemLog)
		for _, tc := range []struct {
			name  string
			token string
		}{
			{"bearer admin", bearerAdmin.Token},
			{"bearer writer", bk.Token},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c := newClientOpts(t, url, tc.token, client.WithBearer(), client.WithRetries(0))
				_, err := c.CreateKey(ctx, client.KeyOptions{Name: "via-bearer", Role: keys.RoleReader})
				if ce := asClientError(t, err); ce.Status != http.StatusForbidden || ce.Code != api.CodeForbidden {
					t.Errorf("CreateKey with a bearer token: %v, want 403", err)
				}
				_, err = c.RevokeKey(ctx, plainKey.Key.ID, "via bearer")
				if s := statusOf(t, err); s != http.StatusForbidden {
					t.Errorf("RevokeKey with a bearer token: %v, want 403", err)
				}
			})
		}
		if got := logSize(t, admin, api.SystemLog); got != sysSize {
			t.Errorf("_system size %d after refused changes, want %d", got, sysSize)
		}
		// The same admin key, signing its request, may.
		c := newClientOpts(t, url, bearerAdmin.Token)
		if _, err := c.CreateKey(ctx, client.KeyOptions{Name: "via-signature", Role: keys.RoleReader}); err != nil {
			t.Errorf("CreateKey with a signed request by the bearer admin key: %v", err)
		}
	})
}

// TestLifecycleRefusals: lifecycle changes that are not allowed are
// refused with the right status, and none of them reaches _system.
func TestLifecycleRefusals(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	url, adminTok, _ := startNode(t, dir)
	admin := newClient(t, url, adminTok)
	atok := mustToken(t, adminTok)
	createLog(t, admin, "app")

	writer := mustCreateKey(t, admin, client.KeyOptions{Name: "writer", Role: keys.RoleWriter, Scopes: []string{"append:app"}, Expires: time.Now().Add(time.Hour)})
	wtok := mustToken(t, writer.Token)
	gone := mustCreateKey(t, admin, client.KeyOptions{Name: "gone", Role: keys.RoleReader})
	if _, err := admin.RevokeKey(ctx, gone.Key.ID, "first revocation"); err != nil {
		t.Fatal(err)
	}
	rotated := mustCreateKey(t, admin, client.KeyOptions{Name: "rotated", Role: keys.RoleWriter, Scopes: []string{"append:app"}})
	if _, err := admin.RotateKey(ctx, rotated.Key.ID, time.Hour); err != nil {
		t.Fatal(err)
	}
	admin2 := mustCreateKey(t, admin, client.KeyOptions{Name: "admin2", Role: keys.RoleAdmin})
	a2tok := mustToken(t, admin2.Token)

	later := time.Now().Add(2 * time.Hour).UTC()
	successor := func(role string, scopes ...string) keys.RotateRecord {
		nt := newToken(t)
		sp := specFor(nt, role, scopes...)
		sp.RotatedFrom = writer.Key.ID
		return keys.RotateRecord{Key: sp, OldExpires: time.Now().Add(time.Minute).UTC()}
	}
	mismatched := specFor(newToken(t), keys.RoleReader)
	mismatched.ID = wtok.ID()
	emptyReason := ""

	cases := []struct {
		name    string
		request *keys.Token // signs the request
		signer  *keys.Token // signs the event (default: request)
		action  string
		target  string
		md      any
		status  int
		code    string
	}{
		{name: "non-admin creates a key", request: wtok, action: keys.ActionKeyCreate, md: keys.CreateRecord{Key: specFor(newToken(t), keys.RoleReader)}, status: 403, code: api.CodeForbidden},
		{name: "non-admin revokes a key", request: wtok, action: keys.ActionKeyRevoke, md: keys.RevokeRecord{KeyID: wtok.ID(), Reason: "self"}, status: 403, code: api.CodeForbidden},
		{name: "revoke twice", request: atok, action: keys.ActionKeyRevoke, md: keys.RevokeRecord{KeyID: gone.Key.ID, Reason: "second revocation"}, status: 409, code: api.CodeConflict},
		{name: "update a revoked key", request: atok, action: keys.ActionKeyUpdate, md: keys.UpdateRecord{KeyID: gone.Key.ID, Description: &emptyReason}, status: 409, code: api.CodeConflict},
		{name: "longer expiry", request: atok, action: keys.ActionKeyUpdate, md: keys.UpdateRecord{KeyID: wtok.ID(), Expires: later}, status: 400, code: api.CodeInvalidEvent},
		{name: "update to scopes beyond the role", request: atok, action: keys.ActionKeyUpdate, md: keys.UpdateRecord{KeyID: wtok.ID(), Scopes: &[]string{"read:*"}}, status: 400, code: api.CodeInvalidEvent},
		{name: "update to a bad rate", request: atok, action: keys.ActionKeyUpdate, md: keys.UpdateRecord{KeyID: wtok.ID(), Rate: pointerTo("fast")}, status: 400, code: api.CodeInvalidEvent},
		{name: "update to a bad CIDR", request: atok, action: keys.ActionKeyUpdate, md: keys.UpdateRecord{KeyID: wtok.ID(), CIDRs: &[]string{"10.0.0.1/8"}}, status: 400, code: api.CodeInvalidEvent},
		{name: "rotate to different scopes", request: atok, action: keys.ActionKeyRotate, md: successor(keys.RoleWriter, "append:*"), status: 400, code: api.CodeInvalidEvent},
		{name: "rotate to another role", request: atok, action: keys.ActionKeyRotate, md: successor(keys.RoleAdmin, "append:app"), status: 400, code: api.CodeInvalidEvent},
		{name: "rotate a rotated key", request: atok, action: keys.ActionKeyRotate, md: func() keys.RotateRecord {
			r := successor(keys.RoleWriter, "append:app")
			r.Key.RotatedFrom = rotated.Key.ID
			return r
		}(), status: 409, code: api.CodeConflict},
		{name: "revoke without reason", request: atok, action: keys.ActionKeyRevoke, md: keys.RevokeRecord{KeyID: wtok.ID()}, status: 400, code: api.CodeInvalidEvent},
		{name: "revoke with a blank reason", request: atok, action: keys.ActionKeyRevoke, md: keys.RevokeRecord{KeyID: wtok.ID(), Reason: " \t"}, status: 400, code: api.CodeInvalidEvent},
		{name: "id does not match the public key", request: atok, action: keys.ActionKeyCreate, md: keys.CreateRecord{Key: func() keys.Spec {
			sp := specFor(newToken(t), keys.RoleReader)
			sp.ID = newToken(t).ID()
			return sp
		}()}, status: 400, code: api.CodeInvalidEvent},
		{name: "id of a registered key with another public key", request: atok, action: keys.ActionKeyCreate, md: keys.CreateRecord{Key: mismatched}, status: 400, code: api.CodeInvalidEvent},
		{name: "create a registered key again", request: atok, action: keys.ActionKeyCreate, md: keys.CreateRecord{Key: specFor(wtok, keys.RoleWriter, "append:app")}, status: 409, code: api.CodeConflict},
		{name: "create with rotated_from", request: atok, action: keys.ActionKeyCreate, md: keys.CreateRecord{Key: func() keys.Spec {
			sp := specFor(newToken(t), keys.RoleWriter, "append:app")
			sp.RotatedFrom = wtok.ID()
			return sp
		}()}, status: 400, code: api.CodeInvalidEvent},
		{name: "unknown metadata field", request: atok, action: keys.ActionKeyRevoke, md: map[string]any{"key_id": wtok.ID(), "reason": "x", "force": true}, status: 400, code: api.CodeInvalidEvent},
		{name: "expiry recorded by a client", request: atok, action: keys.ActionKeyExpire, md: keys.ExpireRecord{KeyID: wtok.ID()}, status: 400, code: api.CodeBadRequest},
		{name: "not a lifecycle action", request: atok, action: "key.delete", md: keys.RevokeRecord{KeyID: wtok.ID(), Reason: "x"}, status: 400, code: api.CodeBadRequest},
		{name: "event signed by another admin than the request", request: atok, signer: a2tok, action: keys.ActionKeyRevoke, md: keys.RevokeRecord{KeyID: wtok.ID(), Reason: "x"}, status: 403, code: api.CodeForbidden},
	}
	plain := &http.Client{}
	sysSize := logSize(t, admin, api.SystemLog)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			signer := tc.signer
			if signer == nil {
				signer = tc.request
			}
			target := tc.target
			if target == "" {
				target = wtok.ID()
			}
			body := lifecycleBody(t, signer, tc.action, target, tc.md)
			resp, b := doRequest(t, plain, signedRequest(t, http.MethodPost, url+api.PathKeys, body, tc.request))
			checkAPIError(t, resp, b, tc.status, tc.code)
			if got := logSize(t, admin, api.SystemLog); got != sysSize {
				t.Fatalf("_system size %d after a refused change, want %d", got, sysSize)
			}
		})
	}
	// Through the SDK too.
	t.Run("SDK", func(t *testing.T) {
		w := newClient(t, url, writer.Token)
		if _, err := w.CreateKey(ctx, client.KeyOptions{Name: "by-writer", Role: keys.RoleReader}); statusOf(t, err) != http.StatusForbidden {
			t.Errorf("CreateKey by a writer: %v, want 403", err)
		}
		if _, err := admin.RevokeKey(ctx, gone.Key.ID, "again"); statusOf(t, err) != http.StatusConflict {
			t.Errorf("second RevokeKey: %v, want 409", err)
		}
		if _, err := admin.RevokeKey(ctx, writer.Key.ID, ""); statusOf(t, err) != http.StatusBadRequest {
			t.Errorf("RevokeKey without reason: %v, want 400", err)
		}
		if _, err := admin.UpdateKey(ctx, writer.Key.ID, client.KeyUpdate{Expires: later}); statusOf(t, err) != http.StatusBadRequest {
			t.Errorf("UpdateKey with a longer expiry: %v, want 400", err)
		}
		if got := logSize(t, admin, api.SystemLog); got != sysSize {
			t.Errorf("_system size %d after refused changes, want %d", got, sysSize)
		}
	})
	// The key refused changes were about is as it was.
	k, err := admin.Key(ctx, writer.Key.ID)
	if err != nil {
		t.Fatal(err)
	}
	if k.Status != "active" || k.Expires != writer.Key.Expires || !reflect.DeepEqual(k.Scopes, []string{"append:app"}) || k.Revoked != "" {
		t.Errorf("writer key after refused changes: %+v", k)
	}
	// And a valid change still goes through.
	if _, err := admin.RevokeKey(ctx, writer.Key.ID, "end of test"); err != nil {
		t.Errorf("RevokeKey: %v", err)
	}
	if got := logSize(t, admin, api.SystemLog); got != sysSize+1 {
		t.Errorf("_system size %d after a valid change, want %d", got, sysSize+1)
	}
}

func pointerTo[T any](v T) *T { return &v }
