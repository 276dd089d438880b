// Package sqlite is vellum's embedded storage backend: one SQLite database
// file (pure Go, modernc.org/sqlite) in WAL mode with synchronous=FULL, so a
// committed batch has been fsynced before Append returns.
//
// The search index is in a second file, index.db, written after each
// commit by an indexer goroutine (index.go); searches wait for it.
//
// Writes go through one connection (SQLite has one writer); reads use a
// separate pool of read-only connections and never block the writer (WAL).
// Triggers refuse UPDATE and DELETE on every table that holds log data; no
// code path issues either. See README.md in this directory for the layout.
package sqlite

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/tlog"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/vellum-audit/vellum/internal/store"
)

const schemaVersion = "2"

// keyBits is the width of the per-log part of a packed row key: entries and
// tree hashes are keyed by log<<keyBits | n, so a log's rows are one rowid
// range (2^23 logs, 2^40 entries or tree hashes each).
const keyBits = 40

const keyMask = 1<<keyBits - 1

// key packs a log id and an entry index (or tree hash id) into a rowid.
func key(log, n int64) int64 { return log<<keyBits | n }

// schema is version 2. entries and hashes are rowid tables keyed by key();
// their log and idx (id) columns are VIRTUAL generated columns, so they cost
// no space and raw SQL can still address rows by log and index. Key ids are
// stored as blobs when they are lower-case hex (see idValue).
var schema = []string{
	`CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID`,
	`CREATE TABLE IF NOT EXISTS logs (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created TEXT NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS entries (k INTEGER PRIMARY KEY, data BLOB NOT NULL, log INTEGER AS (k >> 40) VIRTUAL, idx INTEGER AS (k & 1099511627775) VIRTUAL)`,
	`CREATE TABLE IF NOT EXISTS hashes (k INTEGER PRIMARY KEY, hash BLOB NOT NULL, log INTEGER AS (k >> 40) VIRTUAL, id INTEGER AS (k & 1099511627775) VIRTUAL)`,
	`CREATE TABLE IF NOT EXISTS checkpoints (log INTEGER NOT NULL, size INTEGER NOT NULL, note BLOB NOT NULL, PRIMARY KEY (log, size)) WITHOUT ROWID`,
	`CREATE TABLE IF NOT EXISTS event_ids (log INTEGER NOT NULL, key_id BLOB NOT NULL, event_id BLOB NOT NULL, idx INTEGER NOT NULL, event_hash BLOB NOT NULL, PRIMARY KEY (log, key_id, event_id)) WITHOUT ROWID`,
	`CREATE TABLE IF NOT EXISTS seqs (log INTEGER NOT NULL, key_id BLOB NOT NULL, source TEXT NOT NULL, seq INTEGER NOT NULL, idx INTEGER NOT NULL, event_hash BLOB NOT NULL, PRIMARY KEY (log, key_id, source, seq)) WITHOUT ROWID`,
}

// appendOnly are the tables whose rows are never changed or removed.
var appendOnly = []string{"logs", "entries", "hashes", "checkpoints", "event_ids", "seqs"}

func triggers() []string {
	var out []string
	for _, t := range appendOnly {
		for _, op := range []string{"UPDATE", "DELETE"} {
			out = append(out, fmt.Sprintf(
				`CREATE TRIGGER IF NOT EXISTS %[1]s_no_%[2]s BEFORE %[2]s ON %[1]s BEGIN SELECT RAISE(ABORT, 'vellum: %[1]s is append-only: %[2]s refused'); END`,
				t, strings.ToLower(op)))
		}
	}
	return out
}

// Store is an open SQLite store.
type Store struct {
	w, r *sql.DB
	path string
	ix   *indexer

	mu    sync.Mutex
	logID map[string]int64
}

var _ store.Store = (*Store)(nil)

// FileName is the database file's name inside the data directory.
const FileName = "vellum.db"

// journalSizeLimit is the size (bytes) the WAL is truncated to after a
// checkpoint, so that one burst of writes does not leave a huge WAL behind.
const journalSizeLimit = 16 << 20

