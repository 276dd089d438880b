package client_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/client"
	"github.com/vellum-audit/vellum/internal/checkpoint"
	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/keys"
	"github.com/vellum-audit/vellum/internal/node"
)

// bundleServer is testServer for tests and benchmarks, with the URL.
func bundleServer(tb testing.TB) (*client.Client, *client.Verifier, string) {
	tb.Helper()
	dir := tb.TempDir()
	n, err := node.Open(context.Background(), node.Config{Dir: dir, OriginPrefix: "test.example/client", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(n.Handler)
	tb.Cleanup(func() { srv.Close(); n.Close() })
	tok, _ := os.ReadFile(filepath.Join(dir, node.AdminKeyFile))
	c, err := client.New(srv.URL, strings.TrimSpace(string(tok)))
	if err != nil {
		tb.Fatal(err)
	}
	v, err := client.NewVerifier(n.VerifierKey())
	if err != nil {
		tb.Fatal(err)
	}
	return c, v, srv.URL
}

// exportBundle exports [start, end) of log and returns the bundle.
func exportBundle(t testing.TB, c *client.Client, v *client.Verifier, log string, start, end int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := c.Export(context.Background(), v, log, start, end, &buf, nil); err != nil {
		t.Fatalf("export %s [%d, %d): %v", log, start, end, err)
	}
	return buf.Bytes()
}

// bundleLines decompresses a bundle into its lines.
func bundleLines(t testing.TB, b []byte) [][]byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSuffix(plain, []byte("\n")), []byte("\n"))
	for i := range lines {
		lines[i] = bytes.Clone(lines[i])
	}
	return lines
}

func joinLines(lines [][]byte) []byte {
	return append(bytes.Join(lines, []byte("\n")), '\n')
}

func gzipped(plain []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(plain)
	zw.Close()
	return buf.Bytes()
}

