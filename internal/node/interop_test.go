package node_test

// Interoperability: what the server serves (proofs, checkpoints, tree
// hashes) checked with independent implementations: transparency-dev/merkle
// for RFC 6962 proofs and golang.org/x/mod/sumdb/note for signed notes.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/client"
)

var interopSizes = []int64{1, 2, 3, 7, 8, 9, 255, 256, 257, 1000}

func decodeHashes(t *testing.T, ss []string) [][]byte {
	t.Helper()
	out := make([][]byte, len(ss))
	for i, s := range ss {
		b, err := base64.StdEncoding.Strict().DecodeString(s)
		if err != nil || len(b) != 32 {
			t.Fatalf("proof hash %q is not a base64 SHA-256 hash", s)
		}
		out[i] = b
	}
	return out
}

// openCheckpoint verifies a checkpoint with x/mod's note package only and
// parses its C2SP tlog-checkpoint body strictly.
func openCheckpoint(t *testing.T, text []byte, vkey, origin string) (size int64, root []byte) {
	t.Helper()
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(text, note.VerifierList(v))
	if err != nil {
		t.Fatalf("note.Open: %v\n%s", err, text)
	}
	if len(n.Sigs) != 1 || n.Sigs[0].Name != testOriginPrefix || len(n.UnverifiedSigs) != 0 {
		t.Errorf("signatures %+v, unverified %+v: want one by %q", n.Sigs, n.UnverifiedSigs, testOriginPrefix)
	}
	// C2SP tlog-checkpoint: origin, decimal size, base64 root hash, each on
	// its own line; no extension lines from vellum.
	lines := strings.Split(n.Text, "\n")
	if len(lines) != 4 || lines[3] != "" {
		t.Fatalf("checkpoint body %q: want exactly three newline-terminated lines", n.Text)
	}
	if lines[0] != origin {
		t.Errorf("origin %q, want %q", lines[0], origin)
	}
	size, err = strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		t.Fatalf("tree size line %q is not a canonical decimal", lines[1])
	}
	root, err = base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil || len(root) != 32 {
		t.Fatalf("root hash line %q is not a base64 SHA-256 hash", lines[2])
	}
	// The signed note: body, blank line, "— <name> <base64(key hash || sig)>".
	wantPrefix := n.Text + "\n\u2014 " + testOriginPrefix + " "
	if !strings.HasPrefix(string(text), wantPrefix) || !strings.HasSuffix(string(text), "\n") || strings.Count(string(text), "\n\u2014 ") != 1 {
		t.Errorf("signed note %q is not body + one signature line", text)
	}
	return size, root
}

