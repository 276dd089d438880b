// Package storetest is the conformance suite of vellum's storage backends:
// one set of scenarios, run against every backend by its own tests, that
// pins down the contract of store.Store (and of store.Sequencing and
// store.Watcher where a backend has them). Search results are checked
// against a brute-force oracle, index.Filter.Match over the stored docs.
package storetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/index"
	"github.com/vellum-audit/vellum/internal/store"
)

// Raw reaches a backend's database behind the store's back, to check that
// the database itself refuses to change log data.
type Raw struct {
	Name string // who runs the statements: "database file", "app role", "owner"
	// Exec runs one SQL statement on the database of t's store.
	Exec func(t *testing.T, stmt string) error
	// Refusal is a substring of the error the database must answer.
	Refusal string
}

// Option adjusts Run for a backend.
type Option func(*harness)

// WithRaw gives the suite a way to reach the backend's database directly;
// the Immutable scenario runs once per Raw (and is skipped without any).
func WithRaw(r Raw) Option { return func(h *harness) { h.raw = append(h.raw, r) } }

// WithKnownSearchBug names the searches a backend is known to answer
// wrongly: for a filter it returns why ("" for none). Their mismatches are
// logged instead of failed, so that a known bug does not hide new ones.
// Remove it with the bug.
func WithKnownSearchBug(bug func(index.Filter) string) Option {
	return func(h *harness) { h.knownBug = bug }
}

// Run runs the suite. open opens the store of test t: the first call for a
// t creates an empty database, and each later call for the same t opens
// another store on that same database (a restart, or a second node when
// the backend is shared). The suite closes the stores it opens.
func Run(t *testing.T, open func(t *testing.T) store.Store, opts ...Option) {
	h := &harness{open: open, knownBug: func(index.Filter) string { return "" }}
	for _, o := range opts {
		o(h)
	}
	t.Run("Logs", h.testLogs)
	t.Run("AppendRead", h.testAppendRead)
	t.Run("Fence", h.testFence)
	t.Run("Atomic", h.testAtomic)
	t.Run("Dedup", h.testDedup)
	t.Run("Search", h.testSearch)
	t.Run("SearchFolding", h.testFolding)
	t.Run("Index", h.testIndex)
	t.Run("Reopen", h.testReopen)
	t.Run("Immutable", h.testImmutable)
	t.Run("Lock", h.testLock)
	t.Run("Watch", h.testWatch)
}

type harness struct {
	open     func(t *testing.T) store.Store
	raw      []Raw
	knownBug func(index.Filter) string
}

// mismatch fails t, or only logs if the backend has a known bug with f.
func (h *harness) mismatch(t *testing.T, f index.Filter, format string, args ...any) {
	t.Helper()
	if why := h.knownBug(f); why != "" {
		t.Logf("KNOWN BUG (%s): "+format, append([]any{why}, args...)...)
		return
	}
	t.Errorf(format, args...)
}

