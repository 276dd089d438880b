// Package jcs implements the JSON Canonicalization Scheme (JCS) of RFC 8785
// for untrusted input.
//
// # Model
//
// Canonicalize takes one JSON text (RFC 8259, UTF-8) and returns the unique
// RFC 8785 serialization of the value it denotes: no insignificant
// whitespace, object members sorted by the UTF-16 code units of their names,
// strings escaped the way ECMAScript's JSON.stringify escapes them, and
// numbers printed the way ECMAScript's Number.prototype.toString prints an
// IEEE 754 double. Two inputs denoting the same value (under the I-JSON data
// model: numbers are doubles, names are unique) canonicalize to the same
// bytes, so the output is suitable for hashing and signing.
//
// The input is parsed by a small recursive-descent parser of this package;
// it never goes through encoding/json's map decoding, which would silently
// merge duplicate names or replace invalid text.
//
// # Guarantees
//
// On success the output is valid JSON and valid UTF-8, it decodes (with
// encoding/json or any I-JSON parser) to the same value as the input, and
// Canonicalize is idempotent: Canonicalize(out) returns out unchanged.
//
// Input whose meaning is ambiguous, or which an I-JSON consumer could read
// differently, is refused rather than "repaired". Every such error wraps
// ErrInvalid (test with errors.Is) and its message says what is wrong and at
// which byte offset of the input. Refused are:
//
//   - empty input, anything other than whitespace after the value, and any
//     syntax that is not strict RFC 8259 JSON (comments, trailing commas,
//     single quotes, NaN, leading '+', hexadecimal, ...);
//   - invalid UTF-8 anywhere, unescaped control characters (U+0000..U+001F)
//     in strings, and \u escapes forming lone or unpaired UTF-16 surrogates;
//   - duplicate member names in one object, compared after unescaping;
//   - nesting of arrays and objects deeper than MaxDepth;
//   - numbers with leading zeros, and numbers that overflow a double (±Inf);
//   - integer literals (no fraction, no exponent) whose magnitude exceeds
//     2^53, and numbers whose value is an integer of magnitude in
//     (2^53, 10^21): the first may not survive the conversion to a double
//     (9007199254740993 would silently become 9007199254740992), and the
//     canonical form of the second would be such an integer literal (so the
//     output would not be accepted again). Such values must be sent as
//     strings.
//
// Numbers with a fraction or an exponent are otherwise accepted and are, as
// RFC 8785 requires, replaced by the nearest double: 0.1 stays 0.1, but
// 1.00000000000000001 becomes 1 and 1e-400 becomes 0.
//
// Resource use is bounded for hostile input: recursion depth is at most
// MaxDepth, memory is linear in the input size, and time is O(n log n)
// (member sorting). Canonicalize is safe for concurrent use.
package jcs

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"unicode/utf8"
)

// ErrInvalid is the base error of every input refused by Canonicalize; the
// returned errors wrap it, so errors.Is(err, ErrInvalid) reports them.
var ErrInvalid = errors.New("jcs: invalid JSON")

// MaxDepth is the maximum nesting depth of arrays and objects. A top-level
// array or object is at depth 1.
const MaxDepth = 64

// maxSafeInteger is 2^53: every integer of magnitude up to it is exactly
// representable as a double; above it integer literals can lose precision.
const maxSafeInteger = 1 << 53

// Canonicalize parses one JSON value from data (surrounding whitespace
// allowed, nothing else after it) and returns its RFC 8785 canonical form.
//
// The returned slice is newly allocated and not retained. On failure the
// error wraps ErrInvalid.
func Canonicalize(data []byte) ([]byte, error) {
	s := statePool.Get().(*state)
	defer s.release()
	s.data = data
	s.pos = 0
	s.out = s.out[:0]
	s.keyBuf = s.keyBuf[:0]

	s.skipWS()
	if s.pos >= len(data) {
		if len(data) == 0 {
			return nil, s.fail(0, "empty input")
		}
		return nil, s.fail(s.pos, "no value, only whitespace")
	}
	if err := s.value(0); err != nil {
		return nil, err
	}
	s.skipWS()
	if s.pos < len(data) {
		return nil, s.failf(s.pos, "unexpected %s after the top-level value", describeByte(data[s.pos]))
	}
	out := make([]byte, len(s.out))
	copy(out, s.out)
	return out, nil
}

