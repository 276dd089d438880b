package sqlite

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/index"
	"github.com/vellum-audit/vellum/internal/store"
)

// schemaV1 is the schema of version 1 as it was released (with its search
// index inside the database), to build the directories TestMigrateV1 opens.
var schemaV1 = []string{
	`CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID`,
	`CREATE TABLE logs (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created TEXT NOT NULL)`,
	`CREATE TABLE entries (log INTEGER NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (log, idx)) WITHOUT ROWID`,
	`CREATE TABLE hashes (log INTEGER NOT NULL, id INTEGER NOT NULL, hash BLOB NOT NULL, PRIMARY KEY (log, id)) WITHOUT ROWID`,
	`CREATE TABLE checkpoints (log INTEGER NOT NULL, size INTEGER NOT NULL, note BLOB NOT NULL, PRIMARY KEY (log, size)) WITHOUT ROWID`,
	`CREATE TABLE event_ids (log INTEGER NOT NULL, key_id TEXT NOT NULL, event_id TEXT NOT NULL, idx INTEGER NOT NULL, event_hash BLOB NOT NULL, PRIMARY KEY (log, key_id, event_id)) WITHOUT ROWID`,
	`CREATE TABLE seqs (log INTEGER NOT NULL, key_id TEXT NOT NULL, source TEXT NOT NULL, seq INTEGER NOT NULL, idx INTEGER NOT NULL, event_hash BLOB NOT NULL, PRIMARY KEY (log, key_id, source, seq)) WITHOUT ROWID`,
	`CREATE TABLE search (log INTEGER NOT NULL, idx INTEGER NOT NULL, received INTEGER NOT NULL, etime INTEGER, action TEXT NOT NULL, actor TEXT NOT NULL, key_id TEXT NOT NULL, outcome TEXT NOT NULL, source TEXT NOT NULL, PRIMARY KEY (log, idx)) WITHOUT ROWID`,
	`CREATE INDEX search_actor ON search (log, actor, idx)`,
	`CREATE TABLE search_targets (log INTEGER NOT NULL, target TEXT NOT NULL, ttype TEXT NOT NULL, idx INTEGER NOT NULL, PRIMARY KEY (log, target, idx, ttype)) WITHOUT ROWID`,
	`CREATE VIRTUAL TABLE search_fts USING fts5(body, content='', tokenize='unicode61 remove_diacritics 2')`,
	`INSERT INTO meta(key, value) VALUES ('schema_version', '1')`,
}

// v1Log is what TestMigrateV1 writes into one log of a version 1 database.
type v1Log struct {
	name    string
	id      int64
	entries [][]byte
	hashes  map[int64]tlog.Hash
	ids     []store.Dedup
	seqs    []store.Dedup
	root    tlog.Hash
}

