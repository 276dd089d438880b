package jcs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// appendixB is the table of RFC 8785 Appendix B: IEEE 754 binary64 bit
// patterns and their canonical JSON form. (NaN and Infinity, which have no
// JSON form, are covered by the refusal tests.)
var appendixB = []struct {
	name string
	bits uint64
	want string
}{
	{"zero", 0x0000000000000000, "0"},
	{"minus zero", 0x8000000000000000, "0"},
	{"min pos number", 0x0000000000000001, "5e-324"},
	{"min neg number", 0x8000000000000001, "-5e-324"},
	{"max pos number", 0x7fefffffffffffff, "1.7976931348623157e+308"},
	{"max neg number", 0xffefffffffffffff, "-1.7976931348623157e+308"},
	{"max pos int", 0x4340000000000000, "9007199254740992"},
	{"max neg int", 0xc340000000000000, "-9007199254740992"},
	{"about 2^68", 0x4430000000000000, "295147905179352830000"},
	{"below 1e23", 0x44b52d02c7e14af5, "9.999999999999997e+22"},
	{"1e23", 0x44b52d02c7e14af6, "1e+23"},
	{"above 1e23", 0x44b52d02c7e14af7, "1.0000000000000001e+23"},
	{"below 1e21 (2)", 0x444b1ae4d6e2ef4e, "999999999999999700000"},
	{"below 1e21 (1)", 0x444b1ae4d6e2ef4f, "999999999999999900000"},
	{"1e21", 0x444b1ae4d6e2ef50, "1e+21"},
	{"below 1e-6", 0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"},
	{"1e-6", 0x3eb0c6f7a0b5ed8d, "0.000001"},
	{"333333333.3333332", 0x41b3de4355555553, "333333333.3333332"},
	{"333333333.33333325", 0x41b3de4355555554, "333333333.33333325"},
	{"333333333.3333333", 0x41b3de4355555555, "333333333.3333333"},
	{"333333333.3333334", 0x41b3de4355555556, "333333333.3333334"},
	{"333333333.33333343", 0x41b3de4355555557, "333333333.33333343"},
	{"-0.0000033333333333333333", 0xbecbf647612f3696, "-0.0000033333333333333333"},
	{"round to even", 0x43143ff3c1cb0959, "1424953923781206.2"},
}

func TestAppendixBNumbers(t *testing.T) {
	for _, tc := range appendixB {
		t.Run(tc.name, func(t *testing.T) {
			f := math.Float64frombits(tc.bits)
			if got := string(appendNumber(nil, f)); got != tc.want {
				t.Errorf("appendNumber(%016x) = %s, want %s", tc.bits, got, tc.want)
			}
			// The same through Canonicalize, from the shortest exponent form.
			in := strconv.FormatFloat(f, 'e', -1, 64)
			got, err := Canonicalize([]byte(in))
			if a := math.Abs(f); a > 1<<53 && a < 1e21 {
				// Integral values beyond 2^53 whose canonical form is an
				// integer literal are refused by design (see package doc).
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "send it as a string") {
					t.Errorf("Canonicalize(%s) = %s, %v; want refusal", in, got, err)
				}
				return
			}
			if err != nil || string(got) != tc.want {
				t.Errorf("Canonicalize(%s) = %s, %v; want %s", in, got, err, tc.want)
			}
		})
	}
}

