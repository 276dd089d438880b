// Package index is vellum's search projection: a query index over the
// entries of every log, built from the Docs the sequencer makes for each
// round (written by the store in the commit's transaction, or after it by
// a background indexer, as the SQLite store does), caught up from the log
// on start and rebuildable from it at any time. It is never the source of
// truth; the log is, and search results are read from the log.
//
// This file holds the filter language shared by search and the live tail.
package index

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/entry"
)

// ErrBadFilter is wrapped by every filter and cursor error (HTTP 400).
var ErrBadFilter = errors.New("bad filter")

// Limits.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
	maxValueLen  = 256
)

// Filter selects entries of one log. Zero fields do not filter.
type Filter struct {
	Since, Until       time.Time // received time, [Since, Until)
	EventFrom, EventTo time.Time // event time, [EventFrom, EventTo)
	Action             string    // exact action
	ActionPrefix       string    // "user." for "user.*"
	Actor              string
	Target, TargetType string
	Key                string
	Outcome            string
	Source             string
	Text               string // full text over metadata values (all words must match)
	Oldest             bool   // oldest first (default newest first)
	Limit              int
	After              int64 // from a cursor: continue after this index (exclusive); -1 for none

	fp uint32 // fingerprint of the parameters (not cursor or limit), binds cursors to queries
}

// Params are the query parameter names a filter takes (besides cursor,
// limit, order and proof).
var Params = []string{"since", "until", "event_from", "event_to", "action", "actor", "target", "target_type", "key", "outcome", "source", "q"}

// ParseFilter reads a filter from query parameters. extra names further
// parameters the caller handles itself; any other name is refused.
func ParseFilter(q url.Values, now time.Time, extra ...string) (Filter, error) {
	f := Filter{Limit: DefaultLimit, After: -1}
	known := map[string]bool{"cursor": true, "limit": true, "order": true}
	for _, p := range Params {
		known[p] = true
	}
	for _, p := range extra {
		known[p] = true
	}
	var names []string
	for k, v := range q {
		if !known[k] {
			return f, fmt.Errorf("%w: unknown parameter %q (filters: %s; also cursor, limit, order)", ErrBadFilter, k, strings.Join(Params, ", "))
		}
		if len(v) != 1 {
			return f, fmt.Errorf("%w: parameter %q given %d times", ErrBadFilter, k, len(v))
		}
		if len(v[0]) > maxValueLen || !utf8.ValidString(v[0]) {
			return f, fmt.Errorf("%w: parameter %q: at most %d bytes of UTF-8", ErrBadFilter, k, maxValueLen)
		}
		names = append(names, k)
	}
	sort.Strings(names)
	h := fnv.New32a()
	for _, k := range names {
		if k != "cursor" && k != "limit" {
			h.Write([]byte(k + "=" + q.Get(k) + "\x00"))
		}
	}
	f.fp = h.Sum32()
	var err error
	get := q.Get
	if f.Since, err = parseTime("since", get("since"), now); err != nil {
		return f, err
	}
	if f.Until, err = parseTime("until", get("until"), now); err != nil {
		return f, err
	}
	if f.EventFrom, err = parseTime("event_from", get("event_from"), now); err != nil {
		return f, err
	}
	if f.EventTo, err = parseTime("event_to", get("event_to"), now); err != nil {
		return f, err
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return f, fmt.Errorf("%w: since must be before until", ErrBadFilter)
	}
	if !f.EventFrom.IsZero() && !f.EventTo.IsZero() && !f.EventFrom.Before(f.EventTo) {
		return f, fmt.Errorf("%w: event_from must be before event_to", ErrBadFilter)
	}
	if a := get("action"); a != "" {
		switch {
		case strings.HasSuffix(a, ".*"):
			p := strings.TrimSuffix(a, "*")
			if len(p) < 2 || strings.ContainsAny(p, "*?") {
				return f, fmt.Errorf("%w: action prefix %q: give at least one segment before .* (user.*)", ErrBadFilter, a)
			}
			f.ActionPrefix = p
		case strings.ContainsAny(a, "*?"):
			return f, fmt.Errorf("%w: action %q: only a trailing .* is allowed (user.* matches user.create)", ErrBadFilter, a)
		default:
			f.Action = a
		}
	}
	f.Actor, f.Target, f.TargetType, f.Key, f.Source = get("actor"), get("target"), get("target_type"), get("key"), get("source")
	if f.TargetType != "" && f.Target == "" {
		return f, fmt.Errorf("%w: target_type needs target", ErrBadFilter)
	}
	switch o := get("outcome"); o {
	case "", "success", "failure", "unknown":
		f.Outcome = o
	default:
		return f, fmt.Errorf("%w: outcome must be success, failure or unknown, not %q", ErrBadFilter, o)
	}
	if t := strings.TrimSpace(get("q")); t != "" {
		words := Words(t)
		if len(words) == 0 {
			return f, fmt.Errorf("%w: q %q has no words to search for", ErrBadFilter, t)
		}
		for _, w := range words {
			if utf8.RuneCountInString(w) < 2 {
				return f, fmt.Errorf("%w: q: every word needs at least 2 characters (%q would match nearly everything)", ErrBadFilter, w)
			}
		}
		if len(words) > 8 {
			return f, fmt.Errorf("%w: q: at most 8 words", ErrBadFilter)
		}
		f.Text = strings.Join(words, " ")
	}
	switch o := get("order"); o {
	case "", "newest":
	case "oldest":
		f.Oldest = true
	default:
		return f, fmt.Errorf("%w: order must be newest or oldest, not %q", ErrBadFilter, o)
	}
	if l := get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > MaxLimit {
			return f, fmt.Errorf("%w: limit must be 1 to %d, not %q", ErrBadFilter, MaxLimit, l)
		}
		f.Limit = n
	}
	if c := get("cursor"); c != "" {
		after, err := f.decodeCursor(c)
		if err != nil {
			return f, err
		}
		f.After = after
	}
	return f, nil
}