// Marshal is json.Marshal followed by Canonicalize.
//
// Errors from json.Marshal are returned as is; values json.Marshal can
// encode but Canonicalize refuses (for example an int64 or uint64 beyond
// 2^53, or nesting deeper than MaxDepth) give an error wrapping ErrInvalid.
func Marshal(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return Canonicalize(b)
}

// syntaxError is the concrete error type; it wraps ErrInvalid.
type syntaxError struct {
	msg string
	off int
}

func (e *syntaxError) Error() string {
	return ErrInvalid.Error() + ": " + e.msg + " at offset " + strconv.Itoa(e.off)
}

func (e *syntaxError) Unwrap() error { return ErrInvalid }

// member records one object member already written to state.out.
type member struct {
	key   []byte // the unescaped name (valid UTF-8)
	start int    // offset in out of the name's opening quote
	end   int    // offset in out just past the member's value
	off   int    // offset in the input of the name's opening quote
}

// state is the parser and the output buffer; pooled between calls.
type state struct {
	data    []byte
	pos     int
	out     []byte   // canonical output under construction
	members []member // stack of members of the objects being parsed
	keyBuf  []byte   // arena holding unescaped names that had escapes
	tmp     []byte   // scratch for reordering object members
}

var statePool = sync.Pool{New: func() any { return new(state) }}

// maxPooledBuf bounds the buffers kept in the pool, so that one huge input
// does not pin a huge buffer.
const maxPooledBuf = 256 << 10

func (s *state) release() {
	s.data = nil
	clear(s.members) // drop references to the caller's input
	s.members = s.members[:0]
	if cap(s.out) > maxPooledBuf {
		s.out = nil
	}
	if cap(s.tmp) > maxPooledBuf {
		s.tmp = nil
	}
	if cap(s.keyBuf) > maxPooledBuf {
		s.keyBuf = nil
	}
	if cap(s.members) > maxPooledBuf/32 {
		s.members = nil
	}
	statePool.Put(s)
}

func (s *state) fail(off int, msg string) error {
	return &syntaxError{msg: msg, off: off}
}

func (s *state) failf(off int, format string, args ...any) error {
	return &syntaxError{msg: fmt.Sprintf(format, args...), off: off}
}

// unexpected reports an unexpected byte (or end of input) at s.pos.
func (s *state) unexpected(expecting string) error {
	if s.pos >= len(s.data) {
		return s.failf(s.pos, "unexpected end of input, expecting %s", expecting)
	}
	return s.failf(s.pos, "unexpected %s, expecting %s", describeByte(s.data[s.pos]), expecting)
}

func (s *state) skipWS() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// value parses the value at s.pos (whitespace already skipped); depth is the
// nesting depth of the enclosing container (0 at top level).
func (s *state) value(depth int) error {
	if s.pos >= len(s.data) {
		return s.unexpected("a value")
	}
	switch c := s.data[s.pos]; c {
	case '{':
		return s.object(depth + 1)
	case '[':
		return s.array(depth + 1)
	case '"':
		_, err := s.str(false)
		return err
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		return s.literal("null")
	default:
		if c == '-' || ('0' <= c && c <= '9') {
			return s.number()
		}
		return s.unexpected("a value")
	}
}

func (s *state) literal(lit string) error {
	end := s.pos + len(lit)
	if end > len(s.data) || string(s.data[s.pos:end]) != lit {
		return s.failf(s.pos, "invalid literal, expecting %s", lit)
	}
	s.out = append(s.out, lit...)
	s.pos = end
	return nil
}

