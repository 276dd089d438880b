// Package entry defines vellum's byte formats for events and entries.
//
// An event is what a producer submits; its canonical form is RFC 8785 JSON.
// A producer signs, with Ed25519, the domain-separated message
//
//	"vellum/v1/event\n" || log name || "\n" || canonical event
//
// so a signature made for one log cannot be replayed into another (log names
// cannot contain a newline).
//
// An entry is what a log stores: the RFC 8785 canonical JSON object
//
//	{"auth":…,"event":{…},"index":N,"key_id":…,"log":…,"prev":…,"received":…,"sig":…,"v":1}
//
// Its bytes are the Merkle leaf: the leaf hash is the RFC 6962 leaf hash
// SHA-256(0x00 || bytes). "prev" is the leaf hash of the entry before it
// (32 zero bytes at index 0), base64, so the entries also form a hash chain.
// [Parse] accepts only bytes that are exactly canonical, so one entry has one
// encoding and one leaf hash.
package entry

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/jcs"
)

// Auth modes recorded in entries.
const (
	AuthSignature = "signature" // the request carried an RFC 9421 signature
	AuthBearer    = "bearer"    // the request carried a bearer token
	AuthServer    = "server"    // the server wrote the entry itself
)

// ServerKeyID is the key id of entries the server signs itself, with its
// checkpoint key.
const ServerKeyID = "server"

// ReceivedLayout is the fixed-width UTC layout of the "received" field.
const ReceivedLayout = "2006-01-02T15:04:05.000000Z"

// ErrInvalidEvent is wrapped by every event validation error.
var ErrInvalidEvent = errors.New("invalid event")

// ErrInvalidEntry is wrapped by every entry parsing error.
var ErrInvalidEntry = errors.New("invalid entry")

// Limits on event fields.
const (
	MaxActionLen = 128
	MaxIDLen     = 256
	MaxTargets   = 64
)

// Event is a validated event: the decoded fields and the canonical bytes.
type Event struct {
	api.Event
	Canonical []byte
}

// ParseEvent validates raw producer JSON and returns it with its canonical
// form. It refuses duplicate keys, invalid UTF-8, unknown fields, missing
// action or actor id, bad times and outcomes.
func ParseEvent(raw []byte) (*Event, error) {
	canon, err := jcs.Canonicalize(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidEvent, strings.TrimPrefix(err.Error(), "jcs: "))
	}
	return parseCanonicalEvent(canon)
}

func parseCanonicalEvent(canon []byte) (*Event, error) {
	if len(canon) == 0 || canon[0] != '{' {
		return nil, fmt.Errorf("%w: an event must be a JSON object", ErrInvalidEvent)
	}
	dec := json.NewDecoder(bytes.NewReader(canon))
	dec.DisallowUnknownFields()
	ev := &Event{Canonical: canon}
	if err := dec.Decode(&ev.Event); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalidEvent, cleanJSONError(err))
	}
	if err := validate(&ev.Event); err != nil {
		return nil, err
	}
	return ev, nil
}

func cleanJSONError(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "json: ")
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("field %q must be %s, not %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
	}
	return s
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "int64", "int":
		return "an integer"
	case "struct", "map":
		return "an object"
	case "slice":
		return "an array"
	}
	return k
}

func validate(e *api.Event) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidEvent}, args...)...)
	}
	if e.Action == "" {
		return bad(`"action" is required (for example "user.create")`)
	}
	if len(e.Action) > MaxActionLen || !printable(e.Action) || strings.ContainsAny(e.Action, " \t") {
		return bad(`"action" must be at most %d printable characters without spaces`, MaxActionLen)
	}
	if e.Actor.ID == "" {
		return bad(`"actor.id" is required`)
	}
	for name, v := range map[string]string{"actor.id": e.Actor.ID, "actor.type": e.Actor.Type, "actor.name": e.Actor.Name, "actor.ip": e.Actor.IP, "source": e.Source, "id": e.ID} {
		if len(v) > MaxIDLen || !printable(v) {
			return bad("%q must be at most %d printable characters", name, MaxIDLen)
		}
	}
	if len(e.Targets) > MaxTargets {
		return bad("at most %d targets", MaxTargets)
	}
	for i, t := range e.Targets {
		if t.ID == "" {
			return bad(`"targets[%d].id" is required`, i)
		}
		if len(t.ID) > MaxIDLen || !printable(t.ID) || !printable(t.Type) || !printable(t.Name) {
			return bad(`"targets[%d]" fields must be printable`, i)
		}
	}
	switch e.Outcome {
	case "", "success", "failure", "unknown":
	default:
		return bad(`"outcome" must be "success", "failure" or "unknown", not %q`, e.Outcome)
	}
	if e.Time != "" {
		if _, err := time.Parse(time.RFC3339Nano, e.Time); err != nil {
			return bad(`"time" must be RFC 3339 (for example "2026-01-02T15:04:05Z"), not %q`, e.Time)
		}
	}
	if e.Seq != nil && *e.Seq < 0 {
		return bad(`"seq" must not be negative`)
	}
	if e.Metadata != nil && (len(e.Metadata) == 0 || e.Metadata[0] != '{') {
		return bad(`"metadata" must be a JSON object`)
	}
	return nil
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}

