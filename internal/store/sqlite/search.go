package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/vellum-audit/vellum/internal/index"
	"github.com/vellum-audit/vellum/internal/store"
)

// The search index: a projection of the entries, committed in the same
// transaction as them, droppable and rebuildable from the log (it has no
// append-only triggers; it is not evidence). Times are unix microseconds.
var searchSchema = []string{
	`CREATE TABLE IF NOT EXISTS search (log INTEGER NOT NULL, idx INTEGER NOT NULL, received INTEGER NOT NULL, etime INTEGER, action TEXT NOT NULL, actor TEXT NOT NULL, key_id TEXT NOT NULL, outcome TEXT NOT NULL, source TEXT NOT NULL, PRIMARY KEY (log, idx)) WITHOUT ROWID`,
	`CREATE INDEX IF NOT EXISTS search_actor ON search (log, actor, idx)`,
	`CREATE INDEX IF NOT EXISTS search_action ON search (log, action, idx)`,
	`CREATE INDEX IF NOT EXISTS search_key ON search (log, key_id, idx)`,
	`CREATE INDEX IF NOT EXISTS search_source ON search (log, source, idx)`,
	`CREATE INDEX IF NOT EXISTS search_received ON search (log, received)`,
	// No index on etime: event-time windows only ever filter rows that
	// another index found (producers' clocks are not monotonic).
	`DROP INDEX IF EXISTS search_etime`,
	`CREATE TABLE IF NOT EXISTS search_targets (log INTEGER NOT NULL, target TEXT NOT NULL, ttype TEXT NOT NULL, idx INTEGER NOT NULL, PRIMARY KEY (log, target, idx, ttype)) WITHOUT ROWID`,
	`CREATE VIRTUAL TABLE IF NOT EXISTS search_fts USING fts5(body, content='', tokenize='unicode61 remove_diacritics 2')`,
}

// ftsRowid packs (log, idx) into one FTS rowid: 2^19 logs of 2^44 entries.
func ftsRowid(log, idx int64) int64 { return log<<44 | idx }

func micros(d index.Doc) (int64, any) {
	var et any
	if !d.EventTime.IsZero() {
		et = d.EventTime.UnixMicro()
	}
	return d.Received.UnixMicro(), et
}

// insertDocs writes index rows inside tx.
func insertDocs(ctx context.Context, tx *sql.Tx, id int64, docs []index.Doc) error {
	if len(docs) == 0 {
		return nil
	}
	if err := insertMany(ctx, tx, "search(log, idx, received, etime, action, actor, key_id, outcome, source)", 9, len(docs), func(i int, a []any) []any {
		d := &docs[i]
		rec, et := micros(*d)
		return append(a, id, d.Index, rec, et, d.Action, d.Actor, d.Key, d.Outcome, d.Source)
	}); err != nil {
		return err
	}
	var targets [][4]any
	var texts [][2]any
	for _, d := range docs {
		for i, t := range d.Targets {
			dup := false
			for _, u := range d.Targets[:i] {
				dup = dup || u == t
			}
			if !dup { // an event may name the same target twice
				targets = append(targets, [4]any{id, t[0], t[1], d.Index})
			}
		}
		if d.Text != "" {
			texts = append(texts, [2]any{ftsRowid(id, d.Index), d.Text})
		}
	}
	if err := insertMany(ctx, tx, "search_targets(log, target, ttype, idx)", 4, len(targets), func(i int, a []any) []any {
		return append(a, targets[i][:]...)
	}); err != nil {
		return err
	}
	return insertMany(ctx, tx, "search_fts(rowid, body)", 2, len(texts), func(i int, a []any) []any {
		return append(a, texts[i][:]...)
	})
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
	args := make([]any, 0, len(idxs)+1)
	args = append(args, id)
	for _, x := range idxs {
		args = append(args, x)
	}
	rows, err := s.r.QueryContext(ctx, `SELECT idx, data FROM entries WHERE log = ? AND idx IN (?`+strings.Repeat(",?", len(idxs)-1)+`)`, args...)
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

// Indexed implements store.Store.
func (s *Store) Indexed(ctx context.Context, log string) (int64, error) {
	id, err := s.id(ctx, log)
	if err != nil {
		return 0, err
	}
	var n sql.NullInt64
	if err := s.r.QueryRowContext(ctx, `SELECT MAX(idx) FROM search WHERE log = ?`, id).Scan(&n); err != nil {
		return 0, wrap(err)
	}
	if !n.Valid {
		return 0, nil
	}
	return n.Int64 + 1, nil
}

// AddDocs implements store.Store.
func (s *Store) AddDocs(ctx context.Context, log string, docs []index.Doc) error {
	id, err := s.id(ctx, log)
	if err != nil {
		return err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return wrap(err)
	}
	defer tx.Rollback()
	if err := insertDocs(ctx, tx, id, docs); err != nil {
		return err
	}
	return wrap(tx.Commit())
}

// DropIndex implements store.Store.
func (s *Store) DropIndex(ctx context.Context) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return wrap(err)
	}
	defer tx.Rollback()
	for _, q := range []string{`DELETE FROM search`, `DELETE FROM search_targets`, `DROP TABLE IF EXISTS search_fts`, searchSchema[len(searchSchema)-1]} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return wrap(err)
		}
	}
	return wrap(tx.Commit())
}

