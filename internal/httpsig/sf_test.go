package httpsig

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// describe renders a parsed dictionary compactly, for comparisons.
func describe(d sfDict) string {
	var b strings.Builder
	bare := func(v sfBare) string {
		switch v.kind {
		case sfInteger:
			return fmt.Sprintf("i:%d", v.i)
		case sfDecimal:
			f, err := strconv.ParseFloat(v.s, 64)
			if err != nil {
				return "d:!" + v.s
			}
			return "d:" + strconv.FormatFloat(f, 'f', -1, 64)
		case sfString:
			return fmt.Sprintf("s:%q", v.s)
		case sfToken:
			return "t:" + v.s
		case sfBytes:
			return fmt.Sprintf("b:%x", v.b)
		case sfBool:
			return fmt.Sprintf("?:%v", v.bo)
		}
		return "?"
	}
	params := func(ps sfParams) string {
		var s string
		for _, p := range ps {
			s += ";" + p.key + "=" + bare(p.val)
		}
		return s
	}
	for i, m := range d {
		if i > 0 {
			b.WriteString(" | ")
		}
		b.WriteString(m.key + "=")
		if m.isList {
			b.WriteString("(")
			for j, it := range m.list {
				if j > 0 {
					b.WriteString(" ")
				}
				b.WriteString(bare(it.val) + params(it.params))
			}
			b.WriteString(")" + params(m.params))
		} else {
			b.WriteString(bare(m.item.val) + params(m.item.params))
		}
	}
	return b.String()
}

