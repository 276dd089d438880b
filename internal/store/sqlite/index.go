package sqlite

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/index"
	"github.com/vellum-audit/vellum/internal/store"
)

// IndexFileName is the search index's database file in the data directory.
// It is a projection of the logs in vellum.db, written after their commits
// by the indexer; deleting it (server stopped) only costs a rebuild.
const IndexFileName = "index.db"

const indexSchemaVersion = "3"

// The search index. Every entry is one row of docs (its received time and
// its event time minus its received time, in microseconds) and one
// document of the FTS5 table terms, both keyed by key(log, idx). A terms
// document holds one token per indexed field value (tokenOf: a letter
// naming the field, '=', then the value in hex, so any value is one exact
// token; an action also has a token for each prefix of it that ends in a
// dot, so that the prefixes the API takes, user.*, are one token) and the
// metadata's words, with any '=' in them made a space: '='
// is a token character, so no word can be a field token. terms is
// contentless, with neither positions nor columns (detail=none,
// columnsize=0): about half the size of a table with columns, and every
// query here is a conjunction of single tokens. actions lists each log's
// distinct actions, for action prefixes.
var indexSchema = []string{
	`CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID`,
	`CREATE TABLE IF NOT EXISTS docs (k INTEGER PRIMARY KEY, received INTEGER NOT NULL, etime INTEGER)`,
	`CREATE TABLE IF NOT EXISTS actions (log INTEGER NOT NULL, action TEXT NOT NULL, PRIMARY KEY (log, action)) WITHOUT ROWID`,
	`CREATE VIRTUAL TABLE IF NOT EXISTS terms USING fts5(t, content='', detail=none, columnsize=0, tokenize='unicode61 remove_diacritics 2 tokenchars ''=''')`,
	// FTS5's default, four segments a level (set explicitly: index.db files
	// written before 2026-12-07 hold 2 in their config table). Two gave a
	// query fewer segments to seek in for twice the merging; merging was
	// most of the indexer's CPU, and the searches stay well inside their
	// targets with four (BENCHMARKS.md, "Index cost").
	`INSERT INTO terms(terms, rank) VALUES ('automerge', 4)`,
}

// Field letters of the k tokens.
const (
	fActor      = 'p'
	fAction     = 'n'
	fKey        = 'k'
	fSource     = 's'
	fOutcome    = 'o'
	fTarget     = 't'
	fTargetType = 'u' // target id, 'x', target type
	fActionDot  = 'm' // the action up to and including each of its dots
)

// tokenOf is the token of a field's value(s).
func tokenOf(field byte, vals ...string) string {
	var b strings.Builder
	b.WriteByte(field)
	b.WriteByte('=')
	for i, v := range vals {
		if i > 0 {
			b.WriteByte('x')
		}
		b.WriteString(hex.EncodeToString([]byte(v)))
	}
	return b.String()
}

// termsOf is the text of d's terms document.
func termsOf(d *index.Doc) string {
	t := []string{tokenOf(fActor, d.Actor), tokenOf(fAction, d.Action), tokenOf(fKey, d.Key), tokenOf(fSource, d.Source), tokenOf(fOutcome, d.Outcome)}
	for _, x := range d.Targets {
		t = append(t, tokenOf(fTarget, x[0]), tokenOf(fTargetType, x[0], x[1]))
	}
	for i := 0; i < len(d.Action); i++ {
		if d.Action[i] == '.' { // user.mfa.enable: user. and user.mfa.
			t = append(t, tokenOf(fActionDot, d.Action[:i+1]))
		}
	}
	if d.Text != "" {
		t = append(t, strings.ReplaceAll(d.Text, "=", " "))
	}
	return strings.Join(t, " ")
}

// searchWait bounds how long a search waits for the indexer.
const searchWait = 2 * time.Second