func buildV1Log(t *testing.T, db *sql.DB, id int64, name string, n int) *v1Log {
	t.Helper()
	l := &v1Log{name: name, id: id, hashes: map[int64]tlog.Hash{}}
	if _, err := db.Exec(`INSERT INTO logs(id, name, created) VALUES (?, ?, '2026-01-01T00:00:00Z')`, id, name); err != nil {
		t.Fatal(err)
	}
	reader := tlog.HashReaderFunc(func(ids []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(ids))
		for i, x := range ids {
			out[i] = l.hashes[x]
		}
		return out, nil
	})
	received := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var prev tlog.Hash
	keyID := "0123456789abcdef"
	for i := range n {
		idx := int64(i)
		ev, err := entry.ParseEvent(fmt.Appendf(nil, `{"action":"user.login","actor":{"id":"user-%d"},"targets":[{"id":"doc-%d","type":"doc"}],"outcome":"success","source":"svc","metadata":{"note":"word%d shared"}}`, i%3, i%5, i))
		if err != nil {
			t.Fatal(err)
		}
		e := entry.Entry{V: 1, Log: name, Index: idx, Received: entry.FormatReceived(received.Add(time.Duration(i) * time.Second)), Prev: prev,
			KeyID: keyID, Auth: "sig", Event: ev.Canonical, Sig: make([]byte, 64)}
		data, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		l.entries = append(l.entries, data)
		leaf := entry.LeafHash(data)
		hs, err := tlog.StoredHashesForRecordHash(idx, leaf, reader)
		if err != nil {
			t.Fatal(err)
		}
		for k, h := range hs {
			hid := tlog.StoredHashCount(idx) + int64(k)
			l.hashes[hid] = h
			if _, err := db.Exec(`INSERT INTO hashes(log, id, hash) VALUES (?, ?, ?)`, id, hid, h[:]); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := db.Exec(`INSERT INTO entries(log, idx, data) VALUES (?, ?, ?)`, id, idx, data); err != nil {
			t.Fatal(err)
		}
		evHash := sha256.Sum256(ev.Canonical)
		// Producer ids: hex (stored as blobs in v2) and not.
		eventID := fmt.Sprintf("%032x", i)
		if i%2 == 1 {
			eventID = fmt.Sprintf("Order-%d", i)
		}
		d := store.Dedup{KeyID: keyID, EventID: eventID, Index: idx, EventHash: evHash}
		l.ids = append(l.ids, d)
		if _, err := db.Exec(`INSERT INTO event_ids(log, key_id, event_id, idx, event_hash) VALUES (?, ?, ?, ?, ?)`, id, keyID, eventID, idx, evHash[:]); err != nil {
			t.Fatal(err)
		}
		sd := store.Dedup{KeyID: keyID, Source: "svc", Seq: int64(10 + i), Index: idx, EventHash: evHash}
		l.seqs = append(l.seqs, sd)
		if _, err := db.Exec(`INSERT INTO seqs(log, key_id, source, seq, idx, event_hash) VALUES (?, ?, ?, ?, ?, ?)`, id, keyID, "svc", sd.Seq, idx, evHash[:]); err != nil {
			t.Fatal(err)
		}
		// The old in-database index row (dropped by the migration).
		if _, err := db.Exec(`INSERT INTO search(log, idx, received, action, actor, key_id, outcome, source) VALUES (?, ?, 0, 'user.login', 'x', ?, 'success', 'svc')`, id, idx, keyID); err != nil {
			t.Fatal(err)
		}
		prev = leaf
		size := idx + 1
		if size%7 == 0 || size == int64(n) {
			root, err := tlog.TreeHash(size, reader)
			if err != nil {
				t.Fatal(err)
			}
			l.root = root
			if _, err := db.Exec(`INSERT INTO checkpoints(log, size, note) VALUES (?, ?, ?)`, id, size, fmt.Appendf(nil, "%s\n%d\n%s\n", name, size, root)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return l
}

// TestMigrateV1 opens a data directory written by schema version 1 and
// checks that everything reads back and verifies, that the tables are
// still append-only, and that the search index is projected again.
func TestMigrateV1(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, FileName)+"?_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range append(schemaV1, triggers()...) {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	logs := []*v1Log{buildV1Log(t, db, 1, "billing", 61), buildV1Log(t, db, 2, "_system", 9)}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	for round := range 2 { // the migration, then a plain open of version 2
		s, err := Open(ctx, dir)
		if err != nil {
			t.Fatalf("open %d: %v", round, err)
		}
		for _, l := range logs {
			size := int64(len(l.entries))
			li, err := s.Log(ctx, l.name)
			if err != nil || li.Size != size {
				t.Fatalf("Log(%q) = %+v, %v; want size %d", l.name, li, err, size)
			}
			got, err := s.ReadEntries(ctx, l.name, 0, size+5)
			if err != nil || !slices.EqualFunc(got, l.entries, bytesEq) {
				t.Fatalf("ReadEntries(%q): %d entries, %v", l.name, len(got), err)
			}
			reader := tlog.HashReaderFunc(func(ids []int64) ([]tlog.Hash, error) { return s.ReadHashes(ctx, l.name, ids) })
			root, err := tlog.TreeHash(size, reader)
			if err != nil || root != l.root {
				t.Fatalf("root of %q from migrated hashes = %v, %v; want %v", l.name, root, err, l.root)
			}
			for idx := range size {
				p, err := tlog.ProveRecord(size, idx, reader)
				if err != nil {
					t.Fatal(err)
				}
				if err := tlog.CheckRecord(p, size, root, idx, entry.LeafHash(got[idx])); err != nil {
					t.Fatalf("inclusion of %q entry %d: %v", l.name, idx, err)
				}
			}
			cp, err := s.Checkpoint(ctx, l.name)
			if err != nil || string(cp) != fmt.Sprintf("%s\n%d\n%s\n", l.name, size, l.root) {
				t.Fatalf("Checkpoint(%q) = %q, %v", l.name, cp, err)
			}
			var eventIDs []string
			for _, d := range l.ids {
				got, ok, err := s.LookupID(ctx, l.name, d.KeyID, d.EventID)
				if err != nil || !ok || got != d {
					t.Fatalf("LookupID(%q, %q) = %+v, %v, %v; want %+v", l.name, d.EventID, got, ok, err, d)
				}
				eventIDs = append(eventIDs, d.EventID)
			}
			m, err := s.LookupIDs(ctx, l.name, l.ids[0].KeyID, append(eventIDs, "missing", "abcd"))
			if err != nil || len(m) != len(l.ids) {
				t.Fatalf("LookupIDs(%q) = %d ids, %v; want %d", l.name, len(m), err, len(l.ids))
			}
			for _, d := range l.ids {
				if m[d.EventID] != d {
					t.Fatalf("LookupIDs(%q)[%q] = %+v; want %+v", l.name, d.EventID, m[d.EventID], d)
				}
			}
			for _, d := range l.seqs {
				got, ok, err := s.LookupSeq(ctx, l.name, d.KeyID, d.Source, d.Seq)
				if err != nil || !ok || got != d {
					t.Fatalf("LookupSeq(%q, %d) = %+v, %v, %v; want %+v", l.name, d.Seq, got, ok, err, d)
				}
			}
			if last, ok, err := s.LastSeq(ctx, l.name, l.seqs[0].KeyID, "svc"); err != nil || !ok || last != l.seqs[len(l.seqs)-1].Seq {
				t.Fatalf("LastSeq(%q) = %d, %v, %v", l.name, last, ok, err)
			}
			// The index is projected from the migrated entries.
			res, _, err := s.Search(ctx, l.name, index.Filter{Actor: "user-1", Target: "doc-1", Text: "shared", Limit: 100, After: -1}, size)
			var want []int64
			for i := size - 1; i >= 0; i-- {
				if i%3 == 1 && i%5 == 1 {
					want = append(want, i)
				}
			}
			if err != nil || !slices.Equal(res, want) {
				t.Fatalf("Search(%q) after migration = %v, %v; want %v", l.name, res, err, want)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// Still append-only, addressed by log and idx; the old index is gone.
	db, err = sql.Open("sqlite", "file:"+filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{
		`UPDATE entries SET data = data WHERE log = 1 AND idx = 7`,
		`DELETE FROM entries WHERE log = 1 AND idx = 7`,
		`UPDATE hashes SET hash = hash WHERE log = 1`,
		`DELETE FROM event_ids`,
		`UPDATE seqs SET seq = seq + 1`,
	} {
		if _, err := db.Exec(q); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: %v; want the append-only refusal", q, err)
		}
	}
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM entries WHERE log = 1 AND idx BETWEEN 10 AND 19`).Scan(&n); err != nil || n != 10 {
		t.Errorf("entries of log 1 with idx 10..19: %d, %v", n, err)
	}
	var blobs, texts int
	if err := db.QueryRow(`SELECT SUM(typeof(event_id) = 'blob' AND typeof(key_id) = 'blob'), SUM(typeof(event_id) = 'text') FROM event_ids`).Scan(&blobs, &texts); err != nil || blobs != 31+5 || texts != 30+4 {
		t.Errorf("event_ids: %d hex ids stored as blobs, %d others as text, %v; want 36 and 34", blobs, texts, err)
	}
	var v string
	if err := db.QueryRow(`SELECT value FROM meta WHERE key = 'schema_version'`).Scan(&v); err != nil || v != schemaVersion {
		t.Errorf("schema_version = %q, %v", v, err)
	}
	if err := db.QueryRow(`SELECT COUNT(*) FROM sqlite_schema WHERE name LIKE 'search%'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d search tables left in %s, %v", n, FileName, err)
	}
}

func bytesEq(a, b []byte) bool { return string(a) == string(b) }
