// Package keys holds vellum's provisioning-key material: the token format,
// the derivation of signing and bearer keys from a token's secret, and key ids.
//
// A token is what a producer is given, once:
//
//	vlm_<key id>_<base32(secret || crc32)>
//
// where the key id is 16 lowercase hex digits derived from the public key
// (see [KeyID]), the secret is 32 bytes from crypto/rand and the CRC-32
// (IEEE) covers the prefix, the key id and the secret, so that a mistyped or
// truncated token is refused before any network round trip and secret
// scanners can recognise vellum tokens by their prefix and checksum.
//
// From the secret, HKDF-SHA256 with distinct labels derives the Ed25519
// signing seed and the bearer verifier. The server stores only the public key
// (and, for keys allowed bearer use, a hash of the bearer verifier), so a
// leak of the server's database yields no working key.
//
// Token and its derived keys implement [slog.LogValuer] and fmt.Stringer
// with redacted output: they cannot be logged by accident.
package keys

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"strings"
)

// TokenPrefix starts every vellum token; secret scanners match on it.
const TokenPrefix = "vlm_"

const (
	secretSize   = 32
	keyIDHexLen  = 16
	labelSigning = "vellum/v1/ed25519-signing-seed"
	labelBearer  = "vellum/v1/bearer-verifier"
	labelKeyID   = "vellum/v1/key-id\x00"
)

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// ErrMalformedToken is returned by [ParseToken] for anything that is not a
// well-formed token with a correct checksum.
var ErrMalformedToken = errors.New("malformed provisioning key token")

// Token is a provisioning key's secret. Its zero value is not usable.
type Token struct {
	id     string
	secret [secretSize]byte
	priv   ed25519.PrivateKey
}

// NewToken generates a new token from crypto/rand.
func NewToken() (*Token, error) {
	var s [secretSize]byte
	if _, err := rand.Read(s[:]); err != nil {
		return nil, fmt.Errorf("generating key secret: %w", err)
	}
	return tokenFromSecret(s), nil
}

func tokenFromSecret(s [secretSize]byte) *Token {
	seed := derive(s[:], labelSigning, ed25519.SeedSize)
	priv := ed25519.NewKeyFromSeed(seed)
	t := &Token{secret: s, priv: priv}
	t.id = KeyID(priv.Public().(ed25519.PublicKey))
	return t
}

func derive(secret []byte, label string, n int) []byte {
	out, err := hkdf.Key(sha256.New, secret, nil, label, n)
	if err != nil {
		panic(err) // only for n out of range, a programming error
	}
	return out
}

// ParseToken parses and checks a token string. Surrounding white space is
// ignored (tokens are often read from files).
func ParseToken(s string) (*Token, error) {
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, TokenPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: does not start with %q", ErrMalformedToken, TokenPrefix)
	}
	id, body, ok := strings.Cut(rest, "_")
	if !ok || len(id) != keyIDHexLen || !isLowerHex(id) {
		return nil, fmt.Errorf("%w: bad key id part", ErrMalformedToken)
	}
	raw, err := b32.DecodeString(body)
	if err != nil || len(raw) != secretSize+4 || b32.EncodeToString(raw) != body {
		return nil, fmt.Errorf("%w: bad secret part", ErrMalformedToken)
	}
	var sec [secretSize]byte
	copy(sec[:], raw[:secretSize])
	want := binary.BigEndian.Uint32(raw[secretSize:])
	if checksum(id, sec[:]) != want {
		return nil, fmt.Errorf("%w: checksum mismatch (mistyped or truncated?)", ErrMalformedToken)
	}
	t := tokenFromSecret(sec)
	if subtle.ConstantTimeCompare([]byte(t.id), []byte(id)) != 1 {
		return nil, fmt.Errorf("%w: key id does not match secret", ErrMalformedToken)
	}
	return t, nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func checksum(id string, secret []byte) uint32 {
	h := crc32.NewIEEE()
	h.Write([]byte(TokenPrefix))
	h.Write([]byte(id))
	h.Write(secret)
	return h.Sum32()
}

