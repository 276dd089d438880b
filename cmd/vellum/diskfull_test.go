package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/client"
)

// TestDiskFull runs the server with every file it writes capped at 2 MiB
// (RLIMIT_FSIZE: writes past it fail as on a full disk), appends until
// storage refuses, and checks: appends get 503 with Retry-After and a
// clear message, nothing of a refused batch is stored, reads keep
// working, and once space returns appends succeed again by themselves,
// with every acknowledged entry in a log that verifies.
func TestDiskFull(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the write failure is injected with RLIMIT_FSIZE (Linux)")
	}
	if os.Getenv("VELLUM_TEST_STORE") == "postgres" {
		t.Skip("with PostgreSQL the disk that fills is the database server's; this test fills the node's own (SQLite)")
	}
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	srv := &child{t: t, args: []string{"serve", "--data", dir, "--listen", "127.0.0.1:0", "--name", "test.example/full", "--log-level", "error"},
		env: []string{fileLimitEnv + "=" + strconv.Itoa(2<<20)}, logs: &syncBuffer{}}
	srv.start()
	t.Cleanup(srv.kill)
	tokB, err := os.ReadFile(filepath.Join(dir, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(tokB))
	vkeyB, _ := os.ReadFile(filepath.Join(dir, "server.vkey"))
	c, err := client.New(srv.url(), tok, client.WithRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateLog(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	batch := func(k int) []json.RawMessage {
		evs := make([]json.RawMessage, 100)
		for j := range evs {
			evs[j] = json.RawMessage(fmt.Sprintf(`{"action":"disk.fill","actor":{"id":"p"},"metadata":{"b":"k%d","j":%d,"pad":%q}}`, k, j, strings.Repeat("x", 200)))
		}
		return evs
	}
	var acked []api.Receipt
	var full *client.Error
	k := 0
	for ; k < 2000 && full == nil; k++ {
		rs, err := c.Append(ctx, "app", batch(k)...)
		if err != nil {
			if !errors.As(err, &full) {
				t.Fatalf("batch %d: %v\n%s", k, err, srv.logs.String())
			}
			break
		}
		acked = append(acked, rs...)
	}
	if full == nil {
		t.Fatalf("2,000 batches fitted under the cap: the test did not fill anything")
	}
	t.Logf("storage refused batch %d after %d events: %d %s", k, len(acked), full.Status, full.Message)
	if full.Status != http.StatusServiceUnavailable || !strings.Contains(full.Message, "nothing was recorded") || !strings.Contains(full.Message, "full") {
		t.Errorf("a full disk: %d %q, want 503 saying storage is full and nothing was recorded", full.Status, full.Message)
	}
	if full.RetryAfter <= 0 {
		t.Errorf("a full disk: no Retry-After")
	}
	// Reads work while the disk is full.
	if _, err := c.Checkpoint(ctx, "app"); err != nil {
		t.Fatalf("reading the checkpoint while the disk is full: %v", err)
	}
	if _, err := c.Entries(ctx, "app", 0, 10); err != nil {
		t.Fatalf("reading entries while the disk is full: %v", err)
	}

	// Space returns: appends succeed again by themselves.
	srv.cmd.Process.Signal(syscall.SIGUSR1)
	deadline := time.Now().Add(30 * time.Second)
	for {
		rs, err := c.Append(ctx, "app", batch(20_000)...)
		if err == nil {
			acked = append(acked, rs...)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refusing 30 s after space returned: %v\n%s", err, srv.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	rs, err := c.Append(ctx, "app", batch(20_001)...)
	if err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	acked = append(acked, rs...)

	// Everything acknowledged is there, no refused batch is half-stored,
	// and the log verifies in full.
	v, err := client.NewVerifier(strings.TrimSpace(string(vkeyB)))
	if err != nil {
		t.Fatal(err)
	}
	reg, _, err := c.AuditSystem(ctx, v, nil)
	if err != nil {
		t.Fatalf("auditing _system: %v", err)
	}
	cpb, err := c.Checkpoint(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	fc, err := v.OpenCheckpoint("app", cpb)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AuditLog(ctx, v, "app", fc, reg, nil); err != nil {
		t.Fatalf("auditing the log: %v", err)
	}
	lg := &crashLog{name: "app", batches: map[string]int{}}
	for start := int64(0); start < fc.Size; start += 1000 {
		es, err := c.Entries(ctx, "app", start, min(start+1000, fc.Size))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			lg.add(t, e.Data)
		}
	}
	for _, r := range acked {
		if r.Index >= fc.Size || string(lg.entries[r.Index]) != string(r.Entry) {
			t.Fatalf("acknowledged entry %d is not stored as acknowledged", r.Index)
		}
	}
	for tag, n := range lg.batches {
		if n != 100 {
			t.Errorf("batch %s stored %d of its 100 events", tag, n)
		}
	}
}
