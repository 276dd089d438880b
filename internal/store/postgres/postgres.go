// Package postgres is vellum's shared storage backend: a PostgreSQL
// database (15 or newer) that several stateless vellum nodes use at once.
//
// A commit is one transaction that locks the log's row, checks that the
// log still has the size the batch was built on, inserts the batch and
// notifies the other nodes (NOTIFY vellum_commit); it returns once
// PostgreSQL has made it durable (synchronous_commit = on). One node at a
// time sequences a log: [Store.Lock] holds a session-level advisory lock on
// a connection of its own, which PostgreSQL releases when the node's
// session ends. [Store.Watch] tells a node of the commits of all nodes.
//
// The log tables are append-only: the application's role may only read and
// insert them, and triggers refuse UPDATE, DELETE and TRUNCATE to every
// role. The schema is created and upgraded by versioned migrations
// embedded in the binary ([Migrate]). See README.md in this directory and
// docs/postgres.md.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/vellum-audit/vellum/internal/store"
)

// Store is an open PostgreSQL store.
type Store struct {
	pool   *pgxpool.Pool // queries and commits
	search *pgxpool.Pool // search statements, apart from the commit path
	locks  *pgxpool.Pool // connections that hold the advisory locks of Lock
	watch  *pgx.ConnConfig
	logger *slog.Logger

	mu    sync.Mutex
	logID map[string]int64

	lease leases // sticky sequencer leases (lease.go)
}

var (
	_ store.Store      = (*Store)(nil)
	_ store.Sequencing = (*Store)(nil)
	_ store.Watcher    = (*Store)(nil)
)

// Option configures Open.
type Option func(*options)

type options struct {
	logger      *slog.Logger
	maxLocks    int32
	maxSearches int32
	searchTime  time.Duration
}

// WithLogger sets where Watch reports lost connections (slog.Default()
// otherwise).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithMaxLocks bounds the connections that hold log locks (Lock), which is
// the number of logs this node can sequence at the same moment; further
// Lock calls wait. The default is 32. Queries and commits use a separate
// pool, sized by the URL's pool_max_conns (pgxpool's default otherwise), so
// that held locks never starve the commits they guard.
func WithMaxLocks(n int32) Option { return func(o *options) { o.maxLocks = n } }

// WithMaxSearches bounds the connections that run search statements (the
// default is the number of CPUs, at least 2); further searches wait for one.
// Searches never use the pool that commits, dedup lookups and catch-ups use,
// so a burst of expensive searches cannot take the connections the
// sequencer needs (docs/postgres.md, "The read path").
func WithMaxSearches(n int32) Option { return func(o *options) { o.maxSearches = n } }

// WithSearchTimeout sets statement_timeout on the search connections (30 s
// by default): a search statement running longer is cancelled by
// PostgreSQL and the search fails with store.ErrUnavailable.
func WithSearchTimeout(d time.Duration) Option { return func(o *options) { o.searchTime = d } }

