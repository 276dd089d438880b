package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"golang.org/x/text/unicode/norm"

	"github.com/vellum-audit/vellum/internal/index"
	"github.com/vellum-audit/vellum/internal/store"
)

// The search projection: tables search, search_targets and search_text
// (see migrations/0001_init.sql), written in the commit of their entries
// or by AddDocs, emptied by DropIndex.

// checkDocs refuses docs whose strings PostgreSQL's text cannot hold.
func checkDocs(log string, docs []index.Doc) error {
	for i := range docs {
		d := &docs[i]
		for _, f := range [...]struct{ name, v string }{{"action", d.Action}, {"actor", d.Actor}, {"key", d.Key}, {"outcome", d.Outcome}, {"source", d.Source}} {
			if !storable(f.v) {
				return errText(log, fmt.Sprintf("entry %d: %s", d.Index, f.name), f.v)
			}
		}
		for _, t := range d.Targets {
			if !storable(t[0]) || !storable(t[1]) {
				return errText(log, fmt.Sprintf("entry %d: target", d.Index), t[0]+"/"+t[1])
			}
		}
		if d.Received.IsZero() {
			return fmt.Errorf("postgres: log %q: entry %d: index row without a received time", log, d.Index)
		}
	}
	return nil
}

// queueDocs queues the inserts of docs' index rows; onConflict is appended
// to each statement.
func queueDocs(b *pgx.Batch, id int64, docs []index.Doc, onConflict string) {
	if len(docs) == 0 {
		return
	}
	n := len(docs)
	idxs, recv, etime := make([]int64, n), make([]time.Time, n), make([]pgtype.Timestamptz, n)
	action, actor, key, outcome, source := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	var tTarget, tType []string
	var tIdx []int64
	var xIdx []int64
	var xWords []string
	for i := range docs {
		d := &docs[i]
		idxs[i], recv[i] = d.Index, d.Received
		if !d.EventTime.IsZero() {
			etime[i] = pgtype.Timestamptz{Time: d.EventTime, Valid: true}
		}
		action[i], actor[i], key[i], outcome[i], source[i] = d.Action, d.Actor, d.Key, d.Outcome, d.Source
		for j, t := range d.Targets {
			dup := false
			for _, u := range d.Targets[:j] {
				dup = dup || u == t
			}
			if !dup { // an event may name the same target twice
				tTarget, tType, tIdx = append(tTarget, t[0]), append(tType, t[1]), append(tIdx, d.Index)
			}
		}
		if w := docWords(d.Text); len(w) > 0 {
			xIdx, xWords = append(xIdx, d.Index), append(xWords, strings.Join(w, " "))
		}
	}
	b.Queue(`INSERT INTO search (log, idx, received, etime, action, actor, key_id, outcome, source)
		SELECT $1, u.* FROM unnest($2::bigint[], $3::timestamptz[], $4::timestamptz[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[]) AS u`+onConflict,
		id, idxs, recv, etime, action, actor, key, outcome, source)
	if len(tIdx) > 0 {
		b.Queue(`INSERT INTO search_targets (log, target, ttype, idx) SELECT $1, u.* FROM unnest($2::text[], $3::text[], $4::bigint[]) AS u`+onConflict,
			id, tTarget, tType, tIdx)
	}
	if len(xIdx) > 0 {
		b.Queue(`INSERT INTO search_text (log, idx, words) SELECT $1, u.i, array_to_tsvector(string_to_array(u.w, ' ')) FROM unnest($2::bigint[], $3::text[]) AS u(i, w)`+onConflict,
			id, xIdx, xWords)
	}
}

// Full text. vellum splits text into words itself (index.Words: runs of
// letters and digits, lower-cased, as SQLite's unicode61 tokenizer does)
// and folds diacritics off Latin letters (é → e, as unicode61's
// remove_diacritics does); the words become the lexemes of a tsvector as
// they are (array_to_tsvector), and a query is the conjunction of its
// words' lexemes. PostgreSQL's own parser is not used: it would keep e-mail
// addresses, URLs, hyphenated words and version numbers as single tokens,
// and its case folding depends on the server's locale.

// Limits of a tsvector: a lexeme is shorter than 2 KiB and the whole must
// stay under 1 MiB. Longer words are not indexed (a query word is at most
// 256 bytes anyway); words past maxVectorBytes are dropped.
const (
	maxLexeme      = 2046
	maxVectorBytes = 900 << 10
)