const messagePrefix = "vellum/v1/event\n"

// Message returns the bytes a producer signs for canonical event ev in log.
func Message(log string, canonicalEvent []byte) []byte {
	m := make([]byte, 0, len(messagePrefix)+len(log)+1+len(canonicalEvent))
	m = append(m, messagePrefix...)
	m = append(m, log...)
	m = append(m, '\n')
	return append(m, canonicalEvent...)
}

// Entry is a stored entry, decoded.
type Entry struct {
	V        int             `json:"v"`
	Log      string          `json:"log"`
	Index    int64           `json:"index"`
	Received string          `json:"received"`
	Prev     tlog.Hash       `json:"prev"`
	KeyID    string          `json:"key_id"`
	Auth     string          `json:"auth"`
	Event    json.RawMessage `json:"event"`
	Sig      []byte          `json:"sig"`

	received time.Time // Received parsed, when Parse or ParseFast made e
}

// Encode returns the canonical bytes of e. The fields other than Event are
// all plain ASCII without characters JSON escapes (checked), and Event must
// be canonical already, so the object is written directly in RFC 8785 order.
func (e *Entry) Encode() ([]byte, error) {
	for _, s := range []string{e.Log, e.Received, e.KeyID, e.Auth} {
		if !plainASCII(s) {
			return nil, fmt.Errorf("%w: field value %q is not plain ASCII", ErrInvalidEntry, s)
		}
	}
	b := make([]byte, 0, len(e.Event)+256)
	b = append(b, `{"auth":"`...)
	b = append(b, e.Auth...)
	b = append(b, `","event":`...)
	b = append(b, e.Event...)
	b = append(b, `,"index":`...)
	b = strconv.AppendInt(b, e.Index, 10)
	b = append(b, `,"key_id":"`...)
	b = append(b, e.KeyID...)
	b = append(b, `","log":"`...)
	b = append(b, e.Log...)
	b = append(b, `","prev":"`...)
	b = base64.StdEncoding.AppendEncode(b, e.Prev[:])
	b = append(b, `","received":"`...)
	b = append(b, e.Received...)
	b = append(b, `","sig":"`...)
	b = base64.StdEncoding.AppendEncode(b, e.Sig)
	b = append(b, `","v":`...)
	b = strconv.AppendInt(b, int64(e.V), 10)
	b = append(b, '}')
	return b, nil
}

func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// Parse decodes stored entry bytes, refusing anything that is not exactly
// the canonical encoding of a well-formed entry.
func Parse(data []byte) (*Entry, error) {
	if len(data) > api.MaxEntrySize {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrInvalidEntry, len(data), api.MaxEntrySize)
	}
	var e Entry
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidEntry, err)
	}
	if e.V != api.EntryFormatV1 {
		return nil, fmt.Errorf("%w: unknown format version %d", ErrInvalidEntry, e.V)
	}
	if _, err := parseCanonicalEvent(e.Event); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidEntry, err)
	}
	if len(e.Sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: signature has %d bytes", ErrInvalidEntry, len(e.Sig))
	}
	t, err := time.Parse(ReceivedLayout, e.Received)
	if err != nil {
		return nil, fmt.Errorf("%w: bad received time %q", ErrInvalidEntry, e.Received)
	}
	e.received = t
	again, err := e.Encode()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(again, data) {
		return nil, fmt.Errorf("%w: not in canonical form", ErrInvalidEntry)
	}
	return &e, nil
}

// ReceivedTime is the parsed "received" field.
func (e *Entry) ReceivedTime() time.Time {
	if !e.received.IsZero() {
		return e.received
	}
	t, _ := time.Parse(ReceivedLayout, e.Received)
	return t
}

// FormatReceived formats t for the "received" field.
func FormatReceived(t time.Time) string { return t.UTC().Format(ReceivedLayout) }

// Message is the signed message of e's event.
func (e *Entry) Message() []byte { return Message(e.Log, e.Event) }

// LeafHash is the RFC 6962 leaf hash of entry bytes.
func LeafHash(data []byte) tlog.Hash { return tlog.RecordHash(data) }