// Open connects to the database at url (a PostgreSQL URL or key=value
// connection string). If the schema is older than this vellum's it applies
// the pending migrations, which needs a role that may change the schema; a
// restricted application role gets an error asking for `vellum migrate`
// instead. A schema newer than this vellum's is refused.
func Open(ctx context.Context, url string, opts ...Option) (*Store, error) {
	o := options{logger: slog.Default(), maxLocks: 32, maxSearches: int32(max(2, runtime.NumCPU())), searchTime: 30 * time.Second}
	for _, f := range opts {
		f(&o)
	}
	if o.maxLocks < 1 {
		return nil, fmt.Errorf("postgres: WithMaxLocks(%d): need at least 1", o.maxLocks)
	}
	if o.maxSearches < 1 {
		return nil, fmt.Errorf("postgres: WithMaxSearches(%d): need at least 1", o.maxSearches)
	}
	if o.searchTime < time.Millisecond {
		return nil, fmt.Errorf("postgres: WithSearchTimeout(%v): need at least 1ms", o.searchTime)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	rp := cfg.ConnConfig.RuntimeParams
	app := rp["application_name"]
	if app == "" {
		app = "vellum"
	}
	rp["application_name"] = app
	// Session settings, by SET rather than as startup parameters, which
	// poolers such as PgBouncer refuse. A commit returns only once it is
	// durable, whatever the server's or the role's default (Append sets it
	// for its transaction as well). Search statements are planned for their
	// actual values (a rare actor and a common one want different plans),
	// never with a generic plan.
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, `SET synchronous_commit = on; SET plan_cache_mode = force_custom_plan`)
		return err
	}

	lockCfg := cfg.Copy()
	lockCfg.MaxConns = o.maxLocks
	lockCfg.MinConns, lockCfg.MinIdleConns = 0, 0
	lockCfg.ConnConfig.RuntimeParams["application_name"] = app + " lock"
	searchCfg := cfg.Copy()
	searchCfg.MaxConns = o.maxSearches
	searchCfg.MinConns, searchCfg.MinIdleConns = 0, 0
	searchCfg.ConnConfig.RuntimeParams["application_name"] = app + " search"
	searchTimeout := fmt.Sprintf("SET statement_timeout = %d", o.searchTime.Milliseconds())
	searchCfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		if err := cfg.AfterConnect(ctx, c); err != nil {
			return err
		}
		_, err := c.Exec(ctx, searchTimeout)
		return err
	}
	watch := cfg.ConnConfig.Copy()
	watch.RuntimeParams["application_name"] = app + " watch"

	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, wrap(fmt.Errorf("connecting to PostgreSQL: %w", err))
	}
	leaseCfg := cfg.ConnConfig.Copy()
	leaseCfg.RuntimeParams["application_name"] = app + " lease"
	s := &Store{pool: pool, watch: watch, logger: o.logger, logID: map[string]int64{},
		lease: leases{cfg: leaseCfg, held: map[string]bool{}, stop: make(chan struct{})}}
	if err := s.upgrade(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	s.locks, err = pgxpool.NewWithConfig(ctx, lockCfg)
	if err != nil {
		pool.Close()
		return nil, wrap(fmt.Errorf("connecting to PostgreSQL: %w", err))
	}
	s.search, err = pgxpool.NewWithConfig(ctx, searchCfg)
	if err != nil {
		pool.Close()
		s.locks.Close()
		return nil, wrap(fmt.Errorf("connecting to PostgreSQL: %w", err))
	}
	return s, nil
}

// upgrade checks the schema version and applies pending migrations.
func (s *Store) upgrade(ctx context.Context) error {
	v, err := schemaVersion(ctx, s.pool)
	if err != nil {
		return err
	}
	switch {
	case v > SchemaVersion:
		return errNewer(v)
	case v == SchemaVersion:
		return nil
	}
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return wrap(err)
	}
	defer c.Release()
	err = migrate(ctx, c)
	if isPrivilegeError(err) {
		return fmt.Errorf("postgres: the database has schema version %d and this vellum needs %d, but role %q may not change the schema: run `vellum migrate` with the schema owner's URL first (docs/postgres.md): %w",
			v, SchemaVersion, c.Conn().Config().User, err)
	}
	return err
}

// Close closes the store's connections (and with them any lock still held).
func (s *Store) Close() error {
	s.closeLeases()
	s.pool.Close()
	if s.locks != nil {
		s.locks.Close()
	}
	if s.search != nil {
		s.search.Close()
	}
	return nil
}

// wrap marks errors of the database or the connection as unavailability,
// leaving the context's own errors as they are.
func wrap(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, store.ErrUnavailable) {
		return err
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (pe.Code == "53100" || pe.Code == "58030") { // disk_full, io_error
		return fmt.Errorf("%w: %w: %v", store.ErrUnavailable, store.ErrWriteFailed, err)
	}
	return fmt.Errorf("%w: %v", store.ErrUnavailable, err)
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// storable reports whether PostgreSQL's text type can hold s: valid UTF-8
// without NUL bytes.
func storable(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

func errText(log, what, v string) error {
	return fmt.Errorf("postgres: log %q: %s %q: not storable as PostgreSQL text (invalid UTF-8 or a NUL byte)", log, what, v)
}

// lockKey is the advisory lock key of a name: a stable 64-bit hash. Two
// names that collide share a lock, which only serialises them.
func lockKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("vellum\x00" + name))
	return int64(h.Sum64())
}

