package keys

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestTokenRoundTrip(t *testing.T) {
	tok, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	s := tok.Encode()
	if !strings.HasPrefix(s, TokenPrefix+tok.ID()+"_") {
		t.Fatalf("token %q lacks prefix and id", s)
	}
	got, err := ParseToken(" " + s + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID() != tok.ID() || !bytes.Equal(got.PublicKey(), tok.PublicKey()) || !bytes.Equal(got.BearerVerifier(), tok.BearerVerifier()) {
		t.Fatal("parsed token differs")
	}
	if bytes.Equal(tok.BearerVerifier(), tok.SigningKey().Seed()) {
		t.Fatal("bearer verifier equals signing seed: labels not distinct")
	}
	if KeyID(tok.PublicKey()) != tok.ID() || !ValidKeyID(tok.ID()) {
		t.Fatal("key id not derived from public key")
	}
}

func TestTokenRefusals(t *testing.T) {
	tok, _ := NewToken()
	s := tok.Encode()
	other, _ := NewToken()
	flip := []byte(s)
	if flip[len(flip)-10] == 'B' {
		flip[len(flip)-10] = 'C'
	} else {
		flip[len(flip)-10] = 'B'
	}
	// The last character carries 2 unused bits: a token that decodes to the
	// same secret but is spelled differently is refused too.
	last := []byte(s)
	switch last[len(last)-1] {
	case 'A':
		last[len(last)-1] = 'B'
	default:
		last[len(last)-1]++
	}
	cases := []struct{ name, in string }{
		{"empty", ""},
		{"no prefix", strings.TrimPrefix(s, TokenPrefix)},
		{"wrong prefix", "ghp_" + strings.TrimPrefix(s, TokenPrefix)},
		{"truncated", s[:len(s)-1]},
		{"flipped char", string(flip)},
		{"non-canonical last char", string(last)},
		{"swapped id", TokenPrefix + other.ID() + s[len(TokenPrefix)+16:]},
		{"upper id", TokenPrefix + strings.ToUpper(tok.ID()) + s[len(TokenPrefix)+16:]},
		{"no separator", strings.Replace(s, tok.ID()+"_", tok.ID(), 1)},
		{"lowercase secret", strings.ToLower(s)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := ParseToken(c.in); err == nil {
				t.Fatalf("ParseToken(%q) succeeded", c.in)
			}
		})
	}
}

func TestTokenNeverPrinted(t *testing.T) {
	tok, _ := NewToken()
	secret := tok.Encode()
	var buf bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&buf, nil))
	l.Info("x", "token", tok)
	for _, out := range []string{buf.String(), fmt.Sprint(tok), fmt.Sprintf("%v %+v %#v %s %q", tok, tok, tok, tok, tok), tok.String()} {
		if strings.Contains(out, secret[len(TokenPrefix)+17:]) {
			t.Fatalf("secret leaked in %q", out)
		}
	}
}

func FuzzParseToken(f *testing.F) {
	tok, _ := NewToken()
	f.Add(tok.Encode())
	f.Add("vlm_0123456789abcdef_AAAA")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			return
		}
		again, err := ParseToken(tok.Encode())
		if err != nil || again.ID() != tok.ID() {
			t.Fatalf("re-encoded token does not parse: %v", err)
		}
	})
}

func TestBearerCredential(t *testing.T) {
	tok, _ := NewToken()
	cred := tok.BearerCredential()
	if strings.Contains(cred, tok.Encode()[len(TokenPrefix)+17:]) {
		t.Fatal("bearer credential contains the secret")
	}
	id, v, err := ParseBearer(cred)
	if err != nil || id != tok.ID() || !bytes.Equal(v, tok.BearerVerifier()) {
		t.Fatalf("%v", err)
	}
	for _, bad := range []string{tok.Encode(), cred[:len(cred)-1], strings.Replace(cred, tok.ID(), "0000000000000000", 1), ""} {
		if _, _, err := ParseBearer(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParseBearer(f *testing.F) {
	tok, _ := NewToken()
	f.Add(tok.BearerCredential())
	f.Add("vlmb_0123456789abcdef_AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		id, v, err := ParseBearer(s)
		if err == nil && (!ValidKeyID(id) || len(v) != 32) {
			t.Fatal("bad credential accepted")
		}
	})
}