func TestNumbers(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"zero", "0", "0"},
		{"minus zero integer", "-0", "0"},
		{"minus zero fraction", "-0.0", "0"},
		{"minus zero exponent", "-0e5", "0"},
		{"underflow to minus zero", "-1e-400", "0"},
		{"underflow to zero", "1e-400", "0"},
		{"small integer", "42", "42"},
		{"negative integer", "-17", "-17"},
		{"2^53", "9007199254740992", "9007199254740992"},
		{"-2^53", "-9007199254740992", "-9007199254740992"},
		{"16 digits below 2^53", "1234567890123456", "1234567890123456"},
		{"trailing fraction zeros", "4.50", "4.5"},
		{"integral fraction", "1.0", "1"},
		{"exponent integral", "1e3", "1000"},
		{"upper-case exponent", "1E30", "1e+30"},
		{"explicit plus exponent", "1e+2", "100"},
		{"1e21", "1e21", "1e+21"},
		{"1e-7", "1e-7", "1e-7"},
		{"1e-6", "1e-6", "0.000001"},
		{"0.1", "0.1", "0.1"},
		{"0.1+0.2", "0.30000000000000004", "0.30000000000000004"},
		{"2e-3", "2e-3", "0.002"},
		{"1e-27", "0.000000000000000000000000001", "1e-27"},
		{"too many digits", "333333333.33333329", "333333333.3333333"},
		{"fraction rounds to 2^53", "9007199254740992.4", "9007199254740992"},
		{"large exponent", "1.5e300", "1.5e+300"},
		{"negative exponent form", "-1.25e-10", "-1.25e-10"},
		{"min subnormal", "5e-324", "5e-324"},
		{"rounds up to min subnormal", "3e-324", "5e-324"},
		{"max double", "1.7976931348623157e308", "1.7976931348623157e+308"},
		{"long mantissa", "0." + strings.Repeat("1", 400), "0.1111111111111111"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkCanon(t, tc.in, tc.want)
		})
	}
}

// checkCanon checks Canonicalize(in) == want, and that want is a fixed point.
func checkCanon(t *testing.T, in, want string) {
	t.Helper()
	got, err := Canonicalize([]byte(in))
	if err != nil {
		t.Fatalf("Canonicalize(%q): %v", in, err)
	}
	if string(got) != want {
		t.Fatalf("Canonicalize(%q)\n got %s\nwant %s", in, got, want)
	}
	again, err := Canonicalize(got)
	if err != nil || !bytes.Equal(again, got) {
		t.Fatalf("not idempotent: Canonicalize(%s) = %s, %v", got, again, err)
	}
}

func TestRFCExamples(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{
			// RFC 8785 section 3.2.2: the transformation of primitive values.
			name: "section 3.2.2 primitives",
			in: `{
  "numbers": [333333333.33333329, 1E30, 4.50,
              2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}`,
			want: `{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}`,
		},
		{
			// RFC 8785 section 3.2.3: sorting by UTF-16 code units.
			name: "section 3.2.3 sorting",
			in: `{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}`,
			want: "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u0080\":\"Control\"," +
				"\"ö\":\"Latin Small Letter O With Diaeresis\",\"€\":\"Euro Sign\"," +
				"\"😀\":\"Emoji: Grinning Face\",\"\ufb33\":\"Hebrew Letter Dalet With Dagesh\"}",
		},
		{
			// RFC 8785 section 3.2.4: the output is UTF-8.
			name: "section 3.2.4 utf-8",
			in:   `{ "Euro Sign" : "\u20AC" }`,
			want: "\x7b\x22\x45\x75\x72\x6f\x20\x53\x69\x67\x6e\x22\x3a\x22\xe2\x82\xac\x22\x7d",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkCanon(t, tc.in, tc.want)
		})
	}
}