func (s *Store) id(ctx context.Context, log string) (int64, error) {
	s.mu.Lock()
	id, ok := s.logID[log]
	s.mu.Unlock()
	if ok {
		return id, nil
	}
	if !storable(log) {
		return 0, fmt.Errorf("log %q: %w", log, store.ErrNotFound)
	}
	err := s.pool.QueryRow(ctx, `SELECT id FROM logs WHERE name = $1`, log).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
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

// notify is the statement that tells every node's Watch of a commit; it is
// delivered when (and only if) the transaction commits.
const notify = `SELECT pg_notify('vellum_commit', $1)`

func payload(log string, size int64) string { return log + " " + strconv.FormatInt(size, 10) }

func parsePayload(p string) (store.Change, bool) {
	name, n, ok := strings.Cut(p, " ")
	size, err := strconv.ParseInt(n, 10, 64)
	if !ok || err != nil || name == "" || size < 0 {
		return store.Change{}, false
	}
	return store.Change{Log: name, Size: size}, true
}

// CreateLog implements store.Store.
func (s *Store) CreateLog(ctx context.Context, name string, created time.Time) error {
	if !storable(name) || name == "" {
		return fmt.Errorf("postgres: log name %q: empty, invalid UTF-8 or a NUL byte", name)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return wrap(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `INSERT INTO logs (name, created) VALUES ($1, $2)`, name, created); err != nil {
		if isUniqueViolation(err) {
			return fmt.Errorf("log %q: %w", name, store.ErrExists)
		}
		return wrap(err)
	}
	if _, err := tx.Exec(ctx, notify, payload(name, 0)); err != nil {
		return wrap(err)
	}
	return wrap(tx.Commit(ctx))
}

const logInfoQuery = `SELECT l.name, l.created, COALESCE((SELECT MAX(size) FROM checkpoints c WHERE c.log = l.id), 0) FROM logs l`

func scanLogInfo(row pgx.Row) (store.LogInfo, error) {
	var li store.LogInfo
	err := row.Scan(&li.Name, &li.Created, &li.Size)
	li.Created = li.Created.UTC()
	return li, err
}

// Logs implements store.Store.
func (s *Store) Logs(ctx context.Context) ([]store.LogInfo, error) {
	rows, err := s.pool.Query(ctx, logInfoQuery+` ORDER BY l.name`)
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
	if !storable(name) {
		return store.LogInfo{}, fmt.Errorf("log %q: %w", name, store.ErrNotFound)
	}
	li, err := scanLogInfo(s.pool.QueryRow(ctx, logInfoQuery+` WHERE l.name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
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
	err = s.pool.QueryRow(ctx, `SELECT note FROM checkpoints WHERE log = $1 ORDER BY size DESC LIMIT 1`, id).Scan(&note)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	return note, wrap(err)
}

// ReadHashes implements store.Store.
func (s *Store) ReadHashes(ctx context.Context, log string, ids []int64) ([]tlog.Hash, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	id, err := s.id(ctx, log)
	if err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT id, hash FROM hashes WHERE log = $1 AND id = ANY($2)`, id, ids)
	if err != nil {
		return nil, wrap(err)
	}
	defer rows.Close()
	got := make(map[int64]tlog.Hash, len(ids))
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
	rows, err := s.pool.Query(ctx, `SELECT idx, data FROM entries WHERE log = $1 AND idx >= $2 AND idx < $3 ORDER BY idx`, id, start, end)
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

// ReadEntriesAt implements store.Store with one query.
func (s *Store) ReadEntriesAt(ctx context.Context, log string, idxs []int64) ([][]byte, error) {
	if len(idxs) == 0 {
		return nil, nil
	}
	id, err := s.id(ctx, log)
	if err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT idx, data FROM entries WHERE log = $1 AND idx = ANY($2)`, id, idxs)
	if err != nil {
		return nil, wrap(err)
	}
	defer rows.Close()
	got := make(map[int64][]byte, len(idxs))
	for rows.Next() {
		var x int64
		var data []byte
		if err := rows.Scan(&x, &data); err != nil {
			return nil, wrap(err)
		}
		got[x] = data
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(err)
	}
	out := make([][]byte, len(idxs))
	for i, x := range idxs {
		d, ok := got[x]
		if !ok {
			return nil, fmt.Errorf("log %q: entry %d: %w", log, x, store.ErrNotFound)
		}
		out[i] = d
	}
	return out, nil
}

func scanDedup(row pgx.Row, d *store.Dedup) (bool, error) {
	var h []byte
	err := row.Scan(&d.Index, &h)
	if errors.Is(err, pgx.ErrNoRows) {
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
	if err != nil || !storable(keyID) || !storable(eventID) {
		return d, false, err // what cannot be stored was never stored
	}
	ok, err := scanDedup(s.pool.QueryRow(ctx, `SELECT idx, event_hash FROM event_ids WHERE log = $1 AND key_id = $2 AND event_id = $3`, id, keyID, eventID), &d)
	return d, ok, err
}

// LookupIDs looks up many event ids of one key in one query; the ledger
// uses it instead of one LookupID per event. Ids that are not recorded are
// absent from the map.
func (s *Store) LookupIDs(ctx context.Context, log, keyID string, eventIDs []string) (map[string]store.Dedup, error) {
	out := map[string]store.Dedup{}
	if len(eventIDs) == 0 {
		return out, nil
	}
	id, err := s.id(ctx, log)
	if err != nil {
		return nil, err
	}
	if !storable(keyID) {
		return out, nil
	}
	ids := make([]string, 0, len(eventIDs))
	for _, e := range eventIDs {
		if storable(e) {
			ids = append(ids, e)
		}
	}
	rows, err := s.pool.Query(ctx, `SELECT event_id, idx, event_hash FROM event_ids WHERE log = $1 AND key_id = $2 AND event_id = ANY($3)`, id, keyID, ids)
	if err != nil {
		return nil, wrap(err)
	}
	defer rows.Close()
	for rows.Next() {
		d := store.Dedup{KeyID: keyID}
		var h []byte
		if err := rows.Scan(&d.EventID, &d.Index, &h); err != nil {
			return nil, wrap(err)
		}
		copy(d.EventHash[:], h)
		out[d.EventID] = d
	}
	return out, wrap(rows.Err())
}

// LookupSeq implements store.Store.
func (s *Store) LookupSeq(ctx context.Context, log, keyID, source string, seq int64) (store.Dedup, bool, error) {
	d := store.Dedup{KeyID: keyID, Source: source, Seq: seq}
	id, err := s.id(ctx, log)
	if err != nil || !storable(keyID) || !storable(source) {
		return d, false, err
	}
	ok, err := scanDedup(s.pool.QueryRow(ctx, `SELECT idx, event_hash FROM seqs WHERE log = $1 AND key_id = $2 AND source = $3 AND seq = $4`, id, keyID, source, seq), &d)
	return d, ok, err
}

// LastSeq implements store.Store.
func (s *Store) LastSeq(ctx context.Context, log, keyID, source string) (int64, bool, error) {
	id, err := s.id(ctx, log)
	if err != nil || !storable(keyID) || !storable(source) {
		return 0, false, err
	}
	var seq pgtype.Int8
	if err := s.pool.QueryRow(ctx, `SELECT MAX(seq) FROM seqs WHERE log = $1 AND key_id = $2 AND source = $3`, id, keyID, source).Scan(&seq); err != nil {
		return 0, false, wrap(err)
	}
	return seq.Int64, seq.Valid, nil
}

// checkBatch refuses, before any round trip, what PostgreSQL could not
// store or what does not add up.
func checkBatch(b *store.Batch) error {
	n := int64(len(b.Entries))
	if b.Checkpoint == nil {
		return fmt.Errorf("postgres: log %q: batch without a checkpoint", b.Log)
	}
	if b.OldSize < 0 {
		return fmt.Errorf("postgres: log %q: negative OldSize %d", b.Log, b.OldSize)
	}
	if len(b.Docs) != 0 && len(b.Docs) != len(b.Entries) {
		return fmt.Errorf("postgres: log %q: %d docs for %d entries", b.Log, len(b.Docs), len(b.Entries))
	}
	for i := range b.Docs {
		if b.Docs[i].Index != b.OldSize+int64(i) {
			return fmt.Errorf("postgres: log %q: doc %d has index %d, want %d", b.Log, i, b.Docs[i].Index, b.OldSize+int64(i))
		}
	}
	if err := checkDocs(b.Log, b.Docs); err != nil {
		return err
	}
	for _, d := range b.IDs {
		if !storable(d.KeyID) || !storable(d.EventID) {
			return errText(b.Log, "event id", d.KeyID+"/"+d.EventID)
		}
		if d.Index < b.OldSize || d.Index >= b.OldSize+n {
			return fmt.Errorf("postgres: log %q: event id %q points at entry %d, outside the batch", b.Log, d.EventID, d.Index)
		}
	}
	for _, d := range b.Seqs {
		if !storable(d.KeyID) || !storable(d.Source) {
			return errText(b.Log, "seq source", d.KeyID+"/"+d.Source)
		}
		if d.Index < b.OldSize || d.Index >= b.OldSize+n {
			return fmt.Errorf("postgres: log %q: seq %d points at entry %d, outside the batch", b.Log, d.Seq, d.Index)
		}
	}
	return nil
}

// Append implements store.Store: one transaction that locks the log's row,
// checks the stored size against b.OldSize, inserts everything (COPY for
// entries and hashes, one INSERT from arrays per other table) and notifies
// the other nodes; it returns after the commit, which synchronous_commit =
// on makes durable.
func (s *Store) Append(ctx context.Context, b *store.Batch) error {
	if b == nil {
		return errors.New("postgres: nil batch")
	}
	id, err := s.id(ctx, b.Log)
	if err != nil {
		return err
	}
	if err := checkBatch(b); err != nil {
		return err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return wrap(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))

	// The fence. The row lock serialises the commits of one log across
	// nodes; the size is read by a statement of its own, after the lock is
	// granted, so it sees a commit that made it wait.
	var fence pgx.Batch
	fence.Queue(`SET LOCAL synchronous_commit = on`)
	fence.Queue(`SELECT id FROM logs WHERE id = $1 FOR UPDATE`, id)
	var size int64
	fence.Queue(`SELECT COALESCE(MAX(size), 0) FROM checkpoints WHERE log = $1`, id).QueryRow(func(row pgx.Row) error { return row.Scan(&size) })
	if err := tx.SendBatch(ctx, &fence).Close(); err != nil {
		return wrap(err)
	}
	if size != b.OldSize {
		return fmt.Errorf("%w: log %q has size %d, batch expects %d", store.ErrUnavailable, b.Log, size, b.OldSize)
	}

	// Entries and hashes, the bulk of a batch, go by COPY (half the time of
	// an INSERT from arrays for entries of a few KiB); the rest follows in
	// one round trip.
	n := int64(len(b.Entries))
	if n > 0 {
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"entries"}, []string{"log", "idx", "data"}, pgx.CopyFromSlice(len(b.Entries), func(i int) ([]any, error) {
			return []any{id, b.OldSize + int64(i), b.Entries[i]}, nil
		})); err != nil {
			return wrap(err)
		}
	}
	if len(b.Hashes) > 0 {
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"hashes"}, []string{"log", "id", "hash"}, pgx.CopyFromSlice(len(b.Hashes), func(i int) ([]any, error) {
			return []any{id, b.Hashes[i].ID, b.Hashes[i].Hash[:]}, nil
		})); err != nil {
			return wrap(err)
		}
	}
	var ins pgx.Batch
	if len(b.IDs) > 0 {
		keys, evs, idxs, hs := make([]string, len(b.IDs)), make([]string, len(b.IDs)), make([]int64, len(b.IDs)), make([][]byte, len(b.IDs))
		for i := range b.IDs {
			d := &b.IDs[i]
			keys[i], evs[i], idxs[i], hs[i] = d.KeyID, d.EventID, d.Index, d.EventHash[:]
		}
		ins.Queue(`INSERT INTO event_ids (log, key_id, event_id, idx, event_hash) SELECT $1, u.* FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bytea[]) AS u`, id, keys, evs, idxs, hs)
	}
	if len(b.Seqs) > 0 {
		keys, srcs, seqs, idxs, hs := make([]string, len(b.Seqs)), make([]string, len(b.Seqs)), make([]int64, len(b.Seqs)), make([]int64, len(b.Seqs)), make([][]byte, len(b.Seqs))
		for i := range b.Seqs {
			d := &b.Seqs[i]
			keys[i], srcs[i], seqs[i], idxs[i], hs[i] = d.KeyID, d.Source, d.Seq, d.Index, d.EventHash[:]
		}
		ins.Queue(`INSERT INTO seqs (log, key_id, source, seq, idx, event_hash) SELECT $1, u.* FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bytea[]) AS u`, id, keys, srcs, seqs, idxs, hs)
	}
	queueDocs(&ins, id, b.Docs, "")
	ins.Queue(`INSERT INTO checkpoints (log, size, note) VALUES ($1, $2, $3)`, id, b.OldSize+n, b.Checkpoint)
	ins.Queue(notify, payload(b.Log, b.OldSize+n))
	if err := tx.SendBatch(ctx, &ins).Close(); err != nil {
		return wrap(err)
	}
	return wrap(tx.Commit(ctx))
}
