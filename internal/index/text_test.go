package index

import (
	"encoding/json"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/vellum-audit/vellum/internal/jcs"
)

// refText is what metadataText replaced: decode into an `any`, then walk it
// with object members in key order.
func refText(data []byte) string {
	var v any
	if json.Unmarshal(data, &v) != nil {
		return ""
	}
	var sb strings.Builder
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case string:
			if sb.Len() > 0 {
				sb.WriteByte(' ')
			}
			sb.WriteString(x)
		case float64:
			if sb.Len() > 0 {
				sb.WriteByte(' ')
			}
			sb.WriteString(strconv.FormatFloat(x, 'f', -1, 64))
		case []any:
			for _, e := range x {
				walk(e)
			}
		case map[string]any:
			keys := make([]string, 0, len(x))
			for k := range x {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				walk(x[k])
			}
		}
	}
	walk(v)
	return sb.String()
}

func TestMetadataText(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{}`, ``},
		{`{"a":"x y","b":2,"c":true,"d":null,"e":[1,"two",{"f":"three"}]}`, `x y 2 1 two three`},
		{`{"note":"Deleted user 4411","request_id":"req_00ff"}`, `Deleted user 4411 req_00ff`},
		{`{"big":1e21,"m":-0.0,"n":1.50,"small":1E-7}`, `1000000000000000000000 -0 1.5 0.0000001`},
		{`{"esc":"a\"b\\c\u00e9\n","k\"ey":"v"}`, "a\"b\\cé\n v"},
		{`{"keys are not text":{"nor":{"these":"only this"}}}`, `only this`},
		{` [ "a" , 1 , [ ] , { } ] `, `a 1`},
		{`"top"`, `top`},
		{`12`, `12`},
		{`{"huge":1e400}`, ``}, // out of float64's range, as json.Unmarshal
		{`{"a":"x"`, ``},       // invalid
		{`{"a":x}`, ``},
		{"{\"bad\":\"\xff\"}", "\ufffd"}, // invalid UTF-8 is replaced, as json.Unmarshal
		{``, ``},
	} {
		if got := metadataText([]byte(c.in)); got != c.want {
			t.Errorf("metadataText(%s) = %q, want %q", c.in, got, c.want)
		}
		if got := refText([]byte(c.in)); got != c.want {
			t.Errorf("refText(%s) = %q, want %q (the test's expectation is wrong)", c.in, got, c.want)
		}
	}
}

// FuzzMetadataText checks that metadataText gives the words of the old
// decode-and-walk on any input: exactly, for canonical JSON whose keys
// are in byte order (all that reaches it from a stored event); the same
// words in any order for other valid JSON without duplicate keys.
func FuzzMetadataText(f *testing.F) {
	for _, s := range []string{
		`{"a":"x y","b":2,"c":true,"d":null,"e":[1,"two",{"f":"three"}]}`,
		`{"esc":"a\"b\\c\u00e9\n","k\"ey":"v"}`,
		`{"n":1.50,"m":-0.0,"big":1e21,"small":1E-7,"huge":1e400}`,
		`{"z":"last","a":"first"}`,
		"{\"bad\":\"\xff\"}",
		`[[[[{"deep":"yes"}]]]]`,
		`{"a":"x"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		metadataText(data) // must not panic on anything
		canon, err := jcs.Canonicalize(data)
		if err != nil {
			return // refused before it could be stored
		}
		got, want := metadataText(canon), refText(canon)
		if got == want {
			return
		}
		gw, ww := Words(got), Words(want)
		slices.Sort(gw)
		slices.Sort(ww)
		if !slices.Equal(gw, ww) {
			t.Fatalf("metadataText(%q) = %q, the decode-and-walk gives %q", canon, got, want)
		}
	})
}

func BenchmarkMetadataText(b *testing.B) {
	data := []byte(`{"changes":[{"field":"role","new":"admin-12","old":"member-7"},{"field":"quota","new":"vault-931","old":"ledger-20"},{"field":"region","new":"tango-4","old":"xray-88"}],"reason":"ticket 48211: rotate billing secret","request_id":"req_8f3a9c0d11e2b7a4","user_agent":"Mozilla/5.0 (X11; Linux x86_64) vellum-bench/1"}`)
	b.Run("scan", func(b *testing.B) {
		for b.Loop() {
			metadataText(data)
		}
	})
	b.Run("decode-and-walk", func(b *testing.B) {
		for b.Loop() {
			refText(data)
		}
	})
}
