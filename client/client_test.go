package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/client"
	"github.com/vellum-audit/vellum/internal/keys"
	"github.com/vellum-audit/vellum/internal/node"
)

// testServer runs a real node on loopback and returns a client with its
// admin key and a trusted verifier.
func testServer(t *testing.T) (*client.Client, *client.Verifier) {
	t.Helper()
	dir := t.TempDir()
	n, err := node.Open(context.Background(), node.Config{Dir: dir, OriginPrefix: "test.example/client"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(n.Handler)
	t.Cleanup(func() { srv.Close(); n.Close() })
	tok, _ := os.ReadFile(filepath.Join(dir, node.AdminKeyFile))
	c, err := client.New(srv.URL, strings.TrimSpace(string(tok)))
	if err != nil {
		t.Fatal(err)
	}
	v, err := client.NewVerifier(n.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	return c, v
}

func events(n int) []json.RawMessage {
	out := make([]json.RawMessage, n)
	for i := range out {
		out[i] = json.RawMessage(fmt.Sprintf(`{"action":"user.update","actor":{"id":"u%d"},"metadata":{"i":%d}}`, i, i))
	}
	return out
}

// fetch returns all entries of log and the registry and checkpoint.
func fetch(t *testing.T, c *client.Client, v *client.Verifier, log string) ([]api.Entry, *keys.Registry, client.Checkpoint) {
	t.Helper()
	ctx := context.Background()
	reg, _, err := c.AuditSystem(ctx, v, nil)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := c.Latest(ctx, v, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	es, err := c.Entries(ctx, log, 0, cp.Size)
	if err != nil {
		t.Fatal(err)
	}
	return es, reg, cp
}

func audit(v *client.Verifier, reg *keys.Registry, log string, es []api.Entry, cp client.Checkpoint) error {
	a := v.NewAuditor(log, reg)
	for _, e := range es {
		if err := a.Add(e.Data); err != nil {
			return err
		}
	}
	return a.Check(cp)
}

func TestAuditorDetectsEveryChange(t *testing.T) {
	c, v := testServer(t)
	ctx := context.Background()
	if _, err := c.CreateLog(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Append(ctx, "app", events(12)...); err != nil {
		t.Fatal(err)
	}
	es, reg, cp := fetch(t, c, v, "app")
	if err := audit(v, reg, "app", es, cp); err != nil {
		t.Fatalf("untouched log: %v", err)
	}
	clone := func() []api.Entry {
		out := make([]api.Entry, len(es))
		for i, e := range es {
			out[i] = e
			out[i].Data = bytes.Clone(e.Data)
		}
		return out
	}
	cases := []struct {
		name   string
		change func([]api.Entry) []api.Entry
		index  int64 // first bad index; -1: detected at the root
	}{
		{"removed", func(e []api.Entry) []api.Entry { return append(e[:5], e[6:]...) }, 5},
		{"reordered", func(e []api.Entry) []api.Entry { e[3], e[4] = e[4], e[3]; return e }, 3},
		{"added at end", func(e []api.Entry) []api.Entry { return append(e, e[11]) }, 12},
		{"truncated", func(e []api.Entry) []api.Entry { return e[:11] }, -1},
		{"changed metadata", func(e []api.Entry) []api.Entry {
			e[7].Data = bytes.Replace(e[7].Data, []byte(`"i":7`), []byte(`"i":8`), 1)
			return e
		}, 7},
		{"changed received", func(e []api.Entry) []api.Entry {
			e[2].Data = bytes.Replace(e[2].Data, []byte(`"received":"2026`), []byte(`"received":"2027`), 1)
			return e
		}, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := audit(v, reg, "app", tc.change(clone()), cp)
			if err == nil {
				t.Fatal("change not detected")
			}
			if !errors.Is(err, client.ErrVerification) {
				t.Fatalf("error does not wrap ErrVerification: %v", err)
			}
			var ee *client.EntryError
			if tc.index >= 0 {
				if !errors.As(err, &ee) || ee.Index != tc.index {
					t.Fatalf("want the first bad index %d, got %v", tc.index, err)
				}
			}
		})
	}
}

func TestEventFromAnotherLogRefused(t *testing.T) {
	c, _ := testServer(t)
	ctx := context.Background()
	c.CreateLog(ctx, "a")
	c.CreateLog(ctx, "b")
	se, err := c.Sign("a", events(1)[0])
	if err != nil {
		t.Fatal(err)
	}
	// The signature binds the log name: replaying it into log b fails.
	_, err = c.AppendSigned(ctx, "b", []api.SignedEvent{se})
	var ae *client.Error
	if !errors.As(err, &ae) || ae.Status != 400 {
		t.Fatalf("cross-log replay: %v", err)
	}
	if _, err := c.AppendSigned(ctx, "a", []api.SignedEvent{se}); err != nil {
		t.Fatal(err)
	}
}

func TestSequenceNumbering(t *testing.T) {
	dir := t.TempDir()
	n, err := node.Open(context.Background(), node.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(n.Handler)
	defer func() { srv.Close(); n.Close() }()
	tok, _ := os.ReadFile(filepath.Join(dir, node.AdminKeyFile))
	c, _ := client.New(srv.URL, strings.TrimSpace(string(tok)), client.WithSequence("svc-1", 10))
	ctx := context.Background()
	c.CreateLog(ctx, "app")
	rs, err := c.Append(ctx, "app", json.RawMessage(`{"action":"a","actor":{"id":"x"},"source":"svc-1"}`), json.RawMessage(`{"action":"b","actor":{"id":"x"},"source":"svc-1"}`))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rs {
		var e struct {
			Event struct {
				Seq int64  `json:"seq"`
				ID  string `json:"id"`
			} `json:"event"`
		}
		json.Unmarshal(r.Entry, &e)
		if e.Event.Seq != int64(10+i) || e.Event.ID != "" {
			t.Fatalf("event %d: seq %d id %q", i, e.Event.Seq, e.Event.ID)
		}
	}
}

func TestConsistencyAndFork(t *testing.T) {
	c, v := testServer(t)
	ctx := context.Background()
	c.CreateLog(ctx, "app")
	c.Append(ctx, "app", events(5)...)
	old, err := c.Latest(ctx, v, "app", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Append(ctx, "app", events(9)...)
	cur, err := c.Latest(ctx, v, "app", &old)
	if err != nil {
		t.Fatalf("consistent growth refused: %v", err)
	}
	forged := old
	forged.Hash[0] ^= 0xff
	if _, err := c.Latest(ctx, v, "app", &forged); !errors.Is(err, client.ErrVerification) {
		t.Fatalf("trusted checkpoint from a fork accepted: %v", err)
	}
	if cur.Size != 14 {
		t.Fatalf("size %d", cur.Size)
	}
}

func Example() {
	// A producer appends an event and checks its receipt offline.
	ctx := context.Background()
	c, err := client.New("http://127.0.0.1:7070", os.Getenv("VELLUM_KEY"))
	if err != nil {
		fmt.Println(err)
		return
	}
	receipts, err := c.Append(ctx, "billing", json.RawMessage(`{"action":"user.create","actor":{"id":"alice"}}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	// The verifier key is pinned out of band (vellum info, or server.vkey).
	v, err := client.NewVerifier(os.Getenv("VELLUM_VERIFIER_KEY"))
	if err != nil {
		fmt.Println(err)
		return
	}
	cp, err := v.VerifyReceipt(receipts[0], c.PublicKey())
	fmt.Println(cp.Size, err)
}