// store opens a store for t and closes it when t ends (or earlier through
// the returned close, which may be called more than once).
func (h *harness) store(t *testing.T) (store.Store, func()) {
	t.Helper()
	s := h.open(t)
	var once sync.Once
	closeIt := func() {
		once.Do(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	t.Cleanup(closeIt)
	return s, closeIt
}

var (
	ctx  = context.Background()
	base = time.Date(2026, 3, 4, 5, 6, 7, 123456000, time.UTC)
)

// fixture is the expected content of one log, built batch by batch.
type fixture struct {
	log     string
	rng     *rand.Rand
	entries [][]byte
	hashes  []store.HashRow
	ids     []store.Dedup
	seqs    []store.Dedup
	docs    []index.Doc
	cp      []byte
}

func newFixture(log string, seed uint64) *fixture {
	return &fixture{log: log, rng: rand.New(rand.NewPCG(seed, 7))}
}

func (fx *fixture) size() int64 { return int64(len(fx.entries)) }

var (
	actions = []string{"user.create", "user.delete", "user.login", "user.login.failed", "group.create", "group.add_member", "key.rotate", "userx.odd", "usér.accent", "usér"}
	actors  = []string{"alice", "bob", "carol", "dave"}
	targets = [][2]string{{"t1", "user"}, {"t2", "user"}, {"t1", "group"}, {"t3", "doc"}, {"t4", ""}}
	keys    = []string{"k1", "k2", "k3"}
	outs    = []string{"success", "failure", "unknown", ""}
	sources = []string{"svc-a", "svc-b", ""}
	vocab   = []string{"alpha", "bravo", "charlie", "delta", "echo", "Foxtrot", "GOLF", "hotel-india", "x1", "42", "3.14", "user@example.com"}
)

// next builds the batch of n entries that follows what the fixture holds
// (with index rows if docs). It becomes part of the fixture only through
// commit.
func (fx *fixture) next(n int, docs bool) *store.Batch {
	r := fx.rng
	old := fx.size()
	b := &store.Batch{Log: fx.log, OldSize: old}
	for k := 0; k < n; k++ {
		idx := old + int64(k)
		// Binary bytes (NUL, 0xff) and sizes up to an entry's maximum.
		data := []byte(fmt.Sprintf("{\"log\":%q,\"index\":%d}\x00\xff", fx.log, idx))
		switch idx % 50 {
		case 13:
			data = append(data, make([]byte, 65535-len(data))...)
		case 14:
			pad := make([]byte, 3000)
			for i := range pad {
				pad[i] = byte(r.IntN(256))
			}
			data = append(data, pad...)
		}
		b.Entries = append(b.Entries, data)
		h := sha256.Sum256(data)
		b.Hashes = append(b.Hashes, store.HashRow{ID: 2 * idx, Hash: h}, store.HashRow{ID: 2*idx + 1, Hash: sha256.Sum256(h[:])})
		key := keys[idx%3]
		if idx%3 != 1 {
			b.IDs = append(b.IDs, store.Dedup{KeyID: key, EventID: fmt.Sprintf("ev-%d", idx), Index: idx, EventHash: h})
		}
		if idx%2 == 0 {
			b.Seqs = append(b.Seqs, store.Dedup{KeyID: key, Source: sources[(idx/2)%2], Seq: 10 * idx, Index: idx, EventHash: h})
		}
		if docs {
			b.Docs = append(b.Docs, fx.doc(idx))
		}
	}
	b.Checkpoint = []byte(fmt.Sprintf("checkpoint %s %d\n", fx.log, old+int64(n)))
	return b
}

func (fx *fixture) doc(idx int64) index.Doc {
	r := fx.rng
	d := index.Doc{
		Index:    idx,
		Received: base.Add(time.Duration(idx/2) * time.Second), // non-decreasing, with ties
		Action:   actions[r.IntN(len(actions))],
		Actor:    actors[r.IntN(len(actors))],
		Key:      keys[r.IntN(len(keys))],
		Outcome:  outs[r.IntN(len(outs))],
		Source:   sources[r.IntN(len(sources))],
	}
	if r.IntN(40) == 0 {
		d.Actor = "eve" // rare
	}
	if idx%7 != 0 { // producers' clocks: not monotonic
		d.EventTime = base.Add(-time.Duration(r.IntN(100000)) * time.Second).Add(time.Duration(r.IntN(1000)) * time.Microsecond)
	}
	for range r.IntN(4) {
		d.Targets = append(d.Targets, targets[r.IntN(len(targets))]) // duplicates too
	}
	if r.IntN(5) != 0 {
		var w []string
		for range 1 + r.IntN(5) {
			w = append(w, vocab[r.IntN(len(vocab))])
		}
		d.Text = strings.Join(w, ", ")
	}
	return d
}

// commit records b as stored.
func (fx *fixture) commit(b *store.Batch) {
	fx.entries = append(fx.entries, b.Entries...)
	fx.hashes = append(fx.hashes, b.Hashes...)
	fx.ids = append(fx.ids, b.IDs...)
	fx.seqs = append(fx.seqs, b.Seqs...)
	fx.docs = append(fx.docs, b.Docs...)
	fx.cp = b.Checkpoint
}

// fill creates the fixture's log in s and appends batches of the given
// sizes.
func (fx *fixture) fill(t *testing.T, s store.Store, docs bool, sizes ...int) {
	t.Helper()
	if err := s.CreateLog(ctx, fx.log, base); err != nil {
		t.Fatalf("CreateLog(%q): %v", fx.log, err)
	}
	for _, n := range sizes {
		b := fx.next(n, docs)
		if err := s.Append(ctx, b); err != nil {
			t.Fatalf("Append(%q, %d entries at %d): %v", fx.log, n, b.OldSize, err)
		}
		fx.commit(b)
	}
}

// check verifies that s holds exactly what the fixture says.
func (fx *fixture) check(t *testing.T, s store.Store) {
	t.Helper()
	li, err := s.Log(ctx, fx.log)
	if err != nil || li.Size != fx.size() {
		t.Fatalf("Log(%q) = %+v, %v; want size %d", fx.log, li, err, fx.size())
	}
	got, err := s.ReadEntries(ctx, fx.log, 0, fx.size()+10)
	if err != nil || !slices.EqualFunc(got, fx.entries, bytesEqual) {
		t.Fatalf("ReadEntries(%q, all): %d entries, %v; want %d equal to the appended ones", fx.log, len(got), err, len(fx.entries))
	}
	ids := make([]int64, len(fx.hashes))
	for i, h := range fx.hashes {
		ids[i] = h.ID
	}
	hs, err := s.ReadHashes(ctx, fx.log, ids)
	if err != nil {
		t.Fatalf("ReadHashes(%q): %v", fx.log, err)
	}
	for i := range hs {
		if hs[i] != fx.hashes[i].Hash {
			t.Fatalf("ReadHashes(%q): hash %d differs", fx.log, ids[i])
		}
	}
	cp, err := s.Checkpoint(ctx, fx.log)
	if err != nil || string(cp) != string(fx.cp) {
		t.Fatalf("Checkpoint(%q) = %q, %v; want %q", fx.log, cp, err, fx.cp)
	}
	for _, d := range fx.ids {
		got, ok, err := s.LookupID(ctx, fx.log, d.KeyID, d.EventID)
		if err != nil || !ok || got != d {
			t.Fatalf("LookupID(%q, %q, %q) = %+v, %v, %v; want %+v", fx.log, d.KeyID, d.EventID, got, ok, err, d)
		}
	}
	for _, d := range fx.seqs {
		got, ok, err := s.LookupSeq(ctx, fx.log, d.KeyID, d.Source, d.Seq)
		if err != nil || !ok || got != d {
			t.Fatalf("LookupSeq(%q, %q, %q, %d) = %+v, %v, %v; want %+v", fx.log, d.KeyID, d.Source, d.Seq, got, ok, err, d)
		}
	}
	if len(fx.docs) > 0 {
		n, err := s.Indexed(ctx, fx.log)
		if err != nil || n != int64(len(fx.docs)) {
			t.Fatalf("Indexed(%q) = %d, %v; want %d", fx.log, n, err, len(fx.docs))
		}
		f := index.Filter{Actor: "alice", Limit: 1000, After: -1}
		res, _, err := s.Search(ctx, fx.log, f, fx.size())
		if want := fx.oracle(f, fx.size()); err != nil || !slices.Equal(res, want) {
			t.Fatalf("Search(%q, actor=alice) = %v, %v; want %v", fx.log, res, err, want)
		}
	}
}

func bytesEqual(a, b []byte) bool { return string(a) == string(b) }

func (h *harness) testLogs(t *testing.T) {
	s, _ := h.store(t)
	logs, err := s.Logs(ctx)
	if err != nil || len(logs) != 0 {
		t.Fatalf("Logs of an empty store = %v, %v", logs, err)
	}
	for _, name := range []string{"billing", "_system", "a.b-c_d"} {
		if err := s.CreateLog(ctx, name, base.Add(time.Hour)); err != nil {
			t.Fatalf("CreateLog(%q): %v", name, err)
		}
	}
	if err := s.CreateLog(ctx, "billing", base); !errors.Is(err, store.ErrExists) {
		t.Fatalf("CreateLog of an existing log: %v, want ErrExists", err)
	}
	logs, err = s.Logs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, li := range logs {
		names = append(names, li.Name)
		if li.Size != 0 || !li.Created.Equal(base.Add(time.Hour)) {
			t.Errorf("Logs: %+v; want size 0, created %v", li, base.Add(time.Hour))
		}
	}
	if want := []string{"_system", "a.b-c_d", "billing"}; !slices.Equal(names, want) {
		t.Errorf("Logs names = %q, want %q (byte order)", names, want)
	}
	li, err := s.Log(ctx, "billing")
	if err != nil || li.Name != "billing" || li.Size != 0 || !li.Created.Equal(base.Add(time.Hour)) {
		t.Errorf("Log(billing) = %+v, %v", li, err)
	}
	if _, err := s.Log(ctx, "missing"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Log(missing): %v, want ErrNotFound", err)
	}
	if cp, err := s.Checkpoint(ctx, "billing"); cp != nil || err != nil {
		t.Errorf("Checkpoint of an empty log = %q, %v; want nil, nil", cp, err)
	}
	for name, call := range map[string]func() error{
		"Checkpoint":  func() error { _, err := s.Checkpoint(ctx, "missing"); return err },
		"ReadEntries": func() error { _, err := s.ReadEntries(ctx, "missing", 0, 1); return err },
		"Append": func() error {
			return s.Append(ctx, &store.Batch{Log: "missing", Entries: [][]byte{{1}}, Checkpoint: []byte("cp")})
		},
		"Search": func() error {
			_, _, err := s.Search(ctx, "missing", index.Filter{Limit: 10, After: -1}, 10)
			return err
		},
		"Indexed": func() error { _, err := s.Indexed(ctx, "missing"); return err },
		"LookupID": func() error {
			_, _, err := s.LookupID(ctx, "missing", "k", "e")
			return err
		},
	} {
		if err := call(); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s on a missing log: %v, want ErrNotFound", name, err)
		}
	}
}

func (h *harness) testAppendRead(t *testing.T) {
	s, _ := h.store(t)
	fx := newFixture("billing", 1)
	fx.fill(t, s, true, 1, 60, 39)
	other := newFixture("other", 2)
	other.fill(t, s, false, 5)
	fx.check(t, s)
	other.check(t, s)
	n := fx.size()

	for _, r := range [][2]int64{{5, 12}, {0, 1}, {n - 3, n + 10}, {n, n + 5}, {7, 7}} {
		got, err := s.ReadEntries(ctx, fx.log, r[0], r[1])
		want := fx.entries[min(r[0], n):min(r[1], n)]
		if err != nil || !slices.EqualFunc(got, want, bytesEqual) {
			t.Errorf("ReadEntries(%d, %d): %d entries, %v; want %d", r[0], r[1], len(got), err, len(want))
		}
	}
	at := []int64{7, 3, 99, 7, 63}
	got, err := s.ReadEntriesAt(ctx, fx.log, at)
	if err != nil || len(got) != len(at) {
		t.Fatalf("ReadEntriesAt(%v): %d, %v", at, len(got), err)
	}
	for i, x := range at {
		if string(got[i]) != string(fx.entries[x]) {
			t.Errorf("ReadEntriesAt: entry %d differs", x)
		}
	}
	if _, err := s.ReadEntriesAt(ctx, fx.log, []int64{1, n}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ReadEntriesAt beyond the end: %v, want ErrNotFound", err)
	}
	// Tree hashes, read close together (a tile) and far apart (a proof).
	for _, ids := range [][]int64{{10, 11, 12, 13, 14}, {199, 0, 100, 57}, {42}} {
		hs, err := s.ReadHashes(ctx, fx.log, ids)
		if err != nil {
			t.Fatalf("ReadHashes(%v): %v", ids, err)
		}
		for i, id := range ids {
			if hs[i] != fx.hashes[id].Hash {
				t.Errorf("ReadHashes(%v): hash %d differs", ids, id)
			}
		}
	}
	if _, err := s.ReadHashes(ctx, fx.log, []int64{1, 2 * n}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ReadHashes of a missing hash: %v, want ErrNotFound", err)
	}
	if hs, err := s.ReadHashes(ctx, fx.log, nil); err != nil || len(hs) != 0 {
		t.Errorf("ReadHashes(nil) = %v, %v", hs, err)
	}
	// The other log's hashes and entries are its own.
	hs, err := s.ReadHashes(ctx, other.log, []int64{0})
	if err != nil || hs[0] != other.hashes[0].Hash {
		t.Errorf("ReadHashes(other, 0) = %v, %v", hs, err)
	}
	if _, err := s.ReadEntriesAt(ctx, other.log, []int64{5}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ReadEntriesAt(other, 5): %v, want ErrNotFound", err)
	}
}

// testFence: a batch built on a stale size is refused with ErrUnavailable
// and leaves nothing behind.
func (h *harness) testFence(t *testing.T) {
	s, _ := h.store(t)
	fx := newFixture("fenced", 3)
	fx.fill(t, s, true, 10)
	for _, old := range []int64{0, 5, 11} {
		b := fx.next(4, true)
		b.OldSize = old
		for i := range b.Docs {
			b.Docs[i].Index = old + int64(i)
		}
		for i := range b.IDs {
			b.IDs[i].Index = old + (b.IDs[i].Index - fx.size())
		}
		for i := range b.Seqs {
			b.Seqs[i].Index = old + (b.Seqs[i].Index - fx.size())
		}
		err := s.Append(ctx, b)
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("Append with OldSize %d to a log of size 10: %v, want ErrUnavailable", old, err)
		}
		for _, d := range b.IDs {
			if _, ok, err := s.LookupID(ctx, fx.log, d.KeyID, d.EventID); ok || err != nil {
				t.Errorf("a refused batch's event id %q is stored (%v)", d.EventID, err)
			}
		}
	}
	fx.check(t, s)
	if got, err := s.ReadEntries(ctx, fx.log, 10, 20); err != nil || len(got) != 0 {
		t.Errorf("entries after a refused batch: %d, %v", len(got), err)
	}
	b := fx.next(4, true)
	if err := s.Append(ctx, b); err != nil {
		t.Fatalf("Append after refusals: %v", err)
	}
	fx.commit(b)
	fx.check(t, s)
}