func dsn(path string, pragmas ...string) string {
	q := url.Values{}
	for _, p := range append(pragmas, "journal_mode(WAL)", "busy_timeout(10000)", "foreign_keys(ON)") {
		q.Add("_pragma", p)
	}
	return "file:" + path + "?" + q.Encode()
}

// openWriter opens the one connection that writes the database at path
// (SQLite has one writer), with the given synchronous mode and pragmas.
func openWriter(path, synchronous string, pragmas ...string) (*sql.DB, error) {
	pragmas = append(pragmas, "synchronous("+synchronous+")", fmt.Sprintf("journal_size_limit(%d)", journalSizeLimit))
	w, err := sql.Open("sqlite", dsn(path, pragmas...)+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	return w, nil
}

// openReaders opens a pool of read-only connections to the database at
// path; WAL lets them read beside the writer.
func openReaders(path string) (*sql.DB, error) {
	r, err := sql.Open("sqlite", dsn(path, "query_only(1)"))
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	r.SetMaxOpenConns(8)
	r.SetMaxIdleConns(8)
	return r, nil
}

// Open opens (creating if needed) the database in dir, migrating a version
// 1 database to version 2, and starts the search indexer, which catches up
// index.db with the logs in the background.
func Open(ctx context.Context, dir string) (*Store, error) {
	path := filepath.Join(dir, FileName)
	w, err := openWriter(path, "FULL")
	if err != nil {
		return nil, err
	}
	s := &Store{w: w, path: path, logID: map[string]int64{}}
	if err := s.migrate(ctx); err != nil {
		w.Close()
		return nil, err
	}
	r, err := openReaders(path)
	if err != nil {
		w.Close()
		return nil, err
	}
	s.r = r
	s.ix, err = openIndexer(ctx, s, filepath.Join(dir, IndexFileName))
	if err != nil {
		r.Close()
		w.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("opening %s: %w", s.path, err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, schema[0]); err != nil {
		return fmt.Errorf("creating schema: %w", err)
	}
	var v string
	switch err := tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key='schema_version'`).Scan(&v); {
	case errors.Is(err, sql.ErrNoRows):
		v = schemaVersion
		if _, err := tx.ExecContext(ctx, `INSERT INTO meta(key, value) VALUES ('schema_version', ?)`, schemaVersion); err != nil {
			return err
		}
	case err != nil:
		return err
	}
	vacuum := false
	switch v {
	case "1":
		if err := migrateV1(ctx, tx); err != nil {
			return fmt.Errorf("migrating %s from schema version 1 to 2: %w", s.path, err)
		}
		vacuum = true
	case schemaVersion:
	default:
		return fmt.Errorf("database %s has schema version %s; this vellum knows %s", s.path, v, schemaVersion)
	}
	for _, q := range append(schema, triggers()...) {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("creating schema: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	if vacuum { // give back the pages of the old tables and index
		if _, err := s.w.ExecContext(ctx, `VACUUM`); err != nil {
			return fmt.Errorf("compacting %s after migrating it: %w", s.path, err)
		}
	}
	return nil
}

// migrateV1 rewrites a version 1 database (WITHOUT ROWID tables keyed by
// (log, idx), hex key ids as text, the search index inside) as version 2,
// in the caller's transaction. The search index is dropped: the indexer
// projects index.db from the logs again.
func migrateV1(ctx context.Context, tx *sql.Tx) error {
	var stmts []string
	for _, t := range appendOnly {
		for _, op := range []string{"update", "delete"} {
			stmts = append(stmts, fmt.Sprintf(`DROP TRIGGER IF EXISTS %s_no_%s`, t, op))
		}
	}
	for _, t := range []string{"entries", "hashes", "event_ids", "seqs"} {
		stmts = append(stmts, fmt.Sprintf(`ALTER TABLE %[1]s RENAME TO %[1]s_v1`, t))
	}
	stmts = append(stmts, schema[2:]...)
	stmts = append(stmts,
		`INSERT INTO entries(k, data) SELECT log << 40 | idx, data FROM entries_v1 ORDER BY log, idx`,
		`INSERT INTO hashes(k, hash) SELECT log << 40 | id, hash FROM hashes_v1 ORDER BY log, id`,
		`INSERT INTO event_ids(log, key_id, event_id, idx, event_hash) SELECT log, `+sqlID("key_id")+`, `+sqlID("event_id")+`, idx, event_hash FROM event_ids_v1`,
		`INSERT INTO seqs(log, key_id, source, seq, idx, event_hash) SELECT log, `+sqlID("key_id")+`, source, seq, idx, event_hash FROM seqs_v1`,
		`DROP TABLE entries_v1`, `DROP TABLE hashes_v1`, `DROP TABLE event_ids_v1`, `DROP TABLE seqs_v1`,
		`DROP TABLE IF EXISTS search`, `DROP TABLE IF EXISTS search_targets`, `DROP TABLE IF EXISTS search_fts`,
		`UPDATE meta SET value = '2' WHERE key = 'schema_version'`,
	)
	for _, q := range stmts {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

// sqlID is idValue in SQL, for the migration: lower-case hex of even
// length as a blob, anything else unchanged.
func sqlID(col string) string {
	return fmt.Sprintf(`CASE WHEN length(%[1]s) %% 2 = 0 AND %[1]s GLOB '[0-9a-f]*' AND NOT %[1]s GLOB '*[^0-9a-f]*' THEN unhex(%[1]s) ELSE %[1]s END`, col)
}

// idValue is how a key id or event id is stored: lower-case hex of even
// length (key ids, most producers' event ids) as the bytes it encodes, at
// half the size; anything else as text. A blob never equals a text value,
// so the mapping is one to one; idString reverses it.
func idValue(s string) any {
	if s == "" || len(s)%2 != 0 {
		return s
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return s
		}
	}
	b, _ := hex.DecodeString(s)
	return b
}

// idString reads back a value stored by idValue.
func idString(v any) string {
	switch x := v.(type) {
	case []byte:
		return hex.EncodeToString(x)
	case string:
		return x
	}
	return fmt.Sprint(v)
}

// Close stops the indexer (after it has indexed what was committed) and
// closes the databases.
func (s *Store) Close() error {
	err0 := s.ix.close()
	err1 := s.r.Close()
	err2 := s.w.Close()
	return errors.Join(err0, err1, err2)
}

func (s *Store) id(ctx context.Context, log string) (int64, error) {
	s.mu.Lock()
	id, ok := s.logID[log]
	s.mu.Unlock()
	if ok {
		return id, nil
	}
	err := s.r.QueryRowContext(ctx, `SELECT id FROM logs WHERE name = ?`, log).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("log %q: %w", log, store.ErrNotFound)
	}
	if err != nil {
		return 0, wrap(err)
	}
	s.mu.Lock()
	s.logID[log] = id
	s.mu.Unlock()
	return id, nil
}

// wrap marks errors of the database itself as unavailability.
func wrap(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if syncFailed(err) {
		return fmt.Errorf("%w: %w: %w: %v", store.ErrUnavailable, store.ErrWriteFailed, store.ErrNotDurable, err)
	}
	if writeFailed(err) {
		return fmt.Errorf("%w: %w: %v", store.ErrUnavailable, store.ErrWriteFailed, err)
	}
	return fmt.Errorf("%w: %v", store.ErrUnavailable, err)
}

// writeFailed reports SQLite errors of a write that the disk refused:
// SQLITE_FULL, SQLITE_IOERR_WRITE, SQLITE_IOERR_FSYNC and their kin
// (SQLITE_IOERR_SHORT_READ and other read errors are not writes).
func writeFailed(err error) bool {
	var se interface{ Code() int }
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() {
	case 13, // SQLITE_FULL
		10 | 3<<8,  // SQLITE_IOERR_WRITE
		10 | 4<<8,  // SQLITE_IOERR_FSYNC
		10 | 5<<8,  // SQLITE_IOERR_DIR_FSYNC
		10 | 6<<8,  // SQLITE_IOERR_TRUNCATE
		10 | 13<<8: // SQLITE_IOERR_SHMSIZE
		return true
	}
	return false
}

// syncFailed reports SQLite errors of an fsync that failed
// (SQLITE_IOERR_FSYNC, SQLITE_IOERR_DIR_FSYNC): the write itself was made,
// so its outcome is unknown (see store.ErrNotDurable).
func syncFailed(err error) bool {
	var se interface{ Code() int }
	if !errors.As(err, &se) {
		return false
	}
	c := se.Code()
	return c == 10|4<<8 || c == 10|5<<8
}

// CreateLog implements store.Store.
func (s *Store) CreateLog(ctx context.Context, name string, created time.Time) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO logs(name, created) VALUES (?, ?)`, name, created.UTC().Format(time.RFC3339Nano))
	if err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed") {
		return fmt.Errorf("log %q: %w", name, store.ErrExists)
	}
	return wrap(err)
}

