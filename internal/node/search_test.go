package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/client"
	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/index"
	"github.com/vellum-audit/vellum/internal/node"
)

// searchEvent is a random event over small vocabularies, so filters match.
func searchEvent(r *rand.Rand, i int) json.RawMessage {
	words := []string{"alpha", "bravo", "charlie", "delta", "echo", "Ünïcode", "42"}
	ev := map[string]any{
		"action":  []string{"user.create", "user.delete", "user.login", "role.grant", "role.revoke", "config.update"}[r.IntN(6)],
		"actor":   map[string]any{"id": fmt.Sprintf("u%d", r.IntN(20))},
		"outcome": []string{"success", "failure", "unknown"}[r.IntN(3)],
		"source":  fmt.Sprintf("svc-%d", r.IntN(4)),
		"time":    time.Date(2026, 1, 1+r.IntN(28), 0, 0, 0, 0, time.UTC).Format(time.RFC3339),
		"targets": []map[string]any{{"id": fmt.Sprintf("t%d", r.IntN(30)), "type": []string{"user", "repo"}[r.IntN(2)]}},
		"metadata": map[string]any{
			"note": words[r.IntN(len(words))] + " " + words[r.IntN(len(words))],
			"n":    r.IntN(100),
		},
	}
	if r.IntN(5) == 0 {
		ev["targets"] = append(ev["targets"].([]map[string]any), map[string]any{"id": fmt.Sprintf("t%d", r.IntN(30)), "type": "user"})
	}
	b, _ := json.Marshal(ev)
	return b
}

// TestSearchMatchesOracle compares every search (all pages, both orders)
// with a brute-force filter over all entries.
func TestSearchMatchesOracle(t *testing.T) {
	dir := t.TempDir()
	url0, tok, stop := startNode(t, dir)
	defer stop()
	c, err := client.New(url0, tok)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.CreateLog(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(7, 7))
	const n = 1500
	var evs []json.RawMessage
	for i := range n {
		evs = append(evs, searchEvent(r, i))
	}
	// Several commits, so received times differ.
	for i := 0; i < n; i += 300 {
		if _, err := c.Append(ctx, "app", evs[i:i+300]...); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	var all []api.Entry
	for len(all) < n {
		es, err := c.Entries(ctx, "app", int64(len(all)), n)
		if err != nil || len(es) == 0 {
			t.Fatalf("%d entries, %v", len(all), err)
		}
		all = append(all, es...)
	}
	var docs []index.Doc
	for _, e := range all {
		pe, err := entry.Parse(e.Data)
		if err != nil {
			t.Fatal(err)
		}
		d, err := index.DocOf(pe)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, d)
	}
	mid := docs[n/2].Received.Format(time.RFC3339Nano)
	cases := []url.Values{
		{},
		{"actor": {"u3"}},
		{"action": {"user.create"}},
		{"action": {"user.*"}},
		{"action": {"role.*"}, "outcome": {"failure"}},
		{"key": {keyOf(t, all[0])}},
		{"source": {"svc-2"}, "actor": {"u1"}},
		{"target": {"t7"}},
		{"target": {"t7"}, "target_type": {"user"}},
		{"q": {"alpha"}},
		{"q": {"alpha bravo"}},
		{"q": {"ünïcode"}},
		{"q": {"42"}, "actor": {"u5"}},
		{"q": {"delta"}, "target": {"t3"}},
		{"since": {mid}},
		{"until": {mid}},
		{"since": {mid}, "action": {"user.*"}},
		{"event_from": {"2026-01-10T00:00:00Z"}, "event_to": {"2026-01-12T00:00:00Z"}},
		{"outcome": {"unknown"}, "source": {"svc-0"}},
		{"action": {"nothing.*"}},
		{"actor": {"nobody"}},
	}
	for _, q := range cases {
		for _, order := range []string{"newest", "oldest"} {
			name := q.Encode() + "&order=" + order
			t.Run(name, func(t *testing.T) {
				f, err := index.ParseFilter(q, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				var want []int64
				for _, d := range docs {
					if f.Match(d) {
						want = append(want, d.Index)
					}
				}
				if order == "newest" {
					slices.Reverse(want)
				}
				qq := url.Values{}
				for k, v := range q {
					qq[k] = v
				}
				qq.Set("order", order)
				qq.Set("limit", "37")
				var got []int64
				for pages := 0; ; pages++ {
					if pages > n {
						t.Fatal("pagination does not end")
					}
					el, err := c.Search(ctx, "app", qq)
					if err != nil {
						t.Fatal(err)
					}
					for _, e := range el.Entries {
						got = append(got, e.Index)
					}
					if el.NextCursor == "" {
						break
					}
					qq.Set("cursor", el.NextCursor)
				}
				if !slices.Equal(got, want) {
					t.Fatalf("search gave %d entries %v…, the oracle %d %v…", len(got), head(got), len(want), head(want))
				}
			})
		}
	}
}

func head(x []int64) []int64 { return x[:min(len(x), 8)] }

func keyOf(t *testing.T, e api.Entry) string {
	pe, err := entry.Parse(e.Data)
	if err != nil {
		t.Fatal(err)
	}
	return pe.KeyID
}

func TestSearchBadInput(t *testing.T) {
	dir := t.TempDir()
	url0, tok, stop := startNode(t, dir)
	defer stop()
	c, _ := client.New(url0, tok)
	ctx := context.Background()
	c.CreateLog(ctx, "app")
	c.Append(ctx, "app", json.RawMessage(`{"action":"a.b","actor":{"id":"x"}}`))
	other, _ := c.Search(ctx, "app", url.Values{"actor": {"x"}, "limit": {"1"}, "order": {"oldest"}})
	_ = other
	cases := map[string]url.Values{
		"unknown filter":      {"colour": {"red"}},
		"bad since":           {"since": {"yesterday"}},
		"bad until":           {"until": {"-5h"}},
		"reversed window":     {"since": {"2026-01-02T00:00:00Z"}, "until": {"2026-01-01T00:00:00Z"}},
		"bad cursor":          {"cursor": {"!!!"}},
		"forged cursor":       {"cursor": {"AQAAAAAAAAAAAAAAAQ"}},
		"limit zero":          {"limit": {"0"}},
		"limit too large":     {"limit": {"1001"}},
		"limit not a number":  {"limit": {"ten"}},
		"wildcard action":     {"action": {"*"}},
		"leading wildcard":    {"action": {"*.create"}},
		"one-letter text":     {"q": {"a"}},
		"punctuation text":    {"q": {"!!!"}},
		"bad outcome":         {"outcome": {"maybe"}},
		"bad order":           {"order": {"random"}},
		"type without target": {"target_type": {"user"}},
		"repeated parameter":  {"actor": {"a", "b"}},
		"range and filter":    {"start": {"0"}, "actor": {"x"}},
		"bad proof":           {"proof": {"yes"}},
	}
	for name, q := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := c.Search(ctx, "app", q)
			ae, ok := err.(*client.Error)
			if !ok || ae.Status != http.StatusBadRequest || ae.Message == "" {
				t.Fatalf("want a 400 with a message, got %v", err)
			}
		})
	}
	// A cursor from one query does not continue another.
	el, _ := c.Search(ctx, "app", url.Values{"actor": {"x"}, "limit": {"1"}})
	_ = el
}

