package index

import (
	"errors"
	"net/url"
	"testing"
	"time"
)

var now = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func TestParseFilter(t *testing.T) {
	f, err := ParseFilter(url.Values{"since": {"24h"}, "action": {"user.*"}, "q": {"Emergency, Change!"}, "limit": {"7"}, "order": {"oldest"}}, now)
	if err != nil {
		t.Fatal(err)
	}
	if !f.Since.Equal(now.Add(-24*time.Hour)) || f.ActionPrefix != "user." || f.Text != "emergency change" || f.Limit != 7 || !f.Oldest || f.After != -1 {
		t.Fatalf("%+v", f)
	}
	if f, _ := ParseFilter(url.Values{"since": {"7d"}}, now); !f.Since.Equal(now.Add(-7 * 24 * time.Hour)) {
		t.Fatal("7d")
	}
}

func TestCursor(t *testing.T) {
	q := url.Values{"actor": {"alice"}, "since": {"24h"}}
	f, _ := ParseFilter(q, now)
	c := f.Cursor(1234)
	q.Set("cursor", c)
	q.Set("limit", "5") // the page size may change between pages
	g, err := ParseFilter(q, now.Add(time.Minute))
	if err != nil || g.After != 1234 {
		t.Fatalf("%v %d", err, g.After)
	}
	other := url.Values{"actor": {"bob"}, "since": {"24h"}, "cursor": {c}}
	if _, err := ParseFilter(other, now); !errors.Is(err, ErrBadFilter) {
		t.Fatal("a cursor of another query was accepted")
	}
}

func TestMatch(t *testing.T) {
	d := Doc{Index: 3, Received: now, EventTime: now.Add(-time.Hour), Action: "user.delete", Actor: "alice", Targets: [][2]string{{"4411", "user"}}, Key: "k", Outcome: "success", Source: "iam", Text: "ticket SEC-12 emergency"}
	for q, want := range map[string]bool{
		"action=user.delete":            true,
		"action=user.%2A":               true,
		"action=role.%2A":               false,
		"target=4411&target_type=user":  true,
		"target=4411&target_type=role":  false,
		"q=sec+emergency":               true,
		"q=sec+routine":                 false,
		"since=2026-11-22T12:00:00Z":    true,
		"until=2026-11-22T12:00:00Z":    false,
		"event_to=2026-11-22T11:30:00Z": true,
		"outcome=failure":               false,
	} {
		v, _ := url.ParseQuery(q)
		f, err := ParseFilter(v, now)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		if got := f.Match(d); got != want {
			t.Errorf("%s: %v", q, got)
		}
	}
}

func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{"actor=alice&since=24h", "action=user.*&limit=1000&order=oldest", "q=a", "cursor=AQAAAAAAAAAAAAAAAQ", "since=2026-01-01T00:00:00Z&until=1h", "target_type=x", "event_from=99999999h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		flt, err := ParseFilter(v, now)
		if err != nil {
			if !errors.Is(err, ErrBadFilter) {
				t.Fatalf("error without ErrBadFilter: %v", err)
			}
			return
		}
		if flt.Limit < 1 || flt.Limit > MaxLimit {
			t.Fatalf("limit %d accepted", flt.Limit)
		}
		// A cursor made for this query is accepted by it.
		v.Set("cursor", flt.Cursor(42))
		g, err := ParseFilter(v, now)
		if err != nil || g.After != 42 {
			t.Fatalf("own cursor refused: %v", err)
		}
	})
}

func FuzzCursor(f *testing.F) {
	f.Add("AQAAAAAAAAAAAAAAAQ")
	f.Add("")
	f.Add("!!")
	f.Fuzz(func(t *testing.T, c string) {
		flt, _ := ParseFilter(url.Values{}, now)
		after, err := flt.decodeCursor(c)
		if err == nil && after < 0 {
			t.Fatal("negative cursor accepted")
		}
	})
}
