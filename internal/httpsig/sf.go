package httpsig

// A strict parser for the subset of RFC 8941 (Structured Field Values for
// HTTP) that Signature-Input, Signature and Content-Digest use: Dictionaries
// whose members are Items or Inner Lists, with Parameters, and the bare item
// types Integer, Decimal, String, Token, Byte Sequence and Boolean.
//
// It follows the parsing algorithms of RFC 8941 section 4.2, with these
// deliberate restrictions:
//
//   - A Dictionary key or Parameter key that appears twice is an error
//     (RFC 8941 would keep the last value). Duplicates are never produced by a
//     conforming serializer, and silently letting a later member override an
//     earlier one is how signature confusion attacks start.
//   - Dictionaries, Inner Lists and Parameters are limited in size (see
//     sfLimits); exceeding a limit is an error rather than a truncation.
//   - Byte Sequences must either be unpadded or correctly padded; "="
//     anywhere but at the end is an error. As RFC 8941 section 4.2.7 asks,
//     missing padding and non-zero pad bits are accepted.
//   - RFC 9651 additions (Dates, Display Strings) are not recognised.

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

type sfKind uint8

const (
	sfInteger sfKind = iota + 1
	sfDecimal
	sfString
	sfToken
	sfBytes
	sfBool
)

func (k sfKind) String() string {
	switch k {
	case sfInteger:
		return "Integer"
	case sfDecimal:
		return "Decimal"
	case sfString:
		return "String"
	case sfToken:
		return "Token"
	case sfBytes:
		return "Byte Sequence"
	case sfBool:
		return "Boolean"
	}
	return "unknown"
}

// sfBare is a bare item. Only the field matching kind is meaningful:
// i for Integer, s for String, Token and Decimal (its text), b for Byte
// Sequence, bo for Boolean.
func (k sfKind) article() string {
	if k == sfInteger {
		return "an Integer"
	}
	return "a " + k.String()
}

type sfBare struct {
	kind sfKind
	i    int64
	s    string
	b    []byte
	bo   bool
	// unpadded records a Byte Sequence sent without its "=" padding (which
	// RFC 8941 asks parsers to tolerate).
	unpadded bool
}

type sfParam struct {
	key string
	val sfBare
}

type sfParams []sfParam

func (ps sfParams) get(key string) (sfBare, bool) {
	for _, p := range ps {
		if p.key == key {
			return p.val, true
		}
	}
	return sfBare{}, false
}

type sfItem struct {
	val    sfBare
	params sfParams
}

// sfMember is a Dictionary member: either an Item (isList false) or an
// Inner List (isList true) with its own parameters.
type sfMember struct {
	key    string
	isList bool
	item   sfItem   // when !isList
	list   []sfItem // when isList
	params sfParams // inner-list parameters, when isList
	// raw is the member value exactly as it appeared in the field value
	// (for an Inner List: from "(" to the end of its parameters).
	raw string
}

type sfDict []sfMember

func (d sfDict) get(key string) (*sfMember, bool) {
	for i := range d {
		if d[i].key == key {
			return &d[i], true
		}
	}
	return nil, false
}

// sfLimits bounds what the parser accepts.
type sfLimits struct {
	members int // Dictionary members
	items   int // items in one Inner List
	params  int // Parameters on one Item or Inner List
}

var defaultLimits = sfLimits{members: 16, items: 16, params: 16}

type sfParser struct {
	field string // field name, for error messages
	s     string
	pos   int
	lim   sfLimits
}

func (p *sfParser) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s (at offset %d)", ErrMalformed, p.field, fmt.Sprintf(format, args...), p.pos)
}

func (p *sfParser) eof() bool { return p.pos >= len(p.s) }

func (p *sfParser) peek() byte {
	if p.pos < len(p.s) {
		return p.s[p.pos]
	}
	return 0
}

func (p *sfParser) skipSP() {
	for p.pos < len(p.s) && p.s[p.pos] == ' ' {
		p.pos++
	}
}

func (p *sfParser) skipOWS() {
	for p.pos < len(p.s) && (p.s[p.pos] == ' ' || p.s[p.pos] == '\t') {
		p.pos++
	}
}

