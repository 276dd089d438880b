package node_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vellum-audit/vellum/client"
	"github.com/vellum-audit/vellum/internal/node"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestNoSecretsInLogs: at debug level, through signed, bearer, refused and
// malformed requests (a full token sent as a bearer credential among
// them), no token, bearer credential or part of one reaches the log.
func TestNoSecretsInLogs(t *testing.T) {
	dir := t.TempDir()
	var buf lockedBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	n, err := node.Open(context.Background(), node.Config{Dir: dir, OriginPrefix: testOriginPrefix, Version: "test", Logger: logger, OpenStore: storeOpener(t, dir)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(n.Handler)
	b, err := os.ReadFile(filepath.Join(dir, node.AdminKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	adminTok := strings.TrimSpace(string(b))
	admin := newClient(t, srv.URL, adminTok)
	createLog(t, admin, "billing")
	mustAppend(t, admin, "billing", event("user.create", "alice"))
	bk := mustCreateKey(t, admin, client.KeyOptions{Name: "bearer", Role: "writer", Bearer: true})
	secrets := []string{adminTok, bk.Token, bk.BearerCredential}

	bearer := func(cred, body string) {
		req, _ := http.NewRequest("POST", srv.URL+"/v1/logs/billing/entries", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+cred)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	ev := `{"events":[{"event":{"action":"user.login","actor":{"id":"bob"}}}]}`
	bearer(bk.BearerCredential, ev)                                     // accepted
	bearer(bk.Token, ev)                                                // a full token as bearer: refused, warned about
	bearer(bk.BearerCredential[:len(bk.BearerCredential)-4]+"AAAA", ev) // wrong credential
	bearer("vlmb_garbage", `{"events":[`)                               // malformed
	unsigned, _ := http.Post(srv.URL+"/v1/logs/billing/entries", "application/json", strings.NewReader(ev))
	unsigned.Body.Close()
	rw := newClient(t, srv.URL, bk.Token)
	rw.Append(context.Background(), "billing", event("user.update", "carol"))
	if _, err := admin.RevokeKey(context.Background(), bk.Key.ID, "test"); err != nil {
		t.Fatal(err)
	}
	bearer(bk.BearerCredential, ev) // revoked

	srv.Close()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	logs := buf.String()
	if !strings.Contains(logs, "bearer credential") {
		t.Errorf("the full-token-as-bearer warning is missing; the test did not exercise the path:\n%s", logs)
	}
	for _, s := range secrets {
		if s == "" {
			continue
		}
		// The whole secret, and its secret part (after the key id).
		parts := []string{s}
		if i := strings.LastIndexByte(s, '_'); i > 0 && len(s)-i > 16 {
			parts = append(parts, s[i+1:])
		}
		for _, p := range parts {
			if strings.Contains(logs, p) {
				t.Errorf("the log contains a secret (%d characters)", len(p))
			}
		}
	}
}