func TestSearchProofsAndRebuild(t *testing.T) {
	dir := t.TempDir()
	url0, tok, stop := startNode(t, dir)
	c, _ := client.New(url0, tok)
	ctx := context.Background()
	c.CreateLog(ctx, "app")
	r := rand.New(rand.NewPCG(1, 2))
	var evs []json.RawMessage
	for i := range 200 {
		evs = append(evs, searchEvent(r, i))
	}
	if _, err := c.Append(ctx, "app", evs...); err != nil {
		t.Fatal(err)
	}
	info, _ := c.ServerInfo(ctx)
	v, _ := client.NewVerifier(info.VerifierKey)
	el, err := c.Search(ctx, "app", url.Values{"actor": {"u1"}, "proof": {"true"}})
	if err != nil || len(el.Entries) == 0 || el.Checkpoint == "" {
		t.Fatalf("%v %d", err, len(el.Entries))
	}
	for _, e := range el.Entries {
		cp, err := v.VerifyEntry(e)
		if err != nil || string(cp.Text) != el.Checkpoint {
			t.Fatalf("proof of %d: %v", e.Index, err)
		}
	}
	before := indexes(t, c, url.Values{"q": {"alpha"}, "limit": {"1000"}})
	stop()
	// Rebuild from the log gives the same answers.
	n, err := node.Open(ctx, node.Config{Dir: dir, OpenStore: storeOpener(t, dir)})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.RebuildIndex(ctx, nil); err != nil {
		t.Fatal(err)
	}
	n.Close()
	url1, _, stop1 := startNode(t, dir)
	defer stop1()
	tok2, _ := os.ReadFile(filepath.Join(dir, node.AdminKeyFile))
	c1, _ := client.New(url1, strings.TrimSpace(string(tok2)))
	if after := indexes(t, c1, url.Values{"q": {"alpha"}, "limit": {"1000"}}); !slices.Equal(before, after) || len(before) == 0 {
		t.Fatalf("rebuild changed answers: %d vs %d", len(before), len(after))
	}
}

func indexes(t *testing.T, c *client.Client, q url.Values) []int64 {
	el, err := c.Search(context.Background(), "app", q)
	if err != nil {
		t.Fatal(err)
	}
	var out []int64
	for _, e := range el.Entries {
		out = append(out, e.Index)
	}
	return out
}