// Search implements store.Store. The plan is chosen here, not left to the
// planner: an equality filter with its own index (actor, key, source,
// exact action, target) walks that index in idx order; an action prefix is
// a merge of one index walk per matching action; full text walks the FTS
// rowids in order; otherwise the primary key is walked. Time windows become
// index bounds (received grows with idx), so every plan stops after Limit
// matches and deep pages cost what the first does.
func (s *Store) Search(ctx context.Context, log string, f index.Filter, size int64) ([]int64, bool, error) {
	id, err := s.id(ctx, log)
	if err != nil {
		return nil, false, err
	}
	lo, hi := int64(0), size // idx in [lo, hi)
	if !f.Since.IsZero() {
		var n sql.NullInt64
		if err := s.r.QueryRowContext(ctx, `SELECT idx FROM search WHERE log = ? AND received >= ? ORDER BY received, idx LIMIT 1`, id, f.Since.UnixMicro()).Scan(&n); err != nil && err != sql.ErrNoRows {
			return nil, false, wrap(err)
		} else if !n.Valid {
			return nil, false, nil
		}
		lo = max(lo, n.Int64)
	}
	if !f.Until.IsZero() {
		var n sql.NullInt64
		err := s.r.QueryRowContext(ctx, `SELECT idx FROM search WHERE log = ? AND received >= ? ORDER BY received, idx LIMIT 1`, id, f.Until.UnixMicro()).Scan(&n)
		if err != nil && err != sql.ErrNoRows {
			return nil, false, wrap(err)
		}
		if n.Valid {
			hi = min(hi, n.Int64)
		}
	}
	if f.After >= 0 {
		if f.Oldest {
			lo = max(lo, f.After+1)
		} else {
			hi = min(hi, f.After)
		}
	}
	if lo >= hi {
		return nil, false, nil
	}
	dir := "DESC"
	if f.Oldest {
		dir = "ASC"
	}
	// Conditions on the search row s.
	var conds []string
	var args []any
	add := func(c string, a ...any) { conds = append(conds, c); args = append(args, a...) }
	add("s.log = ?", id)
	add("s.idx >= ? AND s.idx < ?", lo, hi)
	// The column whose index drives the walk is compared plainly; the others
	// get a unary + so that the planner does not pick their index instead.
	driver := ""
	switch {
	case f.Actor != "":
		driver = "actor"
	case f.Key != "":
		driver = "key_id"
	case f.Action != "":
		driver = "action"
	case f.Source != "":
		driver = "source"
	}
	col := func(name, v string) {
		if v == "" {
			return
		}
		if name == driver {
			add("s."+name+" = ?", v)
		} else {
			add("+s."+name+" = ?", v)
		}
	}
	col("actor", f.Actor)
	col("key_id", f.Key)
	col("action", f.Action)
	col("source", f.Source)
	col("outcome", f.Outcome)
	if !f.EventFrom.IsZero() {
		add("+s.etime >= ?", f.EventFrom.UnixMicro())
	}
	if !f.EventTo.IsZero() {
		add("+s.etime < ?", f.EventTo.UnixMicro())
	}
	if f.ActionPrefix != "" && driver != "" {
		add("+s.action >= ? AND +s.action < ?", f.ActionPrefix, prefixEnd(f.ActionPrefix))
	}
	// Tables, driving one first; CROSS JOIN keeps SQLite to that order.
	// INDEXED BY: with an idx range and ORDER BY idx, SQLite would rather
	// walk the primary key and filter, which is slow for a rare value.
	tables := []string{"search s"}
	switch driver {
	case "actor":
		tables[0] = "search s INDEXED BY search_actor"
	case "key_id":
		tables[0] = "search s INDEXED BY search_key"
	case "action":
		tables[0] = "search s INDEXED BY search_action"
	case "source":
		tables[0] = "search s INDEXED BY search_source"
	}
	order := "s.idx"
	if f.Target != "" {
		conds = append(conds, "t.log = s.log AND t.idx = s.idx AND t.target = ? AND t.idx >= ? AND t.idx < ?")
		args = append(args, f.Target, lo, hi)
		if f.TargetType != "" {
			conds = append(conds, "t.ttype = ?")
			args = append(args, f.TargetType)
		}
		if driver == "" {
			tables = []string{"search_targets t", "search s"}
			order = "t.idx"
			driver = "target"
		} else {
			tables = append(tables, "search_targets t")
		}
	}
	if f.Text != "" {
		if driver == "" {
			// Walk the FTS matches in rowid order (FTS5 does that natively),
			// a chunk at a time, keeping those that pass the other filters.
			return s.searchText(ctx, id, f, conds, args, lo, hi)
		}
		// Walk the driver's index; check each row against FTS by rowid.
		conds = append(conds, "search_fts MATCH ? AND x.rowid = ? + s.idx")
		args = append(args, ftsQuery(f.Text), id<<44)
		tables = append(tables, "search_fts x")
	}
	from := strings.Join(tables, " CROSS JOIN ")
	if f.ActionPrefix != "" && driver == "" && f.Text == "" {
		return s.searchPrefix(ctx, id, f, conds, args, dir)
	}
	q := "SELECT s.idx, " + order + " FROM " + from + " WHERE " + strings.Join(conds, " AND ") + " ORDER BY " + order + " " + dir + " LIMIT ?"
	args = append(args, f.Limit)
	return s.queryIdx(ctx, q, args)
}