// maxQueuedBytes bounds the memory of the docs waiting for the indexer,
// over all logs (as docSize estimates it). A commit whose docs do not fit
// is not queued: its log's queue is dropped and the indexer reads those
// entries from the log instead, 2,000 at a time. (A bound of 200,000 docs
// per log let an indexer that fell behind a sustained batch load hold
// 150 MiB and more of docs.)
const maxQueuedBytes = 24 << 20

// docSize estimates the bytes a queued doc holds: its strings and the
// struct, slice and string headers.
func docSize(d *index.Doc) int64 {
	n := 200 + len(d.Action) + len(d.Actor) + len(d.Key) + len(d.Outcome) + len(d.Source) + len(d.Text)
	for _, t := range d.Targets {
		n += 32 + len(t[0]) + len(t[1])
	}
	return int64(n)
}

// DisableIndexerEnv, set to 1, keeps the indexer from projecting commits
// (benchmarks of the write path without it; searches then see only what
// index.db already holds). Not for production.
const DisableIndexerEnv = "VELLUM_SQLITE_NO_INDEXER"

// indexer owns index.db. Commits hand it their docs (committed); its
// goroutine writes them in its own transactions, or, when it has no docs
// for a stretch of the log (on start, after its queue overflowed), reads
// and projects the entries themselves. Searches wait for it (wait).
type indexer struct {
	s    *Store
	w, r *sql.DB
	path string
	off  bool

	wmu sync.Mutex // held while index.db is written

	mu      sync.Mutex
	logs    map[int64]*logIndex
	epoch   int64         // incremented by DropIndex: work taken before is void
	changed chan struct{} // closed and replaced when a log's indexed grows
	queued  int64         // docSize of the docs in every log's queue
	reads   int64         // times a log's docs were dropped and its entries read from the log instead
	writing int64         // docSize of the docs the indexer took and is writing
	wake    chan struct{}
	stop    context.CancelFunc
	done    chan struct{}
}

type logIndex struct {
	indexed int64       // entries in index.db
	target  int64       // entries the indexer owes: searches wait for them
	next    int64       // index of the doc a commit hands over next
	queue   []index.Doc // docs from commits, not yet written
	qbytes  int64       // their docSize
	fromLog bool        // read [indexed, target) from the log instead of queue
	err     error       // why the indexer could not go on with this log
}

func openIndexer(ctx context.Context, s *Store, path string) (*indexer, error) {
	w, err := openWriter(path, "NORMAL")
	if err != nil {
		return nil, err
	}
	ix := &indexer{s: s, w: w, path: path, off: os.Getenv(DisableIndexerEnv) == "1",
		logs: map[int64]*logIndex{}, changed: make(chan struct{}), wake: make(chan struct{}, 1), done: make(chan struct{})}
	if err := ix.create(ctx); err != nil {
		w.Close()
		return nil, err
	}
	r, err := openReaders(path)
	if err != nil {
		w.Close()
		return nil, err
	}
	ix.r = r
	// What each log owes: the index catches up with the whole log.
	rows, err := s.r.QueryContext(ctx, `SELECT id, COALESCE((SELECT MAX(size) FROM checkpoints c WHERE c.log = l.id), 0) FROM logs l`)
	if err != nil {
		ix.closeDBs()
		return nil, wrap(err)
	}
	sizes := map[int64]int64{}
	for rows.Next() {
		var id, size int64
		if err := rows.Scan(&id, &size); err != nil {
			rows.Close()
			ix.closeDBs()
			return nil, wrap(err)
		}
		sizes[id] = size
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		ix.closeDBs()
		return nil, wrap(err)
	}
	for pass := 0; pass < 2; pass++ {
		ahead := false
		for id, size := range sizes {
			li, err := ix.load(ctx, id)
			if err != nil {
				ix.closeDBs()
				return nil, err
			}
			ahead = ahead || li.indexed > size
			if !ix.off && li.indexed < size {
				li.target, li.next, li.fromLog = size, size, true
			}
		}
		if !ahead {
			break
		}
		// index.db holds entries the log does not (a restored vellum.db?).
		slog.Warn("the search index is ahead of the log; rebuilding it", "file", path)
		if err := ix.drop(ctx); err != nil {
			ix.closeDBs()
			return nil, err
		}
		ix.logs = map[int64]*logIndex{}
	}
	runCtx, cancel := context.WithCancel(context.Background())
	ix.stop = cancel
	go ix.run(runCtx)
	ix.poke()
	return ix, nil
}