func TestSorting(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"already sorted", `{"a":1,"b":2,"c":3}`, `{"a":1,"b":2,"c":3}`},
		{"reversed", `{"c":3,"b":2,"a":1}`, `{"a":1,"b":2,"c":3}`},
		{"prefix sorts first", `{"ab":1,"a":2,"":3}`, `{"":3,"a":2,"ab":1}`},
		{"upper before lower", `{"b":1,"B":2,"a":3,"A":4}`, `{"A":4,"B":2,"a":3,"b":1}`},
		{
			// UTF-16: U+D7FF < U+1F600 (D83D DE00) < U+E000 < U+FFFD,
			// although in code point / UTF-8 order U+1F600 is last.
			"supplementary before private use",
			`{"\ufffd":4,"\ue000":3,"\ud83d\ude00":2,"\ud7ff":1,"z":0}`,
			"{\"z\":0,\"\ud7ff\":1,\"😀\":2,\"\ue000\":3,\"\ufffd\":4}",
		},
		{
			"supplementary among themselves",
			`{"\ud83d\ude01":2,"\ud800\udc00":0,"\ud83d\ude00":1,"\udbff\udfff":3}`,
			"{\"\U00010000\":0,\"😀\":1,\"😁\":2,\"\U0010FFFF\":3}",
		},
		{
			"literal and escaped names mix",
			"{\"é\":1,\"\\u00e8\":2,\"e\":3}",
			"{\"e\":3,\"è\":2,\"é\":1}",
		},
		{
			"control character names",
			`{"\u0001":1,"\n":2,"\u0000":3," ":4}`,
			`{"\u0000":3,"\u0001":1,"\n":2," ":4}`,
		},
		{
			"nested objects sorted independently",
			`{"b":{"y":1,"x":[{"q":1,"p":2}]},"a":{"d":0,"c":null}}`,
			`{"a":{"c":null,"d":0},"b":{"x":[{"p":2,"q":1}],"y":1}}`,
		},
		{
			"member values keep their bytes",
			`{"z" : "a,b" , "y" : [1 , 2] , "x" : {"k" : "}"}}`,
			`{"x":{"k":"}"},"y":[1,2],"z":"a,b"}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkCanon(t, tc.in, tc.want)
		})
	}
}

func TestCompareKeysMatchesUTF16(t *testing.T) {
	keys := []string{"", "a", "ab", "b", "\u007f", "\u0080", "é", "\u07ff", "\u0800",
		"\ud7ff", "\ue000", "\uffff", "\U00010000", "😀", "😀a", "\U0010ffff", "a\U0010ffff", "a\uffff"}
	for _, a := range keys {
		for _, b := range keys {
			want := compareUTF16(a, b)
			if got := compareKeys([]byte(a), []byte(b)); sign(got) != want {
				t.Errorf("compareKeys(%q, %q) = %d, want %d", a, b, got, want)
			}
		}
	}
}

func compareUTF16(a, b string) int {
	ua, ub := toUTF16(a), toUTF16(b)
	for i := 0; i < len(ua) && i < len(ub); i++ {
		if ua[i] != ub[i] {
			return sign(int(ua[i]) - int(ub[i]))
		}
	}
	return sign(len(ua) - len(ub))
}

func toUTF16(s string) []uint16 {
	var u []uint16
	for _, r := range s {
		if r >= 0x10000 {
			r -= 0x10000
			u = append(u, uint16(0xD800+(r>>10)), uint16(0xDC00+(r&0x3FF)))
		} else {
			u = append(u, uint16(r))
		}
	}
	return u
}

func sign(x int) int {
	switch {
	case x < 0:
		return -1
	case x > 0:
		return 1
	}
	return 0
}

func TestStrings(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"plain", `"hello"`, `"hello"`},
		{"empty", `""`, `""`},
		{"short escapes kept", `"\b\f\n\r\t\"\\"`, `"\b\f\n\r\t\"\\"`},
		{"solidus unescaped", `"a\/b"`, `"a/b"`},
		{"u escapes of short escapes", `"\u0008\u000C\u000a\u000D\u0009\u0022\u005C"`, `"\b\f\n\r\t\"\\"`},
		{"other controls lowercase hex", `"\u0000\u0001\u001F\u000b\u000E"`, `"\u0000\u0001\u001f\u000b\u000e"`},
		{"DEL literal", `"\u007f"`, "\"\x7f\""},
		{"C1 control literal", `"\u0085"`, "\"\u0085\""},
		{"U+2028 and U+2029 literal", `"\u2028\u2029"`, "\"\u2028\u2029\""},
		{"html characters unescaped", `"\u003c\u003e\u0026"`, `"<>&"`},
		{"non-ASCII escape", `"\u00e9\u00E9"`, `"éé"`},
		{"surrogate pair", `"\ud834\udd1e"`, `"𝄞"`},
		{"upper-case surrogate pair", `"\uD83D\uDE00"`, `"😀"`},
		{"literal UTF-8 kept", `"日本語 😀"`, `"日本語 😀"`},
		{"noncharacter kept", `"\uffff"`, "\"\uffff\""},
		{"BOM character kept", `"\ufeff"`, "\"\ufeff\""},
		{"mixed", `"a\tb\u00e9c😀\/"`, "\"a\\tb\u00e9c😀/\""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkCanon(t, tc.in, tc.want)
		})
	}
}

func TestStructure(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"null", "null", "null"},
		{"true", "true", "true"},
		{"false", "false", "false"},
		{"surrounding whitespace", " \t\r\n 1 \n\t", "1"},
		{"empty array", "[ ]", "[]"},
		{"empty object", "{ }", "{}"},
		{"array", "[1, \"a\", null, true, false, [], {}]", `[1,"a",null,true,false,[],{}]`},
		{"array order kept", "[3,1,2]", "[3,1,2]"},
		{"nested", `{"a":[{"b":{"c":[[]]}}]}`, `{"a":[{"b":{"c":[[]]}}]}`},
		{"max depth", strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth), strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth)},
		{"max depth objects", strings.Repeat(`{"a":`, MaxDepth-1) + "{}" + strings.Repeat("}", MaxDepth-1), strings.Repeat(`{"a":`, MaxDepth-1) + "{}" + strings.Repeat("}", MaxDepth-1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkCanon(t, tc.in, tc.want)
		})
	}
}

func TestRefusals(t *testing.T) {
	tests := []struct {
		name string
		in   string
		msg  string // expected error message, after "jcs: invalid JSON: "
	}{
		// Input framing.
		{"empty input", "", "empty input at offset 0"},
		{"only whitespace", " \n ", "no value, only whitespace at offset 3"},
		{"trailing garbage", `{"a":1} x`, "unexpected character 'x' after the top-level value at offset 8"},
		{"two values", `1 2`, "unexpected character '2' after the top-level value at offset 2"},
		{"trailing NUL", "1\x00", "unexpected byte 0x00 after the top-level value at offset 1"},
		{"byte order mark", "\ufeff{}", "unexpected byte 0xef, expecting a value at offset 0"},

		// Duplicate names.
		{"duplicate key", `{ "a" : 1 , "a" : 2 }`, `duplicate key "a" at offset 12`},
		{"duplicate after unescaping", `{"a":1,"\u0061":2}`, `duplicate key "a" at offset 7`},
		{"duplicate non-ASCII", `{"é":1,"\u00e9":2}`, `duplicate key "é" at offset 8`},
		{"duplicate surrogate pair", `{"😀":1,"\ud83d\ude00":2}`, `duplicate key "😀" at offset 10`},
		{"duplicate empty key", `{"":1,"":2}`, `duplicate key "" at offset 6`},
		{"first duplicate reported", `{"b":1,"a":2,"b":3,"a":4,"a":5}`, `duplicate key "b" at offset 13`},
		{"duplicate in nested object", `[{"x":{"k":1,"k":2}}]`, `duplicate key "k" at offset 13`},

		// Strings.
		{"invalid UTF-8 in string", "\"a\xffb\"", "invalid UTF-8 (byte 0xff) in string at offset 2"},
		{"invalid UTF-8 in key", "{\"\xc3\":1}", "invalid UTF-8 (byte 0xc3) in string at offset 2"},
		{"truncated UTF-8", "\"\xe2\x82\"", "invalid UTF-8 (byte 0xe2) in string at offset 1"},
		{"overlong UTF-8", "\"\xc0\xaf\"", "invalid UTF-8 (byte 0xc0) in string at offset 1"},
		{"UTF-8 encoded surrogate", "\"\xed\xa0\x80\"", "invalid UTF-8 (byte 0xed) in string at offset 1"},
		{"invalid UTF-8 outside string", "[\xff]", "unexpected byte 0xff, expecting a value at offset 1"},
		{"lone high surrogate", `"\ud800"`, `unpaired UTF-16 high surrogate \ud800 in string (expecting a \uDC00-\uDFFF escape next) at offset 1`},
		{"lone low surrogate", `"\udc00"`, `unpaired UTF-16 low surrogate \udc00 in string at offset 1`},
		{"reversed surrogates", `"\ude00\ud83d"`, `unpaired UTF-16 low surrogate \ude00 in string at offset 1`},
		{"high surrogate then char", `"\ud83dx"`, `unpaired UTF-16 high surrogate \ud83d in string (expecting a \uDC00-\uDFFF escape next) at offset 1`},
		{"two high surrogates", `"\ud83d\ud83d"`, `unpaired UTF-16 high surrogate \ud83d in string (expecting a \uDC00-\uDFFF escape next) at offset 1`},
		{"high surrogate then bad escape", `"\ud83d\uZZZZ"`, `invalid \u escape (expecting 4 hexadecimal digits) at offset 7`},
		{"control char in string", "\"a\nb\"", "unescaped control character U+000A in string at offset 2"},
		{"tab in string", "\"a\tb\"", "unescaped control character U+0009 in string at offset 2"},
		{"NUL in string", "\"\x00\"", "unescaped control character U+0000 in string at offset 1"},
		{"unterminated string", `"abc`, "unterminated string at offset 0"},
		{"unterminated escape", `"abc\`, `unterminated escape sequence in string at offset 4`},
		{"invalid escape", `"\x41"`, `invalid escape sequence \x in string at offset 1`},
		{"escaped single quote", `"\'"`, `invalid escape sequence \' in string at offset 1`},
		{"escaped newline", "\"\\\n\"", `invalid escape sequence in string (backslash followed by byte 0x0a) at offset 1`},
		{"short u escape", `"\u12"`, `invalid \u escape (expecting 4 hexadecimal digits) at offset 1`},
		{"bad hex", `"\u12g4"`, `invalid \u escape (expecting 4 hexadecimal digits) at offset 1`},
		{"single quotes", `'a'`, `unexpected character '\'', expecting a value at offset 0`},

		// Nesting.
		{"too deep arrays", strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1), "nesting deeper than 64 levels at offset 64"},
		{"too deep objects", strings.Repeat(`{"a":`, MaxDepth) + "{}" + strings.Repeat("}", MaxDepth), "nesting deeper than 64 levels at offset 320"},
		{"very deep", strings.Repeat("[", 100000), "nesting deeper than 64 levels at offset 64"},

		// Numbers.
		{"leading zero", "01", "leading zero in number at offset 0"},
		{"negative leading zero", "-012", "leading zero in number at offset 0"},
		{"leading zero fraction", "00.5", "leading zero in number at offset 0"},
		{"leading plus", "+1", "unexpected character '+', expecting a value at offset 0"},
		{"bare minus", "-", "unexpected end of input, expecting a digit in number at offset 1"},
		{"minus letter", "-a", "unexpected character 'a', expecting a digit in number at offset 1"},
		{"leading dot", ".5", "unexpected character '.', expecting a value at offset 0"},
		{"trailing dot", "1.", "unexpected end of input, expecting a digit after the decimal point at offset 2"},
		{"dot exponent", "1.e5", "unexpected character 'e', expecting a digit after the decimal point at offset 2"},
		{"empty exponent", "1e", "unexpected end of input, expecting a digit in the exponent at offset 2"},
		{"signed empty exponent", "1e+", "unexpected end of input, expecting a digit in the exponent at offset 3"},
		{"hex number", "0x10", "unexpected character 'x' after the top-level value at offset 1"},
		{"NaN", "NaN", "unexpected character 'N', expecting a value at offset 0"},
		{"Infinity", "Infinity", "unexpected character 'I', expecting a value at offset 0"},
		{"-Infinity", "-Infinity", "unexpected character 'I', expecting a digit in number at offset 1"},
		{"overflow", "1e309", "number 1e309 overflows a 64-bit float at offset 0"},
		{"negative overflow", "[-1.8e308]", "number -1.8e308 overflows a 64-bit float at offset 1"},
		{"huge exponent", "1e99999999999999999999", "number 1e99999999999999999999 overflows a 64-bit float at offset 0"},
		{"2^53+1", "9007199254740993", "integer 9007199254740993 exceeds 2^53 in magnitude and may lose precision; send it as a string at offset 0"},
		{"-(2^53+1)", "-9007199254740993", "integer -9007199254740993 exceeds 2^53 in magnitude and may lose precision; send it as a string at offset 0"},
		{"int64 max", `{"id":9223372036854775807}`, "integer 9223372036854775807 exceeds 2^53 in magnitude and may lose precision; send it as a string at offset 6"},
		{"integer literal 2^68", "295147905179352830000", "integer 295147905179352830000 exceeds 2^53 in magnitude and may lose precision; send it as a string at offset 0"},
		{"integer literal beyond 1e21", "1000000000000000000000", "integer 1000000000000000000000 exceeds 2^53 in magnitude and may lose precision; send it as a string at offset 0"},
		{"long integer truncated in message", strings.Repeat("9", 100), "integer " + strings.Repeat("9", 40) + "... exceeds 2^53 in magnitude and may lose precision; send it as a string at offset 0"},
		{"integral float beyond 2^53", "1e16", "number 1e16 is an integer beyond 2^53 in magnitude, whose canonical form would be an unsafe integer literal; send it as a string at offset 0"},
		{"fraction beyond 2^53", "9007199254740993.5", "number 9007199254740993.5 is an integer beyond 2^53 in magnitude, whose canonical form would be an unsafe integer literal; send it as a string at offset 0"},

		// Literals and syntax.
		{"bad literal", "nul", "invalid literal, expecting null at offset 0"},
		{"capitalised literal", "True", "unexpected character 'T', expecting a value at offset 0"},
		{"literal with suffix", "truex", "unexpected character 'x' after the top-level value at offset 4"},
		{"trailing comma in array", "[1,]", "unexpected character ']', expecting a value at offset 3"},
		{"trailing comma in object", `{"a":1,}`, `unexpected character '}', expecting a string (object member name) at offset 7`},
		{"missing comma", "[1 2]", "unexpected character '2', expecting ',' or ']' at offset 3"},
		{"missing colon", `{"a" 1}`, `unexpected character '1', expecting ':' after object member name at offset 5`},
		{"unquoted key", `{a:1}`, `unexpected character 'a', expecting a string (object member name) at offset 1`},
		{"non-string key", `{1:1}`, `unexpected character '1', expecting a string (object member name) at offset 1`},
		{"missing value", `{"a":}`, `unexpected character '}', expecting a value at offset 5`},
		{"unclosed array", "[1", "unexpected end of input, expecting ',' or ']' at offset 2"},
		{"unclosed object", `{"a":1`, "unexpected end of input, expecting ',' or '}' at offset 6"},
		{"unclosed empty object", `{`, "unexpected end of input, expecting a string (object member name) at offset 1"},
		{"mismatched bracket", `[1}`, "unexpected character '}', expecting ',' or ']' at offset 2"},
		{"comment", "[1 /* c */]", "unexpected character '/', expecting ',' or ']' at offset 3"},
		{"line comment", "// c\n1", "unexpected character '/', expecting a value at offset 0"},
		{"vertical tab whitespace", "\v1", "unexpected byte 0x0b, expecting a value at offset 0"},
		{"non-breaking space whitespace", "\u00a01", "unexpected byte 0xc2, expecting a value at offset 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Canonicalize([]byte(tc.in))
			if err == nil {
				t.Fatalf("Canonicalize(%q) = %s, want error", tc.in, got)
			}
			if got != nil {
				t.Errorf("Canonicalize(%q) returned output %q with error", tc.in, got)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if want := "jcs: invalid JSON: " + tc.msg; err.Error() != want {
				t.Errorf("Canonicalize(%q) error\n got %s\nwant %s", tc.in, err, want)
			}
		})
	}
}

func TestMarshal(t *testing.T) {
	type actor struct {
		ID   string `json:"id"`
		Kind string `json:"kind"`
	}
	v := struct {
		Zeta   string            `json:"zeta"`
		Actor  actor             `json:"actor"`
		HTML   string            `json:"html"`
		Count  int64             `json:"count"`
		Ratio  float64           `json:"ratio"`
		Labels map[string]string `json:"labels"`
		Nil    []int             `json:"nil"`
	}{
		Zeta:   "z",
		Actor:  actor{ID: "u1", Kind: "user"},
		HTML:   "<a href=\"x\">&</a>\u2028",
		Count:  -12,
		Ratio:  1e-7,
		Labels: map[string]string{"b": "2", "a": "1", "é": "3"},
	}
	got, err := Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"actor":{"id":"u1","kind":"user"},"count":-12,"html":"<a href=\"x\">&</a>` + "\u2028" +
		`","labels":{"a":"1","b":"2","é":"3"},"nil":null,"ratio":1e-7,"zeta":"z"}`
	if string(got) != want {
		t.Errorf("Marshal\n got %s\nwant %s", got, want)
	}

	if _, err := Marshal(map[string]uint64{"id": math.MaxUint64}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Marshal(big uint64) error = %v, want ErrInvalid", err)
	}
	if _, err := Marshal(math.NaN()); err == nil || errors.Is(err, ErrInvalid) {
		t.Errorf("Marshal(NaN) error = %v, want the json.Marshal error", err)
	}
}

// corpus is a set of accepted inputs used for idempotence and equivalence
// checks, together with the inputs of the other table tests.
var corpus = []string{
	`{"b":[1,2,{"d":4,"c":3}],"a":"x"}`,
	`[{"z":null},{"y":true},{"x":false}]`,
	`{"\u00e9":1,"e\u0301":2,"\ud83d\ude00":3,"\ufb33":4,"\r":5}`,
	`"\u0000\u001f\u007f\u2028\"\\\/"`,
	`[0,-0,1e21,1e-7,0.000001,123456789012345.6,-5e-324,1.7976931348623157e308]`,
	`{"":{"":{"":[]}}}`,
	benchEvent,
}

func TestIdempotenceAndEquivalence(t *testing.T) {
	for i, in := range corpus {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			out, err := Canonicalize([]byte(in))
			if err != nil {
				t.Fatal(err)
			}
			checkProperties(t, []byte(in), out)
		})
	}
}