func (s *state) array(depth int) error {
	if depth > MaxDepth {
		return s.failf(s.pos, "nesting deeper than %d levels", MaxDepth)
	}
	s.pos++ // '['
	s.out = append(s.out, '[')
	s.skipWS()
	if s.pos < len(s.data) && s.data[s.pos] == ']' {
		s.pos++
		s.out = append(s.out, ']')
		return nil
	}
	for {
		if err := s.value(depth); err != nil {
			return err
		}
		s.skipWS()
		if s.pos >= len(s.data) {
			return s.unexpected("',' or ']'")
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
			s.out = append(s.out, ',')
			s.skipWS()
		case ']':
			s.pos++
			s.out = append(s.out, ']')
			return nil
		default:
			return s.unexpected("',' or ']'")
		}
	}
}

func (s *state) object(depth int) error {
	if depth > MaxDepth {
		return s.failf(s.pos, "nesting deeper than %d levels", MaxDepth)
	}
	s.pos++ // '{'
	s.out = append(s.out, '{')
	s.skipWS()
	if s.pos < len(s.data) && s.data[s.pos] == '}' {
		s.pos++
		s.out = append(s.out, '}')
		return nil
	}
	base := len(s.members)
	for {
		if s.pos >= len(s.data) || s.data[s.pos] != '"' {
			return s.unexpected("a string (object member name)")
		}
		off := s.pos
		start := len(s.out)
		key, err := s.str(true)
		if err != nil {
			return err
		}
		s.skipWS()
		if s.pos >= len(s.data) || s.data[s.pos] != ':' {
			return s.unexpected("':' after object member name")
		}
		s.pos++
		s.out = append(s.out, ':')
		s.skipWS()
		if err := s.value(depth); err != nil {
			return err
		}
		s.members = append(s.members, member{key: key, start: start, end: len(s.out), off: off})
		s.skipWS()
		if s.pos >= len(s.data) {
			return s.unexpected("',' or '}'")
		}
		c := s.data[s.pos]
		if c == ',' {
			s.pos++
			s.out = append(s.out, ',')
			s.skipWS()
			continue
		}
		if c != '}' {
			return s.unexpected("',' or '}'")
		}
		s.pos++
		break
	}
	if err := s.sortMembers(s.members[base:]); err != nil {
		return err
	}
	clear(s.members[base:])
	s.members = s.members[:base]
	s.out = append(s.out, '}')
	return nil
}

// sortMembers puts the members of one object, already written to s.out in
// input order and separated by commas, into canonical order, and refuses
// duplicate names.
func (s *state) sortMembers(ms []member) error {
	sorted := true
	for i := 1; i < len(ms); i++ {
		if compareKeys(ms[i-1].key, ms[i].key) >= 0 {
			sorted = false
			break
		}
	}
	if sorted { // common case: strictly increasing, hence no duplicates
		return nil
	}
	lo, hi := ms[0].start, ms[len(ms)-1].end
	slices.SortFunc(ms, compareMembers)
	dup := -1
	for i := 1; i < len(ms); i++ {
		// Ties are ordered by input offset, so ms[i] is the later occurrence.
		if string(ms[i-1].key) == string(ms[i].key) && (dup < 0 || ms[i].off < ms[dup].off) {
			dup = i
		}
	}
	if dup >= 0 {
		return s.failf(ms[dup].off, "duplicate key %s", quoteForError(ms[dup].key))
	}
	s.tmp = append(s.tmp[:0], s.out[lo:hi]...)
	w := s.out[:lo]
	for i, m := range ms {
		if i > 0 {
			w = append(w, ',')
		}
		w = append(w, s.tmp[m.start-lo:m.end-lo]...)
	}
	// w has exactly the length of the region and shares s.out's array.
	return nil
}

func compareMembers(a, b member) int {
	if c := compareKeys(a.key, b.key); c != 0 {
		return c
	}
	return cmp.Compare(a.off, b.off)
}