func TestInteropProofs(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	url, tok, _ := startNode(t, dir)
	c := newClient(t, url, tok)
	si, err := c.ServerInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const log = "interop"
	origin := testOriginPrefix + "/" + log
	createLog(t, c, log)

	// Grow the log to each size, recording the checkpoint there.
	roots := map[int64][]byte{}
	var size int64
	for _, target := range interopSizes {
		var evs []json.RawMessage
		for i := size; i < target; i++ {
			evs = append(evs, event("interop.add", fmt.Sprintf("u%d", i)))
		}
		mustAppend(t, c, log, evs...)
		size = target
		text, err := c.Checkpoint(ctx, log)
		if err != nil {
			t.Fatal(err)
		}
		n, root := openCheckpoint(t, text, si.VerifierKey, origin)
		if n != target {
			t.Fatalf("checkpoint size %d, want %d", n, target)
		}
		roots[target] = root
	}

	// Leaf hashes computed from the entries with rfc6962, and the roots at
	// every size recomputed with a compact range.
	h := rfc6962.DefaultHasher
	var leaves [][]byte
	for int64(len(leaves)) < size {
		es, err := c.Entries(ctx, log, int64(len(leaves)), size)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			lh := h.HashLeaf(e.Data)
			if got := base64.StdEncoding.EncodeToString(lh); got != e.LeafHash {
				t.Fatalf("entry %d: leaf_hash %s, rfc6962 says %s", e.Index, e.LeafHash, got)
			}
			leaves = append(leaves, lh)
		}
	}
	rf := &compact.RangeFactory{Hash: h.HashChildren}
	cr := rf.NewEmptyRange(0)
	for i, lh := range leaves {
		if err := cr.Append(lh, nil); err != nil {
			t.Fatal(err)
		}
		if want, ok := roots[int64(i+1)]; ok {
			got, err := cr.GetRootHash(nil)
			if err != nil {
				t.Fatal(err)
			}
			if hex.EncodeToString(got) != hex.EncodeToString(want) {
				t.Errorf("size %d: checkpoint root %x, compact range root %x", i+1, want, got)
			}
		}
	}

	for _, s := range interopSizes {
		t.Run(fmt.Sprintf("inclusion/size=%d", s), func(t *testing.T) {
			idxs := map[int64]bool{0: true, s - 1: true, s / 2: true}
			if s <= 16 {
				for i := range s {
					idxs[i] = true
				}
			} else {
				for _, i := range []int64{1, 2, 127, 128, 254, 255, 256, s - 2} {
					if i < s {
						idxs[i] = true
					}
				}
			}
			for idx := range idxs {
				p, err := c.InclusionProof(ctx, log, idx, s)
				if err != nil {
					t.Fatalf("index %d: %v", idx, err)
				}
				if p.Index != idx || p.Size != s || p.LeafHash != base64.StdEncoding.EncodeToString(leaves[idx]) {
					t.Errorf("index %d: proof says index %d size %d leaf %s", idx, p.Index, p.Size, p.LeafHash)
				}
				hashes := decodeHashes(t, p.Hashes)
				if err := proof.VerifyInclusion(h, uint64(idx), uint64(s), leaves[idx], hashes, roots[s]); err != nil {
					t.Errorf("index %d size %d: proof.VerifyInclusion: %v", idx, s, err)
				}
				// The check is not vacuous: another leaf fails.
				if err := proof.VerifyInclusion(h, uint64(idx), uint64(s), leaves[(idx+1)%int64(len(leaves))], hashes, roots[s]); err == nil && s > 1 {
					t.Errorf("index %d size %d: proof verifies for another leaf", idx, s)
				}
			}
		})
	}

	t.Run("consistency", func(t *testing.T) {
		for i, s1 := range interopSizes {
			for _, s2 := range interopSizes[i:] {
				p, err := c.ConsistencyProof(ctx, log, s1, s2)
				if err != nil {
					t.Fatalf("%d→%d: %v", s1, s2, err)
				}
				if p.Old != s1 || p.New != s2 {
					t.Errorf("%d→%d: proof says %d→%d", s1, s2, p.Old, p.New)
				}
				hashes := decodeHashes(t, p.Hashes)
				if err := proof.VerifyConsistency(h, uint64(s1), uint64(s2), hashes, roots[s1], roots[s2]); err != nil {
					t.Errorf("%d→%d: proof.VerifyConsistency: %v", s1, s2, err)
				}
				if len(hashes) > 0 {
					hashes[len(hashes)-1] = leaves[0]
					if proof.VerifyConsistency(h, uint64(s1), uint64(s2), hashes, roots[s1], roots[s2]) == nil {
						t.Errorf("%d→%d: an altered proof verifies", s1, s2)
					}
				}
			}
		}
		// From the empty tree.
		p, err := c.ConsistencyProof(ctx, log, 0, 9)
		if err != nil {
			t.Fatal(err)
		}
		if err := proof.VerifyConsistency(h, 0, 9, decodeHashes(t, p.Hashes), h.EmptyRoot(), roots[9]); err != nil {
			t.Errorf("0→9: %v", err)
		}
	})

	t.Run("receipts", func(t *testing.T) {
		// A receipt's tlog-proof@v1 hashes are an RFC 6962 inclusion proof
		// too: check one receipt with transparency-dev/merkle.
		r := mustAppend(t, c, log, event("interop.add", "last"))[0]
		lines := strings.Split(r.Proof, "\n")
		if lines[0] != "c2sp.org/tlog-proof@v1" || lines[1] != "index "+strconv.FormatInt(r.Index, 10) {
			t.Fatalf("receipt proof %q", r.Proof)
		}
		var hs []string
		k := 2
		for ; lines[k] != ""; k++ {
			hs = append(hs, lines[k])
		}
		cpText := strings.Join(lines[k+1:], "\n")
		n, root := openCheckpoint(t, []byte(cpText), si.VerifierKey, origin)
		if n != r.Index+1 {
			t.Errorf("receipt checkpoint size %d, want %d", n, r.Index+1)
		}
		if err := proof.VerifyInclusion(h, uint64(r.Index), uint64(n), h.HashLeaf(r.Entry), decodeHashes(t, hs), root); err != nil {
			t.Errorf("receipt proof: %v", err)
		}
	})
}

