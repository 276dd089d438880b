package entry

import (
	"bytes"
	"encoding/base64"
	"strconv"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/vellum-audit/vellum/api"
)

// ParseFast is Parse for the verification hot path: same result, same
// errors, several times faster on ordinary entries. It reads the entry's
// fixed layout directly and checks the event with a small scanner; any
// entry it is not sure about (escapes in the event's fields, whitespace,
// duplicate or unexpected keys, invalid UTF-8, anything malformed) goes to
// Parse, which stays the reference. So ParseFast accepts an entry only
// when Parse does, with the same fields (FuzzParseFast checks it).
func ParseFast(data []byte) (*Entry, error) {
	if e, ok := parseFast(data); ok {
		return e, nil
	}
	return Parse(data)
}

// parseFast returns the entry and true only when it is sure Parse accepts
// data with that result.
func parseFast(data []byte) (*Entry, bool) {
	const (
		head    = `{"auth":"`
		evKey   = `","event":`
		idxKey  = `,"index":`
		keyKey  = `,"key_id":"`
		logKey  = `","log":"`
		prevKey = `","prev":"`
		recvKey = `","received":"`
		sigKey  = `","sig":"`
		tail    = `","v":1}`
		prevLen = 44 // base64 of 32 bytes
		sigLen  = 88 // base64 of 64 bytes
	)
	if len(data) > api.MaxEntrySize || !bytes.HasPrefix(data, []byte(head)) || !bytes.HasSuffix(data, []byte(tail)) || !utf8.Valid(data) {
		return nil, false
	}
	var e Entry
	e.V = api.EntryFormatV1
	// From the front: auth, then the event's start.
	rest := data[len(head):]
	q := bytes.IndexByte(rest, '"')
	if q < 0 {
		return nil, false
	}
	e.Auth = string(rest[:q])
	rest = rest[q:]
	if !bytes.HasPrefix(rest, []byte(evKey)) {
		return nil, false
	}
	evStart := len(data) - len(rest) + len(evKey)

	// From the back: the fields after the event hold no '"'.
	end := len(data) - len(tail)
	field := func(key string, n int) ([]byte, bool) {
		// n > 0: the value has n bytes; n == 0: up to the previous '"'.
		var start int
		if n > 0 {
			start = end - n
		} else {
			start = bytes.LastIndexByte(data[:end], '"') + 1
		}
		if start < len(key) || string(data[start-len(key):start]) != key {
			return nil, false
		}
		v := data[start:end]
		end = start - len(key)
		return v, plainASCII(string(v))
	}
	sig, ok := field(sigKey, sigLen)
	if !ok {
		return nil, false
	}
	recv, ok := field(recvKey, len(ReceivedLayout))
	if !ok {
		return nil, false
	}
	e.Received = string(recv)
	prev, ok := field(prevKey, prevLen)
	if !ok {
		return nil, false
	}
	log, ok := field(logKey, 0)
	if !ok {
		return nil, false
	}
	e.Log = string(log)
	// key_id: its opening quote ends `,"key_id":"`.
	keyID, ok := field(keyKey, 0)
	if !ok {
		return nil, false
	}
	e.KeyID = string(keyID)
	// index: digits back to `,"index":`.
	i := end
	for i > 0 && data[i-1] >= '0' && data[i-1] <= '9' {
		i--
	}
	digits := data[i:end]
	if len(digits) == 0 || (len(digits) > 1 && digits[0] == '0') || i < len(idxKey) || string(data[i-len(idxKey):i]) != idxKey {
		return nil, false
	}
	idx, err := strconv.ParseInt(string(digits), 10, 64)
	if err != nil {
		return nil, false
	}
	e.Index = idx
	evEnd := i - len(idxKey)
	if evEnd <= evStart {
		return nil, false
	}
	if !plainASCII(e.Auth) || !plainASCII(e.Log) || !plainASCII(e.KeyID) {
		return nil, false
	}

	// Fixed-width fields, canonical base64 (re-encoding gives them back).
	var pb [33]byte // DecodedLen(44)
	var again [sigLen]byte
	if n, err := base64.StdEncoding.Strict().Decode(pb[:], prev); err != nil || n != 32 {
		return nil, false
	}
	if base64.StdEncoding.Encode(again[:prevLen], pb[:32]); !bytes.Equal(again[:prevLen], prev) {
		return nil, false
	}
	e.Prev = [32]byte(pb[:32])
	e.Sig = make([]byte, 66)
	if n, err := base64.StdEncoding.Strict().Decode(e.Sig, sig); err != nil || n != 64 {
		return nil, false
	}
	e.Sig = e.Sig[:64:64]
	if base64.StdEncoding.Encode(again[:], e.Sig); !bytes.Equal(again[:], sig) {
		return nil, false
	}
	t, err := time.Parse(ReceivedLayout, e.Received)
	if err != nil {
		return nil, false
	}
	e.received = t

	// The event: one JSON object that decodes into api.Event and passes
	// the same validation as in Parse.
	ev := data[evStart:evEnd]
	var sc eventScanner
	if !sc.event(ev) || validate(&sc.ev) != nil {
		return nil, false
	}
	e.Event = bytes.Clone(ev)
	return &e, true
}

