package node_test

// A C2SP tlog-tiles client written from the specification only
// (c2sp.org/tlog-tiles): it reads a log through its tile endpoints,
// recomputes every hash from the entry bundles and checks the root against
// the signed checkpoint. It deliberately uses no vellum or tlog code for the
// tree: SHA-256 and RFC 6962 hashing are done here.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/vellum-audit/vellum/client"
)

const (
	tileHeight = 8
	tileWidth  = 1 << tileHeight // 256 hashes
	hashSize   = 32
)

type hash [hashSize]byte

func leafHash(data []byte) hash { return sha256.Sum256(append([]byte{0}, data...)) }

func nodeHash(l, r hash) hash {
	b := make([]byte, 0, 1+2*hashSize)
	b = append(b, 1)
	b = append(b, l[:]...)
	return sha256.Sum256(append(b, r[:]...))
}

// tileIndexPath encodes a tile index as zero-padded 3-digit path elements,
// all but the last prefixed with "x": 1234067 → x001/x234/067.
func tileIndexPath(n int64) string {
	s := fmt.Sprintf("%03d", n%1000)
	for n /= 1000; n > 0; n /= 1000 {
		s = fmt.Sprintf("x%03d/%s", n%1000, s)
	}
	return s
}

// tilePath is tile/<L>/<N>[.p/<W>] (level -1 for entry bundles); w is 0
// for a full tile.
func tilePath(level int, n int64, w int) string {
	l := "entries"
	if level >= 0 {
		l = strconv.Itoa(level)
	}
	p := "tile/" + l + "/" + tileIndexPath(n)
	if w > 0 {
		p += ".p/" + strconv.Itoa(w)
	}
	return p
}

