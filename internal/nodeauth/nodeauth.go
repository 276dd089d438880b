// Package nodeauth authenticates requests between the vellum nodes of one
// deployment (a node forwarding a sequencer round to the node that holds the
// log's lease). Every node holds the same server key (outside the
// database); the node-auth key is derived from it with HKDF-SHA256 under a
// label of its own, so it is good for nothing else, and anyone without the
// server key cannot make it.
//
// A request carries three headers: Vellum-Node-Time (Unix seconds),
// Vellum-Node-Nonce (random, base64url) and Vellum-Node-Auth, the
// base64url HMAC-SHA256 under the node-auth key of
//
//	"vellum node-auth v1\n" method "\n" path?query "\n" time "\n" nonce "\n" hex(SHA-256(body))
//
// The receiver refuses a time more than Window from its own clock, a nonce
// it has seen within the window (a replay) and any other MAC.
package nodeauth

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/vellum-audit/vellum/internal/httpsig"
)

// Header names.
const (
	HeaderTime  = "Vellum-Node-Time"
	HeaderNonce = "Vellum-Node-Nonce"
	HeaderAuth  = "Vellum-Node-Auth"
)

// Window is how far a request's time may be from the receiver's clock.
const Window = 30 * time.Second

const label = "vellum node-auth v1"

// ErrUnauthenticated is any refused request.
var ErrUnauthenticated = errors.New("not authenticated as a vellum node of this deployment")

// Key is a node-auth key.
type Key struct{ k []byte }

// DeriveKey derives the node-auth key from the server key's Ed25519 seed.
func DeriveKey(serverSeed []byte) (*Key, error) {
	if len(serverSeed) < 32 {
		return nil, errors.New("nodeauth: server key seed too short")
	}
	k, err := hkdf.Key(sha256.New, serverSeed, nil, label, 32)
	if err != nil {
		return nil, err
	}
	return &Key{k: k}, nil
}

func (k *Key) mac(method, target, ts, nonce string, body []byte) []byte {
	d := sha256.Sum256(body)
	m := hmac.New(sha256.New, k.k)
	fmt.Fprintf(m, "%s\n%s\n%s\n%s\n%s\n%s", label, method, target, ts, nonce, hex.EncodeToString(d[:]))
	return m.Sum(nil)
}

func target(r *http.Request) string {
	if r.URL.RawQuery != "" {
		return r.URL.EscapedPath() + "?" + r.URL.RawQuery
	}
	return r.URL.EscapedPath()
}

// Sign adds the node-auth headers to r, whose body is body.
func (k *Key) Sign(r *http.Request, body []byte, now time.Time) {
	var nb [16]byte
	rand.Read(nb[:])
	nonce := base64.RawURLEncoding.EncodeToString(nb[:])
	ts := strconv.FormatInt(now.Unix(), 10)
	r.Header.Set(HeaderTime, ts)
	r.Header.Set(HeaderNonce, nonce)
	r.Header.Set(HeaderAuth, base64.RawURLEncoding.EncodeToString(k.mac(r.Method, target(r), ts, nonce, body)))
}

// Verifier checks node-auth headers and remembers nonces.
type Verifier struct {
	key    *Key
	nonces *httpsig.NonceCache
}

// NewVerifier returns a Verifier for key.
func NewVerifier(key *Key) *Verifier {
	return &Verifier{key: key, nonces: httpsig.NewNonceCache(2*Window+time.Minute, 1<<20)}
}

// Precheck refuses, before the body is read, a request without the
// headers or whose time is outside the window (a cheap filter: the time is
// authenticated by Verify).
func (v *Verifier) Precheck(r *http.Request, now time.Time) error {
	ts := r.Header.Get(HeaderTime)
	if ts == "" || r.Header.Get(HeaderNonce) == "" || r.Header.Get(HeaderAuth) == "" {
		return fmt.Errorf("%w: no node-auth headers", ErrUnauthenticated)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: bad %s", ErrUnauthenticated, HeaderTime)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > Window || d < -Window {
		return fmt.Errorf("%w: the request's time is %v from this node's clock (at most %v)", ErrUnauthenticated, d.Round(time.Second), Window)
	}
	return nil
}

// Verify checks r (whose body is body) at now. Its errors wrap
// ErrUnauthenticated and say why, for the server's log (never the key).
func (v *Verifier) Verify(r *http.Request, body []byte, now time.Time) error {
	ts, nonce, auth := r.Header.Get(HeaderTime), r.Header.Get(HeaderNonce), r.Header.Get(HeaderAuth)
	if ts == "" || nonce == "" || auth == "" {
		return fmt.Errorf("%w: no node-auth headers", ErrUnauthenticated)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: bad %s", ErrUnauthenticated, HeaderTime)
	}
	got, err := base64.RawURLEncoding.DecodeString(auth)
	if err != nil || !hmac.Equal(got, v.key.mac(r.Method, target(r), ts, nonce, body)) {
		return fmt.Errorf("%w: the MAC does not verify", ErrUnauthenticated)
	}
	created := time.Unix(sec, 0)
	if d := now.Sub(created); d > Window || d < -Window {
		return fmt.Errorf("%w: the request's time is %v from this node's clock (at most %v)", ErrUnauthenticated, d.Round(time.Second), Window)
	}
	if err := v.nonces.Check("node", nonce, created, now); err != nil {
		return fmt.Errorf("%w: nonce: %v", ErrUnauthenticated, err)
	}
	return nil
}