// eventScanner decodes a canonical-looking event into api.Event, giving up
// (false) on anything it does not handle exactly as encoding/json would.
type eventScanner struct {
	b   []byte
	p   int
	ev  api.Event
	err bool
}

func (s *eventScanner) event(b []byte) bool {
	s.b, s.p = b, 0
	seen := 0
	ok := s.object(func(key string) bool {
		bit := 0
		switch key {
		case "time":
			bit = 1
		case "action":
			bit = 2
		case "actor":
			bit = 4
		case "targets":
			bit = 8
		case "outcome":
			bit = 16
		case "source":
			bit = 32
		case "id":
			bit = 64
		case "seq":
			bit = 128
		case "metadata":
			bit = 256
		default:
			return false
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		switch key {
		case "time":
			return s.str(&s.ev.Time)
		case "action":
			return s.str(&s.ev.Action)
		case "actor":
			a := &s.ev.Actor
			aseen := 0
			return s.object(func(k string) bool {
				var dst *string
				bit := 0
				switch k {
				case "id":
					dst, bit = &a.ID, 1
				case "type":
					dst, bit = &a.Type, 2
				case "name":
					dst, bit = &a.Name, 4
				case "ip":
					dst, bit = &a.IP, 8
				default:
					return false
				}
				if aseen&bit != 0 {
					return false
				}
				aseen |= bit
				return s.str(dst)
			})
		case "targets":
			return s.targets()
		case "outcome":
			return s.str(&s.ev.Outcome)
		case "source":
			return s.str(&s.ev.Source)
		case "id":
			return s.str(&s.ev.ID)
		case "seq":
			return s.seq()
		case "metadata":
			start := s.p
			if s.p >= len(s.b) || s.b[s.p] != '{' || !s.value(0) {
				return false
			}
			s.ev.Metadata = s.b[start:s.p]
			return true
		}
		return false
	})
	return ok && s.p == len(s.b)
}

// object reads {"k":v,…}, calling member for each key with s.p at the
// value; member reads the value.
func (s *eventScanner) object(member func(key string) bool) bool {
	if s.p >= len(s.b) || s.b[s.p] != '{' {
		return false
	}
	s.p++
	if s.p < len(s.b) && s.b[s.p] == '}' {
		s.p++
		return true
	}
	for {
		var k string
		if !s.str(&k) || s.p >= len(s.b) || s.b[s.p] != ':' {
			return false
		}
		s.p++
		if !member(k) {
			return false
		}
		if s.p >= len(s.b) {
			return false
		}
		switch s.b[s.p] {
		case ',':
			s.p++
		case '}':
			s.p++
			return true
		default:
			return false
		}
	}
}

// str reads a string without escapes or control characters (whose value
// is then its bytes). The string shares s.b's memory: the decoded event
// is only validated, never kept.
func (s *eventScanner) str(dst *string) bool {
	if s.p >= len(s.b) || s.b[s.p] != '"' {
		return false
	}
	for i := s.p + 1; i < len(s.b); i++ {
		switch c := s.b[i]; {
		case c == '"':
			if i > s.p+1 {
				*dst = unsafe.String(&s.b[s.p+1], i-s.p-1)
			} else {
				*dst = ""
			}
			s.p = i + 1
			return true
		case c == '\\' || c < 0x20:
			return false
		}
	}
	return false
}

func (s *eventScanner) targets() bool {
	if s.p >= len(s.b) || s.b[s.p] != '[' {
		return false
	}
	s.p++
	s.ev.Targets = []api.Target{}
	if s.p < len(s.b) && s.b[s.p] == ']' {
		s.p++
		return true
	}
	for {
		var t api.Target
		tseen := 0
		ok := s.object(func(k string) bool {
			var dst *string
			bit := 0
			switch k {
			case "id":
				dst, bit = &t.ID, 1
			case "type":
				dst, bit = &t.Type, 2
			case "name":
				dst, bit = &t.Name, 4
			default:
				return false
			}
			if tseen&bit != 0 {
				return false
			}
			tseen |= bit
			return s.str(dst)
		})
		if !ok || s.p >= len(s.b) {
			return false
		}
		s.ev.Targets = append(s.ev.Targets, t)
		switch s.b[s.p] {
		case ',':
			s.p++
		case ']':
			s.p++
			return true
		default:
			return false
		}
	}
}

// seq reads a non-negative integer without leading zeros that fits int64.
func (s *eventScanner) seq() bool {
	i := s.p
	for i < len(s.b) && s.b[i] >= '0' && s.b[i] <= '9' {
		i++
	}
	d := s.b[s.p:i]
	if len(d) == 0 || (len(d) > 1 && d[0] == '0') {
		return false
	}
	if i < len(s.b) && (s.b[i] == '.' || s.b[i] == 'e' || s.b[i] == 'E') {
		return false
	}
	n, err := strconv.ParseInt(string(d), 10, 64)
	if err != nil {
		return false
	}
	s.ev.Seq = &n
	s.p = i
	return true
}

// value skips one JSON value without whitespace (validating its syntax as
// encoding/json's scanner does), up to a nesting depth.
func (s *eventScanner) value(depth int) bool {
	if depth > 100 || s.p >= len(s.b) {
		return false
	}
	switch c := s.b[s.p]; {
	case c == '{':
		return s.object(func(string) bool { return s.value(depth + 1) })
	case c == '[':
		s.p++
		if s.p < len(s.b) && s.b[s.p] == ']' {
			s.p++
			return true
		}
		for {
			if !s.value(depth+1) || s.p >= len(s.b) {
				return false
			}
			switch s.b[s.p] {
			case ',':
				s.p++
			case ']':
				s.p++
				return true
			default:
				return false
			}
		}
	case c == '"':
		return s.anyString()
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	}
	return false
}

func (s *eventScanner) literal(l string) bool {
	if !bytes.HasPrefix(s.b[s.p:], []byte(l)) {
		return false
	}
	s.p += len(l)
	return true
}

// anyString skips a string with valid escapes.
func (s *eventScanner) anyString() bool {
	for i := s.p + 1; i < len(s.b); i++ {
		switch c := s.b[i]; {
		case c == '"':
			s.p = i + 1
			return true
		case c < 0x20:
			return false
		case c == '\\':
			i++
			if i >= len(s.b) {
				return false
			}
			switch s.b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(s.b) {
					return false
				}
				for _, h := range s.b[i+1 : i+5] {
					if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						return false
					}
				}
				i += 4
			default:
				return false
			}
		}
	}
	return false
}

// number skips a JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *eventScanner) number() bool {
	b, i := s.b, s.p
	digits := func() bool {
		j := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i > j
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	if i < len(b) && b[i] == '0' {
		i++
	} else if !digits() {
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			return false
		}
	}
	s.p = i
	return true
}