func TestTileIndexPath(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "000"}, {1, "001"}, {999, "999"}, {1000, "x001/000"}, {1234067, "x001/x234/067"},
		{67, "067"}, {123456789, "x123/x456/789"},
	} {
		if got := tileIndexPath(tc.n); got != tc.want {
			t.Errorf("tileIndexPath(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
	if got := tilePath(1, 1234067, 17); got != "tile/1/x001/x234/067.p/17" {
		t.Errorf("tilePath = %q", got)
	}
	if got := tilePath(-1, 5, 0); got != "tile/entries/005" {
		t.Errorf("tilePath = %q", got)
	}
}

type tileClient struct {
	t      *testing.T
	hc     *http.Client
	prefix string // <url>/v1/logs/<log>
	vkey   string
	origin string
}

func (tc *tileClient) get(path string) (int, string, []byte) {
	tc.t.Helper()
	resp, err := tc.hc.Get(tc.prefix + "/" + path)
	if err != nil {
		tc.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tc.t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), b
}

// checkpoint fetches and verifies <prefix>/checkpoint.
func (tc *tileClient) checkpoint() (int64, hash) {
	tc.t.Helper()
	status, ct, body := tc.get("checkpoint")
	if status != http.StatusOK {
		tc.t.Fatalf("checkpoint: %d %s", status, body)
	}
	if ct != "text/plain; charset=utf-8" {
		tc.t.Errorf("checkpoint Content-Type %q", ct)
	}
	v, err := note.NewVerifier(tc.vkey)
	if err != nil {
		tc.t.Fatal(err)
	}
	n, err := note.Open(body, note.VerifierList(v))
	if err != nil {
		tc.t.Fatalf("checkpoint does not verify: %v", err)
	}
	lines := strings.SplitN(n.Text, "\n", 4)
	if len(lines) < 4 || lines[0] != tc.origin {
		tc.t.Fatalf("checkpoint body %q", n.Text)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		tc.t.Fatalf("checkpoint size %q", lines[1])
	}
	var root hash
	rb, err := decodeB64(lines[2])
	if err != nil || len(rb) != hashSize {
		tc.t.Fatalf("checkpoint root %q", lines[2])
	}
	copy(root[:], rb)
	return size, root
}

// tile fetches a hash tile and splits it into hashes.
func (tc *tileClient) tile(level int, n int64, w int) []hash {
	tc.t.Helper()
	p := tilePath(level, n, w)
	status, ct, body := tc.get(p)
	if status != http.StatusOK {
		tc.t.Fatalf("GET %s: %d %s", p, status, body)
	}
	if ct != "application/octet-stream" {
		tc.t.Errorf("GET %s: Content-Type %q", p, ct)
	}
	want := w
	if w == 0 {
		want = tileWidth
	}
	if len(body) != want*hashSize {
		tc.t.Fatalf("GET %s: %d bytes, want %d", p, len(body), want*hashSize)
	}
	out := make([]hash, want)
	for i := range out {
		copy(out[i][:], body[i*hashSize:])
	}
	return out
}

// bundle fetches an entry bundle and splits it into entries.
func (tc *tileClient) bundle(n int64, w int) [][]byte {
	tc.t.Helper()
	p := tilePath(-1, n, w)
	status, ct, body := tc.get(p)
	if status != http.StatusOK {
		tc.t.Fatalf("GET %s: %d %s", p, status, body)
	}
	if ct != "application/octet-stream" {
		tc.t.Errorf("GET %s: Content-Type %q", p, ct)
	}
	var out [][]byte
	for len(body) > 0 {
		if len(body) < 2 {
			tc.t.Fatalf("GET %s: truncated length prefix", p)
		}
		l := int(binary.BigEndian.Uint16(body))
		if len(body) < 2+l {
			tc.t.Fatalf("GET %s: entry %d truncated", p, len(out))
		}
		out = append(out, body[2:2+l])
		body = body[2+l:]
	}
	want := w
	if w == 0 {
		want = tileWidth
	}
	if len(out) != want {
		tc.t.Fatalf("GET %s: %d entries, want %d", p, len(out), want)
	}
	return out
}

// tree holds, per tile level, the hashes read from tiles: level[l][i] is
// MTH(D[i*256^l : (i+1)*256^l]).
type tree struct {
	size  int64
	level [][]hash
}

// subtree is the hash of the aligned subtree of 2^h leaves starting at leaf
// k*2^h, from the tile hashes of levels up to maxLevel.
func (tr *tree) subtree(h int, k int64, maxLevel int) hash {
	if h%tileHeight == 0 && h/tileHeight <= maxLevel && h/tileHeight < len(tr.level) && k < int64(len(tr.level[h/tileHeight])) {
		return tr.level[h/tileHeight][k]
	}
	if h == 0 {
		panic(fmt.Sprintf("leaf %d not available", k))
	}
	return nodeHash(tr.subtree(h-1, 2*k, maxLevel), tr.subtree(h-1, 2*k+1, maxLevel))
}

// mth is RFC 6962's MTH(D[lo:lo+n]) for lo aligned as the recursion makes
// it.
func (tr *tree) mth(lo, n int64, maxLevel int) hash {
	if n == 0 {
		return sha256.Sum256(nil)
	}
	if n&(n-1) == 0 && lo%n == 0 {
		h := 0
		for 1<<h < n {
			h++
		}
		return tr.subtree(h, lo/n, maxLevel)
	}
	k := int64(1)
	for k<<1 < n {
		k <<= 1
	}
	return nodeHash(tr.mth(lo, k, maxLevel), tr.mth(lo+k, n-k, maxLevel))
}

// readTree fetches every tile and entry bundle of a tree of size s and
// checks them against each other.
func (tc *tileClient) readTree(s int64) (*tree, [][]byte) {
	tc.t.Helper()
	tr := &tree{size: s}
	// Level l has floor(s/256^(l+1)) full tiles and a partial tile of
	// floor(s/256^l) mod 256 hashes.
	for l := 0; ; l++ {
		width := s
		for range l {
			width /= tileWidth
		}
		if width == 0 {
			break
		}
		var hs []hash
		full := width / tileWidth
		for n := range full {
			hs = append(hs, tc.tile(l, n, 0)...)
		}
		if p := int(width % tileWidth); p > 0 {
			hs = append(hs, tc.tile(l, full, p)...)
		}
		tr.level = append(tr.level, hs)
	}
	var entries [][]byte
	for n := range s / tileWidth {
		entries = append(entries, tc.bundle(n, 0)...)
	}
	if p := int(s % tileWidth); p > 0 {
		entries = append(entries, tc.bundle(s/tileWidth, p)...)
	}
	if int64(len(entries)) != s {
		tc.t.Fatalf("%d entries in the bundles, want %d", len(entries), s)
	}
	// Level 0 hashes are the leaf hashes of the entries.
	for i, e := range entries {
		if leafHash(e) != tr.level[0][i] {
			tc.t.Fatalf("entry %d does not hash to its level 0 tile hash", i)
		}
		var fields struct {
			Index int64 `json:"index"`
		}
		if err := json.Unmarshal(e, &fields); err != nil || fields.Index != int64(i) {
			tc.t.Fatalf("entry %d of the bundles says index %d (%v)", i, fields.Index, err)
		}
	}
	// Each hash at level l ≥ 1 is the Merkle tree hash of a full tile at
	// level l-1.
	for l := 1; l < len(tr.level); l++ {
		for i, h := range tr.level[l] {
			var below []hash
			below = append(below, tr.level[l-1][int64(i)*tileWidth:int64(i+1)*tileWidth]...)
			for len(below) > 1 {
				var up []hash
				for j := 0; j < len(below); j += 2 {
					up = append(up, nodeHash(below[j], below[j+1]))
				}
				below = up
			}
			if below[0] != h {
				tc.t.Fatalf("level %d hash %d is not the tree hash of level %d tile %d", l, i, l-1, i)
			}
		}
	}
	return tr, entries
}

func TestTiles(t *testing.T) {
	sizes := []int64{0, 1, 255, 256, 257, 70000}
	if testing.Short() {
		sizes = sizes[:len(sizes)-1]
	}
	dir := t.TempDir()
	ctx := context.Background()
	url, tok, _ := startNode(t, dir)
	c := newClient(t, url, tok)
	si, err := c.ServerInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := client.NewTransport(tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	const log = "tiles"
	createLog(t, c, log)
	tc := &tileClient{t: t, hc: &http.Client{Transport: tr}, prefix: url + "/v1/logs/" + log, vkey: si.VerifierKey, origin: testOriginPrefix + "/" + log}

	var have int64
	for _, s := range sizes {
		t.Run(fmt.Sprintf("size=%d", s), func(t *testing.T) {
			tc.t = t
			defer func() { tc.t = nil }()
			// Fill with batches of 1000 events through the client.
			for have < s {
				n := min(s-have, 1000)
				evs := make([]json.RawMessage, n)
				for i := range evs {
					evs[i] = event("tile.fill", fmt.Sprintf("u%d", have+int64(i)), fmt.Sprintf(`"id":"t%d"`, have+int64(i)))
				}
				mustAppend(t, c, log, evs...)
				have += n
			}
			size, root := tc.checkpoint()
			if size != s {
				t.Fatalf("checkpoint size %d, want %d", size, s)
			}
			tree, entries := tc.readTree(s)
			for maxLevel := range 2 {
				if got := tree.mth(0, s, maxLevel); got != root {
					t.Errorf("root from tiles of levels 0..%d: %x, checkpoint root %x", maxLevel, got, root)
				}
			}
			if s > 0 {
				if got := tree.mth(0, s, len(tree.level)); got != root {
					t.Errorf("root from all tile levels: %x, checkpoint %x", got, root)
				}
				// The last entry's bytes are the ones the API serves.
				es, err := c.Entries(ctx, log, s-1, s)
				if err != nil {
					t.Fatal(err)
				}
				if len(es) != 1 || !bytes.Equal(es[0].Data, entries[s-1]) {
					t.Errorf("entry %d differs between the API and the entry bundle", s-1)
				}
			}
			// The spec's example shapes.
			switch s {
			case 256:
				if len(tree.level) != 2 || len(tree.level[1]) != 1 {
					t.Errorf("size 256: levels %d, want a full level 0 tile and a level 1 partial of width 1", len(tree.level))
				}
			case 70000:
				if len(tree.level) != 3 || len(tree.level[0]) != 70000 || len(tree.level[1]) != 273 || len(tree.level[2]) != 1 {
					t.Errorf("size 70000: tile levels of %d hashes", len(tree.level))
				}
			}
			checkBeyond(t, tc, s)
		})
	}

	t.Run("bad paths", func(t *testing.T) {
		tc.t = t
		for _, p := range []string{
			"tile/0/1",              // not three digits
			"tile/0/0001",           // four digits
			"tile/0/x000",           // last element with x
			"tile/0/000/001",        // inner element without x
			"tile/0/x1/000",         // short inner element
			"tile/00/000",           // leading zero in L
			"tile/-1/000",           // negative L
			"tile/a/000",            // L not a number
			"tile/64/000",           // L above 63
			"tile/0/000.p/0",        // W of 0
			"tile/0/000.p/256",      // W above 255
			"tile/0/000.p/01",       // leading zero in W
			"tile/0/000.p/",         // empty W
			"tile/0/000.p",          // no W
			"tile/0/000.q/1",        // not .p
			"tile/0",                // no N
			"tile/entries",          // no N
			"tile/entries/1",        // not three digits
			"tile/entries/000.p/0",  // W of 0
			"tile/0/+01",            // sign
			"tile/0/0x1",            // hex
			"tile/0/x001/x002/x003", // last element with x
		} {
			status, _, body := tc.get(p)
			if status != http.StatusBadRequest {
				t.Errorf("GET %s: %d, want 400 (%s)", p, status, body)
				continue
			}
			var e struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			if err := json.Unmarshal(body, &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
				t.Errorf("GET %s: error body %q", p, body)
			}
		}
	})
}

// checkBeyond checks that tiles and bundles the tree of size s does not
// have are 404.
func checkBeyond(t *testing.T, tc *tileClient, s int64) {
	t.Helper()
	var paths []string
	full0 := s / tileWidth
	part0 := int(s % tileWidth)
	// The full tile that is still partial, and wider partials.
	paths = append(paths, tilePath(0, full0, 0), tilePath(-1, full0, 0))
	if part0 < tileWidth-1 {
		paths = append(paths, tilePath(0, full0, part0+1), tilePath(-1, full0, part0+1))
	}
	// The next tiles.
	paths = append(paths, tilePath(0, full0+1, 1), tilePath(-1, full0+1, 1), tilePath(0, full0+1, 0))
	// A level above anything the tree has, and a far tile.
	paths = append(paths, tilePath(3, 0, 1), tilePath(0, 1234067, 0), tilePath(1, s/(tileWidth*tileWidth), 0))
	for _, p := range paths {
		status, _, body := tc.get(p)
		if status != http.StatusNotFound {
			t.Errorf("size %d: GET %s: %d, want 404 (%.200s)", s, p, status, body)
		}
	}
}

func decodeB64(s string) ([]byte, error) {
	return base64.StdEncoding.Strict().DecodeString(s)
}