// compareKeys compares two valid UTF-8 strings by their UTF-16 code units,
// as RFC 8785 section 3.2.3 requires.
//
// UTF-8 byte order equals code point order, which differs from UTF-16 code
// unit order only between U+E000..U+FFFF and supplementary code points
// (encoded in UTF-16 with surrogates D800..DBFF, which sort lower).
func compareKeys(a, b []byte) int {
	n := min(len(a), len(b))
	i := 0
	for i < n && a[i] == b[i] {
		i++
	}
	if i == n {
		return cmp.Compare(len(a), len(b))
	}
	if a[i] < utf8.RuneSelf && b[i] < utf8.RuneSelf {
		return cmp.Compare(a[i], b[i])
	}
	// Back up to the start of the rune holding the first difference; the
	// prefix is shared, and in valid UTF-8 the lead byte fixes the length,
	// so both runes start there.
	for i > 0 && !utf8.RuneStart(a[i]) {
		i--
	}
	ra, _ := utf8.DecodeRune(a[i:])
	rb, _ := utf8.DecodeRune(b[i:])
	return cmp.Compare(utf16Rank(ra), utf16Rank(rb))
}

// utf16Rank maps a code point to a value ordered like its UTF-16 encoding.
func utf16Rank(r rune) rune {
	if r >= 0xE000 && r <= 0xFFFF {
		return r + 0x200000 // above every supplementary code point
	}
	return r
}

// strSafe[c] is true for bytes that are copied unchanged inside a string.
var strSafe = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str parses the string at s.pos and writes its canonical form to s.out. If
// isKey, it returns the unescaped content, which aliases either the input or
// s.keyBuf; both stay unchanged until Canonicalize returns.
func (s *state) str(isKey bool) ([]byte, error) {
	data := s.data
	open := s.pos
	i := open + 1
	run := i // start of bytes not yet copied to out
	escaped := false
	s.out = append(s.out, '"')
	outStart := len(s.out)
	for {
		for i < len(data) && strSafe[data[i]] {
			i++
		}
		if i >= len(data) {
			return nil, s.fail(open, "unterminated string")
		}
		c := data[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size == 1 {
				return nil, s.failf(i, "invalid UTF-8 (byte 0x%02x) in string", c)
			}
			i += size
			continue
		}
		s.out = append(s.out, data[run:i]...)
		if c == '"' {
			i++
			break
		}
		if c < 0x20 {
			return nil, s.failf(i, "unescaped control character U+%04X in string", c)
		}
		// c == '\\'
		next, err := s.escape(i)
		if err != nil {
			return nil, err
		}
		escaped = true
		i = next
		run = i
	}
	s.pos = i
	if !isKey {
		s.out = append(s.out, '"')
		return nil, nil
	}
	if !escaped {
		s.out = append(s.out, '"')
		return data[open+1 : i-1], nil
	}
	// Decode the canonical form just written: it only contains the escapes
	// \" \\ \b \f \n \r \t and \u00XX.
	canon := s.out[outStart:]
	start := len(s.keyBuf)
	for j := 0; j < len(canon); j++ {
		c := canon[j]
		if c != '\\' {
			s.keyBuf = append(s.keyBuf, c)
			continue
		}
		j++
		switch canon[j] {
		case 'b':
			c = '\b'
		case 'f':
			c = '\f'
		case 'n':
			c = '\n'
		case 'r':
			c = '\r'
		case 't':
			c = '\t'
		case 'u':
			c = unhex(canon[j+3])<<4 | unhex(canon[j+4])
			j += 4
		default: // '"' or '\\'
			c = canon[j]
		}
		s.keyBuf = append(s.keyBuf, c)
	}
	s.out = append(s.out, '"')
	return s.keyBuf[start:len(s.keyBuf):len(s.keyBuf)], nil
}