func TestBundleRoundTrip(t *testing.T) {
	c, v, url := bundleServer(t)
	ctx := context.Background()
	if _, err := c.CreateLog(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	// A second key writes some entries and is then revoked: its entries,
	// made while it was active, still verify from the key history.
	nk, err := c.CreateKey(ctx, client.KeyOptions{Name: "w", Role: keys.RoleWriter})
	if err != nil {
		t.Fatal(err)
	}
	wc, err := client.New(url, nk.Token)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Append(ctx, "app", events(1200)...); err != nil {
		t.Fatal(err)
	}
	if _, err := wc.Append(ctx, "app", events(900)...); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RevokeKey(ctx, nk.Key.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Append(ctx, "app", events(37)...); err != nil {
		t.Fatal(err)
	}
	const size = 1200 + 900 + 37
	for _, r := range [][2]int64{{0, size}, {0, 1}, {size - 1, size}, {1000, 2001}, {1023, 1025}} {
		t.Run(fmt.Sprintf("%d-%d", r[0], r[1]), func(t *testing.T) {
			b := exportBundle(t, c, v, "app", r[0], r[1])
			var calls int
			var lastDone, lastTotal int64
			rep, err := client.VerifyBundle(bytes.NewReader(b), v, func(done, total int64) { calls++; lastDone, lastTotal = done, total })
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if rep.Log != "app" || rep.Start != r[0] || rep.End != r[1] || rep.Checkpoint.Size != size || rep.System.Size < 4 {
				t.Fatalf("report %+v", rep)
			}
			if rep.FirstReceived.IsZero() || rep.LastReceived.Before(rep.FirstReceived) {
				t.Fatalf("received times %v %v", rep.FirstReceived, rep.LastReceived)
			}
			if calls == 0 || lastDone != lastTotal || lastTotal != rep.System.Size+r[1]-r[0] {
				t.Fatalf("progress: %d calls, last %d/%d", calls, lastDone, lastTotal)
			}
			// Plain JSON Lines verify the same.
			if r[0] == 1000 {
				if _, err := client.VerifyBundle(bytes.NewReader(joinLines(bundleLines(t, b))), v, nil); err != nil {
					t.Fatalf("plain: %v", err)
				}
			}
		})
	}
	// _system itself.
	sys, err := c.Latest(ctx, v, api.SystemLog, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := exportBundle(t, c, v, api.SystemLog, 1, sys.Size)
	if rep, err := client.VerifyBundle(bytes.NewReader(b), v, nil); err != nil || rep.Entries() != sys.Size-1 {
		t.Fatalf("_system bundle: %v %+v", err, rep)
	}
	lines := bundleLines(t, b)
	// Its range entries must equal the replayed ones.
	n := len(lines)
	lines[n-2] = lines[2+sys.Size-1-1] // the last range entry replaced by the one before it
	if _, err := client.VerifyBundle(bytes.NewReader(joinLines(lines)), v, nil); !isEntryError(err, api.SystemLog, sys.Size-1) {
		t.Fatalf("changed _system range: %v", err)
	}
	// Bad ranges are refused before anything is written.
	for _, r := range [][2]int64{{5, 5}, {7, 3}, {0, size + 1}, {-1, 4}} {
		var buf bytes.Buffer
		if _, err := c.Export(ctx, v, "app", r[0], r[1], &buf, nil); err == nil || buf.Len() != 0 {
			t.Errorf("export [%d, %d): %v, %d bytes", r[0], r[1], err, buf.Len())
		}
	}
}

func isEntryError(err error, log string, index int64) bool {
	var ee *client.EntryError
	return errors.As(err, &ee) && ee.Log == log && ee.Index == index && errors.Is(err, client.ErrVerification)
}

func TestBundleExportNeedsSystemAccess(t *testing.T) {
	c, v, url := bundleServer(t)
	ctx := context.Background()
	c.CreateLog(ctx, "app")
	c.Append(ctx, "app", events(3)...)
	nk, err := c.CreateKey(ctx, client.KeyOptions{Role: keys.RoleReader})
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := client.New(url, nk.Token)
	_, err = rc.Export(ctx, v, "app", 0, -1, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "auditor") {
		t.Fatalf("reader export: %v", err)
	}
	ak, err := c.CreateKey(ctx, client.KeyOptions{Role: keys.RoleAuditor})
	if err != nil {
		t.Fatal(err)
	}
	ac, _ := client.New(url, ak.Token)
	var buf bytes.Buffer
	if _, err := ac.Export(ctx, v, "app", 0, -1, &buf, nil); err != nil {
		t.Fatalf("auditor export: %v", err)
	}
	if _, err := client.VerifyBundle(&buf, v, nil); err != nil {
		t.Fatal(err)
	}
}

// TestBundleTamper changes a good bundle in every way a forger might and
// checks that each is refused, naming the entry where one is to blame.
func TestBundleTamper(t *testing.T) {
	c, v, _ := bundleServer(t)
	ctx := context.Background()
	c.CreateLog(ctx, "app")
	if _, err := c.CreateKey(ctx, client.KeyOptions{Role: keys.RoleWriter}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Append(ctx, "app", events(300)...); err != nil {
		t.Fatal(err)
	}
	const start, end = 100, 260
	good := exportBundle(t, c, v, "app", start, end)
	lines := bundleLines(t, good)
	var hdr struct {
		SystemSize int64 `json:"system_size"`
	}
	json.Unmarshal(lines[0], &hdr)
	sysFirst := 2                               // line of _system entry 0
	rangeLine := sysFirst + int(hdr.SystemSize) // checkpoint and proof of app
	at := func(i int64) int { return rangeLine + 1 + int(i-start) }
	if len(lines) != at(end)+1 {
		t.Fatalf("%d lines, want %d", len(lines), at(end)+1)
	}
	edit := func(f func(l [][]byte) [][]byte) []byte {
		cp := make([][]byte, len(lines))
		for i := range lines {
			cp[i] = bytes.Clone(lines[i])
		}
		return gzipped(joinLines(f(cp)))
	}
	other, err := client.NewVerifier(func() string {
		_, vk, _ := note.GenerateKey(nil, "test.example/client")
		return vk
	}())
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		entry    int64  // index named by an *EntryError, or -1
		log      string // its log
		contains string // substring of the error
		bad      bool   // wraps ErrBadBundle (else ErrVerification)
	}
	cases := []struct {
		name   string
		bundle []byte
		v      *client.Verifier
		want   want
	}{
		{"changed metadata", edit(func(l [][]byte) [][]byte {
			l[at(150)] = bytes.Replace(l[at(150)], []byte(`"i":150`), []byte(`"i":151`), 1)
			return l
		}), nil, want{150, "app", "signature", false}},
		{"changed received", edit(func(l [][]byte) [][]byte {
			l[at(150)] = bytes.Replace(l[at(150)], []byte(`"received":"2026`), []byte(`"received":"2027`), 1)
			return l
		}), nil, want{151, "app", "prev", false}},
		{"changed last entry", edit(func(l [][]byte) [][]byte {
			l[at(end-1)] = bytes.Replace(l[at(end-1)], []byte(`"received":"2026`), []byte(`"received":"2027`), 1)
			return l
		}), nil, want{-1, "", "root", false}},
		{"changed first entry's prev", edit(func(l [][]byte) [][]byte {
			e, _ := entry.Parse(l[at(start)])
			e.Prev[0] ^= 1
			l[at(start)], _ = e.Encode()
			return l
		}), nil, want{start + 1, "app", "prev", false}},
		{"removed", edit(func(l [][]byte) [][]byte { return append(l[:at(170)], l[at(171):]...) }), nil, want{170, "app", "index 171", false}},
		{"removed first", edit(func(l [][]byte) [][]byte { return append(l[:at(start)], l[at(start+1):]...) }), nil, want{start, "app", "index 101", false}},
		{"removed last", edit(func(l [][]byte) [][]byte { return append(l[:at(end-1)], l[at(end):]...) }), nil, want{-1, "", "fewer entries", true}},
		{"reordered", edit(func(l [][]byte) [][]byte { l[at(200)], l[at(201)] = l[at(201)], l[at(200)]; return l }), nil, want{200, "app", "index 201", false}},
		{"added in the middle", edit(func(l [][]byte) [][]byte {
			return append(l[:at(230)], append([][]byte{l[at(229)]}, l[at(230):]...)...)
		}), nil, want{230, "app", "index 229", false}},
		{"added at the end", edit(func(l [][]byte) [][]byte {
			return append(l[:at(end)], append([][]byte{l[at(end-1)]}, l[at(end):]...)...)
		}), nil, want{-1, "", "added entry", true}},
		{"changed _system entry", edit(func(l [][]byte) [][]byte {
			l[sysFirst+1] = bytes.Replace(l[sysFirst+1], []byte(`"source":"vellum-`), []byte(`"source":"wellum-`), 1)
			return l
		}), nil, want{1, api.SystemLog, "", false}},
		{"removed _system entry", edit(func(l [][]byte) [][]byte { return append(l[:sysFirst+1], l[sysFirst+2:]...) }), nil, want{1, api.SystemLog, "index 2", false}},
		{"changed left hash", edit(func(l [][]byte) [][]byte {
			var r map[string]any
			json.Unmarshal(l[rangeLine], &r)
			r["left"].([]any)[0].(map[string]any)["hash"] = tlog.Hash{1}.String()
			l[rangeLine], _ = json.Marshal(r)
			return l
		}), nil, want{-1, "", "root", false}},
		{"moved proof node", edit(func(l [][]byte) [][]byte {
			var r map[string]any
			json.Unmarshal(l[rangeLine], &r)
			r["left"].([]any)[0].(map[string]any)["level"] = 5.0
			l[rangeLine], _ = json.Marshal(r)
			return l
		}), nil, want{-1, "", "range proof", false}},
		{"header claims a longer range", edit(func(l [][]byte) [][]byte {
			l[0] = bytes.Replace(l[0], []byte(`"end":260`), []byte(`"end":261`), 1)
			return l
		}), nil, want{-1, "", "range proof", false}},
		{"checkpoint of another log", edit(func(l [][]byte) [][]byte {
			var s map[string]any
			json.Unmarshal(l[1], &s)
			var r map[string]any
			json.Unmarshal(l[rangeLine], &r)
			r["checkpoint"] = s["checkpoint"]
			l[rangeLine], _ = json.Marshal(r)
			return l
		}), nil, want{-1, "", "origin", false}},
		{"forged checkpoint signature", edit(func(l [][]byte) [][]byte {
			l[rangeLine] = bytes.Replace(l[rangeLine], []byte(`\n300\n`), []byte(`\n301\n`), 1)
			return l
		}), nil, want{-1, "", "checkpoint", false}},
		{"wrong verifier key", good, other, want{-1, "", "verifier key", false}},
		{"trailer count", edit(func(l [][]byte) [][]byte {
			l[len(l)-1] = bytes.Replace(l[len(l)-1], []byte(`"entries":160`), []byte(`"entries":159`), 1)
			return l
		}), nil, want{-1, "", "trailer", true}},
		{"no trailer", edit(func(l [][]byte) [][]byte { return l[:len(l)-1] }), nil, want{-1, "", "truncated", true}},
		{"data after the trailer", edit(func(l [][]byte) [][]byte { return append(l, []byte("{}")) }), nil, want{-1, "", "after the trailer", true}},
		{"garbage after the gzip stream", append(bytes.Clone(good), "garbage after the stream"...), nil, want{-1, "", "not gzip", true}},
		{"truncated gzip", good[:len(good)/2], nil, want{-1, "", "truncated", true}},
		{"truncated gzip end", good[:len(good)-3], nil, want{-1, "", "truncated", true}},
		{"truncated plain", joinLines(lines)[:len(joinLines(lines))/2], nil, want{-1, "", "truncated", true}},
		{"bad gzip checksum", func() []byte { b := bytes.Clone(good); b[len(b)-6] ^= 0xff; return b }(), nil, want{-1, "", "checksum", true}},
		{"empty", nil, nil, want{-1, "", "empty", true}},
		{"garbage", []byte("hello, world\n"), nil, want{-1, "", "neither gzip nor JSON", true}},
		{"json garbage", []byte("{\"format\":1}\n"), nil, want{-1, "", "header", true}},
		{"other format", []byte(`{"format":"vellum-bundle/v9","log":"app","origin":"","start":0,"end":1,"size":1,"system_size":1,"verifier_key":"","created":""}` + "\n"), nil, want{-1, "", "unknown format", true}},
		{"unknown field", edit(func(l [][]byte) [][]byte {
			l[0] = bytes.Replace(l[0], []byte(`{"format"`), []byte(`{"x":1,"format"`), 1)
			return l
		}), nil, want{-1, "", "unknown field", true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vv := v
			if tc.v != nil {
				vv = tc.v
			}
			_, err := client.VerifyBundle(bytes.NewReader(tc.bundle), vv, nil)
			if err == nil {
				t.Fatal("verified")
			}
			if tc.want.entry >= 0 && !isEntryError(err, tc.want.log, tc.want.entry) {
				t.Fatalf("want an EntryError for %s entry %d, got %v", tc.want.log, tc.want.entry, err)
			}
			if tc.want.bad != errors.Is(err, client.ErrBadBundle) || (!tc.want.bad && !errors.Is(err, client.ErrVerification)) {
				t.Fatalf("bad bundle %v: %v", tc.want.bad, err)
			}
			if !strings.Contains(err.Error(), tc.want.contains) {
				t.Fatalf("error %q lacks %q", err, tc.want.contains)
			}
			t.Log(err)
		})
	}
	if _, err := client.VerifyBundle(bytes.NewReader(good), v, nil); err != nil {
		t.Fatalf("the good bundle: %v", err)
	}
}

// Synthetic bundles: a _system log with one genesis key and a log of n
// entries it signed, all from fixed seeds, without a server.

type synth struct {
	signer note.Signer
	vkey   string
	priv   ed25519.PrivateKey
	id     string
	t0     time.Time
	sys    [][]byte
}

func newSynth(seed uint64) *synth {
	var s [32]byte
	s[0] = byte(seed)
	rng := rand.NewChaCha8(s)
	skey, vkey, err := note.GenerateKey(rng, "synth.example/vellum")
	if err != nil {
		panic(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		panic(err)
	}
	var ks [32]byte
	rng.Read(ks[:])
	priv := ed25519.NewKeyFromSeed(ks[:])
	sy := &synth{signer: signer, vkey: vkey, priv: priv, id: keys.KeyID(priv.Public().(ed25519.PublicKey)), t0: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	spec := keys.Spec{ID: sy.id, Name: "admin", PublicKey: priv.Public().(ed25519.PublicKey), Role: keys.RoleAdmin, Scopes: keys.RoleScopes[keys.RoleAdmin]}
	md, _ := json.Marshal(keys.CreateRecord{Key: spec})
	ev, _ := json.Marshal(api.Event{Time: sy.t0.Format(time.RFC3339), Action: keys.ActionKeyCreate, Actor: api.Actor{ID: sy.id, Type: "key"},
		Targets: []api.Target{{ID: sy.id, Type: "key"}}, Outcome: "success", Source: "vellum-init", Metadata: md})
	sy.sys = [][]byte{sy.entry(api.SystemLog, 0, tlog.Hash{}, sy.t0, ev)}
	return sy
}

func (sy *synth) entry(log string, i int64, prev tlog.Hash, received time.Time, event []byte) []byte {
	pe, err := entry.ParseEvent(event)
	if err != nil {
		panic(err)
	}
	e := entry.Entry{V: api.EntryFormatV1, Log: log, Index: i, Received: entry.FormatReceived(received), Prev: prev, KeyID: sy.id,
		Auth: entry.AuthSignature, Event: pe.Canonical, Sig: ed25519.Sign(sy.priv, entry.Message(log, pe.Canonical))}
	b, err := e.Encode()
	if err != nil {
		panic(err)
	}
	return b
}

// entries makes n entries of log, signing on every CPU.
func (sy *synth) entries(log string, n int) [][]byte {
	out := make([][]byte, n)
	events := make([][]byte, n)
	for i := range events {
		events[i] = fmt.Appendf(nil, `{"action":"user.update","actor":{"id":"u%d","type":"user"},"metadata":{"i":%d,"reason":"synthetic entry for the bundle benchmark"},"outcome":"success","source":"synth","targets":[{"id":"doc-%d","type":"document"}]}`, i, i, i%977)
	}
	// Sign in parallel; chain afterwards (prev depends on the entry before).
	type signed struct {
		canon, sig []byte
	}
	sigs := make([]signed, n)
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				pe, err := entry.ParseEvent(events[i])
				if err != nil {
					panic(err)
				}
				sigs[i] = signed{pe.Canonical, ed25519.Sign(sy.priv, entry.Message(log, pe.Canonical))}
			}
		}()
	}
	wg.Wait()
	var prev tlog.Hash
	for i := range out {
		e := entry.Entry{V: api.EntryFormatV1, Log: log, Index: int64(i), Received: entry.FormatReceived(sy.t0.Add(time.Second + time.Duration(i)*time.Millisecond)),
			Prev: prev, KeyID: sy.id, Auth: entry.AuthSignature, Event: sigs[i].canon, Sig: sigs[i].sig}
		b, err := e.Encode()
		if err != nil {
			panic(err)
		}
		out[i] = b
		prev = entry.LeafHash(b)
	}
	return out
}

// mth is the RFC 6962 Merkle tree hash of leaf hashes.
func mth(leaves []tlog.Hash) tlog.Hash {
	switch len(leaves) {
	case 0:
		h, _ := tlog.TreeHash(0, nil)
		return h
	case 1:
		return leaves[0]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	return tlog.NodeHash(mth(leaves[:k]), mth(leaves[k:]))
}

// cover is the maximal aligned perfect subtrees of [lo, hi), written from
// the definition in docs/bundle.md.
func cover(leaves []tlog.Hash, lo, hi int64) []client.RangeNode {
	out := []client.RangeNode{}
	for lo < hi {
		k := 0
		for lo%(int64(2)<<k) == 0 && lo+(int64(2)<<k) <= hi {
			k++
		}
		out = append(out, client.RangeNode{Level: k, Index: lo >> k, Hash: mth(leaves[lo : lo+int64(1)<<k]).String()})
		lo += int64(1) << k
	}
	return out
}

func (sy *synth) checkpoint(log string, leaves []tlog.Hash) string {
	b, err := checkpoint.Sign(checkpoint.Checkpoint{Origin: "synth.example/vellum/" + log, Size: int64(len(leaves)), Hash: mth(leaves)}, sy.signer)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func leafHashes(es [][]byte) []tlog.Hash {
	out := make([]tlog.Hash, len(es))
	for i, e := range es {
		out[i] = entry.LeafHash(e)
	}
	return out
}

// bundle writes a bundle of [start, end) of log's entries es, by the
// format in docs/bundle.md (not with Export).
func (sy *synth) bundle(w io.Writer, log string, es [][]byte, start, end int64) {
	bw := bufio.NewWriter(w)
	line := func(v any) {
		b, _ := json.Marshal(v)
		bw.Write(b)
		bw.WriteByte('\n')
	}
	line(map[string]any{"format": "vellum-bundle/v1", "log": log, "origin": "synth.example/vellum/" + log, "start": start, "end": end,
		"size": len(es), "system_size": len(sy.sys), "verifier_key": sy.vkey, "created": "2026-03-02T00:00:00Z"})
	line(map[string]any{"log": api.SystemLog, "checkpoint": sy.checkpoint(api.SystemLog, leafHashes(sy.sys))})
	for _, e := range sy.sys {
		bw.Write(e)
		bw.WriteByte('\n')
	}
	leaves := leafHashes(es)
	line(map[string]any{"log": log, "checkpoint": sy.checkpoint(log, leaves), "left": cover(leaves, 0, start), "right": cover(leaves, end, int64(len(es)))})
	for _, e := range es[start:end] {
		bw.Write(e)
		bw.WriteByte('\n')
	}
	line(map[string]any{"end": "vellum-bundle/v1", "entries": end - start, "system_entries": len(sy.sys)})
	bw.Flush()
}

func (sy *synth) verifier() *client.Verifier {
	v, err := client.NewVerifier(sy.vkey)
	if err != nil {
		panic(err)
	}
	return v
}

func TestBundleSynthetic(t *testing.T) {
	sy := newSynth(1)
	es := sy.entries("app", 300)
	v := sy.verifier()
	rng := rand.New(rand.NewPCG(1, 2))
	for range 40 {
		a := rng.Int64N(300)
		b := a + 1 + rng.Int64N(300-a)
		var buf bytes.Buffer
		sy.bundle(&buf, "app", es, a, b)
		rep, err := client.VerifyBundle(&buf, v, nil)
		if err != nil {
			t.Fatalf("[%d, %d): %v", a, b, err)
		}
		if rep.Start != a || rep.End != b || rep.Checkpoint.Size != 300 {
			t.Fatalf("report %+v", rep)
		}
	}
}

func TestBundleFuzzSeedsVerify(t *testing.T) {
	v := newSynth(7).verifier()
	seeds := fuzzSeeds()
	for _, name := range []string{"plain-all", "plain-middle", "gzip-middle", "gzip-members"} {
		if _, err := client.VerifyBundle(bytes.NewReader(seeds[name]), v, nil); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// The committed corpus is what fuzzSeeds makes (gzip output may vary
	// between Go versions).
	for name, b := range seeds {
		if strings.HasPrefix(name, "gzip") {
			continue
		}
		data, err := os.ReadFile(filepath.Join("testdata/fuzz/FuzzReadBundle", name))
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b); string(data) != want {
			t.Errorf("testdata/fuzz/FuzzReadBundle/%s is stale: run VELLUM_WRITE_FUZZ_SEEDS=1 go test -run TestWriteFuzzSeeds ./client/", name)
		}
	}
}

// TestRangeRoot checks RangeRoot against the RFC 6962 tree hash for random
// ranges of random trees, and that it refuses misplaced proofs.
func TestRangeRoot(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 500 {
		n := 1 + rng.Int64N(2000)
		leaves := make([]tlog.Hash, n)
		for i := range leaves {
			leaves[i] = tlog.RecordHash([]byte(strconv.Itoa(int(rng.Uint32()))))
		}
		a := rng.Int64N(n)
		b := a + 1 + rng.Int64N(n-a)
		p := client.RangeProof{Start: a, End: b, Size: n, Left: cover(leaves, 0, a), Right: cover(leaves, b, n)}
		ls := make([][32]byte, 0, b-a)
		for _, l := range leaves[a:b] {
			ls = append(ls, l)
		}
		root, err := client.RangeRoot(p, ls)
		if err != nil {
			t.Fatal(err)
		}
		if want := mth(leaves); root != want {
			t.Fatalf("n %d [%d, %d): root %x, want %x", n, a, b, root, want)
		}
		if len(ls) > 1 {
			if _, err := client.RangeRoot(p, ls[1:]); err == nil {
				t.Fatal("too few leaves accepted")
			}
		}
		if len(p.Left) > 0 {
			p.Left = p.Left[1:]
			if _, err := client.RangeRoot(p, ls); err == nil {
				t.Fatal("missing left node accepted")
			}
		}
	}
}

// writeFuzzSeeds, when VELLUM_WRITE_FUZZ_SEEDS is set, (re)writes the
// seed corpus of FuzzReadBundle in testdata/fuzz.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("VELLUM_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set VELLUM_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz/FuzzReadBundle")
	}
	dir := "testdata/fuzz/FuzzReadBundle"
	os.MkdirAll(dir, 0o755)
	for name, b := range fuzzSeeds() {
		if err := os.WriteFile(dir+"/"+name, fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func fuzzSeeds() map[string][]byte {
	sy := newSynth(7)
	es := sy.entries("app", 9)
	var plain, part bytes.Buffer
	sy.bundle(&plain, "app", es, 0, 9)
	sy.bundle(&part, "app", es, 3, 6)
	return map[string][]byte{
		"plain-all":    plain.Bytes(),
		"plain-middle": part.Bytes(),
		"gzip-middle":  gzipped(part.Bytes()),
		// Two members, cut in the middle of a line, as vellum export's
		// parallel compression writes them.
		"gzip-members": append(gzipped(part.Bytes()[:part.Len()/2]), gzipped(part.Bytes()[part.Len()/2:])...),
		"header-only":  bytes.SplitAfter(part.Bytes(), []byte("\n"))[0],
		"truncated":    part.Bytes()[:part.Len()*2/3],
		"empty":        {},
		"gzip-header":  gzipped(nil)[:10],
		"not-a-bundle": []byte("{\"format\":\"vellum-bundle/v1\"}\n{}\n"),
		"long-numbers": []byte(`{"format":"vellum-bundle/v1","log":"app","origin":"synth.example/vellum/app","start":9223372036854775806,"end":9223372036854775807,"size":9223372036854775807,"system_size":1,"verifier_key":"","created":""}` + "\n"),
	}
}

// FuzzReadBundle: VerifyBundle never panics, and what it accepts is a
// bundle whose report agrees with its header.
func FuzzReadBundle(f *testing.F) {
	for _, b := range fuzzSeeds() {
		f.Add(b)
	}
	v := newSynth(7).verifier()
	f.Fuzz(func(t *testing.T, b []byte) {
		rep, err := client.VerifyBundle(bytes.NewReader(b), v, nil)
		if err != nil {
			if !errors.Is(err, client.ErrBadBundle) && !errors.Is(err, client.ErrVerification) {
				t.Fatalf("error wraps neither ErrBadBundle nor ErrVerification: %v", err)
			}
			return
		}
		if rep.Log != "app" || rep.Start < 0 || rep.End <= rep.Start || rep.End > rep.Checkpoint.Size {
			t.Fatalf("accepted a bundle with report %+v", rep)
		}
	})
}

var benchBundle struct {
	once sync.Once
	b    []byte
	v    *client.Verifier
	n    int
}

// BenchmarkVerifyBundle verifies a synthetic bundle of 100,000 entries
// (VELLUM_BENCH_ENTRIES to change it), every signature included, and
// reports entries/s.
func BenchmarkVerifyBundle(b *testing.B) {
	benchBundle.once.Do(func() {
		n := 100_000
		if s := os.Getenv("VELLUM_BENCH_ENTRIES"); s != "" {
			n, _ = strconv.Atoi(s)
		}
		sy := newSynth(2)
		es := sy.entries("bench", n)
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
		sy.bundle(zw, "bench", es, 0, int64(n))
		zw.Close()
		benchBundle.b, benchBundle.v, benchBundle.n = buf.Bytes(), sy.verifier(), n
	})
	b.SetBytes(int64(len(benchBundle.b)))
	cpu0 := cpuTime()
	b.ResetTimer()
	for b.Loop() {
		rep, err := client.VerifyBundle(bytes.NewReader(benchBundle.b), benchBundle.v, nil)
		if err != nil || rep.Entries() != int64(benchBundle.n) {
			b.Fatal(err)
		}
	}
	entries := float64(benchBundle.n) * float64(b.N)
	b.ReportMetric(entries/b.Elapsed().Seconds(), "entries/s")
	// CPU time per entry, for machines shared with other work: the
	// throughput of idle cores is GOMAXPROCS / this.
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/entries, "cpu-µs/entry")
}

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkExport exports a log of 20,000 entries from a real node
// (VELLUM_BENCH_ENTRIES to change it) and reports entries/s.
func BenchmarkExport(b *testing.B) {
	n := 20_000
	if s := os.Getenv("VELLUM_BENCH_ENTRIES"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	c, v, _ := bundleServer(b)
	ctx := context.Background()
	c.CreateLog(ctx, "bench")
	for done := 0; done < n; done += 10_000 {
		if _, err := c.Append(ctx, "bench", events(min(10_000, n-done))...); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Export(ctx, v, "bench", 0, -1, io.Discard, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

// TestBundleSignatureFailures: in batch mode and in strict mode the first
// failing entry in index order is named, whether a bad signature comes
// before or after another failure in the same chunk of 256 or in another.
func TestBundleSignatureFailures(t *testing.T) {
	sy := newSynth(3)
	v := sy.verifier()
	const n = 700
	base := sy.entries("app", n)
	edit := func(es [][]byte, i int64, f func(*entry.Entry)) {
		e, err := entry.Parse(es[i])
		if err != nil {
			t.Fatal(err)
		}
		f(e)
		if es[i], err = e.Encode(); err != nil {
			t.Fatal(err)
		}
	}
	badSig := func(es [][]byte, i int64) { edit(es, i, func(e *entry.Entry) { e.Sig[10] ^= 1 }) }
	badPrev := func(es [][]byte, i int64) { edit(es, i, func(e *entry.Entry) { e.Prev[0] ^= 1 }) }
	// rechain fixes the prev chain (which signatures do not cover).
	rechain := func(es [][]byte) {
		for i := int64(1); i < int64(len(es)); i++ {
			prev := entry.LeafHash(es[i-1])
			edit(es, i, func(e *entry.Entry) { e.Prev = prev })
		}
	}
	for _, tc := range []struct {
		name   string
		make   func(es [][]byte)
		entry  int64
		reason string
	}{
		{"one bad signature", func(es [][]byte) { badSig(es, 300); rechain(es) }, 300, "signature"},
		{"bad signature, then bad prev in the same chunk", func(es [][]byte) { badSig(es, 300); rechain(es); badPrev(es, 310) }, 300, "signature"},
		{"bad prev, then bad signature in the same chunk", func(es [][]byte) { badSig(es, 300); rechain(es); badPrev(es, 290) }, 290, "prev"},
		{"bad signatures in two chunks", func(es [][]byte) { badSig(es, 600); badSig(es, 300); rechain(es) }, 300, "signature"},
		{"first entry of a chunk", func(es [][]byte) { badSig(es, 512); rechain(es) }, 512, "signature"},
		{"last entry", func(es [][]byte) { badSig(es, n-1); rechain(es) }, n - 1, "signature"},
		{"first entry", func(es [][]byte) { badSig(es, 0); rechain(es) }, 0, "signature"},
	} {
		es := make([][]byte, n)
		copy(es, base)
		tc.make(es)
		for _, strict := range []bool{false, true} {
			var buf bytes.Buffer
			sy.bundle(&buf, "app", es, 0, n)
			_, err := client.VerifyBundleWith(&buf, v, client.BundleOptions{Strict: strict})
			if !isEntryError(err, "app", tc.entry) || !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("%s (strict %v): %v, want entry %d: %s", tc.name, strict, err, tc.entry, tc.reason)
			}
		}
	}
	var buf bytes.Buffer
	sy.bundle(&buf, "app", base, 0, n)
	if _, err := client.VerifyBundleWith(&buf, v, client.BundleOptions{Strict: true}); err != nil {
		t.Fatalf("strict, good bundle: %v", err)
	}
}