// parseTime takes RFC 3339, or a duration back from now ("24h", "7d").
func parseTime(name, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t.UTC(), nil
	}
	if d, ok := strings.CutSuffix(v, "d"); ok {
		if n, err := strconv.Atoi(d); err == nil && n > 0 && n <= 36500 {
			return now.Add(-time.Duration(n) * 24 * time.Hour).UTC(), nil
		}
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 && d <= 100*365*24*time.Hour {
		return now.Add(-d).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("%w: %s %q: want RFC 3339 (2026-01-02T15:04:05Z) or a duration back from now (24h, 7d)", ErrBadFilter, name, v)
}

// Words splits text into lower-case search words (letters and digits).
func Words(s string) []string {
	return strings.FieldsFunc(strings.ToLower(s), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
}

// fingerprint identifies the query a cursor belongs to: its parameters as
// given (so "since=24h" stays the same query from page to page).
func (f Filter) fingerprint() uint32 { return f.fp }

// Cursor returns the cursor for the page after the entry at index last.
func (f Filter) Cursor(last int64) string {
	b := make([]byte, 0, 13)
	b = append(b, 1) // version
	b = binary.BigEndian.AppendUint32(b, f.fingerprint())
	b = binary.BigEndian.AppendUint64(b, uint64(last))
	return base64.RawURLEncoding.EncodeToString(b)
}

func (f Filter) decodeCursor(c string) (int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) != 13 || b[0] != 1 {
		return 0, fmt.Errorf("%w: malformed cursor (use the next_cursor of the previous page, unchanged)", ErrBadFilter)
	}
	if binary.BigEndian.Uint32(b[1:5]) != f.fingerprint() {
		return 0, fmt.Errorf("%w: the cursor belongs to a query with other filters or order", ErrBadFilter)
	}
	n := binary.BigEndian.Uint64(b[5:])
	if n > 1<<62 {
		return 0, fmt.Errorf("%w: malformed cursor", ErrBadFilter)
	}
	return int64(n), nil
}

// Doc is what the index and the tail know of one entry.
type Doc struct {
	Index     int64
	Received  time.Time
	EventTime time.Time // zero if the event has none
	Action    string
	Actor     string
	Targets   [][2]string // id, type
	Key       string
	Outcome   string
	Source    string
	Text      string // the metadata's string and number values, space-separated
}

// DocOf extracts the indexed fields of a parsed entry (catch-up and
// rebuild; new entries get theirs from DocFromEvent).
func DocOf(e *entry.Entry) (Doc, error) {
	var ev api.Event
	if err := json.Unmarshal(e.Event, &ev); err != nil {
		return Doc{}, err
	}
	return DocFromEvent(e.Index, e.ReceivedTime(), e.KeyID, &ev), nil
}

// Match reports whether d passes f (cursor and limit aside); the live tail
// uses it, search uses the index.
func (f Filter) Match(d Doc) bool {
	if !f.Since.IsZero() && d.Received.Before(f.Since) || !f.Until.IsZero() && !d.Received.Before(f.Until) {
		return false
	}
	if (!f.EventFrom.IsZero() || !f.EventTo.IsZero()) && d.EventTime.IsZero() {
		return false
	}
	if !f.EventFrom.IsZero() && d.EventTime.Before(f.EventFrom) || !f.EventTo.IsZero() && !d.EventTime.Before(f.EventTo) {
		return false
	}
	if f.Action != "" && d.Action != f.Action || f.ActionPrefix != "" && !strings.HasPrefix(d.Action, f.ActionPrefix) {
		return false
	}
	if f.Actor != "" && d.Actor != f.Actor || f.Key != "" && d.Key != f.Key || f.Outcome != "" && d.Outcome != f.Outcome || f.Source != "" && d.Source != f.Source {
		return false
	}
	if f.Target != "" {
		ok := false
		for _, t := range d.Targets {
			ok = ok || t[0] == f.Target && (f.TargetType == "" || t[1] == f.TargetType)
		}
		if !ok {
			return false
		}
	}
	if f.Text != "" {
		have := map[string]bool{}
		for _, w := range Words(d.Text) {
			have[w] = true
		}
		for _, w := range strings.Fields(f.Text) {
			if !have[w] {
				return false
			}
		}
	}
	return true
}

// DocFromEvent builds the index row of a new entry from its decoded event.
func DocFromEvent(idx int64, received time.Time, keyID string, ev *api.Event) Doc {
	d := Doc{Index: idx, Received: received, Action: ev.Action, Actor: ev.Actor.ID, Key: keyID, Outcome: ev.Outcome, Source: ev.Source}
	if ev.Time != "" {
		d.EventTime, _ = time.Parse(time.RFC3339Nano, ev.Time)
	}
	for _, t := range ev.Targets {
		d.Targets = append(d.Targets, [2]string{t.ID, t.Type})
	}
	if len(ev.Metadata) > 0 {
		d.Text = metadataText(ev.Metadata)
	}
	return d
}