// Encode returns the full secret token. Handle with care: it is the only
// place the secret leaves this package.
func (t *Token) Encode() string {
	raw := make([]byte, secretSize+4)
	copy(raw, t.secret[:])
	binary.BigEndian.PutUint32(raw[secretSize:], checksum(t.id, t.secret[:]))
	return TokenPrefix + t.id + "_" + b32.EncodeToString(raw)
}

// ID is the token's key id.
func (t *Token) ID() string { return t.id }

// SigningKey is the Ed25519 private key derived from the secret.
func (t *Token) SigningKey() ed25519.PrivateKey { return t.priv }

// PublicKey is the Ed25519 public key the server registers.
func (t *Token) PublicKey() ed25519.PublicKey { return t.priv.Public().(ed25519.PublicKey) }

// BearerVerifier is the secret a bearer-mode client presents; the server
// keeps only [BearerHash] of it.
func (t *Token) BearerVerifier() []byte { return derive(t.secret[:], labelBearer, 32) }

// String is redacted.
func (t *Token) String() string { return TokenPrefix + t.id + "_REDACTED" }

// LogValue is redacted.
func (t *Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("key_id", t.id), slog.String("secret", "REDACTED"))
}

// GoString is redacted, so %#v cannot print the secret either.
func (t *Token) GoString() string { return t.String() }

// Format makes every fmt verb print the redacted form.
func (t *Token) Format(f fmt.State, _ rune) { fmt.Fprint(f, t.String()) }

// KeyID derives a key id from an Ed25519 public key: the first 8 bytes of
// SHA-256("vellum/v1/key-id\x00" || pub), in hex.
func KeyID(pub ed25519.PublicKey) string {
	h := sha256.New()
	h.Write([]byte(labelKeyID))
	h.Write(pub)
	return hex.EncodeToString(h.Sum(nil)[:keyIDHexLen/2])
}

// BearerHash is what the server stores for a bearer-capable key.
func BearerHash(verifier []byte) [32]byte { return sha256.Sum256(verifier) }

// ValidKeyID reports whether s has the form of a key id.
func ValidKeyID(s string) bool { return len(s) == keyIDHexLen && isLowerHex(s) }

// BearerPrefix starts every bearer credential.
const BearerPrefix = "vlmb_"

// BearerCredential is what a bearer-mode client sends in
// "Authorization: Bearer …": the key id and the bearer verifier, with a
// checksum. It is derived from the token but does not contain the secret,
// so a server or proxy that sees it cannot sign as the key.
func (t *Token) BearerCredential() string {
	v := t.BearerVerifier()
	raw := make([]byte, len(v)+4)
	copy(raw, v)
	binary.BigEndian.PutUint32(raw[len(v):], bearerChecksum(t.id, v))
	return BearerPrefix + t.id + "_" + b32.EncodeToString(raw)
}

func bearerChecksum(id string, v []byte) uint32 {
	h := crc32.NewIEEE()
	h.Write([]byte(BearerPrefix))
	h.Write([]byte(id))
	h.Write(v)
	return h.Sum32()
}

// ParseBearer parses a bearer credential into the key id and verifier.
func ParseBearer(s string) (id string, verifier []byte, err error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), BearerPrefix)
	if !ok {
		return "", nil, fmt.Errorf("%w: a bearer credential starts with %q", ErrMalformedToken, BearerPrefix)
	}
	id, body, ok := strings.Cut(rest, "_")
	if !ok || !ValidKeyID(id) {
		return "", nil, fmt.Errorf("%w: bad key id part", ErrMalformedToken)
	}
	raw, err := b32.DecodeString(body)
	if err != nil || len(raw) != 36 || b32.EncodeToString(raw) != body {
		return "", nil, fmt.Errorf("%w: bad verifier part", ErrMalformedToken)
	}
	if bearerChecksum(id, raw[:32]) != binary.BigEndian.Uint32(raw[32:]) {
		return "", nil, fmt.Errorf("%w: checksum mismatch", ErrMalformedToken)
	}
	return id, raw[:32], nil
}