// testAtomic: a batch that fails half way (a tree hash that exists) leaves
// nothing behind.
func (h *harness) testAtomic(t *testing.T) {
	s, _ := h.store(t)
	fx := newFixture("atomic", 4)
	fx.fill(t, s, true, 10)
	b := fx.next(5, true)
	good := b.Hashes[len(b.Hashes)-1]
	b.Hashes[len(b.Hashes)-1] = store.HashRow{ID: 3, Hash: good.Hash}
	if err := s.Append(ctx, b); err == nil {
		t.Fatal("Append of a batch with an existing tree hash id succeeded")
	}
	b.Hashes[len(b.Hashes)-1] = good
	fx.check(t, s)
	if got, err := s.ReadEntries(ctx, fx.log, 10, 20); err != nil || len(got) != 0 {
		t.Errorf("entries after a failed batch: %d, %v", len(got), err)
	}
	if err := s.Append(ctx, b); err != nil {
		t.Fatalf("Append of the corrected batch: %v", err)
	}
	fx.commit(b)
	fx.check(t, s)
}

func (h *harness) testDedup(t *testing.T) {
	s, _ := h.store(t)
	fx := newFixture("dedup", 5)
	fx.fill(t, s, false, 30, 30)
	fx.check(t, s) // every id and seq is found
	if _, ok, err := s.LookupID(ctx, fx.log, "k1", "ev-1"); ok || err != nil {
		t.Errorf("LookupID of an id never recorded = %v, %v", ok, err)
	}
	if _, ok, err := s.LookupID(ctx, fx.log, "k2", "ev-0"); ok || err != nil {
		t.Errorf("LookupID of another key's id = %v, %v", ok, err)
	}
	if _, ok, err := s.LookupSeq(ctx, fx.log, "k1", "svc-a", 10); ok || err != nil {
		t.Errorf("LookupSeq of a seq never recorded = %v, %v", ok, err)
	}
	last := map[[2]string]int64{}
	for _, d := range fx.seqs {
		last[[2]string{d.KeyID, d.Source}] = max(last[[2]string{d.KeyID, d.Source}], d.Seq)
	}
	for k, want := range last {
		got, ok, err := s.LastSeq(ctx, fx.log, k[0], k[1])
		if err != nil || !ok || got != want {
			t.Errorf("LastSeq(%q, %q) = %d, %v, %v; want %d", k[0], k[1], got, ok, err, want)
		}
	}
	if _, ok, err := s.LastSeq(ctx, fx.log, "k1", "nowhere"); ok || err != nil {
		t.Errorf("LastSeq of an unknown source = %v, %v", ok, err)
	}
	bl, ok := s.(interface {
		LookupIDs(ctx context.Context, log, keyID string, eventIDs []string) (map[string]store.Dedup, error)
	})
	if !ok {
		return
	}
	var ask []string
	want := map[string]store.Dedup{}
	for i := range 300 {
		ask = append(ask, fmt.Sprintf("ev-%d", i))
	}
	for _, d := range fx.ids {
		if d.KeyID == "k3" {
			want[d.EventID] = d
		}
	}
	got, err := bl.LookupIDs(ctx, fx.log, "k3", ask)
	if err != nil || len(got) != len(want) {
		t.Fatalf("LookupIDs: %d found, %v; want %d", len(got), err, len(want))
	}
	for id, d := range want {
		if got[id] != d {
			t.Errorf("LookupIDs[%q] = %+v, want %+v", id, got[id], d)
		}
	}
	if got, err := bl.LookupIDs(ctx, fx.log, "k3", nil); err != nil || len(got) != 0 {
		t.Errorf("LookupIDs(nil) = %v, %v", got, err)
	}
}

