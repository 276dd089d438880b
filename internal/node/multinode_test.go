package node_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vellum-audit/vellum/client"
	"github.com/vellum-audit/vellum/internal/node"
	"github.com/vellum-audit/vellum/internal/store"
	"github.com/vellum-audit/vellum/internal/store/postgres"
)

// startSharedNodes starts n nodes on one PostgreSQL database (the restricted
// role), in this process: the first initialises it, the others get its
// configuration and server key, as an operator copies them.
func startSharedNodes(t *testing.T, n int) (urls []string, adminToken string) {
	t.Helper()
	nodes, tok := startShared(t, n)
	for _, sn := range nodes {
		urls = append(urls, sn.url)
	}
	return urls, tok
}

// sharedNode is one node of startShared.
type sharedNode struct {
	url  string
	node *node.Node
	srv  *httptest.Server
	stop func() // closes its HTTP server and the node (once)
}

func startShared(t *testing.T, n int) (nodes []*sharedNode, adminToken string) {
	t.Helper()
	base := t.TempDir()
	first := filepath.Join(base, "node0")
	db := pgFor(t, first) // skips (or fails with CI=true) without PostgreSQL
	open := func(ctx context.Context) (store.Store, error) { return postgres.Open(ctx, db.app) }
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	for i := range n {
		dir := filepath.Join(base, fmt.Sprintf("node%d", i))
		if i > 0 {
			os.MkdirAll(dir, 0o700)
			for _, f := range []string{node.ConfigFile, node.ServerKeyFile, node.VerifierKeyFile} {
				b, err := os.ReadFile(filepath.Join(first, f))
				if err != nil {
					t.Fatal(err)
				}
				os.WriteFile(filepath.Join(dir, f), b, 0o600)
			}
		}
		nd, err := node.Open(context.Background(), node.Config{Dir: dir, OriginPrefix: testOriginPrefix, Version: "test", Logger: logger, OpenStore: open})
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		srv := httptest.NewServer(nd.Handler)
		if err := nd.SetAdvertise(srv.URL); err != nil {
			t.Fatal(err)
		}
		var once sync.Once
		stop := func() {
			once.Do(func() {
				srv.Close()
				nd.Close()
			})
		}
		t.Cleanup(stop)
		nodes = append(nodes, &sharedNode{url: srv.URL, node: nd, srv: srv, stop: stop})
	}
	tok, err := os.ReadFile(filepath.Join(first, node.AdminKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return nodes, strings.TrimSpace(string(tok))
}

// TestSharedKeyChanges: a key revoked, rotated or narrowed on one node is
// enforced by every other node within one second, while producers keep
// writing through those nodes with it; and the log still verifies entry by
// entry against the key history (no node admitted an entry the key could
// no longer sign).
func TestSharedKeyChanges(t *testing.T) {
	urls, adminTok := startSharedNodes(t, 3)
	ctx := context.Background()
	admin := newClient(t, urls[0], adminTok)
	createLog(t, admin, "app")
	w := mustCreateKey(t, admin, client.KeyOptions{Name: "writer", Role: "writer"})

	// Producers with the writer key on nodes 1 and 2.
	var stop atomic.Bool
	var wg sync.WaitGroup
	var lastOK [3]atomic.Int64 // unix nanos of each node's last acknowledged append
	for i := 1; i < 3; i++ {
		c := newClientOpts(t, urls[i], w.Token, client.WithRetries(0))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; !stop.Load(); k++ {
				if _, err := c.Append(ctx, "app", event("shared.write", fmt.Sprintf("n%d-%d", i, k))); err == nil {
					lastOK[i].Store(time.Now().UnixNano())
				} else {
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}
	waitFor(t, 10*time.Second, "appends through nodes 1 and 2", func() bool { return lastOK[1].Load() > 0 && lastOK[2].Load() > 0 })

	// Revoke on node 0; nodes 1 and 2 refuse the key within a second.
	t0 := time.Now()
	if _, err := admin.RevokeKey(ctx, w.Key.ID, "drill"); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	for i := 1; i < 3; i++ {
		c := newClientOpts(t, urls[i], w.Token, client.WithRetries(0))
		for {
			_, err := c.Append(ctx, "app", event("shared.write", "after-revoke"))
			if err != nil && statusOf(t, err) == 401 {
				break
			}
			if time.Since(revoked) > time.Second {
				t.Fatalf("node %d still accepts the revoked key %v after the revocation was acknowledged (err %v)", i, time.Since(revoked), err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("node %d refuses the revoked key %v after the revocation was sent", i, time.Since(t0))
	}
	stop.Store(true)
	wg.Wait()

	// Rotation on node 0: the new key writes through node 2 within a second.
	w2 := mustCreateKey(t, admin, client.KeyOptions{Name: "writer2", Role: "writer"})
	nk, err := admin.RotateKey(ctx, w2.Key.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	c2 := newClientOpts(t, urls[2], nk.Token, client.WithRetries(0))
	rotated := time.Now()
	for {
		if _, err := c2.Append(ctx, "app", event("shared.write", "rotated")); err == nil {
			break
		} else if time.Since(rotated) > time.Second {
			t.Fatalf("node 2 refuses the rotated-to key %v after the rotation: %v", time.Since(rotated), err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Every entry verifies against the key as it was at its received time.
	auditor := newClient(t, urls[1], adminTok)
	vv, err := client.NewVerifier(mustInfoKey(t, auditor))
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyFull(ctx, auditor, vv, "app", nil); err != nil {
		t.Fatalf("the log written through three nodes during the key changes does not verify: %v", err)
	}
}

func mustInfoKey(t *testing.T, c *client.Client) string {
	t.Helper()
	info, err := c.ServerInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.VerifierKey
}
