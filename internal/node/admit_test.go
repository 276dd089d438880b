package node_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vellum-audit/vellum/client"
	"github.com/vellum-audit/vellum/internal/keys"
)

// TestKeyEndsUnderLoad: a key that expires, or is revoked, while many
// requests signed by it are in flight never gets an entry stamped after
// its end, so the log always audits (the sequencer admits each event at
// its round's received time, and a revocation suspends the key until it
// is applied).
func TestKeyEndsUnderLoad(t *testing.T) {
	for _, how := range []string{"expiry", "revocation"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			url, tok, stop := startNode(t, dir)
			defer stop()
			ctx := context.Background()
			admin, _ := client.New(url, tok)
			if _, err := admin.CreateLog(ctx, "app"); err != nil {
				t.Fatal(err)
			}
			o := client.KeyOptions{Name: "w", Role: keys.RoleWriter, Scopes: []string{"append:app"}}
			if how == "expiry" {
				o.Expires = time.Now().Add(time.Second)
			}
			nk, err := admin.CreateKey(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			var ok atomic.Int64
			var wg sync.WaitGroup
			stopAt := time.Now().Add(1800 * time.Millisecond)
			for range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, _ := client.New(url, nk.Token, client.WithRetries(0))
					for time.Now().Before(stopAt) {
						if _, err := c.Append(ctx, "app", event("load.write", "x")); err == nil {
							ok.Add(1)
						}
					}
				}()
			}
			if how == "revocation" {
				time.Sleep(300 * time.Millisecond)
				if _, err := admin.RevokeKey(ctx, nk.Key.ID, "race"); err != nil {
					t.Fatal(err)
				}
			}
			wg.Wait()
			if ok.Load() == 0 {
				t.Fatal("no append succeeded before the key ended")
			}
			info, _ := admin.ServerInfo(ctx)
			v, _ := client.NewVerifier(info.VerifierKey)
			reg, _, err := admin.AuditSystem(ctx, v, nil)
			if err != nil {
				t.Fatal(err)
			}
			cp, err := admin.Latest(ctx, v, "app", nil)
			if err != nil {
				t.Fatal(err)
			}
			if cp.Size != ok.Load() {
				t.Fatalf("log has %d entries, %d appends were acknowledged", cp.Size, ok.Load())
			}
			if err := admin.AuditLog(ctx, v, "app", cp, reg, nil); err != nil {
				t.Fatalf("after the key's %s under load: %v", how, err)
			}
		})
	}
}