// oracle answers a search by brute force over the docs.
func (fx *fixture) oracle(f index.Filter, size int64) []int64 {
	var out []int64
	for _, d := range fx.docs {
		if d.Index < size && f.Match(d) {
			out = append(out, d.Index)
		}
	}
	if !f.Oldest {
		slices.Reverse(out)
	}
	return out
}

// checkSearch pages through a search with f's limit and compares the pages
// with the oracle.
func (h *harness) checkSearch(t *testing.T, fx *fixture, s store.Store, f index.Filter, size int64) {
	t.Helper()
	want := fx.oracle(f, size)
	var got []int64
	f.After = -1
	for page := 0; ; page++ {
		res, more, err := s.Search(ctx, fx.log, f, size)
		if err != nil {
			t.Fatalf("Search(%+v, size %d): %v", f, size, err)
		}
		if len(res) > f.Limit {
			t.Fatalf("Search(%+v): %d results over the limit", f, len(res))
		}
		got = append(got, res...)
		if !more || len(res) == 0 {
			break
		}
		if page > len(fx.docs) {
			t.Fatalf("Search(%+v): more pages than docs", f)
		}
		f.After = res[len(res)-1]
	}
	if !slices.Equal(got, want) {
		h.mismatch(t, f, "Search(%s, size %d) paged by %d:\n got %v\nwant %v", describe(f), size, f.Limit, got, want)
	}
}