func TestSFDictionary(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"spaces only", "   ", ""},
		{"integers", "a=1, b=-22, c=999999999999999, d=-999999999999999, e=007", "a=i:1 | b=i:-22 | c=i:999999999999999 | d=i:-999999999999999 | e=i:7"},
		{"decimals", "a=1.5, b=-0.125, c=123456789012.123", "a=d:1.5 | b=d:-0.125 | c=d:123456789012.123"},
		{"strings", `a="", b="x y", c="q\"b\\s"`, `a=s:"" | b=s:"x y" | c=s:"q\"b\\s"`},
		{"tokens", "a=tok, b=*x, c=Foo/Bar:1.0!#$%&'*+-.^_`|~", "a=t:tok | b=t:*x | c=t:Foo/Bar:1.0!#$%&'*+-.^_`|~"},
		{"bytes", "a=:aGk=:, b=::, c=:aGk:, d=:aGVsbG8=:", "a=b:6869 | b=b: | c=b:6869 | d=b:68656c6c6f"},
		{"booleans", "a=?0, b=?1, c, d;x", "a=?:false | b=?:true | c=?:true | d=?:true;x=?:true"},
		{"params", "a=1;x;y=2;z=\"s\";w=tok, b", "a=i:1;x=?:true;y=i:2;z=s:\"s\";w=t:tok | b=?:true"},
		{"param SP after semicolon", "a=1; x=2", "a=i:1;x=i:2"},
		{"inner lists", `a=(1 "2" three);p=1, b=(), c=( 1  2 ), d=(:AA==:;q)`, `a=(i:1 s:"2" t:three);p=i:1 | b=() | c=(i:1 i:2) | d=(b:00;q=?:true)`},
		{"OWS", "a=1 ,\tb=2,c=3", "a=i:1 | b=i:2 | c=i:3"},
		{"key chars", "*a_b-c.d*9=1", "*a_b-c.d*9=i:1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := parseSFDictionary("Test", tc.in, defaultLimits)
			if err != nil {
				t.Fatal(err)
			}
			if got := describe(d); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestSFDictionaryRaw(t *testing.T) {
	d, err := parseSFDictionary("Test", `a=( 1  "x" );p=1; q="s", b=2;x, c;y=?0`, defaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{`( 1  "x" );p=1; q="s"`, `2;x`, `;y=?0`} {
		if d[i].raw != want {
			t.Errorf("member %d raw = %q, want %q", i, d[i].raw, want)
		}
	}
}

func TestSFDictionaryErrors(t *testing.T) {
	tests := []struct{ name, in string }{
		{"leading comma", ",a=1"},
		{"trailing comma", "a=1,"},
		{"trailing comma OWS", "a=1, "},
		{"double comma", "a=1,,b=2"},
		{"missing comma", "a=1 b=2"},
		{"uppercase key", "A=1"},
		{"digit key", "1a=1"},
		{"leading tab", "\ta=1"},
		{"empty value", "a="},
		{"empty value before comma", "a=,b=1"},
		{"duplicate key", "a=1, a=2"},
		{"duplicate param", "a=1;x;x"},
		{"bare minus", "a=-"},
		{"minus letter", "a=-x"},
		{"integer 16 digits", "a=1234567890123456"},
		{"decimal trailing dot", "a=1."},
		{"decimal 4 fraction digits", "a=1.1234"},
		{"decimal 13 integer digits", "a=1234567890123.1"},
		{"decimal two dots", "a=1.2.3"},
		{"unterminated string", `a="abc`},
		{"string bad escape", `a="\a"`},
		{"string escape at end", `a="\`},
		{"string non-ascii", "a=\"caf\xc3\xa9\""},
		{"string tab", "a=\"a\tb\""},
		{"bad boolean", "a=?2"},
		{"boolean at end", "a=?"},
		{"bytes unterminated", "a=:AAAA"},
		{"bytes bad char", "a=:AA-A:"},
		{"bytes space", "a=:AA A:"},
		{"bytes three pad", "a=:A===:"},
		{"bytes bad pad length", "a=:AAA==:"},
		{"bytes impossible length", "a=:AAAAA:"},
		{"unterminated inner list", "a=(1 2"},
		{"inner list missing SP", `a=(1"x")`},
		{"nested inner list", "a=((1))"},
		{"inner list comma", "a=(1,2)"},
		{"param without key", "a=1;"},
		{"param uppercase", "a=1;X=1"},
		{"param inner list", "a=1;x=(1)"},
		{"date item (RFC 9651)", "a=@1659578233"},
		{"display string (RFC 9651)", `a=%"x"`},
		{"trailing SP garbage", "a=1 x"},
		{"NUL", "a=1\x00"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := parseSFDictionary("Test", tc.in, defaultLimits)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %s, %v; want ErrMalformed", describe(d), err)
			}
		})
	}
}

func TestSFLimits(t *testing.T) {
	lim := sfLimits{members: 2, items: 3, params: 1}
	ok := []string{"a, b", "a=(1 2 3)", "a;x=1, b=(1);y"}
	bad := []string{"a, b, c", "a=(1 2 3 4)", "a;x;y", "a=(1;x;y)", "a=();x;y"}
	for _, in := range ok {
		if _, err := parseSFDictionary("Test", in, lim); err != nil {
			t.Errorf("%q: %v", in, err)
		}
	}
	for _, in := range bad {
		if _, err := parseSFDictionary("Test", in, lim); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: got %v, want ErrMalformed", in, err)
		}
	}
}

func TestSFQuote(t *testing.T) {
	for in, want := range map[string]string{"": `""`, "abc": `"abc"`, `a"b\c`: `"a\"b\\c"`} {
		got, ok := sfQuote(in)
		if !ok || got != want {
			t.Errorf("sfQuote(%q) = %q, %v", in, got, ok)
		}
		d, err := parseSFDictionary("Test", "k="+got, defaultLimits)
		if err != nil || d[0].item.val.s != in {
			t.Errorf("round trip of %q: %v", in, err)
		}
	}
	for _, in := range []string{"a\nb", "\x7f", "é"} {
		if _, ok := sfQuote(in); ok {
			t.Errorf("sfQuote(%q) accepted", in)
		}
	}
}
