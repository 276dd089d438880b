package entry

import (
	"crypto/ed25519"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/vellum-audit/vellum/api"
)

// sampleEntries are entries as the server writes them, with events of
// every shape, for the tests and the fuzz seeds.
func sampleEntries() map[string][]byte {
	priv := ed25519.NewKeyFromSeed(make([]byte, 32))
	events := map[string]string{
		"minimal":  `{"action":"user.create","actor":{"id":"alice"}}`,
		"full":     `{"action":"role.grant","actor":{"id":"a","ip":"10.0.0.1","name":"A","type":"user"},"id":"e1","metadata":{"k":[1,2,{"x":null}],"s":"q\"\\\u00e9\n","t":true,"u":-1.5e3},"outcome":"success","seq":3,"source":"svc-1","targets":[{"id":"r","type":"role"},{"id":"s","name":"S"}],"time":"2026-01-02T15:04:05Z"}`,
		"escaped":  `{"action":"a","actor":{"id":"say \"hi\""}}`,
		"unicode":  `{"action":"doc.edit","actor":{"id":"zoë","name":"Zoë 🦊"},"metadata":{"title":"naïve"}}`,
		"empty":    `{"action":"a","actor":{"id":"x"},"metadata":{},"targets":[]}`,
		"big-seq":  `{"action":"a","actor":{"id":"x"},"seq":9223372036854775807}`,
		"zero-seq": `{"action":"a","actor":{"id":"x"},"seq":0}`,
	}
	out := map[string][]byte{}
	names := slices.Sorted(maps.Keys(events))
	for i, name := range names {
		ev := events[name]
		e := Entry{V: api.EntryFormatV1, Log: "billing", Index: int64(i) * 1234567, Received: "2026-03-01T12:00:00.123456Z", KeyID: "63342c61cb07dbd8",
			Auth: AuthSignature, Event: []byte(ev), Sig: ed25519.Sign(priv, Message("billing", []byte(ev)))}
		e.Prev[0], e.Prev[31] = byte(i), 0xff
		b, err := e.Encode()
		if err != nil {
			panic(err)
		}
		out[name] = b
	}
	return out
}

// TestParseFastAgrees: on well-formed entries the fast path is taken and
// gives Parse's result; on edited ones ParseFast gives Parse's answer.
func TestParseFastAgrees(t *testing.T) {
	for name, b := range sampleEntries() {
		want, err := Parse(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, ok := parseFast(b)
		if !ok {
			if name == "escaped" { // escapes in a field go to Parse
				continue
			}
			t.Fatalf("%s: the fast path refused a well-formed entry", name)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: fast %+v, Parse %+v", name, got, want)
		}
		// Every one-byte deletion and a few substitutions.
		for i := range b {
			for _, edit := range [][]byte{
				append(append([]byte(nil), b[:i]...), b[i+1:]...),
				append(append(append([]byte(nil), b[:i]...), ' '), b[i+1:]...),
				append(append(append([]byte(nil), b[:i]...), '"'), b[i+1:]...),
				append(append(append([]byte(nil), b[:i]...), '0'), b[i+1:]...),
			} {
				checkAgree(t, edit)
			}
		}
	}
}

// checkAgree fails if the fast path accepts what Parse refuses or gives
// another result, and if ParseFast's answer is not Parse's.
func checkAgree(t *testing.T, b []byte) {
	t.Helper()
	want, werr := Parse(b)
	if got, ok := parseFast(b); ok {
		if werr != nil {
			t.Fatalf("fast path accepted %q, which Parse refuses: %v", b, werr)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: fast %+v, Parse %+v", b, got, want)
		}
	}
	got, gerr := ParseFast(b)
	if (gerr == nil) != (werr == nil) || (gerr != nil && gerr.Error() != werr.Error()) || (gerr == nil && !reflect.DeepEqual(got, want)) {
		t.Fatalf("%q: ParseFast %v, Parse %v", b, gerr, werr)
	}
}

// FuzzParseFast: the fast path accepts only what Parse accepts, with the
// same fields.
func FuzzParseFast(f *testing.F) {
	for _, b := range sampleEntries() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkAgree(t, b) })
}

// TestWriteParseFastSeeds, with VELLUM_WRITE_FUZZ_SEEDS set, rewrites the
// committed seed corpus of FuzzParseFast.
func TestWriteParseFastSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzParseFast")
	if os.Getenv("VELLUM_WRITE_FUZZ_SEEDS") == "" {
		for name, b := range sampleEntries() {
			data, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if string(data) != fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b) {
				t.Errorf("%s/%s is stale: run VELLUM_WRITE_FUZZ_SEEDS=1 go test -run TestWriteParseFastSeeds ./internal/entry/", dir, name)
			}
		}
		return
	}
	os.MkdirAll(dir, 0o755)
	for name, b := range sampleEntries() {
		if err := os.WriteFile(filepath.Join(dir, name), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	e := sampleEntries()["full"]
	for _, p := range []struct {
		name string
		fn   func([]byte) (*Entry, error)
	}{{"generic", Parse}, {"fast", ParseFast}} {
		b.Run(p.name, func(b *testing.B) {
			b.SetBytes(int64(len(e)))
			for b.Loop() {
				if _, err := p.fn(e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