func describe(f index.Filter) string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	tm := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.Format(time.RFC3339Nano)
	}
	add("since", tm(f.Since))
	add("until", tm(f.Until))
	add("event_from", tm(f.EventFrom))
	add("event_to", tm(f.EventTo))
	add("action", f.Action)
	add("prefix", f.ActionPrefix)
	add("actor", f.Actor)
	add("target", f.Target)
	add("target_type", f.TargetType)
	add("key", f.Key)
	add("outcome", f.Outcome)
	add("source", f.Source)
	add("q", f.Text)
	if f.Oldest {
		parts = append(parts, "oldest")
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// searchFilters exercise every filter field alone and in combinations
// that take each plan.
func searchFilters() []index.Filter {
	at := func(sec int) time.Time { return base.Add(time.Duration(sec) * time.Second) }
	return []index.Filter{
		{},
		{Actor: "alice"},
		{Actor: "eve"},
		{Actor: "nobody"},
		{Key: "k2"},
		{Action: "user.login"},
		{Action: "usér"},
		{Source: "svc-a"},
		{Outcome: "failure"},
		{ActionPrefix: "user."},
		{ActionPrefix: "group."},
		{ActionPrefix: "usér."},
		{ActionPrefix: "usé"},
		{ActionPrefix: "nomatch."},
		{Target: "t1"},
		{Target: "t1", TargetType: "group"},
		{Target: "t4", TargetType: ""},
		{Target: "t3", TargetType: "user"},
		{Text: "alpha"},
		{Text: "alpha bravo"},
		{Text: "golf"},
		{Text: "india"},
		{Text: "example user"},
		{Text: "14"},
		{Text: "zzz"},
		{Since: at(40)},
		{Until: at(90)},
		{Since: at(30), Until: at(31)},
		{Since: at(100000)},
		{EventFrom: base.Add(-50000 * time.Second)},
		{EventTo: base.Add(-50000 * time.Second)},
		{EventFrom: base.Add(-60000 * time.Second), EventTo: base.Add(-40000 * time.Second)},
		{Actor: "bob", Outcome: "success"},
		{Actor: "alice", Target: "t2"},
		{Key: "k1", Text: "alpha"},
		{Source: "svc-b", Key: "k3", Action: "user.create"},
		{ActionPrefix: "user.", Target: "t1"},
		{ActionPrefix: "user.", Text: "bravo"},
		{ActionPrefix: "user.", Outcome: "failure", EventFrom: base.Add(-70000 * time.Second)},
		{ActionPrefix: "user.", Actor: "carol"},
		{Target: "t2", Text: "charlie", Source: "svc-b"},
		{Target: "t1", Outcome: "unknown", Since: at(20)},
		{Text: "delta", Outcome: "success", Until: at(150)},
		{Actor: "dave", Since: at(50), Until: at(170), EventTo: base.Add(-20000 * time.Second)},
	}
}

func (h *harness) testSearch(t *testing.T) {
	s, _ := h.store(t)
	fx := newFixture("search", 6)
	fx.fill(t, s, true, 100, 1, 99, 60)
	other := newFixture("other", 7) // the same values in another log
	other.fill(t, s, true, 50)
	n := fx.size()
	for _, f := range searchFilters() {
		for _, oldest := range []bool{false, true} {
			f.Oldest = oldest
			f.Limit = 50
			h.checkSearch(t, fx, s, f, n)
			f.Limit = 23
			h.checkSearch(t, fx, s, f, n-37) // bounded by a size below the log's
			// The first page at limit 1 and whether more follows.
			f.Limit, f.After = 1, -1
			res, more, err := s.Search(ctx, fx.log, f, n)
			want := fx.oracle(f, n)
			switch {
			case err != nil:
				t.Errorf("Search(%s, limit 1): %v", describe(f), err)
			case len(want) == 0 && (len(res) != 0 || more):
				h.mismatch(t, f, "Search(%s, limit 1) = %v, more %v; the oracle has no match", describe(f), res, more)
			case len(want) > 0 && !slices.Equal(res, want[:1]):
				h.mismatch(t, f, "Search(%s, limit 1) = %v; want %v", describe(f), res, want[:1])
			case len(want) > 1 && !more:
				h.mismatch(t, f, "Search(%s, limit 1): more = false with %d matches", describe(f), len(want))
			}
		}
	}
	h.checkSearch(t, other, s, index.Filter{Actor: "alice", Limit: 10}, other.size())
	if res, _, err := s.Search(ctx, fx.log, index.Filter{Limit: 10, After: -1}, 0); err != nil || len(res) != 0 {
		t.Errorf("Search with size 0 = %v, %v", res, err)
	}
}

// testFolding: full text folds case and Latin diacritics like SQLite's
// unicode61 tokenizer with remove_diacritics.
func (h *harness) testFolding(t *testing.T) {
	s, _ := h.store(t)
	if err := s.CreateLog(ctx, "words", base); err != nil {
		t.Fatal(err)
	}
	texts := []string{"Café au lait", "naïve résumé", "ÉCOLE normale", "Smørrebrød", "cafe-racer 2.0", "plain"}
	b := &store.Batch{Log: "words", Checkpoint: []byte("cp")}
	for i, tx := range texts {
		b.Entries = append(b.Entries, []byte(tx))
		b.Docs = append(b.Docs, index.Doc{Index: int64(i), Received: base, Action: "a", Actor: "x", Text: tx})
	}
	if err := s.Append(ctx, b); err != nil {
		t.Fatal(err)
	}
	for q, want := range map[string][]int64{
		"cafe":         {4, 0},
		"café":         {4, 0},
		"ecole":        {2},
		"école":        {2},
		"naive resume": {1},
		"smørrebrød":   {3},
		"racer":        {4},
		"lait cafe":    {0},
		"au":           {0},
		"missing":      nil,
	} {
		got, _, err := s.Search(ctx, "words", index.Filter{Text: strings.Join(index.Words(q), " "), Limit: 10, After: -1}, int64(len(texts)))
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("Search(q=%q) = %v, %v; want %v", q, got, err, want)
		}
	}
}