// escape decodes the escape sequence at data[i] == '\\', writes its
// canonical form to s.out and returns the offset just past it.
func (s *state) escape(i int) (int, error) {
	data := s.data
	if i+1 >= len(data) {
		return 0, s.fail(i, "unterminated escape sequence in string")
	}
	var c byte
	switch data[i+1] {
	case '"':
		s.out = append(s.out, '\\', '"')
		return i + 2, nil
	case '\\':
		s.out = append(s.out, '\\', '\\')
		return i + 2, nil
	case '/':
		s.out = append(s.out, '/')
		return i + 2, nil
	case 'b':
		c = '\b'
	case 'f':
		c = '\f'
	case 'n':
		c = '\n'
	case 'r':
		c = '\r'
	case 't':
		c = '\t'
	case 'u':
		r, ok := hex4(data, i+2)
		if !ok {
			return 0, s.fail(i, `invalid \u escape (expecting 4 hexadecimal digits)`)
		}
		next := i + 6
		switch {
		case r >= 0xDC00 && r <= 0xDFFF:
			return 0, s.failf(i, `unpaired UTF-16 low surrogate \u%04x in string`, r)
		case r >= 0xD800 && r <= 0xDBFF:
			var lo rune
			if next+1 < len(data) && data[next] == '\\' && data[next+1] == 'u' {
				lo, ok = hex4(data, next+2)
				if !ok {
					return 0, s.fail(next, `invalid \u escape (expecting 4 hexadecimal digits)`)
				}
			}
			if lo < 0xDC00 || lo > 0xDFFF {
				return 0, s.failf(i, `unpaired UTF-16 high surrogate \u%04x in string (expecting a \uDC00-\uDFFF escape next)`, r)
			}
			r = 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00)
			next += 6
		}
		s.appendRune(r)
		return next, nil
	default:
		if c := data[i+1]; c > ' ' && c < 0x7f {
			return 0, s.failf(i, `invalid escape sequence \%c in string`, c)
		}
		return 0, s.failf(i, `invalid escape sequence in string (backslash followed by %s)`, describeByte(data[i+1]))
	}
	s.appendControl(c)
	return i + 2, nil
}

// appendRune writes a code point decoded from a \u escape, canonically.
func (s *state) appendRune(r rune) {
	switch {
	case r < 0x20:
		s.appendControl(byte(r))
	case r == '"':
		s.out = append(s.out, '\\', '"')
	case r == '\\':
		s.out = append(s.out, '\\', '\\')
	default:
		s.out = utf8.AppendRune(s.out, r)
	}
}

const hexDigits = "0123456789abcdef"

