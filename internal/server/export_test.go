package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/vellum-audit/vellum/client"
	"github.com/vellum-audit/vellum/internal/node"
)

// subtreeHash is the RFC 6962 hash of leaves, computed from the definition.
func subtreeHash(leaves []tlog.Hash) tlog.Hash {
	if len(leaves) == 1 {
		return leaves[0]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	return tlog.NodeHash(subtreeHash(leaves[:k]), subtreeHash(leaves[k:]))
}

// TestRangeProofEndpoint checks the range proof of random ranges at random
// tree sizes: every node is the aligned perfect subtree it names, the
// nodes with the range's leaves cover [0, size) exactly, and left hashes
// + leaf hashes + right hashes give the tree hash.
func TestRangeProofEndpoint(t *testing.T) {
	dir := t.TempDir()
	n, err := node.Open(context.Background(), node.Config{Dir: dir, OriginPrefix: "test.example/range", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(n.Handler)
	defer func() { srv.Close(); n.Close() }()
	tok, _ := os.ReadFile(filepath.Join(dir, node.AdminKeyFile))
	token := strings.TrimSpace(string(tok))
	c, err := client.New(srv.URL, token)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.CreateLog(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	// Appends of varied sizes, so that commits end at odd tree sizes.
	rng := rand.New(rand.NewPCG(5, 6))
	total := 0
	for total < 1100 {
		k := 1 + rng.IntN(150)
		evs := make([]json.RawMessage, k)
		for i := range evs {
			evs[i] = json.RawMessage(fmt.Sprintf(`{"action":"a.b","actor":{"id":"x"},"metadata":{"i":%d}}`, total+i))
		}
		if _, err := c.Append(ctx, "app", evs...); err != nil {
			t.Fatal(err)
		}
		total += k
	}
	var leaves []tlog.Hash
	for len(leaves) < total {
		es, err := c.Entries(ctx, "app", int64(len(leaves)), int64(total))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			h, err := tlog.ParseHash(e.LeafHash)
			if err != nil {
				t.Fatal(err)
			}
			leaves = append(leaves, h)
		}
	}
	check := func(a, b, size int64) {
		t.Helper()
		p, err := c.RangeProof(ctx, "app", a, b, size)
		if err != nil {
			t.Fatalf("[%d, %d) at %d: %v", a, b, size, err)
		}
		if p.Start != a || p.End != b || p.Size != size {
			t.Fatalf("answer for [%d, %d) at %d: %+v", a, b, size, p)
		}
		// Every node names an aligned perfect subtree; together they
		// cover [0, a) and [b, size) in order.
		pos := int64(0)
		for i, side := range [][]client.RangeNode{p.Left, p.Right} {
			if i == 1 {
				if pos != a {
					t.Fatalf("[%d, %d) at %d: left covers [0, %d)", a, b, size, pos)
				}
				pos = b
			}
			for _, nd := range side {
				lo, hi := nd.Index<<nd.Level, (nd.Index+1)<<nd.Level
				if lo != pos || hi > size {
					t.Fatalf("[%d, %d) at %d: node (%d, %d) covers [%d, %d) at position %d", a, b, size, nd.Level, nd.Index, lo, hi, pos)
				}
				if want := subtreeHash(leaves[lo:hi]).String(); nd.Hash != want {
					t.Fatalf("[%d, %d) at %d: node (%d, %d) hash %s, want %s", a, b, size, nd.Level, nd.Index, nd.Hash, want)
				}
				pos = hi
			}
		}
		if pos != size {
			t.Fatalf("[%d, %d) at %d: right ends at %d", a, b, size, pos)
		}
		var ls [][32]byte
		for _, l := range leaves[a:b] {
			ls = append(ls, l)
		}
		root, err := client.RangeRoot(p, ls)
		if err != nil {
			t.Fatal(err)
		}
		want, err := n.Ledger.TreeHash(ctx, "app", size)
		if err != nil {
			t.Fatal(err)
		}
		if tlog.Hash(root) != want || want != subtreeHash(leaves[:size]) {
			t.Fatalf("[%d, %d) at %d: root %x, tree hash %s", a, b, size, root, want)
		}
	}
	sz := int64(total)
	for _, r := range [][3]int64{{0, 1, 1}, {0, sz, sz}, {sz - 1, sz, sz}, {0, 1, sz}, {512, 1024, 1024}, {511, 513, sz}, {1023, 1024, 1025}} {
		check(r[0], r[1], r[2])
	}
	for range 300 {
		size := 1 + rng.Int64N(sz)
		a := rng.Int64N(size)
		b := a + 1 + rng.Int64N(size-a)
		check(a, b, size)
	}

	// Bad requests.
	tr, err := client.NewTransport(token, nil)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: tr}
	for _, tc := range []struct {
		query  string
		status int
		msg    string
	}{
		{"start=0&end=1", 200, ""},
		{"start=0&end=1&size=1", 200, ""},
		{"end=1", 400, "required"},
		{"start=0", 400, "required"},
		{"start=1&end=1", 400, "below end"},
		{"start=5&end=3", 400, "below end"},
		{fmt.Sprintf("start=0&end=%d&size=%d", sz, sz-1), 400, "beyond the tree size"},
		{fmt.Sprintf("start=0&end=1&size=%d", sz+1), 400, "beyond the log's current size"},
		{"start=-1&end=1", 400, "non-negative"},
		{"start=x&end=1", 400, "non-negative"},
		{"start=0&end=1&size=", 200, ""},
		{"start=0&end=1&index=3", 400, "unknown parameter"},
		{"start=0&end=99999999999999999999", 400, "non-negative"},
	} {
		resp, err := hc.Get(srv.URL + "/v1/logs/app/proof/range?" + tc.query)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.msg) {
			t.Errorf("%s: %d %s, want %d %q", tc.query, resp.StatusCode, body, tc.status, tc.msg)
		}
	}
	if _, err := c.RangeProof(ctx, "nope", 0, 1, 1); !isStatus(err, 404) {
		t.Errorf("unknown log: %v", err)
	}
	// A key that may not read the log is refused.
	nk, err := c.CreateKey(ctx, client.KeyOptions{Role: "reader", Scopes: []string{"read:other"}})
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := client.New(srv.URL, nk.Token)
	if _, err := rc.RangeProof(ctx, "app", 0, 1, 1); !isStatus(err, 403) {
		t.Errorf("out of scope: %v", err)
	}
}

func isStatus(err error, status int) bool {
	var ae *client.Error
	return errors.As(err, &ae) && ae.Status == status
}

// TestExportEndpoint checks GET /v1/logs/{log}/export: the entries'
// bytes, one per line, exactly those of the range; bad parameters are a
// 400 with a JSON error; the read is recorded in _access once per request
// however many storage chunks it spans; a key without read access is
// refused.
func TestExportEndpoint(t *testing.T) {
	dir := t.TempDir()
	n, err := node.Open(context.Background(), node.Config{Dir: dir, OriginPrefix: "test.example/export", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(n.Handler)
	defer func() { srv.Close(); n.Close() }()
	tok, _ := os.ReadFile(filepath.Join(dir, node.AdminKeyFile))
	token := strings.TrimSpace(string(tok))
	c, err := client.New(srv.URL, token)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.CreateLog(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	const total = 9000 // more than two storage chunks
	for done := 0; done < total; done += 1000 {
		evs := make([]json.RawMessage, 1000)
		for i := range evs {
			evs[i] = json.RawMessage(fmt.Sprintf(`{"action":"a.b","actor":{"id":"x"},"metadata":{"i":%d}}`, done+i))
		}
		if _, err := c.Append(ctx, "app", evs...); err != nil {
			t.Fatal(err)
		}
	}
	want := make([][]byte, 0, total)
	for int64(len(want)) < total {
		es, err := c.Entries(ctx, "app", int64(len(want)), total)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			want = append(want, e.Data)
		}
	}
	tr, err := client.NewTransport(token, nil)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: tr}
	get := func(path string) (*http.Response, []byte) {
		t.Helper()
		resp, err := hc.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		return resp, body
	}
	// Read directly, so as not to add records of its own; the export's
	// record is committed before its answer starts.
	accessSize := func() int64 {
		size, _, err := n.Ledger.Size(ctx, "_access")
		if err != nil {
			t.Fatal(err)
		}
		return size
	}
	// The records of the reads above are written after their answers:
	// let them land.
	for prev := int64(-1); ; time.Sleep(50 * time.Millisecond) {
		if cur := accessSize(); cur == prev {
			break
		} else {
			prev = cur
		}
	}
	for _, r := range [][2]int64{{0, total}, {0, 1}, {total - 1, total}, {4095, 4097}, {17, 8200}} {
		before := accessSize()
		resp, body := get(fmt.Sprintf("/v1/logs/app/export?start=%d&end=%d", r[0], r[1]))
		after := accessSize()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/jsonl" {
			t.Fatalf("[%d, %d): %d %s", r[0], r[1], resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		lines := strings.SplitAfter(string(body), "\n")
		if lines[len(lines)-1] != "" || int64(len(lines)-1) != r[1]-r[0] {
			t.Fatalf("[%d, %d): %d lines", r[0], r[1], len(lines)-1)
		}
		for i, l := range lines[:len(lines)-1] {
			if l != string(want[r[0]+int64(i)])+"\n" {
				t.Fatalf("[%d, %d): line %d is not entry %d", r[0], r[1], i, r[0]+int64(i))
			}
		}
		// The read of [0, 9000) spans three storage chunks, and is one
		// record.
		if after-before != 1 {
			t.Fatalf("[%d, %d): %d _access records, want 1", r[0], r[1], after-before)
		}
	}
	for _, tc := range []struct {
		query string
		msg   string
	}{
		{"end=1", "required"},
		{"start=0", "required"},
		{"start=1&end=1", "empty or not within"},
		{"start=5&end=3", "empty or not within"},
		{fmt.Sprintf("start=0&end=%d", total+1), "empty or not within"},
		{"start=-1&end=1", "non-negative"},
		{"start=x&end=1", "non-negative"},
		{"start=0&end=1&size=1", "unknown parameter"},
		{"start=0&end=99999999999999999999", "non-negative"},
	} {
		resp, body := get("/v1/logs/app/export?" + tc.query)
		var e struct {
			Error struct {
				Code, Message string
			}
		}
		if resp.StatusCode != 400 || json.Unmarshal(body, &e) != nil || !strings.Contains(e.Error.Message, tc.msg) {
			t.Errorf("%s: %d %s, want 400 and a JSON error with %q", tc.query, resp.StatusCode, body, tc.msg)
		}
	}
	if resp, _ := get("/v1/logs/nope/export?start=0&end=1"); resp.StatusCode != 404 {
		t.Errorf("unknown log: %d", resp.StatusCode)
	}
	nk, err := c.CreateKey(ctx, client.KeyOptions{Role: "reader", Scopes: []string{"read:other"}})
	if err != nil {
		t.Fatal(err)
	}
	rtr, _ := client.NewTransport(nk.Token, nil)
	resp, err := (&http.Client{Transport: rtr}).Get(srv.URL + "/v1/logs/app/export?start=0&end=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("out of scope: %d", resp.StatusCode)
	}
}