func (h *harness) testIndex(t *testing.T) {
	s, _ := h.store(t)
	fx := newFixture("idx", 8)
	fx.fill(t, s, false, 60, 60, 30)
	if n, err := s.Indexed(ctx, fx.log); err != nil || n != 0 {
		t.Fatalf("Indexed with no index rows = %d, %v", n, err)
	}
	if res, _, err := s.Search(ctx, fx.log, index.Filter{Limit: 10, After: -1}, fx.size()); err != nil || len(res) != 0 {
		t.Fatalf("Search with no index rows = %v, %v", res, err)
	}
	var docs []index.Doc
	for i := range fx.size() {
		docs = append(docs, fx.doc(i))
	}
	if err := s.AddDocs(ctx, fx.log, docs[:70]); err != nil {
		t.Fatalf("AddDocs: %v", err)
	}
	if n, err := s.Indexed(ctx, fx.log); err != nil || n != 70 {
		t.Fatalf("Indexed after 70 docs = %d, %v", n, err)
	}
	if err := s.AddDocs(ctx, fx.log, docs[70:]); err != nil {
		t.Fatalf("AddDocs: %v", err)
	}
	fx.docs = docs
	fx.check(t, s)
	for _, f := range []index.Filter{{Text: "alpha"}, {ActionPrefix: "user."}, {Target: "t2"}, {Key: "k1"}} {
		f.Limit = 40
		h.checkSearch(t, fx, s, f, fx.size())
	}

	other := newFixture("other", 9)
	other.fill(t, s, true, 20)
	if err := s.DropIndex(ctx); err != nil {
		t.Fatalf("DropIndex: %v", err)
	}
	for _, log := range []string{fx.log, other.log} {
		if n, err := s.Indexed(ctx, log); err != nil || n != 0 {
			t.Errorf("Indexed(%q) after DropIndex = %d, %v", log, n, err)
		}
		for _, f := range []index.Filter{{}, {Text: "alpha"}, {Target: "t1"}, {Actor: "bob"}} {
			f.Limit, f.After = 10, -1
			if res, _, err := s.Search(ctx, log, f, 1000); err != nil || len(res) != 0 {
				t.Errorf("Search(%q, %s) after DropIndex = %v, %v", log, describe(f), res, err)
			}
		}
	}
	fx.docs = nil
	fx.check(t, s) // the log itself is untouched
	if err := s.AddDocs(ctx, fx.log, docs); err != nil {
		t.Fatalf("AddDocs after DropIndex: %v", err)
	}
	fx.docs = docs
	fx.check(t, s)
	h.checkSearch(t, fx, s, index.Filter{Text: "bravo", Target: "t1", Limit: 30}, fx.size())
	// Commits go on indexing after a rebuild.
	b := fx.next(10, true)
	if err := s.Append(ctx, b); err != nil {
		t.Fatal(err)
	}
	fx.commit(b)
	fx.check(t, s)
}