// checkProperties checks what must hold for any accepted input: the output
// is valid JSON, a fixed point, and denotes the same value as the input.
func checkProperties(t *testing.T, in, out []byte) {
	t.Helper()
	if !json.Valid(out) {
		t.Fatalf("output is not valid JSON: %q (input %q)", out, in)
	}
	if !json.Valid(in) {
		t.Fatalf("accepted input that encoding/json rejects: %q", in)
	}
	again, err := Canonicalize(out)
	if err != nil {
		t.Fatalf("output %q refused: %v (input %q)", out, err, in)
	}
	if !bytes.Equal(again, out) {
		t.Fatalf("not idempotent: %q -> %q -> %q", in, out, again)
	}
	var vin, vout any
	if err := json.Unmarshal(in, &vin); err != nil {
		t.Fatalf("encoding/json cannot decode accepted input %q: %v", in, err)
	}
	if err := json.Unmarshal(out, &vout); err != nil {
		t.Fatalf("encoding/json cannot decode output %q: %v", out, err)
	}
	if !reflect.DeepEqual(vin, vout) {
		t.Fatalf("value changed:\n in  %q -> %#v\n out %q -> %#v", in, vin, out, vout)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	if err := checkMemberOrder(dec); err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
}

// checkMemberOrder walks one value with encoding/json's tokenizer and checks
// that the names of every object are strictly increasing in UTF-16 order
// (compared by the independent compareUTF16 of this file).
func checkMemberOrder(dec *json.Decoder) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		var prev *string
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			k := tok.(string)
			if prev != nil && compareUTF16(*prev, k) >= 0 {
				return fmt.Errorf("member %q after %q", k, *prev)
			}
			prev = &k
			if err := checkMemberOrder(dec); err != nil {
				return err
			}
		}
		_, err = dec.Token()
	case json.Delim('['):
		for dec.More() {
			if err := checkMemberOrder(dec); err != nil {
				return err
			}
		}
		_, err = dec.Token()
	}
	return err
}

