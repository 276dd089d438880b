package server

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParseTilePath(t *testing.T) {
	cases := []struct {
		in      string
		ok      bool
		level   int
		entries bool
		n       int64
		w       int
	}{
		{"0/000", true, 0, false, 0, 0},
		{"0/001.p/5", true, 0, false, 1, 5},
		{"1/x001/234", true, 1, false, 1234, 0},
		{"2/x123/x456/789.p/255", true, 2, false, 123456789, 255},
		{"entries/000", true, 0, true, 0, 0},
		{"entries/x001/000.p/1", true, 0, true, 1000, 1},
		{"0/1", false, 0, false, 0, 0},
		{"0/0001", false, 0, false, 0, 0},
		{"0/x001", false, 0, false, 0, 0},
		{"0/001/234", false, 0, false, 0, 0},
		{"0/000.p/0", false, 0, false, 0, 0},
		{"0/000.p/256", false, 0, false, 0, 0},
		{"0/000.p/07", false, 0, false, 0, 0},
		{"63/000", true, 63, false, 0, 0},
		{"64/000", false, 0, false, 0, 0},
		{"01/000", false, 0, false, 0, 0},
		{"-1/000", false, 0, false, 0, 0},
		{"../000", false, 0, false, 0, 0},
		{"entries", false, 0, false, 0, 0},
		{"0/x999/x999/x999/x999/x999/x999/999", false, 0, false, 0, 0},
		{"", false, 0, false, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			level, entries, n, w, ok := parseTilePath(c.in)
			if ok != c.ok {
				t.Fatalf("ok = %v, want %v", ok, c.ok)
			}
			if ok && (level != c.level || entries != c.entries || n != c.n || w != c.w) {
				t.Fatalf("got (%d, %v, %d, %d), want (%d, %v, %d, %d)", level, entries, n, w, c.level, c.entries, c.n, c.w)
			}
		})
	}
}

// tilePath formats a tile path the C2SP way, for the round-trip fuzz check.
func tilePath(level int, entries bool, n int64, w int) string {
	var b strings.Builder
	if entries {
		b.WriteString("entries")
	} else {
		fmt.Fprintf(&b, "%d", level)
	}
	var groups []string
	for {
		groups = append([]string{fmt.Sprintf("%03d", n%1000)}, groups...)
		n /= 1000
		if n == 0 {
			break
		}
	}
	for i, g := range groups {
		b.WriteByte('/')
		if i < len(groups)-1 {
			b.WriteByte('x')
		}
		b.WriteString(g)
	}
	if w > 0 {
		fmt.Fprintf(&b, ".p/%d", w)
	}
	return b.String()
}

func FuzzParseTilePath(f *testing.F) {
	for _, s := range []string{"0/000", "1/x001/234.p/7", "entries/x123/456", "0/000.p/256", "x/y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		level, entries, n, w, ok := parseTilePath(p)
		if !ok {
			return
		}
		if n < 0 || w < 0 || w > 255 || level < 0 || level > 63 {
			t.Fatalf("out of range: %d %d %d", level, n, w)
		}
		if got := tilePath(level, entries, n, w); got != p {
			t.Fatalf("parsed %q but it formats as %q", p, got)
		}
	})
}

func TestParseAppend(t *testing.T) {
	sig := strings.Repeat("A", 86) + "=="
	ev := `{"action":"a","actor":{"id":"b"}}`
	one := func(fields string) string { return `{"events":[{` + fields + `}]}` }
	cases := []struct {
		name, body string
		ok         bool
		want       string
	}{
		{"good", one(`"event":` + ev + `,"key_id":"k","sig":"` + sig + `"`), true, ""},
		{"empty", ``, false, "empty body"},
		{"not object", `[]`, false, "expected"},
		{"unknown top field", `{"events":[],"x":1}`, false, "unknown field"},
		{"duplicate events", `{"events":[],"events":[]}`, false, "duplicate"},
		{"no events", `{"events":[]}`, false, "no events"},
		{"element not object", `{"events":[1]}`, false, "must be an object"},
		{"unknown event field", one(`"event":` + ev + `,"key_id":"k","sig":"` + sig + `","x":1`), false, "unknown field"},
		{"duplicate sig", one(`"event":` + ev + `,"key_id":"k","sig":"` + sig + `","sig":"` + sig + `"`), false, "duplicate field"},
		{"missing sig", one(`"event":` + ev + `,"key_id":"k"`), false, "required"},
		{"missing event", one(`"key_id":"k","sig":"` + sig + `"`), false, "required"},
		{"short sig", one(`"event":` + ev + `,"key_id":"k","sig":"AAAA"`), false, "64 bytes"},
		{"invalid event", one(`"event":{"action":"a"},"key_id":"k","sig":"` + sig + `"`), false, "actor.id"},
		{"trailing", one(`"event":`+ev+`,"key_id":"k","sig":"`+sig+`"`) + `{}`, false, "trailing"},
		{"truncated", `{"events":[{"event":`, false, "EOF"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			evs, err := parseAppend([]byte(c.body), false)
			if c.ok {
				if err != nil || len(evs) != 1 {
					t.Fatalf("got %v, %v", evs, err)
				}
				return
			}
			var he *httpError
			if !errors.As(err, &he) || he.status != 400 {
				t.Fatalf("want a 400, got %v", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q lacks %q", err, c.want)
			}
		})
	}
}

func FuzzParseAppend(f *testing.F) {
	sig := strings.Repeat("A", 86) + "=="
	f.Add([]byte(`{"events":[{"event":{"action":"a","actor":{"id":"b"}},"key_id":"k","sig":"` + sig + `"}]}`))
	f.Add([]byte(`{"events":[{"event":{"action":"a","actor":{"id":"b"},"metadata":{"x":[1,{"y":null}]}},"key_id":"k","sig":"` + sig + `"}],"events":[]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		evs, err := parseAppend(body, false)
		if err != nil {
			var he *httpError
			if !errors.As(err, &he) || he.status < 400 || he.status >= 500 {
				t.Fatalf("parse error is not a 4xx: %v", err)
			}
			return
		}
		if len(evs) == 0 {
			t.Fatal("success with no events")
		}
		for _, e := range evs {
			if e.Event == nil || len(e.Sig) != 64 {
				t.Fatal("incomplete event accepted")
			}
		}
	})
}
