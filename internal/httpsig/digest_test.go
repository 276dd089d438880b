package httpsig

import (
	"errors"
	"strings"
	"testing"
)

func TestContentDigest(t *testing.T) {
	// RFC 9530 section 2 example.
	if got, want := ContentDigest([]byte(`{"hello": "world"}`)), "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"; got != want {
		t.Errorf("ContentDigest = %s, want %s", got, want)
	}
	if got, want := ContentDigest(nil), "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"; got != want {
		t.Errorf("ContentDigest(nil) = %s, want %s", got, want)
	}
}

func TestVerifyContentDigest(t *testing.T) {
	body := []byte(`{"hello": "world"}`)
	const (
		sha256OK  = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
		sha512OK  = "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"
		sha256Bad = "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:" // digest of the empty body
	)
	tests := []struct {
		name   string
		header string
		want   error
	}{
		{"sha-256", sha256OK, nil},
		{"sha-512", sha512OK, nil},
		{"both", sha256OK + ", " + sha512OK, nil},
		{"unknown ignored", "md5=:AAAA:, " + sha256OK + ", foo=bar, x=(1 2)", nil},
		{"params ignored", sha256OK + ";p=1", nil},
		{"unpadded", strings.TrimSuffix(sha256OK, "=:") + ":", nil},
		{"mismatch", sha256Bad, ErrDigest},
		{"one of two mismatches", sha512OK + ", " + sha256Bad, ErrDigest},
		{"truncated digest", "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9D:", ErrDigest},
		{"empty", "", ErrDigest},
		{"only unknown", "sha-1=:AAAA:, md5=:AAAA:", ErrDigest},
		{"uppercase key is malformed", "SHA-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:", ErrMalformed},
		{"string value", `sha-256="X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE="`, ErrMalformed},
		{"inner list value", "sha-256=(:AAAA:)", ErrMalformed},
		{"boolean value", "sha-256", ErrMalformed},
		{"duplicate", sha256OK + ", " + sha256Bad, ErrMalformed},
		{"garbage", "sha-256=:not base64!:", ErrMalformed},
		{"too long", "x=\"" + strings.Repeat("a", 9000) + "\", " + sha256OK, ErrMalformed},
		{"too many members", "a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, " + sha256OK, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyContentDigest(tc.header, body)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("got %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}