// parseSFDictionary parses a complete Dictionary field value (RFC 8941
// sections 4.2 and 4.2.2). An empty (or all-SP) value is an empty Dictionary.
func parseSFDictionary(field, value string, lim sfLimits) (sfDict, error) {
	p := &sfParser{field: field, s: value, lim: lim}
	p.skipSP()
	var d sfDict
	for !p.eof() {
		key, err := p.parseKey()
		if err != nil {
			return nil, err
		}
		if _, dup := d.get(key); dup {
			return nil, p.errorf("duplicate dictionary key %q", key)
		}
		if len(d) >= p.lim.members {
			return nil, p.errorf("more than %d dictionary members", p.lim.members)
		}
		m := sfMember{key: key}
		start := p.pos
		if p.peek() == '=' {
			p.pos++
			start = p.pos
			if p.peek() == '(' {
				m.isList = true
				m.list, m.params, err = p.parseInnerList()
			} else {
				m.item, err = p.parseItem()
			}
			if err != nil {
				return nil, err
			}
		} else {
			// A key without a value is Boolean true with parameters.
			m.item.val = sfBare{kind: sfBool, bo: true}
			if m.item.params, err = p.parseParams(); err != nil {
				return nil, err
			}
		}
		m.raw = p.s[start:p.pos]
		d = append(d, m)

		p.skipOWS()
		if p.eof() {
			return d, nil
		}
		if p.peek() != ',' {
			return nil, p.errorf("expected \",\" after dictionary member %q, found %q", key, p.peek())
		}
		p.pos++
		p.skipOWS()
		if p.eof() {
			return nil, p.errorf("trailing comma")
		}
	}
	return d, nil
}