// fold removes diacritics from Latin letters: a letter whose canonical
// decomposition is an ASCII letter followed by combining marks becomes
// that letter.
func fold(w string) string {
	ascii := true
	for i := 0; i < len(w); i++ {
		ascii = ascii && w[i] < utf8.RuneSelf
	}
	if ascii {
		return w
	}
	var sb strings.Builder
	for _, r := range w {
		if r < utf8.RuneSelf {
			sb.WriteRune(r)
			continue
		}
		d := norm.NFD.String(string(r))
		if d[0] < utf8.RuneSelf && ('a' <= d[0] && d[0] <= 'z' || 'A' <= d[0] && d[0] <= 'Z') && onlyMarks(d[1:]) && len(d) > 1 {
			sb.WriteByte(d[0])
		} else {
			sb.WriteRune(r)
		}
	}
	return sb.String()
}

func onlyMarks(s string) bool {
	for _, r := range s {
		if !unicode.Is(unicode.Mn, r) {
			return false
		}
	}
	return true
}

// docWords are the distinct folded words of a doc's text, within the
// limits of a tsvector.
func docWords(text string) []string {
	if text == "" {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	total := 0
	for _, w := range index.Words(text) {
		w = fold(w)
		if len(w) > maxLexeme || seen[w] {
			continue
		}
		if total += len(w) + 8; total > maxVectorBytes {
			break
		}
		seen[w] = true
		out = append(out, w)
	}
	return out
}

// tsQuery is the tsquery text that matches entries holding every word of
// text: each lexeme quoted, so nothing in it is query syntax.
func tsQuery(text string) string {
	var q []string
	for _, w := range index.Words(text) {
		w = fold(w)
		q = append(q, "'"+strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(w)+"'")
	}
	return strings.Join(q, " & ")
}

// Indexed implements store.Store.
func (s *Store) Indexed(ctx context.Context, log string) (int64, error) {
	id, err := s.id(ctx, log)
	if err != nil {
		return 0, err
	}
	var n pgtype.Int8
	if err := s.pool.QueryRow(ctx, `SELECT MAX(idx) FROM search WHERE log = $1`, id).Scan(&n); err != nil {
		return 0, wrap(err)
	}
	if !n.Valid {
		return 0, nil
	}
	return n.Int64 + 1, nil
}

// AddDocs implements store.Store. Rows already present are skipped, so two
// nodes catching up the same entries at once both succeed.
func (s *Store) AddDocs(ctx context.Context, log string, docs []index.Doc) error {
	id, err := s.id(ctx, log)
	if err != nil {
		return err
	}
	if err := checkDocs(log, docs); err != nil {
		return err
	}
	if len(docs) == 0 {
		return nil
	}
	var b pgx.Batch
	queueDocs(&b, id, docs, " ON CONFLICT DO NOTHING")
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return wrap(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return wrap(err)
	}
	return wrap(tx.Commit(ctx))
}

// DropIndex implements store.Store.
func (s *Store) DropIndex(ctx context.Context) error {
	_, err := s.pool.Exec(ctx, `TRUNCATE search, search_targets, search_text`)
	return wrap(err)
}

// errNoMatch is returned by plan when the filter cannot match anything.
var errNoMatch = errors.New("no match")

// query is one search statement.
type query struct {
	sql  string
	args []any
}

// arg adds a parameter and returns its placeholder.
func (q *query) arg(v any) string {
	q.args = append(q.args, v)
	return "$" + strconv.Itoa(len(q.args))
}

// Search implements store.Store.
//
// The plan is chosen here by the shape of the statement, each shape driven
// by an index that yields the matches in idx order, so that the walk stops
// after Limit+1 matches and a deep page costs what the first does:
//
//   - an equality on actor, key, exact action or source: that column's
//     (log, column, idx) index, the other filters checked per row;
//   - else a target: search_targets' primary key (log, target, idx);
//   - else full text: the GIN index on the words, or for a common word
//     the primary key walked with the words checked per row (the planner
//     chooses by the word's frequency; both stop at the limit or are
//     bounded by the matches);
//   - else an action prefix: one walk of the action index per distinct
//     action under the prefix (found by a skip scan), merged;
//   - else the primary key.
//
// Received-time windows become idx bounds first (received grows with idx).
func (s *Store) Search(ctx context.Context, log string, f index.Filter, size int64) ([]int64, bool, error) {
	id, err := s.id(ctx, log)
	if err != nil {
		return nil, false, err
	}
	if f.Limit < 1 {
		return nil, false, fmt.Errorf("%w: limit must be at least 1, not %d", index.ErrBadFilter, f.Limit)
	}
	lo, hi, err := s.bounds(ctx, id, f, size)
	if errors.Is(err, errNoMatch) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	qs, err := s.plan(ctx, id, f, lo, hi)
	if errors.Is(err, errNoMatch) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	rows, err := s.search.Query(ctx, qs.sql, qs.args...)
	if err != nil {
		return nil, false, wrap(err)
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var x int64
		if err := rows.Scan(&x); err != nil {
			return nil, false, wrap(err)
		}
		out = append(out, x)
	}
	if err := rows.Err(); err != nil {
		return nil, false, wrap(err)
	}
	if len(out) > f.Limit {
		return out[:f.Limit], true, nil
	}
	return out, false, nil
}

// bounds turns size, the received-time window and the cursor into the idx
// range [lo, hi) to search.
func (s *Store) bounds(ctx context.Context, id int64, f index.Filter, size int64) (lo, hi int64, err error) {
	lo, hi = 0, size
	firstAt := func(t time.Time) (int64, bool, error) {
		var n int64
		err := s.search.QueryRow(ctx, `SELECT idx FROM search WHERE log = $1 AND received >= $2 ORDER BY received, idx LIMIT 1`, id, t).Scan(&n)
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, false, nil
		}
		return n, err == nil, wrap(err)
	}
	if !f.Since.IsZero() {
		n, ok, err := firstAt(f.Since)
		if err != nil {
			return 0, 0, err
		}
		if !ok {
			return 0, 0, errNoMatch
		}
		lo = max(lo, n)
	}
	if !f.Until.IsZero() {
		n, ok, err := firstAt(f.Until)
		if err != nil {
			return 0, 0, err
		}
		if ok {
			hi = min(hi, n)
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
		return 0, 0, errNoMatch
	}
	return lo, hi, nil
}

// plan builds the search statement for the idx range [lo, hi).
func (s *Store) plan(ctx context.Context, id int64, f index.Filter, lo, hi int64) (query, error) {
	for _, v := range []string{f.Action, f.ActionPrefix, f.Actor, f.Target, f.TargetType, f.Key, f.Outcome, f.Source} {
		if !storable(v) {
			return query{}, errNoMatch // what cannot be stored matches nothing
		}
	}
	var tsq string
	if f.Text != "" {
		if tsq = tsQuery(f.Text); tsq == "" {
			return query{}, fmt.Errorf("%w: q %q has no words to search for", index.ErrBadFilter, f.Text)
		}
	}
	dir := "DESC"
	if f.Oldest {
		dir = "ASC"
	}
	var q query
	pLog, pLo, pHi := q.arg(id), q.arg(lo), q.arg(hi)
	pLimit := q.arg(f.Limit + 1)

	// conds are the conditions on the search row s other than log and range.
	var conds []string
	eq := func(col, v string) {
		if v != "" {
			conds = append(conds, "s."+col+" = "+q.arg(v))
		}
	}
	eq("actor", f.Actor)
	eq("key_id", f.Key)
	eq("action", f.Action)
	eq("source", f.Source)
	eq("outcome", f.Outcome)
	driver := len(conds) > 0 && !(len(conds) == 1 && f.Outcome != "")
	if !f.EventFrom.IsZero() {
		conds = append(conds, "s.etime >= "+q.arg(f.EventFrom))
	}
	if !f.EventTo.IsZero() {
		conds = append(conds, "s.etime < "+q.arg(f.EventTo))
	}
	if f.ActionPrefix != "" {
		c := "s.action >= " + q.arg(f.ActionPrefix)
		if end, ok := prefixEnd(f.ActionPrefix); ok {
			c += " AND s.action < " + q.arg(end)
		} else {
			c += " AND starts_with(s.action, " + q.arg(f.ActionPrefix) + ")"
		}
		conds = append(conds, c)
	}
	target := ""
	if f.Target != "" {
		target = "t.target = " + q.arg(f.Target)
		if f.TargetType != "" {
			target += " AND t.ttype = " + q.arg(f.TargetType)
		}
	}
	text := ""
	if tsq != "" {
		text = "x.words @@ " + q.arg(tsq) + "::tsquery"
	}
	and := func(cs []string) string {
		if len(cs) == 0 {
			return ""
		}
		return " AND " + strings.Join(cs, " AND ")
	}
	existsTarget := func(idx string) string {
		return "EXISTS (SELECT 1 FROM search_targets t WHERE t.log = " + pLog + " AND t.idx = " + idx + " AND " + target + ")"
	}
	existsText := func(idx string) string {
		return "EXISTS (SELECT 1 FROM search_text x WHERE x.log = " + pLog + " AND x.idx = " + idx + " AND " + text + ")"
	}
	existsSearch := func(idx string) string {
		if len(conds) == 0 {
			return ""
		}
		return "EXISTS (SELECT 1 FROM search s WHERE s.log = " + pLog + " AND s.idx = " + idx + and(conds) + ")"
	}
	tail := " ORDER BY 1 " + dir + " LIMIT " + pLimit

	switch {
	case driver || (f.Target == "" && tsq == "" && f.ActionPrefix == ""):
		// An equality index drives (or, with no such filter, the primary
		// key does); target and text are checked per row.
		cs := conds
		if target != "" {
			cs = append(cs, existsTarget("s.idx"))
		}
		if text != "" {
			cs = append(cs, existsText("s.idx"))
		}
		q.sql = "SELECT s.idx FROM search s WHERE s.log = " + pLog + " AND s.idx >= " + pLo + " AND s.idx < " + pHi + and(cs) + tail

	case target != "":
		cs := []string{target}
		if c := existsSearch("t.idx"); c != "" {
			cs = append(cs, c)
		}
		if text != "" {
			cs = append(cs, existsText("t.idx"))
		}
		// DISTINCT: one entry may name the target with several types.
		q.sql = "SELECT DISTINCT t.idx FROM search_targets t WHERE t.log = " + pLog + " AND t.idx >= " + pLo + " AND t.idx < " + pHi + and(cs) + tail

	case text != "":
		cs := []string{text}
		if c := existsSearch("x.idx"); c != "" {
			cs = append(cs, c)
		}
		q.sql = "SELECT x.idx FROM search_text x WHERE x.log = " + pLog + " AND x.idx >= " + pLo + " AND x.idx < " + pHi + and(cs) + tail

	default: // an action prefix, and perhaps outcome or event time
		actions, err := s.actionsUnder(ctx, id, f.ActionPrefix)
		if err != nil {
			return query{}, err
		}
		if len(actions) == 0 {
			return query{}, errNoMatch
		}
		q.sql = "SELECT m.idx FROM unnest(" + q.arg(actions) + "::text[]) AS a(action) CROSS JOIN LATERAL (" +
			"SELECT s.idx FROM search s WHERE s.log = " + pLog + " AND s.action = a.action AND s.idx >= " + pLo + " AND s.idx < " + pHi + and(conds) +
			" ORDER BY s.idx " + dir + " LIMIT " + pLimit + ") m" + tail
	}
	return q, nil
}

// maxPrefixActions bounds the distinct actions an action prefix may match.
const maxPrefixActions = 200

// actionsUnder lists the distinct actions of log that start with prefix,
// one index seek each (a recursive skip scan, not a DISTINCT over every
// matching row).
func (s *Store) actionsUnder(ctx context.Context, id int64, prefix string) ([]string, error) {
	upper := "starts_with(action, $2)"
	args := []any{id, prefix}
	if end, ok := prefixEnd(prefix); ok {
		upper = "action < $3"
		args = append(args, end)
	}
	rows, err := s.search.Query(ctx, `WITH RECURSIVE a(action) AS (
		SELECT MIN(action) FROM search WHERE log = $1 AND action >= $2 AND `+upper+`
		UNION ALL
		SELECT (SELECT MIN(s.action) FROM search s WHERE s.log = $1 AND s.action > a.action AND `+strings.Replace(upper, "action", "s.action", 1)+`)
		FROM a WHERE a.action IS NOT NULL
	) SELECT action FROM a WHERE action IS NOT NULL LIMIT `+strconv.Itoa(maxPrefixActions+1), args...)
	if err != nil {
		return nil, wrap(err)
	}
	actions, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, wrap(err)
	}
	if len(actions) > maxPrefixActions {
		return nil, fmt.Errorf("%w: action prefix %q matches more than %d actions; narrow it", index.ErrBadFilter, prefix+"*", maxPrefixActions)
	}
	return actions, nil
}

// prefixEnd is the smallest valid UTF-8 string above every string with
// prefix p (under the "C" collation, which orders by code point); false if
// there is none (p is all U+10FFFF).
func prefixEnd(p string) (string, bool) {
	for len(p) > 0 {
		r, n := utf8.DecodeLastRuneInString(p)
		p = p[:len(p)-n]
		if r == utf8.MaxRune {
			continue
		}
		r++
		if r == 0xD800 { // skip the surrogates, which UTF-8 cannot hold
			r = 0xE000
		}
		return p + string(r), true
	}
	return "", false
}

var _ store.Store = (*Store)(nil)