// testReopen: everything survives closing the store and opening it again.
func (h *harness) testReopen(t *testing.T) {
	s, closeS := h.store(t)
	a := newFixture("alpha", 10)
	a.fill(t, s, true, 40, 40)
	b := newFixture("beta", 11)
	b.fill(t, s, true, 10)
	empty := newFixture("empty", 12)
	empty.fill(t, s, false)
	closeS()

	s2, _ := h.store(t)
	logs, err := s2.Logs(ctx)
	if err != nil || len(logs) != 3 || logs[0].Name != "alpha" || logs[0].Size != 80 || logs[1].Size != 10 || logs[2].Size != 0 {
		t.Fatalf("Logs after reopening = %+v, %v", logs, err)
	}
	a.check(t, s2)
	b.check(t, s2)
	h.checkSearch(t, a, s2, index.Filter{Text: "echo", Limit: 20}, a.size())
	next := a.next(5, true)
	if err := s2.Append(ctx, next); err != nil {
		t.Fatalf("Append after reopening: %v", err)
	}
	a.commit(next)
	a.check(t, s2)
}

var appendOnly = []struct{ table, col string }{
	// entries and hashes: their payload column (a backend may derive their
	// log column, and a derived column cannot be updated at all).
	{"logs", "name"}, {"entries", "data"}, {"hashes", "hash"}, {"checkpoints", "log"}, {"event_ids", "log"}, {"seqs", "log"},
}

// testImmutable: the database refuses UPDATE and DELETE of log data, when
// reached behind the store's back.
func (h *harness) testImmutable(t *testing.T) {
	raw := h.raw
	if len(raw) == 0 {
		t.Skip("no raw access to this backend's database given")
	}
	s, _ := h.store(t)
	fx := newFixture("sealed", 13)
	fx.fill(t, s, true, 20)
	for _, r := range raw {
		for _, tc := range appendOnly {
			for _, stmt := range []string{
				fmt.Sprintf("UPDATE %s SET %s = %s", tc.table, tc.col, tc.col),
				"DELETE FROM " + tc.table,
			} {
				err := r.Exec(t, stmt)
				if err == nil || !strings.Contains(err.Error(), r.Refusal) {
					t.Errorf("as %s, %q: %v; want an error containing %q", r.Name, stmt, err, r.Refusal)
				}
			}
		}
	}
	fx.check(t, s)
}