func isLCAlpha(c byte) bool { return c >= 'a' && c <= 'z' }
func isAlpha(c byte) bool   { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool   { return c >= '0' && c <= '9' }

// isTChar reports whether c is an RFC 9110 tchar.
func isTChar(c byte) bool {
	if isAlpha(c) || isDigit(c) {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// parseKey implements RFC 8941 section 4.2.3.3.
func (p *sfParser) parseKey() (string, error) {
	c := p.peek()
	if p.eof() || !(isLCAlpha(c) || c == '*') {
		if p.eof() {
			return "", p.errorf("expected a key, found end of value")
		}
		return "", p.errorf("a key must start with a lowercase letter or \"*\", found %q", c)
	}
	start := p.pos
	for !p.eof() {
		c := p.peek()
		if !(isLCAlpha(c) || isDigit(c) || c == '_' || c == '-' || c == '.' || c == '*') {
			break
		}
		p.pos++
	}
	return p.s[start:p.pos], nil
}

// parseInnerList implements RFC 8941 section 4.2.1.2.
func (p *sfParser) parseInnerList() ([]sfItem, sfParams, error) {
	if p.peek() != '(' {
		return nil, nil, p.errorf("expected \"(\"")
	}
	p.pos++
	var items []sfItem
	for !p.eof() {
		p.skipSP()
		if p.peek() == ')' {
			p.pos++
			params, err := p.parseParams()
			if err != nil {
				return nil, nil, err
			}
			return items, params, nil
		}
		if len(items) >= p.lim.items {
			return nil, nil, p.errorf("more than %d items in inner list", p.lim.items)
		}
		it, err := p.parseItem()
		if err != nil {
			return nil, nil, err
		}
		items = append(items, it)
		if c := p.peek(); c != ' ' && c != ')' {
			if p.eof() {
				break
			}
			return nil, nil, p.errorf("expected SP or \")\" in inner list, found %q", c)
		}
	}
	return nil, nil, p.errorf("unterminated inner list")
}

// parseItem implements RFC 8941 section 4.2.3.
func (p *sfParser) parseItem() (sfItem, error) {
	v, err := p.parseBareItem()
	if err != nil {
		return sfItem{}, err
	}
	params, err := p.parseParams()
	if err != nil {
		return sfItem{}, err
	}
	return sfItem{val: v, params: params}, nil
}

// parseParams implements RFC 8941 section 4.2.3.2.
func (p *sfParser) parseParams() (sfParams, error) {
	var ps sfParams
	for p.peek() == ';' {
		p.pos++
		p.skipSP()
		key, err := p.parseKey()
		if err != nil {
			return nil, err
		}
		if _, dup := ps.get(key); dup {
			return nil, p.errorf("duplicate parameter %q", key)
		}
		if len(ps) >= p.lim.params {
			return nil, p.errorf("more than %d parameters", p.lim.params)
		}
		val := sfBare{kind: sfBool, bo: true}
		if p.peek() == '=' {
			p.pos++
			if val, err = p.parseBareItem(); err != nil {
				return nil, err
			}
		}
		ps = append(ps, sfParam{key: key, val: val})
	}
	return ps, nil
}

// parseBareItem implements RFC 8941 section 4.2.3.1.
func (p *sfParser) parseBareItem() (sfBare, error) {
	if p.eof() {
		return sfBare{}, p.errorf("expected an item, found end of value")
	}
	switch c := p.peek(); {
	case c == '-' || isDigit(c):
		return p.parseNumber()
	case c == '"':
		return p.parseString()
	case c == '*' || isAlpha(c):
		return p.parseToken()
	case c == ':':
		return p.parseByteSequence()
	case c == '?':
		return p.parseBoolean()
	default:
		return sfBare{}, p.errorf("unexpected character %q at start of item", c)
	}
}

// parseNumber implements RFC 8941 section 4.2.4.
func (p *sfParser) parseNumber() (sfBare, error) {
	start := p.pos
	neg := false
	if p.peek() == '-' {
		neg = true
		p.pos++
	}
	if p.eof() || !isDigit(p.peek()) {
		return sfBare{}, p.errorf("expected a digit")
	}
	digitsStart := p.pos
	decimal := false
	for !p.eof() {
		c := p.peek()
		if isDigit(c) {
			p.pos++
		} else if !decimal && c == '.' {
			if p.pos-digitsStart > 12 {
				return sfBare{}, p.errorf("decimal has more than 12 integer digits")
			}
			decimal = true
			p.pos++
		} else {
			break
		}
		if !decimal && p.pos-digitsStart > 15 {
			return sfBare{}, p.errorf("integer has more than 15 digits")
		}
		if decimal && p.pos-digitsStart > 16 {
			return sfBare{}, p.errorf("decimal is longer than 16 characters")
		}
	}
	text := p.s[digitsStart:p.pos]
	if !decimal {
		n, err := strconv.ParseInt(text, 10, 64)
		if err != nil { // cannot happen for <= 15 digits
			return sfBare{}, p.errorf("bad integer %q", text)
		}
		if neg {
			n = -n
		}
		return sfBare{kind: sfInteger, i: n}, nil
	}
	dot := strings.IndexByte(text, '.')
	if frac := len(text) - dot - 1; frac == 0 {
		return sfBare{}, p.errorf("decimal ends with \".\"")
	} else if frac > 3 {
		return sfBare{}, p.errorf("decimal has more than 3 fractional digits")
	}
	return sfBare{kind: sfDecimal, s: p.s[start:p.pos]}, nil
}

// parseString implements RFC 8941 section 4.2.5.
func (p *sfParser) parseString() (sfBare, error) {
	p.pos++ // opening DQUOTE
	var b strings.Builder
	for !p.eof() {
		c := p.s[p.pos]
		p.pos++
		switch {
		case c == '\\':
			if p.eof() {
				return sfBare{}, p.errorf("unterminated escape in string")
			}
			n := p.s[p.pos]
			if n != '"' && n != '\\' {
				return sfBare{}, p.errorf("invalid escape \"\\%c\" in string", n)
			}
			p.pos++
			b.WriteByte(n)
		case c == '"':
			return sfBare{kind: sfString, s: b.String()}, nil
		case c < 0x20 || c > 0x7e:
			p.pos--
			return sfBare{}, p.errorf("invalid character %q in string", c)
		default:
			b.WriteByte(c)
		}
	}
	return sfBare{}, p.errorf("unterminated string")
}

// parseToken implements RFC 8941 section 4.2.6.
func (p *sfParser) parseToken() (sfBare, error) {
	start := p.pos
	p.pos++ // first character already checked by the caller
	for !p.eof() {
		c := p.peek()
		if !isTChar(c) && c != ':' && c != '/' {
			break
		}
		p.pos++
	}
	return sfBare{kind: sfToken, s: p.s[start:p.pos]}, nil
}

// parseByteSequence implements RFC 8941 section 4.2.7.
func (p *sfParser) parseByteSequence() (sfBare, error) {
	p.pos++ // opening ":"
	end := strings.IndexByte(p.s[p.pos:], ':')
	if end < 0 {
		return sfBare{}, p.errorf("unterminated byte sequence")
	}
	content := p.s[p.pos : p.pos+end]
	for i := 0; i < len(content); i++ {
		c := content[i]
		if !(isAlpha(c) || isDigit(c) || c == '+' || c == '/' || c == '=') {
			p.pos += i
			return sfBare{}, p.errorf("invalid character %q in byte sequence", c)
		}
	}
	data := strings.TrimRight(content, "=")
	if strings.IndexByte(data, '=') >= 0 || len(content)-len(data) > 2 ||
		(len(data) != len(content) && len(content)%4 != 0) {
		return sfBare{}, p.errorf("bad padding in byte sequence")
	}
	b, err := base64.RawStdEncoding.DecodeString(data)
	if err != nil {
		return sfBare{}, p.errorf("bad base64 in byte sequence: %v", err)
	}
	p.pos += end + 1
	return sfBare{kind: sfBytes, b: b, unpadded: len(data) == len(content) && len(content)%4 != 0}, nil
}

// parseBoolean implements RFC 8941 section 4.2.8.
func (p *sfParser) parseBoolean() (sfBare, error) {
	p.pos++ // "?"
	switch p.peek() {
	case '1':
		p.pos++
		return sfBare{kind: sfBool, bo: true}, nil
	case '0':
		p.pos++
		return sfBare{kind: sfBool, bo: false}, nil
	}
	return sfBare{}, p.errorf("boolean must be ?0 or ?1")
}

// sfQuote serialises s as an sf-string (RFC 8941 section 4.1.6). It reports
// false if s contains characters a String cannot hold.
func sfQuote(s string) (string, bool) {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e {
			return "", false
		}
		if c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
	return b.String(), true
}

// sfBytesString serialises b as an sf-binary (RFC 8941 section 4.1.8).
func sfBytesString(b []byte) string {
	return ":" + base64.StdEncoding.EncodeToString(b) + ":"
}
