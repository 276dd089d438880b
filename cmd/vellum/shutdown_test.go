package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/client"
)

// TestGracefulShutdownKeepsAcknowledged stops the server (as SIGINT does)
// while producers append, restarts it on the same data directory and checks
// that every acknowledged receipt is there, byte for byte, and verifies.
func TestGracefulShutdownKeepsAcknowledged(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	args := testStoreArgs(t)
	serve := func() (string, context.CancelFunc, chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		ready := make(chan string, 1)
		done := make(chan error, 1)
		m := &Main{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, Getenv: func(string) string { return "" }, Ready: func(a string) { ready <- a }}
		go func() {
			done <- m.Run(ctx, append([]string{"serve", "--data", dir, "--listen", "127.0.0.1:0", "--log-level", "error"}, args...))
		}()
		select {
		case a := <-ready:
			return "http://" + a, cancel, done
		case err := <-done:
			t.Fatalf("serve: %v", err)
		}
		return "", nil, nil
	}
	url, stop, done := serve()
	tok, _ := os.ReadFile(filepath.Join(dir, "admin.key"))
	c, err := client.New(url, strings.TrimSpace(string(tok)), client.WithRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.CreateLog(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var acked []api.Receipt
	var wg sync.WaitGroup
	quit := make(chan struct{})
	for p := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-quit:
					return
				default:
				}
				n := 1 + i%5
				evs := make([]json.RawMessage, n)
				for k := range evs {
					evs[k] = json.RawMessage(fmt.Sprintf(`{"action":"t.write","actor":{"id":"p%d"},"metadata":{"i":%d,"k":%d}}`, p, i, k))
				}
				rs, err := c.Append(ctx, "app", evs...)
				mu.Lock()
				acked = append(acked, rs...)
				mu.Unlock()
				if err != nil {
					return // refused or connection closed by the shutdown: not acknowledged
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	stop()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	close(quit)
	wg.Wait()
	if len(acked) == 0 {
		t.Fatal("no appends were acknowledged before the shutdown")
	}

	url, stop, done = serve()
	defer func() { stop(); <-done }()
	c2, _ := client.New(url, strings.TrimSpace(string(tok)))
	info, err := c2.ServerInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := client.NewVerifier(info.VerifierKey)
	for _, r := range acked {
		e, err := c2.Entry(ctx, "app", r.Index, false)
		if err != nil {
			t.Fatalf("acknowledged entry %d: %v", r.Index, err)
		}
		if !bytes.Equal(e.Data, r.Entry) {
			t.Fatalf("entry %d differs from its receipt", r.Index)
		}
		if _, err := v.VerifyReceipt(r, c2.PublicKey()); err != nil {
			t.Fatalf("receipt %d: %v", r.Index, err)
		}
	}
	reg, _, err := c2.AuditSystem(ctx, v, nil)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := c2.Latest(ctx, v, "app", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.AuditLog(ctx, v, "app", cp, reg, nil); err != nil {
		t.Fatal(err)
	}
	// After the restart appends continue the same chain and tree.
	if _, err := c2.Append(ctx, "app", json.RawMessage(`{"action":"after","actor":{"id":"x"}}`)); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	t.Logf("%d acknowledged entries survived the shutdown; log size %d", len(acked), cp.Size)
}
