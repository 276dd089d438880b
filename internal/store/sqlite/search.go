package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/vellum-audit/vellum/internal/index"
	"github.com/vellum-audit/vellum/internal/store"
)

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
	args = append(args, keyMask)
	for _, x := range idxs {
		args = append(args, key(id, x))
	}
	rows, err := s.r.QueryContext(ctx, `SELECT k & ?, data FROM entries WHERE k IN (?`+strings.Repeat(",?", len(idxs)-1)+`)`, args...)
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

// maxPrefixActions bounds the distinct actions an action prefix may match.
const maxPrefixActions = 200

// Search implements store.Store. It first waits (at most searchWait) for
// the indexer to have projected the log up to size. Then every equality
// filter (actor, key, action, source, outcome, target) is a field token of
// terms, an action prefix ending in a dot is a token too (other prefixes
// are the OR of the tokens of the log's actions under them), and each word
// of the text a token: one
// FTS5 query whose doclists are walked in rowid (= entry index) order and
// merged by seeks. Time windows are rowid bounds (received times grow with
// the index: found by bisection over docs), so every query stops after
// Limit+1 matches and deep pages cost what the first does. Event-time
// windows filter the matches through docs.
func (s *Store) Search(ctx context.Context, log string, f index.Filter, size int64) ([]int64, bool, error) {
	id, err := s.id(ctx, log)
	if err != nil {
		return nil, false, err
	}
	n, err := s.ix.wait(ctx, log, id, size)
	if err != nil {
		return nil, false, err
	}
	lo, hi := int64(0), n // idx in [lo, hi): never beyond what the log holds
	if !f.Since.IsZero() {
		x, err := s.firstReceived(ctx, id, f.Since.UnixMicro(), n)
		if err != nil {
			return nil, false, err
		}
		lo = max(lo, x)
	}
	if !f.Until.IsZero() {
		x, err := s.firstReceived(ctx, id, f.Until.UnixMicro(), n)
		if err != nil {
			return nil, false, err
		}
		hi = min(hi, x)
	}
	if f.After >= 0 {
		if f.Oldest {
			lo = max(lo, f.After+1)
		} else {
			hi = min(hi, f.After)
		}
	}
	if lo >= hi || f.Limit <= 0 {
		return nil, false, nil
	}
	match, ok, err := s.matchOf(ctx, id, f)
	if err != nil || !ok {
		return nil, false, err
	}
	dir := "DESC"
	if f.Oldest {
		dir = "ASC"
	}
	var q string
	args := []any{}
	var etime []string
	if !f.EventFrom.IsZero() {
		etime = append(etime, "d.etime + d.received >= ?")
	}
	if !f.EventTo.IsZero() {
		etime = append(etime, "d.etime + d.received < ?")
	}
	if match == "" {
		q = "SELECT d.k FROM docs d WHERE d.k >= ? AND d.k < ?"
	} else {
		q = "SELECT t.rowid FROM terms t"
		if len(etime) > 0 {
			q += " CROSS JOIN docs d ON d.k = t.rowid"
		}
		q += " WHERE t.terms MATCH ? AND t.rowid >= ? AND t.rowid < ?"
		args = append(args, match)
	}
	args = append(args, key(id, lo), key(id, hi))
	for _, c := range etime {
		q += " AND " + c
	}
	if !f.EventFrom.IsZero() {
		args = append(args, f.EventFrom.UnixMicro())
	}
	if !f.EventTo.IsZero() {
		args = append(args, f.EventTo.UnixMicro())
	}
	if match == "" {
		q += " ORDER BY d.k " + dir
	} else {
		q += " ORDER BY t.rowid " + dir
	}
	q += " LIMIT ?"
	args = append(args, f.Limit+1) // one more: is there a next page?
	rows, err := s.ix.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, false, wrap(err)
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var k int64
		if err := rows.Scan(&k); err != nil {
			return nil, false, wrap(err)
		}
		out = append(out, k&keyMask)
	}
	if err := rows.Err(); err != nil {
		return nil, false, wrap(err)
	}
	if len(out) > f.Limit {
		return out[:f.Limit], true, nil
	}
	return out, false, nil
}

// matchOf is f's FTS5 query ("" when f has no token filter), or false when
// nothing can match. A word is never a field token: words are letters and
// digits (index.Words), field tokens hold a '='.
func (s *Store) matchOf(ctx context.Context, id int64, f index.Filter) (string, bool, error) {
	var and []string
	k := func(field byte, vals ...string) { and = append(and, `"`+tokenOf(field, vals...)+`"`) }
	if f.Actor != "" {
		k(fActor, f.Actor)
	}
	if f.Key != "" {
		k(fKey, f.Key)
	}
	if f.Source != "" {
		k(fSource, f.Source)
	}
	if f.Outcome != "" {
		k(fOutcome, f.Outcome)
	}
	if f.Target != "" {
		if f.TargetType != "" {
			k(fTargetType, f.Target, f.TargetType)
		} else {
			k(fTarget, f.Target)
		}
	}
	switch {
	case f.Action != "":
		if !strings.HasPrefix(f.Action, f.ActionPrefix) {
			return "", false, nil
		}
		k(fAction, f.Action)
	case strings.HasSuffix(f.ActionPrefix, "."): // what ParseFilter makes of user.*
		k(fActionDot, f.ActionPrefix)
	case f.ActionPrefix != "":
		actions, err := s.actionsUnder(ctx, id, f.ActionPrefix)
		if err != nil || len(actions) == 0 {
			return "", false, err
		}
		var or []string
		for _, a := range actions {
			or = append(or, `"`+tokenOf(fAction, a)+`"`)
		}
		and = append(and, "("+strings.Join(or, " OR ")+")")
	}
	for _, w := range strings.Fields(f.Text) {
		// The index holds index.Words of the text (FTS5 folds them
		// further); anything else is never a word of it.
		if ws := index.Words(w); !slices.Equal(ws, []string{w}) {
			return "", false, nil
		}
		and = append(and, `"`+strings.ReplaceAll(w, `"`, `""`)+`"`)
	}
	return strings.Join(and, " AND "), true, nil
}

// actionsUnder lists log id's actions that start with prefix.
func (s *Store) actionsUnder(ctx context.Context, id int64, prefix string) ([]string, error) {
	rows, err := s.ix.r.QueryContext(ctx, `SELECT action FROM actions WHERE log = ? AND action >= ? AND action < ? ORDER BY action LIMIT ?`, id, prefix, prefixEnd(prefix), maxPrefixActions+1)
	if err != nil {
		return nil, wrap(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			return nil, wrap(err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(err)
	}
	if len(out) > maxPrefixActions {
		return nil, fmt.Errorf("%w: action prefix %q matches more than %d actions; narrow it", index.ErrBadFilter, prefix+"*", maxPrefixActions)
	}
	return out, nil
}

// firstReceived is the smallest index in [0, n) whose received time is at
// least t (n if none), by bisection: received times never decrease along a
// log (the sequencer keeps them monotonic).
func (s *Store) firstReceived(ctx context.Context, id, t, n int64) (int64, error) {
	lo, hi := int64(0), n
	for lo < hi {
		mid := lo + (hi-lo)/2
		var r int64
		err := s.ix.r.QueryRowContext(ctx, `SELECT received FROM docs WHERE k = ?`, key(id, mid)).Scan(&r)
		if err == sql.ErrNoRows {
			return 0, &store.IndexBehindError{Log: s.nameOf(ctx, id), Behind: n - mid, Err: fmt.Errorf("index row %d missing", mid)}
		}
		if err != nil {
			return 0, wrap(err)
		}
		if r >= t {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo, nil
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