// TestNumberRoundTrip checks, over random doubles, that the canonical number
// form reads back as the same double, is accepted again unchanged, and has
// the ECMAScript shape: plain digits for integers below 1e21, exponent form
// outside [1e-6, 1e21).
func TestNumberRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200000; i++ {
		var f float64
		switch i % 4 {
		case 0: // any bit pattern
			f = math.Float64frombits(r.Uint64())
		case 1: // moderate magnitudes, where the formatting cases meet
			f = (r.Float64() - 0.5) * math.Pow(10, float64(r.IntN(50)-25))
		case 2: // integers
			f = float64(r.Int64N(1<<53+1) - 1<<52)
		case 3: // short decimals
			f = float64(r.IntN(2000000)-1000000) / math.Pow(10, float64(r.IntN(12)))
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			continue
		}
		s := string(appendNumber(nil, f))
		back, err := strconv.ParseFloat(s, 64)
		if err != nil || back != f {
			t.Fatalf("%v (%016x) -> %s -> %v, %v", f, math.Float64bits(f), s, back, err)
		}
		a := math.Abs(f)
		hasExp := strings.ContainsRune(s, 'e')
		if hasExp != (a != 0 && (a < 1e-6 || a >= 1e21)) {
			t.Fatalf("%v -> %s: wrong notation", f, s)
		}
		if a > 1<<53 && a < 1e21 {
			continue // refused as input by design
		}
		got, err := Canonicalize([]byte(s))
		if err != nil || string(got) != s {
			t.Fatalf("Canonicalize(%s) = %s, %v", s, got, err)
		}
		// The Go-syntax shortest form must canonicalize to the same text.
		g := strconv.FormatFloat(f, 'g', -1, 64)
		if got, err := Canonicalize([]byte(g)); err != nil || string(got) != s {
			t.Fatalf("Canonicalize(%s) = %s, %v; want %s", g, got, err, s)
		}
	}
}

