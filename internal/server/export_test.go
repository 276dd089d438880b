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