func TestInteropCheckpoint(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	url, tok, _ := startNode(t, dir)
	c := newClient(t, url, tok)
	si, err := c.ServerInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	createLog(t, c, "cp")
	raw := newRaw(t, url, tok)

	for _, n := range []int{0, 1, 5} {
		if n > 0 {
			var evs []json.RawMessage
			for i := range n {
				evs = append(evs, event("cp.add", fmt.Sprintf("u%d", i)))
			}
			mustAppend(t, c, "cp", evs...)
		}
		resp, body := raw.send(t, http.MethodGet, "/v1/logs/cp/checkpoint", "", nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET checkpoint: %d %s", resp.StatusCode, body)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
			t.Errorf("checkpoint Content-Type %q", ct)
		}
		size, root := openCheckpoint(t, body, si.VerifierKey, testOriginPrefix+"/cp")
		l, err := c.Log(ctx, "cp")
		if err != nil {
			t.Fatal(err)
		}
		if l.Size != size || l.RootHash != base64.StdEncoding.EncodeToString(root) || l.Origin != testOriginPrefix+"/cp" {
			t.Errorf("log info %+v disagrees with checkpoint (size %d root %x)", l, size, root)
		}
		if size == 0 && hex.EncodeToString(root) != hex.EncodeToString(rfc6962.DefaultHasher.EmptyRoot()) {
			t.Errorf("empty log root %x, want the RFC 6962 empty root", root)
		}
		// Another key's verifier does not accept it.
		_, otherV, _ := note.GenerateKey(rand.Reader, testOriginPrefix)
		ov, err := note.NewVerifier(otherV)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := note.Open(body, note.VerifierList(ov)); err == nil {
			t.Error("checkpoint verifies with another key of the same name")
		}
	}
	// _system's checkpoint has the same form.
	text, err := c.Checkpoint(ctx, api.SystemLog)
	if err != nil {
		t.Fatal(err)
	}
	openCheckpoint(t, text, si.VerifierKey, testOriginPrefix+"/"+api.SystemLog)

	// The client package verifies the same checkpoints.
	v, err := client.NewVerifier(si.VerifierKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Latest(ctx, v, "cp", nil); err != nil {
		t.Error(err)
	}
}

// RFC 6962 reference roots for the leaf inputs of transparency-dev/merkle's
// testonly package (LeafInputs and RootHashes in testonly/constants.go at
// v0.0.2), copied here as literals.
var (
	rfc6962Leaves = []string{
		"",
		"00",
		"10",
		"2021",
		"3031",
		"40414243",
		"5051525354555657",
		"606162636465666768696a6b6c6d6e6f",
	}
	rfc6962Roots = []string{ // index: tree size
		"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
		"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
		"aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
		"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
		"4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
		"76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
		"ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
		"5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
	}
	// Leaf hashes (level 0 of testonly.NodeHashes).
	rfc6962LeafHashes = []string{
		"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
		"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
		"0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
		"07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
		"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
		"4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
		"b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
		"46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
	}
)

// TestRFC6962ReferenceRoots computes tree hashes the way internal/ledger
// does (tlog.RecordHash leaves, tlog.StoredHashesForRecordHash, then
// tlog.TreeHash over the stored hashes) and compares them with the RFC 6962
// reference values.
func TestRFC6962ReferenceRoots(t *testing.T) {
	var stored []tlog.Hash
	r := tlog.HashReaderFunc(func(ids []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(ids))
		for i, id := range ids {
			if id < 0 || id >= int64(len(stored)) {
				return nil, fmt.Errorf("hash %d not stored", id)
			}
			out[i] = stored[id]
		}
		return out, nil
	})
	root, err := tlog.TreeHash(0, r)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(root[:]); got != rfc6962Roots[0] {
		t.Errorf("empty tree: %s, want %s", got, rfc6962Roots[0])
	}
	for i, in := range rfc6962Leaves {
		data, err := hex.DecodeString(in)
		if err != nil {
			t.Fatal(err)
		}
		leaf := tlog.RecordHash(data)
		if got := hex.EncodeToString(leaf[:]); got != rfc6962LeafHashes[i] {
			t.Errorf("leaf %d (%q): hash %s, want %s", i, in, got, rfc6962LeafHashes[i])
		}
		if int64(len(stored)) != tlog.StoredHashCount(int64(i)) {
			t.Fatalf("before leaf %d: %d stored hashes, want %d", i, len(stored), tlog.StoredHashCount(int64(i)))
		}
		hs, err := tlog.StoredHashesForRecordHash(int64(i), leaf, r)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, hs...)
		root, err := tlog.TreeHash(int64(i+1), r)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(root[:]); got != rfc6962Roots[i+1] {
			t.Errorf("size %d: tlog root %s, RFC 6962 reference %s", i+1, got, rfc6962Roots[i+1])
		}
		// transparency-dev/merkle agrees as well.
		if got := hex.EncodeToString(rfc6962.DefaultHasher.HashLeaf(data)); got != rfc6962LeafHashes[i] {
			t.Errorf("leaf %d: rfc6962.HashLeaf %s", i, got)
		}
	}
	// Proofs built by tlog over these stored hashes verify with
	// transparency-dev/merkle against the reference roots.
	h := rfc6962.DefaultHasher
	for n := int64(1); n <= int64(len(rfc6962Leaves)); n++ {
		rootN, _ := hex.DecodeString(rfc6962Roots[n])
		for i := range n {
			p, err := tlog.ProveRecord(n, i, r)
			if err != nil {
				t.Fatal(err)
			}
			leaf, _ := hex.DecodeString(rfc6962LeafHashes[i])
			if err := proof.VerifyInclusion(h, uint64(i), uint64(n), leaf, hashBytes(p), rootN); err != nil {
				t.Errorf("inclusion %d in %d: %v", i, n, err)
			}
		}
		for m := int64(1); m < n; m++ {
			p, err := tlog.ProveTree(n, m, r)
			if err != nil {
				t.Fatal(err)
			}
			rootM, _ := hex.DecodeString(rfc6962Roots[m])
			if err := proof.VerifyConsistency(h, uint64(m), uint64(n), hashBytes(p), rootM, rootN); err != nil {
				t.Errorf("consistency %d→%d: %v", m, n, err)
			}
		}
	}
}

func hashBytes(hs []tlog.Hash) [][]byte {
	out := make([][]byte, len(hs))
	for i := range hs {
		out[i] = hs[i][:]
	}
	return out
}
