// Package sqlite is vellum's embedded storage backend: one SQLite database
// file (pure Go, modernc.org/sqlite) in WAL mode with synchronous=FULL, so a
// committed batch has been fsynced before Append returns.
//
// Writes go through one connection (SQLite has one writer); reads use a
// separate pool of read-only connections and never block the writer (WAL).
// Triggers refuse UPDATE and DELETE on every table that holds log data; no
// code path issues either. See README.md in this directory for the layout.
package sqlite

import (
	"context"
	"database/sql"
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

const schemaVersion = "1"

var schema = []string{
	`CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID`,
	`CREATE TABLE IF NOT EXISTS logs (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created TEXT NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS entries (log INTEGER NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (log, idx)) WITHOUT ROWID`,
	`CREATE TABLE IF NOT EXISTS hashes (log INTEGER NOT NULL, id INTEGER NOT NULL, hash BLOB NOT NULL, PRIMARY KEY (log, id)) WITHOUT ROWID`,
	`CREATE TABLE IF NOT EXISTS checkpoints (log INTEGER NOT NULL, size INTEGER NOT NULL, note BLOB NOT NULL, PRIMARY KEY (log, size)) WITHOUT ROWID`,
	`CREATE TABLE IF NOT EXISTS event_ids (log INTEGER NOT NULL, key_id TEXT NOT NULL, event_id TEXT NOT NULL, idx INTEGER NOT NULL, event_hash BLOB NOT NULL, PRIMARY KEY (log, key_id, event_id)) WITHOUT ROWID`,
	`CREATE TABLE IF NOT EXISTS seqs (log INTEGER NOT NULL, key_id TEXT NOT NULL, source TEXT NOT NULL, seq INTEGER NOT NULL, idx INTEGER NOT NULL, event_hash BLOB NOT NULL, PRIMARY KEY (log, key_id, source, seq)) WITHOUT ROWID`,
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

	mu    sync.Mutex
	logID map[string]int64
}

var _ store.Store = (*Store)(nil)

// FileName is the database file's name inside the data directory.
const FileName = "vellum.db"

// Open opens (creating if needed) the database in dir.
func Open(ctx context.Context, dir string) (*Store, error) {
	path := filepath.Join(dir, FileName)
	dsn := func(extra string) string {
		q := url.Values{}
		for _, p := range []string{"journal_mode(WAL)", "synchronous(FULL)", "busy_timeout(10000)", "foreign_keys(ON)"} {
			q.Add("_pragma", p)
		}
		return "file:" + path + "?" + q.Encode() + extra
	}
	w, err := sql.Open("sqlite", dsn("&_txlock=immediate"))
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	s := &Store{w: w, path: path, logID: map[string]int64{}}
	if err := s.migrate(ctx); err != nil {
		w.Close()
		return nil, err
	}
	r, err := sql.Open("sqlite", dsn("&_pragma=query_only(1)"))
	if err != nil {
		w.Close()
		return nil, err
	}
	r.SetMaxOpenConns(8)
	r.SetMaxIdleConns(8)
	s.r = r
	return s, nil
}

func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("opening %s: %w", s.path, err)
	}
	defer tx.Rollback()
	for _, q := range append(append(schema, triggers()...), searchSchema...) {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("creating schema: %w", err)
		}
	}
	var v string
	switch err := tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key='schema_version'`).Scan(&v); {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := tx.ExecContext(ctx, `INSERT INTO meta(key, value) VALUES ('schema_version', ?)`, schemaVersion); err != nil {
			return err
		}
	case err != nil:
		return err
	case v != schemaVersion:
		return fmt.Errorf("database %s has schema version %s; this vellum knows %s", s.path, v, schemaVersion)
	}
	return tx.Commit()
}

// Close closes the database.
func (s *Store) Close() error {
	err1 := s.r.Close()
	err2 := s.w.Close()
	return errors.Join(err1, err2)
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
	return fmt.Errorf("%w: %v", store.ErrUnavailable, err)
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
		rows, err := s.r.QueryContext(ctx, `SELECT id, hash FROM hashes WHERE log = ? AND id BETWEEN ? AND ?`, id, lo, hi)
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
		q := `SELECT id, hash FROM hashes WHERE log = ? AND id IN (?` + strings.Repeat(",?", len(ids)-1) + `)`
		args := make([]any, 0, len(ids)+1)
		args = append(args, id)
		for _, x := range ids {
			args = append(args, x)
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
	rows, err := s.r.QueryContext(ctx, `SELECT idx, data FROM entries WHERE log = ? AND idx >= ? AND idx < ? ORDER BY idx`, id, start, end)
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
			return nil, fmt.Errorf("%w: log %q: entry %d missing", store.ErrUnavailable, log, start+int64(len(out)))
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
	ok, err := scanDedup(s.r.QueryRowContext(ctx, `SELECT idx, event_hash FROM event_ids WHERE log = ? AND key_id = ? AND event_id = ?`, id, keyID, eventID), &d)
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
		args = append(args[:0], id, keyID)
		for _, e := range eventIDs[start:end] {
			args = append(args, e)
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
				if err := rows.Scan(&d.EventID, &d.Index, &h); err != nil {
					return wrap(err)
				}
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
	ok, err := scanDedup(s.r.QueryRowContext(ctx, `SELECT idx, event_hash FROM seqs WHERE log = ? AND key_id = ? AND source = ? AND seq = ?`, id, keyID, source, seq), &d)
	return d, ok, err
}

// LastSeq implements store.Store.
func (s *Store) LastSeq(ctx context.Context, log, keyID, source string) (int64, bool, error) {
	id, err := s.id(ctx, log)
	if err != nil {
		return 0, false, err
	}
	var seq sql.NullInt64
	err = s.r.QueryRowContext(ctx, `SELECT MAX(seq) FROM seqs WHERE log = ? AND key_id = ? AND source = ?`, id, keyID, source).Scan(&seq)
	if err != nil {
		return 0, false, wrap(err)
	}
	return seq.Int64, seq.Valid, nil
}

// Append implements store.Store: one IMMEDIATE transaction, committed with
// synchronous=FULL (fsync of the WAL) before it returns.
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
	if err := insertMany(ctx, tx, "entries(log, idx, data)", 3, len(b.Entries), func(i int, a []any) []any {
		return append(a, id, b.OldSize+int64(i), b.Entries[i])
	}); err != nil {
		return err
	}
	if err := insertMany(ctx, tx, "hashes(log, id, hash)", 3, len(b.Hashes), func(i int, a []any) []any {
		return append(a, id, b.Hashes[i].ID, b.Hashes[i].Hash[:])
	}); err != nil {
		return err
	}
	if err := insertMany(ctx, tx, "event_ids(log, key_id, event_id, idx, event_hash)", 5, len(b.IDs), func(i int, a []any) []any {
		d := &b.IDs[i]
		return append(a, id, d.KeyID, d.EventID, d.Index, d.EventHash[:])
	}); err != nil {
		return err
	}
	if err := insertMany(ctx, tx, "seqs(log, key_id, source, seq, idx, event_hash)", 6, len(b.Seqs), func(i int, a []any) []any {
		d := &b.Seqs[i]
		return append(a, id, d.KeyID, d.Source, d.Seq, d.Index, d.EventHash[:])
	}); err != nil {
		return err
	}
	if err := insertDocs(ctx, tx, id, b.Docs); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO checkpoints(log, size, note) VALUES (?, ?, ?)`, id, b.OldSize+int64(len(b.Entries)), b.Checkpoint); err != nil {
		return wrap(err)
	}
	return wrap(tx.Commit())
}

// insertParams bounds the parameters of one multi-row INSERT. SQLite allows
// 32766, but the driver (modernc.org/sqlite) finds each parameter's argument
// with a linear scan over all the arguments, so binding one statement costs
// the square of its parameter count: a 1,000-event batch in statements of
// 32,000 parameters spent most of its commit time binding.
const insertParams = 128

// insertMany inserts n rows of cols columns with multi-row INSERTs of up to
// insertParams/cols rows each.
func insertMany(ctx context.Context, tx *sql.Tx, table string, cols, n int, row func(i int, args []any) []any) error {
	rowsPer := max(1, insertParams/cols)
	one := "(?" + strings.Repeat(",?", cols-1) + ")"
	args := make([]any, 0, min(n, rowsPer)*cols)
	for start := 0; start < n; start += rowsPer {
		end := min(n, start+rowsPer)
		args = args[:0]
		for i := start; i < end; i++ {
			args = row(i, args)
		}
		q := "INSERT INTO " + table + " VALUES " + one + strings.Repeat(","+one, end-start-1)
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return wrap(err)
		}
	}
	return nil
}
