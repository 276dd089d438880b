package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/entry"
)

func (m *Main) tail(ctx context.Context, args []string) error {
	fs := m.newFlagSet("tail", "tail --log NAME [--from INDEX] [--action A] [--actor X] [--target T] [--key K] [--outcome O] [--source S] [--q TEXT] [--since D] [--json]")
	cf := m.clientFlagsOn(fs)
	logName := fs.String("log", "", "log to follow (required)")
	from := fs.String("from", "", "start at entry INDEX (default: only entries appended from now on); to resume, give the last index printed + 1")
	filters := map[string]*string{}
	for _, f := range []struct{ name, help string }{
		{"action", "only this action (user.* for a prefix)"},
		{"actor", "only this actor id"},
		{"target", "only entries with this target id"},
		{"target-type", "with --target: only targets of this type"},
		{"key", "only entries appended with this key id"},
		{"outcome", "only this outcome: success, failure or unknown"},
		{"source", "only this source"},
		{"q", "only entries whose metadata holds all these words"},
		{"since", "only entries received since D: RFC 3339, or a duration back from now (24h, 7d)"},
	} {
		filters[f.name] = fs.String(f.name, "", f.help)
	}
	asJSON := fs.Bool("json", false, "print each entry as one line of JSON (log, index, leaf_hash, data)")
	if err := parseFlags(fs, args); err != nil {
		return helpOK(err)
	}
	if *logName == "" {
		return usageError("vellum tail --log NAME [--from INDEX]", "--log is required")
	}
	if fs.NArg() > 0 {
		return usageError("run 'vellum tail -h' for its flags", "unexpected argument %q", fs.Arg(0))
	}
	start := int64(-1)
	if *from != "" {
		n, err := strconv.ParseInt(*from, 10, 64)
		if err != nil || n < 0 {
			return usageError("an index is a non-negative integer", "bad --from %q", *from)
		}
		start = n
	}
	q := url.Values{}
	for name, v := range filters {
		if *v == "" {
			continue
		}
		q.Set(strings.ReplaceAll(name, "-", "_"), *v)
	}
	if s := q.Get("since"); s != "" {
		// A duration is anchored now, so that reconnections keep the
		// same bound.
		t, err := sinceTime(s, time.Now())
		if err != nil {
			return usageError("give RFC 3339 (2026-01-02T15:04:05Z) or a duration back from now (24h, 7d)", "bad --since %q", s)
		}
		q.Set("since", t.Format(time.RFC3339Nano))
	}
	c, err := m.newClient(cf)
	if err != nil {
		return err
	}
	last := int64(-1)
	err = c.Tail(ctx, *logName, start, q, func(e api.Entry) error {
		last = e.Index
		if *asJSON {
			b, err := compactJSON(e)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(m.Stdout, "%s\n", b)
			return err
		}
		_, err := fmt.Fprintln(m.Stdout, summary(e))
		return err
	})
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		// Interrupted: the normal end of a tail.
		if last >= 0 {
			fmt.Fprintf(m.Stderr, "vellum: tail stopped after entry %d; resume with --from %d\n", last, last+1)
		}
		return nil
	}
	if err != nil && last >= 0 {
		return fmt.Errorf("%w (last entry printed: %d; resume with --from %d)", err, last, last+1)
	}
	return err
}

// sinceTime reads RFC 3339, or a duration back from now ("24h", "7d").
func sinceTime(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t.UTC(), nil
	}
	if d, ok := strings.CutSuffix(v, "d"); ok {
		if n, err := strconv.Atoi(d); err == nil && n > 0 && n <= 36500 {
			return now.Add(-time.Duration(n) * 24 * time.Hour).UTC(), nil
		}
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return now.Add(-d).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("bad time %q", v)
}

// summary is one readable line for an entry: index, received, action,
// actor, targets, outcome, key.
func summary(e api.Entry) string {
	pe, err := entry.Parse(e.Data)
	if err != nil {
		return fmt.Sprintf("%d  (unreadable entry: %v)", e.Index, err)
	}
	var ev api.Event
	_ = json.Unmarshal(pe.Event, &ev)
	var targets []string
	for _, t := range ev.Targets {
		if t.Type != "" {
			targets = append(targets, t.Type+":"+t.ID)
		} else {
			targets = append(targets, t.ID)
		}
	}
	tg := "-"
	if len(targets) > 0 {
		tg = strings.Join(targets, ",")
	}
	outcome := ev.Outcome
	if outcome == "" {
		outcome = "-"
	}
	return fmt.Sprintf("%d  %s  %s  actor=%s  targets=%s  outcome=%s  key=%s",
		e.Index, pe.Received, printableField(ev.Action), printableField(ev.Actor.ID), printableField(tg), printableField(outcome), pe.KeyID)
}

// printableField keeps a value on one line and free of terminal control
// characters.
func printableField(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 {
			return '?'
		}
		return r
	}, s)
}