const logInfoQuery = `SELECT l.name, l.created, COALESCE((SELECT MAX(size) FROM checkpoints c WHERE c.log = l.id), 0) FROM logs l`

func scanLogInfo(sc interface{ Scan(...any) error }) (store.LogInfo, error) {
	var li store.LogInfo
	var created string
	if err := sc.Scan(&li.Name, &created, &li.Size); err != nil {
		return li, err
	}
	li.Created, _ = time.Parse(time.RFC3339Nano, created)
	return li, nil
}

// Logs implements store.Store.
func (s *Store) Logs(ctx context.Context) ([]store.LogInfo, error) {
	rows, err := s.r.QueryContext(ctx, logInfoQuery+` ORDER BY l.name`)
	if err != nil {
		return nil, wrap(err)
	}
	defer rows.Close()
	var out []store.LogInfo
	for rows.Next() {
		li, err := scanLogInfo(rows)
		if err != nil {
			return nil, wrap(err)
		}
		out = append(out, li)
	}
	return out, wrap(rows.Err())
}

// Log implements store.Store.
func (s *Store) Log(ctx context.Context, name string) (store.LogInfo, error) {
	li, err := scanLogInfo(s.r.QueryRowContext(ctx, logInfoQuery+` WHERE l.name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return li, fmt.Errorf("log %q: %w", name, store.ErrNotFound)
	}
	return li, wrap(err)
}

// Checkpoint implements store.Store.
func (s *Store) Checkpoint(ctx context.Context, log string) ([]byte, error) {
	id, err := s.id(ctx, log)
	if err != nil {
		return nil, err
	}
	var note []byte
	err = s.r.QueryRowContext(ctx, `SELECT note FROM checkpoints WHERE log = ? ORDER BY size DESC LIMIT 1`, id).Scan(&note)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return note, wrap(err)
}

// ReadHashes implements store.Store. Ids are read in one range scan when
// they are close together (as for tiles and proofs of nearby leaves).
func (s *Store) ReadHashes(ctx context.Context, log string, ids []int64) ([]tlog.Hash, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	id, err := s.id(ctx, log)
	if err != nil {
		return nil, err
	}
	lo, hi := ids[0], ids[0]
	for _, x := range ids {
		lo, hi = min(lo, x), max(hi, x)
	}
	got := make(map[int64]tlog.Hash, len(ids))
	if hi-lo <= int64(4*len(ids)+64) {
		rows, err := s.r.QueryContext(ctx, `SELECT k & ?, hash FROM hashes WHERE k BETWEEN ? AND ?`, keyMask, key(id, lo), key(id, hi))
		if err != nil {
			return nil, wrap(err)
		}
		defer rows.Close()
		for rows.Next() {
			var x int64
			var h []byte
			if err := rows.Scan(&x, &h); err != nil {
				return nil, wrap(err)
			}
			if len(h) == tlog.HashSize {
				got[x] = tlog.Hash(h)
			}
		}
		if err := rows.Err(); err != nil {
			return nil, wrap(err)
		}
	} else {
		q := `SELECT k & ?, hash FROM hashes WHERE k IN (?` + strings.Repeat(",?", len(ids)-1) + `)`
		args := make([]any, 0, len(ids)+1)
		args = append(args, keyMask)
		for _, x := range ids {
			args = append(args, key(id, x))
		}
		rows, err := s.r.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, wrap(err)
		}
		defer rows.Close()
		for rows.Next() {
			var x int64
			var h []byte
			if err := rows.Scan(&x, &h); err != nil {
				return nil, wrap(err)
			}
			if len(h) == tlog.HashSize {
				got[x] = tlog.Hash(h)
			}
		}
		if err := rows.Err(); err != nil {
			return nil, wrap(err)
		}
	}
	out := make([]tlog.Hash, len(ids))
	for i, x := range ids {
		h, ok := got[x]
		if !ok {
			return nil, fmt.Errorf("log %q: tree hash %d: %w", log, x, store.ErrNotFound)
		}
		out[i] = h
	}
	return out, nil
}

// ReadEntries implements store.Store.
func (s *Store) ReadEntries(ctx context.Context, log string, start, end int64) ([][]byte, error) {
	id, err := s.id(ctx, log)
	if err != nil {
		return nil, err
	}
	rows, err := s.r.QueryContext(ctx, `SELECT k & ?, data FROM entries WHERE k >= ? AND k < ? ORDER BY k`, keyMask, key(id, start), key(id, max(start, end)))
	if err != nil {
		return nil, wrap(err)
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var idx int64
		var data []byte
		if err := rows.Scan(&idx, &data); err != nil {
			return nil, wrap(err)
		}
		if idx != start+int64(len(out)) {
			return nil, &store.MissingError{Log: log, Index: start + int64(len(out))}
		}
		out = append(out, data)
	}
	return out, wrap(rows.Err())
}

func scanDedup(row *sql.Row, d *store.Dedup) (bool, error) {
	var h []byte
	err := row.Scan(&d.Index, &h)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, wrap(err)
	}
	copy(d.EventHash[:], h)
	return true, nil
}

// LookupID implements store.Store.
func (s *Store) LookupID(ctx context.Context, log, keyID, eventID string) (store.Dedup, bool, error) {
	d := store.Dedup{KeyID: keyID, EventID: eventID}
	id, err := s.id(ctx, log)
	if err != nil {
		return d, false, err
	}
	ok, err := scanDedup(s.r.QueryRowContext(ctx, `SELECT idx, event_hash FROM event_ids WHERE log = ? AND key_id = ? AND event_id = ?`, id, idValue(keyID), idValue(eventID)), &d)
	return d, ok, err
}

// LookupIDs looks up many event ids of one key with few queries; the
// ledger uses it, when the store has it, instead of one LookupID per event.
// Ids that are not recorded are absent from the map.
func (s *Store) LookupIDs(ctx context.Context, log, keyID string, eventIDs []string) (map[string]store.Dedup, error) {
	out := map[string]store.Dedup{}
	if len(eventIDs) == 0 {
		return out, nil
	}
	id, err := s.id(ctx, log)
	if err != nil {
		return nil, err
	}
	per := insertParams - 2
	args := make([]any, 0, insertParams)
	for start := 0; start < len(eventIDs); start += per {
		end := min(len(eventIDs), start+per)
		args = append(args[:0], id, idValue(keyID))
		for _, e := range eventIDs[start:end] {
			args = append(args, idValue(e))
		}
		q := `SELECT event_id, idx, event_hash FROM event_ids WHERE log = ? AND key_id = ? AND event_id IN (?` + strings.Repeat(",?", end-start-1) + `)`
		if err := func() error {
			rows, err := s.r.QueryContext(ctx, q, args...)
			if err != nil {
				return wrap(err)
			}
			defer rows.Close()
			for rows.Next() {
				d := store.Dedup{KeyID: keyID}
				var h []byte
				var eid any
				if err := rows.Scan(&eid, &d.Index, &h); err != nil {
					return wrap(err)
				}
				d.EventID = idString(eid)
				copy(d.EventHash[:], h)
				out[d.EventID] = d
			}
			return wrap(rows.Err())
		}(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// LookupSeq implements store.Store.
func (s *Store) LookupSeq(ctx context.Context, log, keyID, source string, seq int64) (store.Dedup, bool, error) {
	d := store.Dedup{KeyID: keyID, Source: source, Seq: seq}
	id, err := s.id(ctx, log)
	if err != nil {
		return d, false, err
	}
	ok, err := scanDedup(s.r.QueryRowContext(ctx, `SELECT idx, event_hash FROM seqs WHERE log = ? AND key_id = ? AND source = ? AND seq = ?`, id, idValue(keyID), source, seq), &d)
	return d, ok, err
}

// LastSeq implements store.Store.
func (s *Store) LastSeq(ctx context.Context, log, keyID, source string) (int64, bool, error) {
	id, err := s.id(ctx, log)
	if err != nil {
		return 0, false, err
	}
	var seq sql.NullInt64
	err = s.r.QueryRowContext(ctx, `SELECT MAX(seq) FROM seqs WHERE log = ? AND key_id = ? AND source = ?`, id, idValue(keyID), source).Scan(&seq)
	if err != nil {
		return 0, false, wrap(err)
	}
	return seq.Int64, seq.Valid, nil
}

// Append implements store.Store: one IMMEDIATE transaction, committed with
// synchronous=FULL (fsync of the WAL) before it returns. The batch's index
// docs are handed to the indexer after the commit; they are not part of it.
func (s *Store) Append(ctx context.Context, b *store.Batch) error {
	id, err := s.id(ctx, b.Log)
	if err != nil {
		return err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return wrap(err)
	}
	defer tx.Rollback()
	var size int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(size), 0) FROM checkpoints WHERE log = ?`, id).Scan(&size); err != nil {
		return wrap(err)
	}
	if size != b.OldSize {
		return fmt.Errorf("%w: log %q has size %d, batch expects %d", store.ErrUnavailable, b.Log, size, b.OldSize)
	}
	if err := insertMany(ctx, tx, "entries(k, data)", 2, len(b.Entries), func(i int, a []any) []any {
		return append(a, key(id, b.OldSize+int64(i)), b.Entries[i])
	}); err != nil {
		return err
	}
	if err := insertMany(ctx, tx, "hashes(k, hash)", 2, len(b.Hashes), func(i int, a []any) []any {
		return append(a, key(id, b.Hashes[i].ID), b.Hashes[i].Hash[:])
	}); err != nil {
		return err
	}
	if err := insertMany(ctx, tx, "event_ids(log, key_id, event_id, idx, event_hash)", 5, len(b.IDs), func(i int, a []any) []any {
		d := &b.IDs[i]
		return append(a, id, idValue(d.KeyID), idValue(d.EventID), d.Index, d.EventHash[:])
	}); err != nil {
		return err
	}
	if err := insertMany(ctx, tx, "seqs(log, key_id, source, seq, idx, event_hash)", 6, len(b.Seqs), func(i int, a []any) []any {
		d := &b.Seqs[i]
		return append(a, id, idValue(d.KeyID), d.Source, d.Seq, d.Index, d.EventHash[:])
	}); err != nil {
		return err
	}
	newSize := b.OldSize + int64(len(b.Entries))
	if _, err := tx.ExecContext(ctx, `INSERT INTO checkpoints(log, size, note) VALUES (?, ?, ?)`, id, newSize, b.Checkpoint); err != nil {
		return wrap(err)
	}
	if err := tx.Commit(); err != nil {
		return wrap(err)
	}
	// The search index follows, outside the commit (see indexer).
	s.ix.committed(id, b.OldSize, newSize, b.Docs)
	return nil
}

// insertParams bounds the parameters of one multi-row INSERT. SQLite allows
// 32766, but the driver (modernc.org/sqlite) finds each parameter's argument
// with a linear scan over all the arguments, so binding one statement costs
// the square of its parameter count: a 1,000-event batch in statements of
// 32,000 parameters spent most of its commit time binding.
const insertParams = 128

// insertMany inserts n rows of cols columns with multi-row INSERTs of up to
// insertParams/cols rows each.
func insertMany(ctx context.Context, tx *sql.Tx, table string, cols, n int, row func(i int, args []any) []any, verb ...string) error {
	insert := "INSERT"
	if len(verb) > 0 {
		insert = verb[0]
	}
	rowsPer := max(1, insertParams/cols)
	one := "(?" + strings.Repeat(",?", cols-1) + ")"
	args := make([]any, 0, min(n, rowsPer)*cols)
	for start := 0; start < n; start += rowsPer {
		end := min(n, start+rowsPer)
		args = args[:0]
		for i := start; i < end; i++ {
			args = row(i, args)
		}
		q := insert + " INTO " + table + " VALUES " + one + strings.Repeat(","+one, end-start-1)
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return wrap(err)
		}
	}
	return nil
}