func (ix *indexer) create(ctx context.Context) error {
	for _, q := range indexSchema {
		if _, err := ix.w.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("creating %s: %w", ix.path, err)
		}
	}
	var v string
	switch err := ix.w.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'schema_version'`).Scan(&v); {
	case errors.Is(err, sql.ErrNoRows):
		_, err := ix.w.ExecContext(ctx, `INSERT INTO meta(key, value) VALUES ('schema_version', ?)`, indexSchemaVersion)
		return err
	case err != nil:
		return fmt.Errorf("opening %s: %w", ix.path, err)
	case v != indexSchemaVersion: // another layout: start again, from the logs
		slog.Warn("the search index has another layout; rebuilding it from the logs", "file", ix.path, "version", v, "want", indexSchemaVersion)
		if err := ix.drop(ctx); err != nil {
			return err
		}
		_, err := ix.w.ExecContext(ctx, `UPDATE meta SET value = ? WHERE key = 'schema_version'`, indexSchemaVersion)
		return err
	}
	return nil
}

// load returns log id's state, reading its indexed count from index.db the
// first time.
func (ix *indexer) load(ctx context.Context, id int64) (*logIndex, error) {
	ix.mu.Lock()
	li := ix.logs[id]
	ix.mu.Unlock()
	if li != nil {
		return li, nil
	}
	var n sql.NullInt64
	if err := ix.w.QueryRowContext(ctx, `SELECT MAX(k) FROM docs WHERE k >= ? AND k < ?`, key(id, 0), key(id+1, 0)).Scan(&n); err != nil {
		return nil, wrap(err)
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if li := ix.logs[id]; li != nil {
		return li, nil
	}
	li = &logIndex{}
	if n.Valid {
		li.indexed = n.Int64&keyMask + 1
	}
	li.next = li.indexed
	ix.logs[id] = li
	return li, nil
}

func (ix *indexer) poke() {
	select {
	case ix.wake <- struct{}{}:
	default:
	}
}

// committed hands the docs of a commit of [old, size) of log id to the
// indexer. A commit without docs is not indexed (the caller chose so).
func (ix *indexer) committed(id, old, size int64, docs []index.Doc) {
	if ix.off || len(docs) == 0 {
		return
	}
	li, err := ix.load(context.Background(), id)
	if err != nil {
		return // the next start catches up
	}
	var mem int64
	for i := range docs {
		mem += docSize(&docs[i])
	}
	ix.mu.Lock()
	li.target = max(li.target, size)
	li.err = nil // a failed log is tried again at each commit
	switch {
	case li.fromLog:
	case docs[0].Index == li.next && ix.queued+ix.writing+mem <= maxQueuedBytes:
		li.queue = append(li.queue, docs...)
		li.qbytes += mem
		ix.queued += mem
		li.next = docs[len(docs)-1].Index + 1
	default: // a gap, or too far behind: read the log instead
		ix.dropQueue(li)
		li.fromLog = true
		ix.reads++
	}
	ix.mu.Unlock()
	ix.poke()
}

// dropQueue empties li's queue; ix.mu is held.
func (ix *indexer) dropQueue(li *logIndex) {
	ix.queued -= li.qbytes
	li.queue, li.qbytes = nil, 0
}

// run is the indexer's goroutine: it writes what the logs owe until ctx
// ends, then finishes what is queued and returns.
func (ix *indexer) run(ctx context.Context) {
	defer close(ix.done)
	for {
		select {
		case <-ix.wake:
		case <-ctx.Done():
			ix.work(context.Background(), true)
			return
		}
		ix.work(ctx, false)
	}
}

// work writes what every log owes. Reading the log is given up when
// stopping (the next start resumes it).
func (ix *indexer) work(ctx context.Context, stopping bool) {
	for {
		progress := false
		ix.mu.Lock()
		ids := make([]int64, 0, len(ix.logs))
		for id, li := range ix.logs {
			if li.err == nil && li.indexed < li.target {
				ids = append(ids, id)
			}
		}
		ix.mu.Unlock()
		for _, id := range ids {
			ok, err := ix.step(ctx, id, stopping)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				slog.Error("search indexer: log not indexed", "log_id", id, "err", err)
				ix.mu.Lock()
				ix.logs[id].err = err
				ix.mu.Unlock()
				ix.notify()
				continue
			}
			progress = progress || ok
		}
		if !progress {
			return
		}
	}
}

// step writes one stretch of what log id owes.
func (ix *indexer) step(ctx context.Context, id int64, stopping bool) (bool, error) {
	ix.mu.Lock()
	li := ix.logs[id]
	epoch := ix.epoch
	var docs []index.Doc
	from, to := li.indexed, li.target
	fromLog := li.fromLog
	var taken int64 // docSize of the docs taken from the queue
	if !fromLog {
		docs, li.queue = li.queue, nil
		taken, li.qbytes = li.qbytes, 0
		ix.queued -= taken
		ix.writing = taken // one step at a time: the indexer's goroutine
	}
	ix.mu.Unlock()
	defer func() {
		ix.mu.Lock()
		ix.writing = 0
		ix.mu.Unlock()
	}()
	if fromLog {
		if stopping {
			return false, nil
		}
		to = min(to, from+2000)
		es, err := ix.s.ReadEntries(ctx, ix.s.nameOf(ctx, id), from, to)
		if err != nil {
			return false, err
		}
		docs = make([]index.Doc, 0, len(es))
		for i, data := range es {
			e, err := entry.Parse(data)
			if err != nil {
				return false, fmt.Errorf("entry %d: %w", from+int64(i), err)
			}
			d, err := index.DocOf(e)
			if err != nil {
				return false, fmt.Errorf("entry %d: %w", from+int64(i), err)
			}
			docs = append(docs, d)
		}
	}
	if len(docs) == 0 {
		return false, nil
	}
	ix.wmu.Lock()
	defer ix.wmu.Unlock()
	ix.mu.Lock()
	stale := ix.epoch != epoch
	ix.mu.Unlock()
	if stale {
		return true, nil
	}
	// Docs taken from the queue are written even when the indexer is being
	// stopped (Close waits for them); on a failure they go back in front.
	n, err := ix.write(context.WithoutCancel(ctx), id, docs)
	if errors.Is(err, errGap) { // the docs do not continue the index: read the log
		ix.mu.Lock()
		ix.dropQueue(li)
		li.fromLog = true
		ix.reads++
		ix.mu.Unlock()
		return true, nil
	}
	if err != nil {
		if !fromLog {
			ix.mu.Lock()
			if !li.fromLog {
				li.queue = append(docs, li.queue...)
				li.qbytes += taken
				ix.queued += taken
			}
			ix.mu.Unlock()
		}
		return false, err
	}
	ix.mu.Lock()
	li.indexed = n
	if li.fromLog && li.indexed >= li.target {
		li.fromLog, li.next = false, li.indexed
	}
	ix.mu.Unlock()
	ix.notify()
	return true, nil
}

// nameOf is the name of log id (for ReadEntries).
func (s *Store) nameOf(ctx context.Context, id int64) string {
	s.mu.Lock()
	for name, x := range s.logID {
		if x == id {
			s.mu.Unlock()
			return name
		}
	}
	s.mu.Unlock()
	var name string
	if err := s.r.QueryRowContext(ctx, `SELECT name FROM logs WHERE id = ?`, id).Scan(&name); err == nil {
		s.mu.Lock()
		s.logID[name] = id
		s.mu.Unlock()
	}
	return name
}

func (ix *indexer) notify() {
	ix.mu.Lock()
	close(ix.changed)
	ix.changed = make(chan struct{})
	ix.mu.Unlock()
}

// write adds docs of log id to index.db in one transaction, skipping those
// already there, and returns the log's new indexed count. wmu is held.
func (ix *indexer) write(ctx context.Context, id int64, docs []index.Doc) (int64, error) {
	var have sql.NullInt64
	if err := ix.w.QueryRowContext(ctx, `SELECT MAX(k) FROM docs WHERE k >= ? AND k < ?`, key(id, 0), key(id+1, 0)).Scan(&have); err != nil {
		return 0, wrap(err)
	}
	indexed := int64(0)
	if have.Valid {
		indexed = have.Int64&keyMask + 1
	}
	for len(docs) > 0 && docs[0].Index < indexed {
		docs = docs[1:]
	}
	if len(docs) == 0 {
		return indexed, nil
	}
	if docs[0].Index != indexed {
		return 0, fmt.Errorf("%w: index docs of log %d start at %d, the index holds %d", errGap, id, docs[0].Index, indexed)
	}
	tx, err := ix.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, wrap(err)
	}
	defer tx.Rollback()
	if err := insertMany(ctx, tx, "docs(k, received, etime)", 3, len(docs), func(i int, a []any) []any {
		d := &docs[i]
		var et any
		if !d.EventTime.IsZero() {
			et = d.EventTime.UnixMicro() - d.Received.UnixMicro() // small: fewer bytes
		}
		return append(a, key(id, d.Index), d.Received.UnixMicro(), et)
	}); err != nil {
		return 0, err
	}
	if err := insertMany(ctx, tx, "terms(rowid, t)", 2, len(docs), func(i int, a []any) []any {
		d := &docs[i]
		return append(a, key(id, d.Index), termsOf(d))
	}); err != nil {
		return 0, err
	}
	seen := map[string]bool{}
	var actions []string
	for i := range docs {
		if a := docs[i].Action; !seen[a] {
			seen[a] = true
			actions = append(actions, a)
		}
	}
	if err := insertMany(ctx, tx, "actions(log, action)", 2, len(actions), func(i int, a []any) []any {
		return append(a, id, actions[i])
	}, "INSERT OR IGNORE"); err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, wrap(err)
	}
	return docs[len(docs)-1].Index + 1, nil
}

// errGap: docs given to write do not continue what index.db holds.
var errGap = fmt.Errorf("%w: index docs do not continue the index", store.ErrUnavailable)

// wait waits (at most searchWait) until log id's index holds the first
// size entries, or as many as were handed to the indexer, and returns how
// many it holds.
func (ix *indexer) wait(ctx context.Context, log string, id, size int64) (int64, error) {
	li, err := ix.load(ctx, id)
	if err != nil {
		return 0, err
	}
	var timeout <-chan time.Time
	for {
		ix.mu.Lock()
		indexed, want, lerr, ch := li.indexed, min(size, li.target), li.err, ix.changed
		ix.mu.Unlock()
		if indexed >= want {
			return min(indexed, size), nil
		}
		if lerr != nil {
			return 0, &store.IndexBehindError{Log: log, Behind: want - indexed, Err: lerr}
		}
		if timeout == nil {
			t := time.NewTimer(searchWait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-ch:
		case <-timeout:
			return 0, &store.IndexBehindError{Log: log, Behind: want - indexed}
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// drop empties index.db. wmu is held.
func (ix *indexer) drop(ctx context.Context) error {
	tx, err := ix.w.BeginTx(ctx, nil)
	if err != nil {
		return wrap(err)
	}
	defer tx.Rollback()
	for _, q := range []string{`DROP TABLE IF EXISTS docs`, `DROP TABLE IF EXISTS actions`, `DROP TABLE IF EXISTS terms`} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return wrap(err)
		}
	}
	for _, q := range indexSchema[1:] {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return wrap(err)
		}
	}
	return wrap(tx.Commit())
}

func (ix *indexer) closeDBs() error {
	var err error
	if ix.r != nil {
		err = ix.r.Close()
	}
	return errors.Join(err, ix.w.Close())
}

// close stops the goroutine after it has written the docs it was handed.
func (ix *indexer) close() error {
	ix.stop()
	<-ix.done
	return ix.closeDBs()
}

// IndexesInBackground marks a store whose search index follows its logs by
// itself: the node need not catch it up on start.
func (s *Store) IndexesInBackground() {}

// Indexed implements store.Store: how many leading entries index.db holds,
// once the indexer has written what it was handed (waiting at most
// searchWait).
func (s *Store) Indexed(ctx context.Context, log string) (int64, error) {
	id, err := s.id(ctx, log)
	if err != nil {
		return 0, err
	}
	n, err := s.ix.wait(ctx, log, id, 1<<keyBits)
	if err != nil {
		var behind *store.IndexBehindError
		if !errors.As(err, &behind) {
			return 0, err
		}
		li, _ := s.ix.load(ctx, id)
		s.ix.mu.Lock()
		n = li.indexed
		s.ix.mu.Unlock()
	}
	return n, nil
}

// IndexStats is the search indexer's state, for metrics.
type IndexStats struct {
	Behind      map[string]int64 // by log: committed entries not yet in index.db
	QueuedBytes int64            // estimated memory of the docs waiting to be written
	LogReads    int64            // times a log's waiting docs were dropped (memory bound, gap) and its entries read from the log instead
}

// IndexStats returns the indexer's state; logs that owe nothing are left out.
func (s *Store) IndexStats() IndexStats {
	ix := s.ix
	behind := map[int64]int64{}
	ix.mu.Lock()
	for id, li := range ix.logs {
		if li.target > li.indexed {
			behind[id] = li.target - li.indexed
		}
	}
	st := IndexStats{Behind: make(map[string]int64, len(behind)), QueuedBytes: ix.queued + ix.writing, LogReads: ix.reads}
	ix.mu.Unlock()
	for id, n := range behind {
		st.Behind[s.nameOf(context.Background(), id)] = n
	}
	return st
}

// AddDocs implements store.Store: docs below what index.db holds are
// skipped (the indexer may have written them meanwhile).
func (s *Store) AddDocs(ctx context.Context, log string, docs []index.Doc) error {
	id, err := s.id(ctx, log)
	if err != nil {
		return err
	}
	li, err := s.ix.load(ctx, id)
	if err != nil {
		return err
	}
	s.ix.wmu.Lock()
	defer s.ix.wmu.Unlock()
	n, err := s.ix.write(ctx, id, docs)
	if err != nil {
		return err
	}
	s.ix.mu.Lock()
	li.indexed = n
	if !li.fromLog {
		li.next = max(li.next, n)
	}
	s.ix.mu.Unlock()
	s.ix.notify()
	return nil
}

// DropIndex implements store.Store. Nothing is owed afterwards: the index
// grows again from AddDocs (a rebuild), or from the log once a commit hands
// the indexer docs that do not continue it.
func (s *Store) DropIndex(ctx context.Context) error {
	s.ix.wmu.Lock()
	defer s.ix.wmu.Unlock()
	if err := s.ix.drop(ctx); err != nil {
		return err
	}
	s.ix.mu.Lock()
	s.ix.epoch++
	for _, li := range s.ix.logs {
		s.ix.dropQueue(li)
		*li = logIndex{}
	}
	s.ix.mu.Unlock()
	s.ix.notify()
	return nil
}