// searchText answers a full-text query with no other indexed equality
// filter: FTS matches are read newest (or oldest) first in chunks, and each
// chunk is filtered by the remaining conditions, until Limit are found.
func (s *Store) searchText(ctx context.Context, id int64, f index.Filter, conds []string, args []any, lo, hi int64) ([]int64, bool, error) {
	dir := "DESC"
	if f.Oldest {
		dir = "ASC"
	}
	if f.Target != "" || f.ActionPrefix != "" {
		// Target and prefix become plain conditions on the chunk.
		if f.Target != "" {
			c := "EXISTS (SELECT 1 FROM search_targets t WHERE t.log = s.log AND t.target = ? AND t.idx = s.idx"
			a := []any{f.Target}
			if f.TargetType != "" {
				c += " AND t.ttype = ?"
				a = append(a, f.TargetType)
			}
			conds = append(conds, c+")")
			args = append(args, a...)
		}
		if f.ActionPrefix != "" {
			conds = append(conds, "+s.action >= ? AND +s.action < ?")
			args = append(args, f.ActionPrefix, prefixEnd(f.ActionPrefix))
		}
	}
	plain := len(conds) == 2 // only log and idx range: every match counts
	const chunk = 512
	var out []int64
	cur, end := ftsRowid(id, lo), ftsRowid(id, hi)
	for len(out) < f.Limit {
		q := `SELECT rowid FROM search_fts WHERE search_fts MATCH ? AND rowid >= ? AND rowid < ? ORDER BY rowid ` + dir + ` LIMIT ?`
		n := chunk
		if plain {
			n = f.Limit - len(out)
		}
		rows, err := s.r.QueryContext(ctx, q, ftsQuery(f.Text), cur, end, n)
		if err != nil {
			return nil, false, wrap(err)
		}
		var cand []int64
		for rows.Next() {
			var r int64
			if err := rows.Scan(&r); err != nil {
				rows.Close()
				return nil, false, wrap(err)
			}
			cand = append(cand, r-id<<44)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, false, wrap(err)
		}
		if len(cand) == 0 {
			return out, false, nil
		}
		if f.Oldest {
			cur = ftsRowid(id, cand[len(cand)-1]+1)
		} else {
			end = ftsRowid(id, cand[len(cand)-1])
		}
		if plain {
			out = append(out, cand...)
		} else {
			ph := "?" + strings.Repeat(",?", len(cand)-1)
			a := append([]any{}, args...)
			for _, c := range cand {
				a = append(a, c)
			}
			a = append(a, f.Limit-len(out))
			got, _, err := s.queryIdx(ctx, "SELECT s.idx, s.idx FROM search s WHERE "+strings.Join(conds, " AND ")+" AND s.idx IN ("+ph+") ORDER BY s.idx "+dir+" LIMIT ?", a)
			if err != nil {
				return nil, false, err
			}
			out = append(out, got...)
		}
		if len(cand) < n {
			return out, false, nil
		}
	}
	return out, true, nil
}

