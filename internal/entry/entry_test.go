package entry

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"

	"github.com/vellum-audit/vellum/api"
)

func TestParseEvent(t *testing.T) {
	cases := []struct {
		name, in string
		ok       bool
		want     string // substring of the error
	}{
		{"minimal", `{"action":"user.create","actor":{"id":"alice"}}`, true, ""},
		{"full", `{"time":"2026-01-02T15:04:05Z","action":"role.grant","actor":{"id":"a","type":"user","name":"A","ip":"10.0.0.1"},"targets":[{"id":"r","type":"role"}],"outcome":"success","source":"svc-1","id":"e1","seq":3,"metadata":{"k":[1,2,{"x":null}]}}`, true, ""},
		{"not object", `[1]`, false, "JSON object"},
		{"missing action", `{"actor":{"id":"a"}}`, false, `"action" is required`},
		{"missing actor", `{"action":"a"}`, false, `"actor.id" is required`},
		{"unknown field", `{"action":"a","actor":{"id":"a"},"color":"red"}`, false, "unknown field"},
		{"unknown actor field", `{"action":"a","actor":{"id":"a","age":3}}`, false, "unknown field"},
		{"duplicate key", `{"action":"a","action":"b","actor":{"id":"a"}}`, false, "duplicate"},
		{"bad outcome", `{"action":"a","actor":{"id":"a"},"outcome":"ok"}`, false, `"outcome"`},
		{"bad time", `{"action":"a","actor":{"id":"a"},"time":"yesterday"}`, false, `"time"`},
		{"negative seq", `{"action":"a","actor":{"id":"a"},"seq":-1}`, false, `"seq"`},
		{"fractional seq", `{"action":"a","actor":{"id":"a"},"seq":1.5}`, false, "seq"},
		{"huge seq", `{"action":"a","actor":{"id":"a"},"seq":123456789012345678901}`, false, ""},
		{"metadata not object", `{"action":"a","actor":{"id":"a"},"metadata":[1]}`, false, `"metadata"`},
		{"target without id", `{"action":"a","actor":{"id":"a"},"targets":[{"type":"x"}]}`, false, `targets[0].id`},
		{"action with space", `{"action":"a b","actor":{"id":"a"}}`, false, `"action"`},
		{"control char in actor", "{\"action\":\"a\",\"actor\":{\"id\":\"a\\u0000b\"}}", false, "printable"},
		{"invalid utf8", "{\"action\":\"a\xff\",\"actor\":{\"id\":\"a\"}}", false, "UTF-8"},
		{"trailing garbage", `{"action":"a","actor":{"id":"a"}} x`, false, ""},
		{"wrong type", `{"action":3,"actor":{"id":"a"}}`, false, `"action"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev, err := ParseEvent([]byte(c.in))
			if c.ok {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				again, err := ParseEvent(ev.Canonical)
				if err != nil || !bytes.Equal(again.Canonical, ev.Canonical) {
					t.Fatalf("canonical form not stable: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrInvalidEvent) {
				t.Fatalf("error does not wrap ErrInvalidEvent: %v", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not mention %q", err, c.want)
			}
		})
	}
}

func TestEntryRoundTrip(t *testing.T) {
	ev, err := ParseEvent([]byte(`{"actor":{"id":"alice"},"action":"user.create","metadata":{"note":"<&>\u2028é"}}`))
	if err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	e := Entry{V: api.EntryFormatV1, Log: "billing", Index: 42, Received: "2026-01-02T03:04:05.000006Z", KeyID: "0123456789abcdef", Auth: AuthSignature, Event: ev.Canonical}
	e.Prev[0] = 9
	e.Sig = ed25519.Sign(priv, Message(e.Log, e.Event))
	data, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(data)
	if err != nil {
		t.Fatalf("Parse(Encode(e)): %v\n%s", err, data)
	}
	if got.Index != 42 || got.Prev != e.Prev || !bytes.Equal(got.Event, e.Event) || !ed25519.Verify(priv.Public().(ed25519.PublicKey), got.Message(), got.Sig) {
		t.Fatal("round trip changed the entry")
	}
	// Any non-canonical variant is refused.
	for name, bad := range map[string][]byte{
		"whitespace":    bytes.Replace(data, []byte(`,"index"`), []byte(`, "index"`), 1),
		"reordered":     bytes.Replace(data, []byte(`{"auth":"signature",`), []byte(`{`), 1),
		"escaped slash": bytes.Replace(data, []byte(`"billing"`), []byte(`"bill\u0069ng"`), 1),
	} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("%s: accepted a non-canonical entry", name)
		}
	}
}

func TestMessageDomainSeparation(t *testing.T) {
	a := Message("billing", []byte(`{}`))
	b := Message("billing2", []byte(`{}`))
	if bytes.Equal(a, b) || !bytes.HasPrefix(a, []byte("vellum/v1/event\n")) {
		t.Fatal("messages of different logs must differ")
	}
}

func FuzzParseEvent(f *testing.F) {
	for _, s := range []string{
		`{"action":"user.create","actor":{"id":"alice"}}`,
		`{"time":"2026-01-02T15:04:05Z","action":"role.grant","actor":{"id":"a","type":"user"},"targets":[{"id":"r"}],"outcome":"success","source":"s","id":"e1","seq":3,"metadata":{"k":[1,2.5e3,{"x":null}]}}`,
		`{"action":"a","action":"b","actor":{"id":"a"}}`,
		`{"action":"a","actor":{"id":"a"},"metadata":{"deep":[[[[[[]]]]]]}}`,
		"\x00", `[]`, `{"action":"\ud800","actor":{"id":"a"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := ParseEvent(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidEvent) {
				t.Fatalf("error does not wrap ErrInvalidEvent: %v", err)
			}
			return
		}
		again, err := ParseEvent(ev.Canonical)
		if err != nil || !bytes.Equal(again.Canonical, ev.Canonical) {
			t.Fatalf("canonical form not a fixed point: %v", err)
		}
	})
}

func FuzzParseEntry(f *testing.F) {
	ev, _ := ParseEvent([]byte(`{"action":"a","actor":{"id":"b"}}`))
	e := Entry{V: 1, Log: "l", Index: 1, Received: "2026-01-02T03:04:05.000006Z", KeyID: "k", Auth: AuthSignature, Event: ev.Canonical, Sig: make([]byte, 64)}
	good, _ := e.Encode()
	f.Add(good)
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Parse(data)
		if err != nil {
			return
		}
		again, err := e.Encode()
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("parsed entry does not re-encode to the same bytes")
		}
	})
}