// appendControl writes the canonical escape of a control character.
func (s *state) appendControl(c byte) {
	switch c {
	case '\b':
		s.out = append(s.out, '\\', 'b')
	case '\f':
		s.out = append(s.out, '\\', 'f')
	case '\n':
		s.out = append(s.out, '\\', 'n')
	case '\r':
		s.out = append(s.out, '\\', 'r')
	case '\t':
		s.out = append(s.out, '\\', 't')
	default:
		s.out = append(s.out, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
	}
}

func hex4(data []byte, i int) (rune, bool) {
	if i+4 > len(data) {
		return 0, false
	}
	var r rune
	for _, c := range data[i : i+4] {
		var v byte
		switch {
		case '0' <= c && c <= '9':
			v = c - '0'
		case 'a' <= c && c <= 'f':
			v = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			v = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(v)
	}
	return r, true
}

// unhex decodes one lowercase hexadecimal digit (as written by appendControl).
func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c - 'a' + 10
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// number parses the number at s.pos and writes its canonical form.
func (s *state) number() error {
	data := s.data
	start := s.pos
	i := start
	neg := data[i] == '-'
	if neg {
		i++
	}
	intStart := i
	switch {
	case i >= len(data) || !isDigit(data[i]):
		s.pos = i
		return s.unexpected("a digit in number")
	case data[i] == '0':
		i++
		if i < len(data) && isDigit(data[i]) {
			return s.fail(start, "leading zero in number")
		}
	default:
		for i < len(data) && isDigit(data[i]) {
			i++
		}
	}
	intEnd := i
	isInt := true
	if i < len(data) && data[i] == '.' {
		isInt = false
		i++
		if i >= len(data) || !isDigit(data[i]) {
			s.pos = i
			return s.unexpected("a digit after the decimal point")
		}
		for i < len(data) && isDigit(data[i]) {
			i++
		}
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		isInt = false
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if i >= len(data) || !isDigit(data[i]) {
			s.pos = i
			return s.unexpected("a digit in the exponent")
		}
		for i < len(data) && isDigit(data[i]) {
			i++
		}
	}
	s.pos = i
	lit := data[start:i]

	if isInt {
		// 2^53 has 16 digits; any literal without leading zero and with
		// more digits is larger.
		if intEnd-intStart <= 16 {
			var u uint64
			for _, c := range data[intStart:intEnd] {
				u = u*10 + uint64(c-'0')
			}
			if u <= maxSafeInteger {
				if neg && u != 0 { // -0 is 0
					s.out = append(s.out, '-')
				}
				s.out = strconv.AppendUint(s.out, u, 10)
				return nil
			}
		}
		return s.failf(start, "integer %s exceeds 2^53 in magnitude and may lose precision; send it as a string", truncate(lit))
	}

	f, err := strconv.ParseFloat(string(lit), 64)
	if math.IsInf(f, 0) {
		return s.failf(start, "number %s overflows a 64-bit float", truncate(lit))
	}
	if err != nil { // unreachable: the grammar was checked above
		return s.failf(start, "invalid number %s", truncate(lit))
	}
	if a := math.Abs(f); a > maxSafeInteger && a < 1e21 {
		return s.failf(start, "number %s is an integer beyond 2^53 in magnitude, whose canonical form would be an unsafe integer literal; send it as a string", truncate(lit))
	}
	s.out = appendNumber(s.out, f)
	return nil
}

// appendNumber appends the ECMAScript Number.prototype.toString form of a
// finite f (RFC 8785 section 3.2.2.3).
func appendNumber(dst []byte, f float64) []byte {
	if f == 0 { // also -0
		return append(dst, '0')
	}
	var buf [32]byte
	// Shortest round-trip digits, as d[.ddd]e±XX.
	b := strconv.AppendFloat(buf[:0], f, 'e', -1, 64)
	if b[0] == '-' {
		dst = append(dst, '-')
		b = b[1:]
	}
	var digits [24]byte
	k := 0
	j := 0
	for ; b[j] != 'e'; j++ {
		if b[j] != '.' {
			digits[k] = b[j]
			k++
		}
	}
	j++ // 'e'
	expNeg := b[j] == '-'
	j++ // sign
	e := 0
	for ; j < len(b); j++ {
		e = e*10 + int(b[j]-'0')
	}
	if expNeg {
		e = -e
	}
	// f = 0.d1d2...dk × 10^n in the notation of ECMAScript.
	n := e + 1
	d := digits[:k]
	switch {
	case k <= n && n <= 21:
		dst = append(dst, d...)
		for range n - k {
			dst = append(dst, '0')
		}
	case 0 < n && n <= 21:
		dst = append(dst, d[:n]...)
		dst = append(dst, '.')
		dst = append(dst, d[n:]...)
	case -6 < n && n <= 0:
		dst = append(dst, '0', '.')
		for range -n {
			dst = append(dst, '0')
		}
		dst = append(dst, d...)
	default:
		dst = append(dst, d[0])
		if k > 1 {
			dst = append(dst, '.')
			dst = append(dst, d[1:]...)
		}
		dst = append(dst, 'e')
		if n-1 >= 0 {
			dst = append(dst, '+')
		} else {
			dst = append(dst, '-')
		}
		dst = strconv.AppendInt(dst, int64(abs(n-1)), 10)
	}
	return dst
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// describeByte names an input byte for an error message.
func describeByte(c byte) string {
	if c > ' ' && c < 0x7f {
		return fmt.Sprintf("character %q", c)
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

// quoteForError quotes a member name for an error message, shortened so that
// hostile input cannot produce huge messages.
func quoteForError(key []byte) string {
	const max = 64
	if len(key) <= max {
		return strconv.Quote(string(key))
	}
	i := max
	for i > 0 && !utf8.RuneStart(key[i]) {
		i--
	}
	return strconv.Quote(string(key[:i])) + "..."
}

// truncate shortens a number literal for an error message.
func truncate(lit []byte) string {
	const max = 40
	if len(lit) <= max {
		return string(lit)
	}
	return string(lit[:max]) + "..."
}