// testLock: the sequencer lock of a shared store excludes a second holder
// until unlock, answers the stored size, and respects ctx while waiting.
func (h *harness) testLock(t *testing.T) {
	s1, _ := h.store(t)
	seq1, ok := s1.(store.Sequencing)
	if !ok {
		t.Skip("the store does not implement store.Sequencing")
	}
	s2, _ := h.store(t)
	seq2 := s2.(store.Sequencing)
	fx := newFixture("locked", 14)
	fx.fill(t, s1, false, 10)
	other := newFixture("free", 15)
	other.fill(t, s1, false)

	lease1, err := seq1.Lock(ctx, fx.log)
	if err != nil || lease1.Size != 10 {
		t.Fatalf("Lock = %d, %v; want 10", lease1.Size, err)
	}
	if d := time.Since(lease1.Now); lease1.Now.IsZero() || d > time.Minute || d < -time.Minute {
		t.Errorf("lease clock %v, want the database's clock (about now)", lease1.Now)
	}
	unlock1 := lease1.Unlock
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = seq2.Lock(short, fx.log)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Lock while held: %v, want context.DeadlineExceeded", err)
	}
	leaseOther, err := seq2.Lock(ctx, other.log)
	if err != nil {
		t.Fatalf("Lock of another log while the first is held: %v", err)
	}
	leaseOther.Unlock()

	type result struct {
		size   int64
		unlock func()
		err    error
	}
	got := make(chan result, 1)
	go func() {
		l, err := seq2.Lock(ctx, fx.log)
		got <- result{l.Size, l.Unlock, err}
	}()
	select {
	case r := <-got:
		t.Fatalf("second Lock returned while the lock was held: %+v", r)
	case <-time.After(200 * time.Millisecond):
	}
	b := fx.next(5, false) // the holder commits a round
	if err := s1.Append(ctx, b); err != nil {
		t.Fatal(err)
	}
	fx.commit(b)
	unlock1()
	unlock1() // a second unlock does nothing
	select {
	case r := <-got:
		if r.err != nil || r.size != 15 {
			t.Fatalf("second Lock after unlock = %d, %v; want 15", r.size, r.err)
		}
		r.unlock()
	case <-time.After(10 * time.Second):
		t.Fatal("second Lock still waiting after unlock")
	}
	if _, err := seq1.Lock(ctx, "missing"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Lock of a missing log: %v, want ErrNotFound", err)
	}

	// _system's lock excludes every other log's lock, both ways: a key
	// change is ordered against every round of every node.
	sys := newFixture(api.SystemLog, 16)
	sys.fill(t, s1, false)
	held, err := seq1.Lock(ctx, other.log)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = seq2.Lock(short, api.SystemLog)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("_system's Lock while another log's is held: %v, want context.DeadlineExceeded", err)
	}
	held.Unlock()
	sysLease, err := seq2.Lock(ctx, api.SystemLog)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = seq1.Lock(short, fx.log)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a log's Lock while _system's is held: %v, want context.DeadlineExceeded", err)
	}
	sysLease.Unlock()
	l, err := seq1.Lock(ctx, fx.log)
	if err != nil {
		t.Fatal(err)
	}
	l.Unlock()
}

// Changes collects what a Watch reports.
type Changes struct {
	mu   sync.Mutex
	seen []store.Change
	new  chan struct{}
}

// NewChanges returns an empty collector.
func NewChanges() *Changes { return &Changes{new: make(chan struct{}, 1)} }

// Add records c; pass it to Watch.
func (c *Changes) Add(ch store.Change) {
	c.mu.Lock()
	c.seen = append(c.seen, ch)
	c.mu.Unlock()
	select {
	case c.new <- struct{}{}:
	default:
	}
}

// Wait waits up to d for a change matching ok among those seen since
// index from; it returns the index after the match, or -1.
func (c *Changes) Wait(from int, d time.Duration, ok func(store.Change) bool) int {
	deadline := time.After(d)
	for {
		c.mu.Lock()
		for i := from; i < len(c.seen); i++ {
			if ok(c.seen[i]) {
				c.mu.Unlock()
				return i + 1
			}
		}
		c.mu.Unlock()
		select {
		case <-c.new:
		case <-deadline:
			return -1
		}
	}
}

// Len is how many changes have been seen.
func (c *Changes) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

// testWatch: a shared store's Watch reports the commits and log creations
// of another store on the same database.
func (h *harness) testWatch(t *testing.T) {
	s1, _ := h.store(t)
	w, ok := s1.(store.Watcher)
	if !ok {
		t.Skip("the store does not implement store.Watcher")
	}
	s2, _ := h.store(t)
	fx := newFixture("watched", 16)
	fx.fill(t, s2, false, 3)

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	changes := NewChanges()
	done := make(chan error, 1)
	go func() { done <- w.Watch(wctx, changes.Add) }()

	// Watch gives no sign that it listens: commit until one is reported.
	seen := -1
	for try := 0; try < 50 && seen < 0; try++ {
		b := fx.next(2, false)
		if err := s2.Append(ctx, b); err != nil {
			t.Fatal(err)
		}
		fx.commit(b)
		size := fx.size()
		seen = changes.Wait(0, 200*time.Millisecond, func(c store.Change) bool { return c == store.Change{Log: fx.log, Size: size} })
	}
	if seen < 0 {
		t.Fatal("Watch reported none of 50 commits of another store")
	}
	// Now that it listens, every commit is reported.
	for range 3 {
		b := fx.next(1, false)
		if err := s2.Append(ctx, b); err != nil {
			t.Fatal(err)
		}
		fx.commit(b)
		size := fx.size()
		if seen = changes.Wait(seen, 10*time.Second, func(c store.Change) bool { return c == store.Change{Log: fx.log, Size: size} }); seen < 0 {
			t.Fatalf("Watch did not report the commit to size %d", size)
		}
	}
	if err := s2.CreateLog(ctx, "born", base); err != nil {
		t.Fatal(err)
	}
	if changes.Wait(seen, 10*time.Second, func(c store.Change) bool { return c == store.Change{Log: "born", Size: 0} }) < 0 {
		t.Fatal("Watch did not report the new log")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Watch returned %v after its context ended, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return after its context ended")
	}
}