func TestOutputNotAliased(t *testing.T) {
	in := []byte(`{"b":1,"a":2}`)
	out1, err := Canonicalize(in)
	if err != nil {
		t.Fatal(err)
	}
	out2, err := Canonicalize([]byte(`[3,4,5,6,7,8,9,10,11,12,13,14,15]`))
	if err != nil {
		t.Fatal(err)
	}
	if string(out1) != `{"a":2,"b":1}` || string(out2) != `[3,4,5,6,7,8,9,10,11,12,13,14,15]` {
		t.Errorf("outputs clobbered: %s %s", out1, out2)
	}
	if string(in) != `{"b":1,"a":2}` {
		t.Errorf("input modified: %s", in)
	}
}

func TestConcurrent(t *testing.T) {
	done := make(chan bool)
	for g := 0; g < 8; g++ {
		go func() {
			defer func() { done <- true }()
			for i := 0; i < 200; i++ {
				for _, in := range corpus {
					out, err := Canonicalize([]byte(in))
					if err != nil {
						t.Error(err)
						return
					}
					again, err := Canonicalize(out)
					if err != nil || !bytes.Equal(again, out) {
						t.Errorf("mismatch under concurrency: %s vs %s (%v)", out, again, err)
						return
					}
				}
			}
		}()
	}
	for g := 0; g < 8; g++ {
		<-done
	}
}