// searchPrefix answers an action prefix query as a merge of one walk of
// the action index per distinct matching action.
func (s *Store) searchPrefix(ctx context.Context, id int64, f index.Filter, conds []string, args []any, dir string) ([]int64, bool, error) {
	// The distinct actions under the prefix, one index seek each (a skip
	// scan), rather than a DISTINCT over every matching row.
	var actions []string
	from := f.ActionPrefix
	for len(actions) <= 200 {
		var a string
		err := s.r.QueryRowContext(ctx, `SELECT action FROM search INDEXED BY search_action WHERE log = ? AND action >= ? AND action < ? ORDER BY action LIMIT 1`, id, from, prefixEnd(f.ActionPrefix)).Scan(&a)
		if err == sql.ErrNoRows {
			break
		}
		if err != nil {
			return nil, false, wrap(err)
		}
		actions = append(actions, a)
		from = a + "\x00"
	}
	if len(actions) == 0 {
		return nil, false, nil
	}
	if len(actions) > 200 {
		return nil, false, fmt.Errorf("%w: action prefix %q matches %d actions; narrow it", index.ErrBadFilter, f.ActionPrefix+"*", len(actions))
	}
	var parts []string
	var all []any
	for _, a := range actions {
		parts = append(parts, "SELECT * FROM (SELECT s.idx FROM search s INDEXED BY search_action WHERE "+strings.Join(conds, " AND ")+" AND s.action = ? ORDER BY s.idx "+dir+" LIMIT ?)")
		all = append(all, args...)
		all = append(all, a, f.Limit)
	}
	q := "SELECT idx, idx FROM (" + strings.Join(parts, " UNION ALL ") + ") ORDER BY idx " + dir + " LIMIT ?"
	all = append(all, f.Limit)
	return s.queryIdx(ctx, q, all)
}

// queryIdx runs a search query of (idx, order key) rows and returns the
// distinct indexes and whether the page was full (more may follow).
func (s *Store) queryIdx(ctx context.Context, q string, args []any) ([]int64, bool, error) {
	limit := args[len(args)-1].(int)
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, false, wrap(err)
	}
	defer rows.Close()
	var out []int64
	n := 0
	for rows.Next() {
		var idx, ord int64
		if err := rows.Scan(&idx, &ord); err != nil {
			return nil, false, wrap(err)
		}
		n++
		if len(out) > 0 && out[len(out)-1] == idx {
			continue // one entry naming the same target twice
		}
		out = append(out, idx)
	}
	return out, n == limit, wrap(rows.Err())
}

// prefixEnd is the smallest string above every string with prefix p.
func prefixEnd(p string) string {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return string(b) + "\xff"
}

// ftsQuery quotes each word, so the user's text is never FTS syntax.
func ftsQuery(text string) string {
	var q []string
	for _, w := range strings.Fields(text) {
		q = append(q, `"`+strings.ReplaceAll(w, `"`, `""`)+`"`)
	}
	return strings.Join(q, " AND ")
}

var _ store.Store = (*Store)(nil)
