package node_test

// The alert drills (issue 7): a stolen key used from a disallowed network
// and replayed (TestAlertDrill), a silent producer (TestSilenceAlert),
// skipped and rewound seq numbers (TestGapAlert), a client reporting a
// checkpoint the stored tree contradicts (TestCheckpointReportAlert) and a
// key used from two networks and probed with bad signatures
// (TestKeyUseAlerts). Everything runs against a real node over HTTP on
// loopback, with a real webhook receiver.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/client"
	"github.com/vellum-audit/vellum/internal/alert"
	"github.com/vellum-audit/vellum/internal/checkpoint"
	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/httpsig"
	"github.com/vellum-audit/vellum/internal/keys"
	"github.com/vellum-audit/vellum/internal/node"
)

// openAlertNode starts a node with the alert configuration given as TOML
// (parsed the way serve --alerts-config does, relative to dir).
func openAlertNode(t *testing.T, dir, conf string) (n *node.Node, url, adminToken string) {
	t.Helper()
	cfg, err := alert.ParseConfig([]byte(conf), dir)
	if err != nil {
		t.Fatalf("alert config: %v", err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	n, err = node.Open(context.Background(), node.Config{Dir: dir, OriginPrefix: testOriginPrefix, Version: "test", Logger: logger,
		OpenStore: storeOpener(t, dir), Alerts: cfg})
	if err != nil {
		t.Fatalf("node.Open: %v", err)
	}
	tok, err := os.ReadFile(filepath.Join(dir, node.AdminKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(n.Handler)
	t.Cleanup(func() {
		srv.Close()
		if err := n.Close(); err != nil {
			t.Errorf("closing the node: %v", err)
		}
	})
	return n, srv.URL, strings.TrimSpace(string(tok))
}

// fromAddr is an HTTP client whose connections come from the loopback
// address ip (127.0.0.0/8 is all loopback: another "network" for tests).
func fromAddr(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 30 * time.Second}
}

// webhookReceiver is a real HTTP server that checks each delivery's
// signature and passes the alerts on.
type webhookReceiver struct {
	url    string
	alerts chan alert.Alert
	bad    chan string
}

func newWebhookReceiver(t *testing.T, secret []byte) *webhookReceiver {
	t.Helper()
	wr := &webhookReceiver{alerts: make(chan alert.Alert, 100), bad: make(chan string, 100)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := alert.VerifyWebhook(secret, r.Header.Get(alert.SignatureHeader), body, time.Now(), time.Minute); err != nil {
			wr.bad <- err.Error()
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var a alert.Alert
		if err := json.Unmarshal(body, &a); err != nil {
			wr.bad <- err.Error()
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		wr.alerts <- a
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	wr.url = srv.URL
	return wr
}

// await returns the first delivered alert of detector about keyID.
func (wr *webhookReceiver) await(t *testing.T, detector, keyID string) alert.Alert {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case a := <-wr.alerts:
			if a.Detector == detector && (keyID == "" || a.KeyID == keyID) {
				return a
			}
		case msg := <-wr.bad:
			t.Fatalf("webhook receiver refused a delivery: %s", msg)
		case <-timeout:
			t.Fatalf("no %s alert about %q reached the webhook in 30 s", detector, keyID)
		}
	}
}

// awaitAlert polls GET /v1/alerts until an alert of detector (about keyID,
// if set) is listed.
func awaitAlert(t *testing.T, c *client.Client, state, detector, keyID string) api.AlertState {
	t.Helper()
	var found api.AlertState
	waitFor(t, 30*time.Second, detector+" alert listed", func() bool {
		l, err := c.Alerts(context.Background(), client.AlertFilter{State: state, Detector: detector})
		if err != nil {
			t.Fatalf("Alerts: %v", err)
		}
		for _, a := range l.Alerts {
			if keyID == "" || a.KeyID == keyID {
				found = a
				return true
			}
		}
		return false
	})
	return found
}

// recorder wraps a transport and keeps a copy of the last request it sent.
type recorder struct {
	mu   sync.Mutex
	last *http.Request
	body []byte
}

func (rc *recorder) RoundTrip(r *http.Request) (*http.Response, error) {
	var body []byte
	if r.Body != nil {
		body, _ = io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	rc.mu.Lock()
	rc.last, rc.body = r.Clone(context.Background()), body
	rc.mu.Unlock()
	return http.DefaultTransport.RoundTrip(r)
}

func TestAlertDrill(t *testing.T) {
	dir := t.TempDir()
	secret := []byte("drill-webhook-secret-0123456789abcdef")
	if err := os.WriteFile(filepath.Join(dir, "webhook.secret"), secret, 0o600); err != nil {
		t.Fatal(err)
	}
	wr := newWebhookReceiver(t, secret)
	_, url, adminTok := openAlertNode(t, dir, fmt.Sprintf(`
node = "drill-node"
[[webhook]]
url = %q
secret_file = "webhook.secret"
[auto_revoke]
detectors = ["replay", "cidr"]
`, wr.url))
	ctx := context.Background()
	admin := newClient(t, url, adminTok)
	createLog(t, admin, "app")
	nk := mustCreateKey(t, admin, client.KeyOptions{Name: "producer", Role: keys.RoleWriter, Scopes: []string{"append:app"}, CIDRs: []string{"127.0.0.1/32"}})

	// The producer writes from its network, through a transport that keeps
	// a copy of each request: the attacker's capture.
	rec := &recorder{}
	producer := newClientOpts(t, url, nk.Token, client.WithRetries(0), client.WithHTTPClient(&http.Client{Transport: rec}))
	mustAppend(t, producer, "app", event("order.create", "alice"))
	rec.mu.Lock()
	captured, capturedBody := rec.last, rec.body
	rec.mu.Unlock()

	// The thief replays the captured request, byte for byte.
	start := time.Now()
	replay := captured.Clone(ctx)
	replay.Body = io.NopCloser(bytes.NewReader(capturedBody))
	replay.RequestURI = ""
	resp, body := doRequest(t, http.DefaultClient, replay)
	checkAPIError(t, resp, body, http.StatusUnauthorized, api.CodeUnauthorized)

	// And uses the stolen key from another network.
	thief := newClientOpts(t, url, nk.Token, client.WithRetries(0), client.WithHTTPClient(fromAddr("127.0.0.2")))
	if _, err := thief.Append(ctx, "app", event("user.delete", "mallory")); err == nil {
		t.Fatal("append from outside the key's CIDRs accepted")
	} else if ce := asClientError(t, err); ce.Status != http.StatusForbidden && ce.Status != http.StatusUnauthorized {
		t.Fatalf("append from outside the CIDRs: status %d, want 403 (or 401 once revoked)", ce.Status)
	}

	// The policy revokes the key.
	waitFor(t, 10*time.Second, "the key revoked by policy", func() bool { return keyStatus(t, admin, nk.Key.ID) == "revoked" })
	t.Logf("key revoked by the auto-revoke policy %s after the replay", time.Since(start).Round(time.Millisecond))

	// The webhook got the signed alert.
	a := wr.await(t, alert.Replay, nk.Key.ID)
	if a.Severity != alert.Critical || a.Node != "drill-node" || a.Summary == "" || a.Action == "" || a.Entry < 0 {
		t.Errorf("delivered alert: %+v", a)
	}

	// Every later request with the key is refused, from anywhere.
	if _, err := producer.Append(ctx, "app", event("order.pay", "alice")); err == nil {
		t.Fatal("append with the revoked key accepted")
	} else if ce := asClientError(t, err); ce.Status != http.StatusUnauthorized {
		t.Fatalf("revoked key: status %d, want 401", ce.Status)
	}

	// _system holds the alerts and the revocation, signed by the server
	// and naming the alert.
	var revokes, replays, cidrs int
	for _, ev := range rawEvents(t, admin, api.SystemLog) {
		switch ev.Action {
		case keys.ActionKeyRevoke:
			var md keys.RevokeRecord
			json.Unmarshal(ev.Metadata, &md)
			if md.KeyID == nk.Key.ID {
				revokes++
				if ev.KeyID != "server" || md.Alert == "" || !strings.Contains(md.Reason, "auto-revoke") {
					t.Errorf("revocation entry %d: signer %q, record %+v", ev.Index, ev.KeyID, md)
				}
			}
		case "alert.replay":
			replays++
		case "alert.cidr":
			cidrs++
		}
	}
	if revokes != 1 || replays != 1 {
		t.Errorf("_system: %d revocations of the key (want 1), %d alert.replay entries (want 1), %d alert.cidr", revokes, replays, cidrs)
	}

	// The alerts are listed, and an acknowledgement closes one.
	got := awaitAlert(t, admin, "open", alert.Replay, nk.Key.ID)
	if !got.Revoked || got.State != "open" {
		t.Errorf("listed replay alert: %+v", got)
	}
	acked, err := admin.AckAlert(ctx, got.ID, "drill: key revoked, producer reissued")
	if err != nil {
		t.Fatalf("AckAlert: %v", err)
	}
	if acked.State != "acked" || acked.AckedBy == "" {
		t.Errorf("ack: %+v", acked)
	}
	l, err := admin.Alerts(ctx, client.AlertFilter{Detector: alert.Replay})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range l.Alerts {
		if a.ID == got.ID {
			t.Errorf("acknowledged alert still listed as open: %+v", a)
		}
	}
	awaitAlert(t, admin, "acked", alert.Replay, nk.Key.ID)
	if _, err := admin.AckAlert(ctx, "al_0000000000000000", ""); err == nil {
		t.Error("ack of an unknown alert accepted")
	} else if ce := asClientError(t, err); ce.Status != http.StatusNotFound {
		t.Errorf("ack of an unknown alert: %d, want 404", ce.Status)
	}

	// The configuration is on the record.
	found := false
	for _, ev := range rawEvents(t, admin, api.SystemLog) {
		if ev.Action == "config.alerts" {
			found = true
			if bytes.Contains(ev.Metadata, secret) || !bytes.Contains(ev.Metadata, []byte(`"digest"`)) {
				t.Error("config.alerts entry holds the webhook secret")
			}
		}
	}
	if !found {
		t.Error("no config.alerts entry in _system")
	}

	// Listing alerts needs read on _system; acknowledging needs admin.
	writer := mustCreateKey(t, admin, client.KeyOptions{Name: "w2", Role: keys.RoleWriter, Scopes: []string{"append:app"}})
	wc := newClientOpts(t, url, writer.Token, client.WithRetries(0))
	if _, err := wc.Alerts(ctx, client.AlertFilter{}); err == nil || asClientError(t, err).Status != http.StatusForbidden {
		t.Errorf("writer listed alerts: %v", err)
	}
	if _, err := wc.AckAlert(ctx, got.ID, ""); err == nil || asClientError(t, err).Status != http.StatusForbidden {
		t.Errorf("writer acknowledged an alert: %v", err)
	}
	raw := newRaw(t, url, adminTok)
	resp, body = raw.send(t, "GET", api.PathAlerts+"?state=closed", "", nil)
	checkAPIError(t, resp, body, http.StatusBadRequest, api.CodeBadRequest)
	resp, body = raw.send(t, "GET", api.PathAlerts+"?detector=nope", "", nil)
	checkAPIError(t, resp, body, http.StatusBadRequest, api.CodeBadRequest)
}

func TestSilenceAlert(t *testing.T) {
	dir := t.TempDir()
	_, url, adminTok := openAlertNode(t, dir, `
[silence]
default = "2s"
[[silence.expect]]
log = "billing"
every = "3s"
`)
	admin := newClient(t, url, adminTok)
	createLog(t, admin, "billing")
	nk := mustCreateKey(t, admin, client.KeyOptions{Name: "billing-svc", Role: keys.RoleWriter, Scopes: []string{"append:billing"}})
	p := newClientOpts(t, url, nk.Token, client.WithRetries(0))
	mustAppend(t, p, "billing", event("invoice.create", "svc", `"source":"billing-svc"`))
	// The producer falls silent.
	a := awaitAlert(t, admin, "open", alert.Silence, nk.Key.ID)
	if a.Log != "billing" || a.Source != "billing-svc" || !strings.Contains(a.Summary, "written nothing") {
		t.Errorf("silence alert (default window, per key and source): %+v", a)
	}
	// And the log's explicit rule fires too.
	waitFor(t, 30*time.Second, "the billing rule's silence alert", func() bool {
		l, err := admin.Alerts(context.Background(), client.AlertFilter{Detector: alert.Silence})
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range l.Alerts {
			if x.Log == "billing" && x.KeyID == "" && x.Source == "" && strings.Contains(x.Summary, "every 3s") {
				return true
			}
		}
		return false
	})
	// Writing again ends the silence: the next quiet spell is a new alert
	// entry only after the dedupe window; meanwhile the same alert counts.
	mustAppend(t, p, "billing", event("invoice.create", "svc", `"source":"billing-svc"`))
}

func TestGapAlert(t *testing.T) {
	dir := t.TempDir()
	_, url, adminTok := openAlertNode(t, dir, "")
	ctx := context.Background()
	admin := newClient(t, url, adminTok)
	createLog(t, admin, "app")
	nk := mustCreateKey(t, admin, client.KeyOptions{Name: "p", Role: keys.RoleWriter, Scopes: []string{"append:app"}})
	p := newClientOpts(t, url, nk.Token, client.WithRetries(0))
	ev := func(seq int, actor string) json.RawMessage {
		return event("user.update", actor, `"source":"edge-1"`, fmt.Sprintf(`"seq":%d`, seq))
	}
	mustAppend(t, p, "app", ev(1, "a"), ev(2, "b"))
	mustAppend(t, p, "app", ev(6, "c")) // 3, 4 and 5 never arrive
	a := awaitAlert(t, admin, "open", alert.Gap, nk.Key.ID)
	var d struct {
		LastSeq int64 `json:"last_seq"`
		Seq     int64 `json:"seq"`
		Missing int64 `json:"missing"`
	}
	if err := json.Unmarshal(a.Details, &d); err != nil || d.LastSeq != 2 || d.Seq != 6 || d.Missing != 3 || a.Source != "edge-1" || a.Log != "app" {
		t.Errorf("gap alert: %+v (details %+v, %v)", a, d, err)
	}
	// A step back with new content is refused and alerted.
	if _, err := p.Append(ctx, "app", ev(4, "rewritten")); err == nil {
		t.Fatal("seq going back accepted")
	} else if ce := asClientError(t, err); ce.Status != http.StatusConflict {
		t.Fatalf("seq going back: %d, want 409", ce.Status)
	}
	r := awaitAlert(t, admin, "open", alert.SeqRegress, nk.Key.ID)
	if r.Severity != alert.Critical || !strings.Contains(r.Summary, "refused") {
		t.Errorf("seq_regress alert: %+v", r)
	}
	// An idempotent retry (same seq, same bytes) is not a regression.
	before := len(readEvents(t, admin, api.SystemLog, 0))
	mustAppend(t, p, "app", ev(6, "c"))
	time.Sleep(200 * time.Millisecond)
	for _, e := range readEvents(t, admin, api.SystemLog, int64(before)) {
		if strings.HasPrefix(e.Action, "alert.") {
			t.Errorf("an idempotent retry raised %s", e.Action)
		}
	}
}

func TestCheckpointReportAlert(t *testing.T) {
	dir := t.TempDir()
	n, url, adminTok := openAlertNode(t, dir, "")
	ctx := context.Background()
	admin := newClient(t, url, adminTok)
	createLog(t, admin, "app")
	mustAppend(t, admin, "app", event("a.b", "x"), event("a.c", "y"))
	cp, err := admin.Checkpoint(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	// The checkpoint the server handed out agrees with its tree.
	rep, err := admin.ReportCheckpoint(ctx, "app", cp)
	if err != nil || !rep.Consistent {
		t.Fatalf("report of its own checkpoint: %+v, %v", rep, err)
	}
	// A checkpoint it did not sign proves nothing: 400.
	if _, err := admin.ReportCheckpoint(ctx, "app", []byte("vellum.test/app\n2\nAAAA\n\n— nobody abc=\n")); err == nil || asClientError(t, err).Status != http.StatusBadRequest {
		t.Fatalf("unsigned checkpoint report: %v", err)
	}
	// A checkpoint signed with the server's key for a tree it does not have
	// (the split view a client would catch): fail closed, tamper alert.
	skey, err := os.ReadFile(filepath.Join(dir, node.ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(strings.TrimSpace(string(skey)))
	if err != nil {
		t.Fatal(err)
	}
	body := checkpoint.Checkpoint{Origin: n.Ledger.Origin("app"), Size: 2, Hash: [32]byte{1, 2, 3}}.Body()
	forged, err := note.Sign(&note.Note{Text: string(body)}, signer)
	if err != nil {
		t.Fatal(err)
	}
	rep, err = admin.ReportCheckpoint(ctx, "app", forged)
	if err != nil || rep.Consistent || rep.Reason == "" {
		t.Fatalf("report of a contradicting checkpoint: %+v, %v", rep, err)
	}
	a := awaitAlert(t, admin, "open", alert.Tamper, "")
	if a.Log != "app" || a.Severity != alert.Critical || !strings.Contains(string(a.Details), "client-report") {
		t.Errorf("tamper alert: %+v", a)
	}
	if _, err := admin.Append(ctx, "app", event("a.d", "z")); err == nil {
		t.Error("append accepted on a log that failed verification")
	}
	raw := newRaw(t, url, adminTok)
	resp, b := raw.send(t, "GET", "/healthz", "", nil)
	if !strings.Contains(string(b), "integrity_failure") {
		t.Errorf("healthz after a reported inconsistency: %d %s", resp.StatusCode, b)
	}
}

func TestKeyUseAlerts(t *testing.T) {
	dir := t.TempDir()
	_, url, adminTok := openAlertNode(t, dir, `
[thresholds]
auth_failures = 3
auth_failures_window = "1m"
`)
	ctx := context.Background()
	admin := newClient(t, url, adminTok)
	createLog(t, admin, "app")
	nk := mustCreateKey(t, admin, client.KeyOptions{Name: "roaming", Role: keys.RoleWriter, Scopes: []string{"append:app"}})
	// One key, two networks within the window.
	mustAppend(t, newClientOpts(t, url, nk.Token, client.WithRetries(0)), "app", event("a.b", "x"))
	mustAppend(t, newClientOpts(t, url, nk.Token, client.WithRetries(0), client.WithHTTPClient(fromAddr("127.0.9.9"))), "app", event("a.b", "y"))
	a := awaitAlert(t, admin, "open", alert.TwoNetworks, nk.Key.ID)
	if !strings.Contains(a.Summary, "127.0.9.9") {
		t.Errorf("two networks alert: %+v", a)
	}
	// Bad signatures under the key's id: a probe.
	wrong := newToken(t)
	for i := 0; i < 3; i++ {
		req, _ := http.NewRequest("GET", url+api.LogPath("app"), nil)
		if err := httpsig.Sign(req, nil, nk.Key.ID, wrong.SigningKey(), time.Now()); err != nil {
			t.Fatal(err)
		}
		resp, body := doRequest(t, http.DefaultClient, req)
		checkAPIError(t, resp, body, http.StatusUnauthorized, api.CodeUnauthorized)
	}
	awaitAlert(t, admin, "open", alert.AuthFailures, nk.Key.ID)
	// Hygiene: a broad key with no expiry and no CIDRs.
	awaitAlert(t, admin, "all", alert.BroadScope, "")
	// A revoked key still in use.
	if _, err := admin.RevokeKey(ctx, nk.Key.ID, "test"); err != nil {
		t.Fatal(err)
	}
	newClientOpts(t, url, nk.Token, client.WithRetries(0)).Append(ctx, "app", event("a.b", "z"))
	awaitAlert(t, admin, "open", alert.RevokedUse, nk.Key.ID)
}

// rawEvent is an entry of a server log with its metadata undecoded.
type rawEvent struct {
	Index    int64
	KeyID    string
	Action   string          `json:"action"`
	Metadata json.RawMessage `json:"metadata"`
}

func rawEvents(t *testing.T, c *client.Client, log string) []rawEvent {
	t.Helper()
	size := logSize(t, c, log)
	var out []rawEvent
	for start := int64(0); start < size; {
		es, err := c.Entries(context.Background(), log, start, size)
		if err != nil || len(es) == 0 {
			t.Fatalf("Entries(%s, %d): %d, %v", log, start, len(es), err)
		}
		for _, e := range es {
			pe, err := entry.Parse(e.Data)
			if err != nil {
				t.Fatal(err)
			}
			ev := rawEvent{Index: e.Index, KeyID: pe.KeyID}
			if err := json.Unmarshal(pe.Event, &ev); err != nil {
				t.Fatal(err)
			}
			out = append(out, ev)
		}
		start += int64(len(es))
	}
	return out
}
