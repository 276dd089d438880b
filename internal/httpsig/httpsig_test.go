package httpsig

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

var (
	testSeed = bytes.Repeat([]byte{7}, ed25519.SeedSize)
	testPriv = ed25519.NewKeyFromSeed(testSeed)
	testPub  = testPriv.Public().(ed25519.PublicKey)
	testNow  = time.Unix(1_700_000_000, 0)
)

const testKeyID = "client-1"

func newReq(t testing.TB, method, url string, body []byte) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// serverTarget reconstructs the target URI the way a vellum server does.
func serverTarget(req *http.Request) string {
	return req.URL.Scheme + "://" + req.Host + req.URL.RequestURI()
}

func TestSignParseVerify(t *testing.T) {
	tests := []struct {
		name   string
		method string
		url    string
		body   []byte
		keyID  string
		want   []string // covered components
	}{
		{"get without body", "GET", "https://vellum.example/v1/log", nil, testKeyID,
			[]string{"@method", "@target-uri"}},
		{"post with body", "POST", "https://vellum.example/v1/entries?tenant=a%20b&x=1", []byte(`{"event":"login"}`), testKeyID,
			[]string{"@method", "@target-uri", "content-digest"}},
		{"empty non-nil body", "PUT", "http://localhost:8080/v1/entries/42", []byte{}, testKeyID,
			[]string{"@method", "@target-uri", "content-digest"}},
		{"empty path signed as slash", "GET", "https://vellum.example", nil, testKeyID,
			[]string{"@method", "@target-uri"}},
		{"key id needing escapes", "DELETE", "https://vellum.example/v1/x", nil, `k"e\y 1`,
			[]string{"@method", "@target-uri"}},
		{"extension method", "PROPFIND", "https://vellum.example/dav/", nil, testKeyID,
			[]string{"@method", "@target-uri"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := newReq(t, tc.method, tc.url, tc.body)
			if err := Sign(req, tc.body, tc.keyID, testPriv, testNow); err != nil {
				t.Fatalf("Sign: %v", err)
			}
			s, err := Parse(req, serverTarget(req))
			if err != nil {
				t.Fatalf("Parse: %v\nSignature-Input: %s", err, req.Header.Get("Signature-Input"))
			}
			if err := s.Verify(testPub); err != nil {
				t.Fatalf("Verify: %v\nbase:\n%s", err, s.Base)
			}
			if tc.body != nil {
				if err := VerifyContentDigest(req.Header.Get("Content-Digest"), tc.body); err != nil {
					t.Fatalf("VerifyContentDigest: %v", err)
				}
			} else if req.Header.Get("Content-Digest") != "" {
				t.Error("Content-Digest set for a request without body")
			}
			if fmt.Sprint(s.Components) != fmt.Sprint(tc.want) {
				t.Errorf("Components = %q, want %q", s.Components, tc.want)
			}
			if s.Label != Label || s.KeyID != tc.keyID || s.Alg != "ed25519" || !s.Created.Equal(testNow) || !s.Expires.IsZero() {
				t.Errorf("parsed %+v", s)
			}
			if n, err := base64.RawURLEncoding.DecodeString(s.Nonce); err != nil || len(n) != 16 {
				t.Errorf("nonce %q: %d bytes, %v", s.Nonce, len(n), err)
			}
			if err := (Policy{RequireNonce: true}).Check(s, tc.body != nil, testNow.Add(time.Minute)); err != nil {
				t.Errorf("Policy.Check: %v", err)
			}
			if want := `"@method": ` + tc.method + "\n"; !bytes.HasPrefix(s.Base, []byte(want)) {
				t.Errorf("base does not start with %q:\n%s", want, s.Base)
			}
		})
	}
}

func TestSignFreshNonce(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 50; i++ {
		req := newReq(t, "GET", "https://vellum.example/", nil)
		if err := Sign(req, nil, testKeyID, testPriv, testNow); err != nil {
			t.Fatal(err)
		}
		s, err := Parse(req, serverTarget(req))
		if err != nil {
			t.Fatal(err)
		}
		if seen[s.Nonce] {
			t.Fatalf("nonce %q repeated", s.Nonce)
		}
		seen[s.Nonce] = true
	}
}

func TestSignOutput(t *testing.T) {
	req := newReq(t, "POST", "https://vellum.example/v1/entries", []byte("hi"))
	req.Header.Set("Signature", "old=:AAAA:")
	if err := Sign(req, []byte("hi"), testKeyID, testPriv, testNow); err != nil {
		t.Fatal(err)
	}
	in := req.Header.Values("Signature-Input")
	sig := req.Header.Values("Signature")
	if len(in) != 1 || len(sig) != 1 {
		t.Fatalf("Signature-Input %q, Signature %q: want one line each", in, sig)
	}
	wantPrefix := `sig1=("@method" "@target-uri" "content-digest");created=1700000000;keyid="client-1";alg="ed25519";nonce="`
	if !strings.HasPrefix(in[0], wantPrefix) || !strings.HasSuffix(in[0], `"`) {
		t.Errorf("Signature-Input = %s", in[0])
	}
	if !strings.HasPrefix(sig[0], "sig1=:") || !strings.HasSuffix(sig[0], ":") || len(sig[0]) != len("sig1=::")+88 {
		t.Errorf("Signature = %s", sig[0])
	}
	if got, want := req.Header.Get("Content-Digest"), ContentDigest([]byte("hi")); got != want {
		t.Errorf("Content-Digest = %s, want %s", got, want)
	}
}

func TestSignErrors(t *testing.T) {
	tests := []struct {
		name  string
		mod   func(*http.Request)
		keyID string
		key   ed25519.PrivateKey
		now   time.Time
	}{
		{"short key", nil, testKeyID, testPriv[:32], testNow},
		{"empty key id", nil, "", testPriv, testNow},
		{"key id with newline", nil, "a\nb", testPriv, testNow},
		{"key id non-ascii", nil, "clé", testPriv, testNow},
		{"before 1970", nil, testKeyID, testPriv, time.Unix(-1, 0)},
		{"relative url", func(r *http.Request) { r.URL.Scheme, r.URL.Host = "", "" }, testKeyID, testPriv, testNow},
		{"ftp url", func(r *http.Request) { r.URL.Scheme = "ftp" }, testKeyID, testPriv, testNow},
		{"user info", func(r *http.Request) { r.URL.User = url.UserPassword("u", "p") }, testKeyID, testPriv, testNow},
		{"fragment", func(r *http.Request) { r.URL.Fragment = "frag" }, testKeyID, testPriv, testNow},
		{"host override", func(r *http.Request) { r.Host = "other.example" }, testKeyID, testPriv, testNow},
		{"bad method", func(r *http.Request) { r.Method = "GE T" }, testKeyID, testPriv, testNow},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := newReq(t, "GET", "https://vellum.example/x", nil)
			if tc.mod != nil {
				tc.mod(req)
			}
			if err := Sign(req, nil, tc.keyID, tc.key, tc.now); err == nil {
				t.Fatalf("Sign succeeded; Signature-Input %s", req.Header.Get("Signature-Input"))
			}
			if req.Header.Get("Signature-Input") != "" || req.Header.Get("Signature") != "" {
				t.Error("failed Sign left signature headers")
			}
		})
	}
	if err := Sign(nil, nil, testKeyID, testPriv, testNow); err == nil {
		t.Error("Sign(nil) succeeded")
	}
}

// TestTamper checks that each kind of change to a signed request is caught
// with the right sentinel.
func TestTamper(t *testing.T) {
	body := []byte(`{"event":"login","user":"alice"}`)
	otherPub := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32)).Public().(ed25519.PublicKey)
	tests := []struct {
		name   string
		tamper func(req *http.Request, target *string, body *[]byte, pub *ed25519.PublicKey)
		want   error
	}{
		{"untouched", func(*http.Request, *string, *[]byte, *ed25519.PublicKey) {}, nil},
		{"method", func(r *http.Request, _ *string, _ *[]byte, _ *ed25519.PublicKey) { r.Method = "PUT" }, ErrBadSignature},
		{"method case", func(r *http.Request, _ *string, _ *[]byte, _ *ed25519.PublicKey) { r.Method = "post" }, ErrBadSignature},
		{"uri path", func(_ *http.Request, u *string, _ *[]byte, _ *ed25519.PublicKey) {
			*u = strings.Replace(*u, "/entries", "/entrie5", 1)
		}, ErrBadSignature},
		{"uri query", func(_ *http.Request, u *string, _ *[]byte, _ *ed25519.PublicKey) { *u += "&admin=1" }, ErrBadSignature},
		{"uri host", func(_ *http.Request, u *string, _ *[]byte, _ *ed25519.PublicKey) {
			*u = strings.Replace(*u, "vellum.example", "evil.example", 1)
		}, ErrBadSignature},
		{"uri scheme", func(_ *http.Request, u *string, _ *[]byte, _ *ed25519.PublicKey) {
			*u = strings.Replace(*u, "https:", "http:", 1)
		}, ErrBadSignature},
		{"body", func(_ *http.Request, _ *string, b *[]byte, _ *ed25519.PublicKey) {
			*b = []byte(`{"event":"login","user":"mallory"}`)
		}, ErrDigest},
		{"body and digest", func(r *http.Request, _ *string, b *[]byte, _ *ed25519.PublicKey) {
			*b = []byte(`{"event":"login","user":"mallory"}`)
			r.Header.Set("Content-Digest", ContentDigest(*b))
		}, ErrBadSignature},
		{"digest only", func(r *http.Request, _ *string, _ *[]byte, _ *ed25519.PublicKey) {
			r.Header.Set("Content-Digest", ContentDigest([]byte("x")))
		}, ErrBadSignature},
		{"digest removed", func(r *http.Request, _ *string, _ *[]byte, _ *ed25519.PublicKey) {
			r.Header.Del("Content-Digest")
		}, ErrMalformed},
		{"digest line added", func(r *http.Request, _ *string, b *[]byte, _ *ed25519.PublicKey) {
			r.Header.Add("Content-Digest", "unixsum=:AAAA:")
		}, ErrBadSignature},
		{"signature bit flip", func(r *http.Request, _ *string, _ *[]byte, _ *ed25519.PublicKey) {
			v := r.Header.Get("Signature")
			raw, _ := base64.StdEncoding.DecodeString(v[len("sig1=:") : len(v)-1])
			raw[10] ^= 1
			r.Header.Set("Signature", "sig1="+sfBytesString(raw))
		}, ErrBadSignature},
		{"signature truncated", func(r *http.Request, _ *string, _ *[]byte, _ *ed25519.PublicKey) {
			v := r.Header.Get("Signature")
			raw, _ := base64.StdEncoding.DecodeString(v[len("sig1=:") : len(v)-1])
			r.Header.Set("Signature", "sig1="+sfBytesString(raw[:63]))
		}, ErrBadSignature},
		{"created changed", func(r *http.Request, _ *string, _ *[]byte, _ *ed25519.PublicKey) {
			r.Header.Set("Signature-Input", strings.Replace(r.Header.Get("Signature-Input"), "created=1700000000", "created=1700000001", 1))
		}, ErrBadSignature},
		{"keyid changed", func(r *http.Request, _ *string, _ *[]byte, _ *ed25519.PublicKey) {
			r.Header.Set("Signature-Input", strings.Replace(r.Header.Get("Signature-Input"), `keyid="client-1"`, `keyid="client-2"`, 1))
		}, ErrBadSignature},
		{"component dropped", func(r *http.Request, _ *string, _ *[]byte, _ *ed25519.PublicKey) {
			r.Header.Set("Signature-Input", strings.Replace(r.Header.Get("Signature-Input"), ` "content-digest"`, "", 1))
		}, ErrBadSignature},
		{"other key", func(_ *http.Request, _ *string, _ *[]byte, p *ed25519.PublicKey) { *p = otherPub }, ErrBadSignature},
		{"signature removed", func(r *http.Request, _ *string, _ *[]byte, _ *ed25519.PublicKey) { r.Header.Del("Signature") }, ErrMalformed},
		{"both removed", func(r *http.Request, _ *string, _ *[]byte, _ *ed25519.PublicKey) {
			r.Header.Del("Signature")
			r.Header.Del("Signature-Input")
		}, ErrMissing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := newReq(t, "POST", "https://vellum.example/v1/entries?tenant=acme", body)
			if err := Sign(req, body, testKeyID, testPriv, testNow); err != nil {
				t.Fatal(err)
			}
			target, b, pub := serverTarget(req), append([]byte(nil), body...), testPub
			tc.tamper(req, &target, &b, &pub)
			err := verifyAll(req, target, b, pub)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("got %v, want success", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// verifyAll is what a server does with a request, minus policy and nonces.
func verifyAll(req *http.Request, target string, body []byte, pub ed25519.PublicKey) error {
	s, err := Parse(req, target)
	if err != nil {
		return err
	}
	if err := s.Verify(pub); err != nil {
		return err
	}
	if s.Covers("content-digest") {
		return VerifyContentDigest(strings.Join(req.Header.Values("Content-Digest"), ", "), body)
	}
	return nil
}

// RFC 9421 Appendix B.1.4, test-key-ed25519.
const (
	rfcEd25519PublicPEM = `-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=
-----END PUBLIC KEY-----`
	rfcEd25519PrivatePEM = `-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF
-----END PRIVATE KEY-----`
	// The same key as a JWK (x and d), as it also appears in the RFC.
	rfcEd25519JWKx = "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs"
	rfcEd25519JWKd = "n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU"
)

// RFC 9421 Appendix B.2.6, "Signing a Request Using ed25519", over the test
// request of Appendix B.2.
const (
	rfcB26SignatureInput = `sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519"`
	rfcB26Signature      = `sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:`
	rfcB26Base           = `"date": Tue, 20 Apr 2021 02:07:55 GMT
"@method": POST
"@path": /foo
"@authority": example.com
"content-type": application/json
"content-length": 18
"@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519"`
	rfcB2Body          = `{"hello": "world"}`
	rfcB2ContentDigest = `sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:`
)

// rfcTestKey decodes the RFC 9421 B.1.4 key and checks it against the JWK.
func rfcTestKey(t testing.TB) (ed25519.PrivateKey, ed25519.PublicKey) {
	t.Helper()
	block, _ := pem.Decode([]byte(rfcEd25519PrivatePEM))
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	priv := k.(ed25519.PrivateKey)
	block, _ = pem.Decode([]byte(rfcEd25519PublicPEM))
	pk, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pub := pk.(ed25519.PublicKey)
	if !pub.Equal(priv.Public()) {
		t.Fatal("B.1.4 public and private keys do not match")
	}
	if x := base64.RawURLEncoding.EncodeToString(pub); x != rfcEd25519JWKx {
		t.Fatalf("JWK x = %s", x)
	}
	if d := base64.RawURLEncoding.EncodeToString(priv.Seed()); d != rfcEd25519JWKd {
		t.Fatalf("JWK d = %s", d)
	}
	return priv, pub
}

func rfcB2Request(t testing.TB) *http.Request {
	req := newReq(t, "POST", "http://example.com/foo?param=Value&Pet=dog", []byte(rfcB2Body))
	req.Header.Set("Date", "Tue, 20 Apr 2021 02:07:55 GMT")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Digest", rfcB2ContentDigest)
	req.Header.Set("Content-Length", "18")
	return req
}

func TestRFC9421B26(t *testing.T) {
	priv, pub := rfcTestKey(t)
	req := rfcB2Request(t)
	req.Header.Set("Signature-Input", rfcB26SignatureInput)
	req.Header.Set("Signature", rfcB26Signature)

	s, err := Parse(req, "https://example.com/foo?param=Value&Pet=dog")
	if err != nil {
		t.Fatal(err)
	}
	if string(s.Base) != rfcB26Base {
		t.Fatalf("base:\n%s\nwant:\n%s", s.Base, rfcB26Base)
	}
	if s.Label != "sig-b26" || s.KeyID != "test-key-ed25519" || s.Alg != "" || s.Created.Unix() != 1618884473 || s.Nonce != "" {
		t.Errorf("parsed %+v", s)
	}
	if err := s.Verify(pub); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	// Ed25519 is deterministic: signing the base must reproduce the RFC's value.
	if got := "sig-b26=" + sfBytesString(ed25519.Sign(priv, []byte(rfcB26Base))); got != rfcB26Signature {
		t.Errorf("our signature of the RFC base = %s", got)
	}
	if err := VerifyContentDigest(req.Header.Get("Content-Digest"), []byte(rfcB2Body)); err != nil {
		t.Errorf("B.2 Content-Digest: %v", err)
	}
	// The RFC signature lacks nonce and alg; the policy can demand a nonce.
	if err := (Policy{RequireNonce: true}).Check(s, true, s.Created); !errors.Is(err, ErrPolicy) {
		t.Errorf("Policy.Check = %v, want ErrPolicy (no content-digest, no nonce)", err)
	}
	// Changing any covered component breaks it.
	req.Header.Set("Content-Length", "19")
	if s, err := Parse(req, "https://example.com/foo?param=Value&Pet=dog"); err != nil {
		t.Fatal(err)
	} else if err := s.Verify(pub); !errors.Is(err, ErrBadSignature) {
		t.Errorf("Verify after change = %v", err)
	}
}

func TestDerivedComponents(t *testing.T) {
	tests := []struct {
		target                         string
		authority, scheme, path, query string
	}{
		{"https://example.com/foo?param=Value&Pet=dog", "example.com", "https", "/foo", "?param=Value&Pet=dog"},
		{"HTTPS://Example.COM:443/a%2Fb/", "example.com", "https", "/a%2Fb/", "?"},
		{"http://example.com:80", "example.com", "http", "/", "?"},
		{"http://example.com:443/", "example.com:443", "http", "/", "?"},
		{"https://[::1]:8443/x?", "[::1]:8443", "https", "/x", "?"},
		{"https://h:/x?a=1#frag", "h", "https", "/x", "?a=1"},
		{"https://h?q", "h", "https", "/", "?q"},
	}
	for _, tc := range tests {
		t.Run(tc.target, func(t *testing.T) {
			tp, err := splitTarget(tc.target)
			if err != nil {
				t.Fatal(err)
			}
			got := [4]string{tp.value("@authority"), tp.value("@scheme"), tp.value("@path"), tp.value("@query")}
			if want := [4]string{tc.authority, tc.scheme, tc.path, tc.query}; got != want {
				t.Errorf("got %q, want %q", got, want)
			}
			if tp.value("@target-uri") != tc.target {
				t.Errorf("@target-uri = %q", tp.value("@target-uri"))
			}
		})
	}
	for _, bad := range []string{"", "/relative", "example.com/x", "https://", "https:///x", "https://u@h/", "1http://h/", "https://h/a b", "https://h/\n", "https://h/é"} {
		if _, err := splitTarget(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("splitTarget(%q) = %v, want ErrMalformed", bad, err)
		}
	}
}

func TestFieldValues(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  string
		err   bool
	}{
		{"single", []string{"a"}, "a", false},
		{"trimmed", []string{" \t a b \t"}, "a b", false},
		{"multiple lines", []string{"a", " b ", "c"}, "a, b, c", false},
		{"empty line", []string{""}, "", false},
		{"obs-fold CRLF", []string{"Obsolete\r\n    line folding."}, "Obsolete line folding.", false},
		{"obs-fold with OWS before", []string{"a \t\r\n\tb"}, "a b", false},
		{"obs-fold LF", []string{"a\n b"}, "a b", false},
		{"two folds", []string{"a\r\n b\r\n  c"}, "a b c", false},
		{"trailing fold", []string{"a\r\n "}, "a", false},
		{"obs-text kept", []string{"caf\xc3\xa9"}, "caf\xc3\xa9", false},
		{"newline injection", []string{"x\n\"@method\": GET"}, "", true},
		{"bare CR", []string{"a\rb"}, "", true},
		{"trailing CRLF", []string{"a\r\n"}, "", true},
		{"NUL", []string{"a\x00b"}, "", true},
		{"DEL", []string{"a\x7fb"}, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := newReq(t, "GET", "https://h/", nil)
			req.Header["X-Test"] = tc.lines
			got, err := fieldValue(req, "x-test")
			if tc.err {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("got %q, %v; want ErrMalformed", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	req := newReq(t, "GET", "https://h.example/", nil)
	if got, err := fieldValue(req, "host"); err != nil || got != "h.example" {
		t.Errorf("host = %q, %v", got, err)
	}
	if _, err := fieldValue(req, "x-missing"); !errors.Is(err, ErrMalformed) {
		t.Errorf("missing field: %v", err)
	}
}

// TestParseErrors feeds Parse hand-written header values.
func TestParseErrors(t *testing.T) {
	const sig = "sig1=:" + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==" + ":"
	many := func(n int, f func(i int) string) string {
		var parts []string
		for i := 0; i < n; i++ {
			parts = append(parts, f(i))
		}
		return strings.Join(parts, " ")
	}
	tests := []struct {
		name string
		in   []string // Signature-Input lines; nil = absent
		sig  []string // Signature lines; nil = absent
		want error    // nil = must parse
	}{
		{"ok", []string{`sig1=("@method");created=1`}, []string{sig}, nil},
		{"ok single other label", []string{`other=("@method")`}, []string{"other=:AA==:"}, nil},
		{"ok sig1 among several", []string{`a=("@path"), sig1=("@method")`}, []string{"a=:AA==:, sig1=:AA==:"}, nil},
		{"ok split over lines", []string{`a=("@path")`, `sig1=("@method")`}, []string{"a=:AA==:", "sig1=:AA==:"}, nil},
		{"ok no components", []string{`sig1=();created=1`}, []string{sig}, nil},
		{"ok unknown params", []string{`sig1=("@method");created=1;foo=?1;bar=1.5;baz=tok;qux=:AA==:;tag="x"`}, []string{sig}, nil},
		{"ok unpadded bytes", []string{`sig1=("@method")`}, []string{"sig1=:AAA:"}, nil},
		{"ok OWS around commas", []string{"a=(),\t sig1=()"}, []string{"sig1=:AA==: ,\tb=?0"}, nil},
		{"ok 16 components", []string{`sig1=(` + many(16, func(i int) string { return fmt.Sprintf(`"x-h%d"`, i) }) + `)`}, []string{sig}, nil},

		{"absent", nil, nil, ErrMissing},
		{"no signature", []string{`sig1=("@method")`}, nil, ErrMalformed},
		{"no input", nil, []string{sig}, ErrMalformed},
		{"empty input", []string{""}, []string{sig}, ErrMalformed},
		{"two labels no sig1", []string{`a=(), b=()`}, []string{"a=:AA==:, b=:AA==:"}, ErrMalformed},
		{"label missing in Signature", []string{`sig1=()`}, []string{"sig2=:AA==:"}, ErrMalformed},
		{"input not inner list", []string{`sig1="@method"`}, []string{sig}, ErrMalformed},
		{"signature not bytes", []string{`sig1=()`}, []string{`sig1="AAAA"`}, ErrMalformed},
		{"signature inner list", []string{`sig1=()`}, []string{`sig1=(:AA==:)`}, ErrMalformed},
		{"signature with params", []string{`sig1=()`}, []string{`sig1=:AA==:;x=1`}, ErrMalformed},
		{"duplicate label", []string{`sig1=(), sig1=("@method")`}, []string{sig}, ErrMalformed},
		{"duplicate label across lines", []string{`sig1=()`, `sig1=("@method")`}, []string{sig}, ErrMalformed},
		{"duplicate param", []string{`sig1=();created=1;created=2`}, []string{sig}, ErrMalformed},
		{"duplicate component", []string{`sig1=("@method" "@method")`}, []string{sig}, ErrMalformed},
		{"component token", []string{`sig1=(date)`}, []string{sig}, ErrMalformed},
		{"component with params", []string{`sig1=("date";sf)`}, []string{sig}, ErrMalformed},
		{"component uppercase", []string{`sig1=("Date")`}, []string{sig}, ErrMalformed},
		{"component empty", []string{`sig1=("")`}, []string{sig}, ErrMalformed},
		{"component bad char", []string{`sig1=("da te")`}, []string{sig}, ErrMalformed},
		{"signature-params covered", []string{`sig1=("@signature-params")`}, []string{sig}, ErrMalformed},
		{"unsupported derived", []string{`sig1=("@status")`}, []string{sig}, ErrMalformed},
		{"query-param", []string{`sig1=("@query-param";name="a")`}, []string{sig}, ErrMalformed},
		{"request-target", []string{`sig1=("@request-target")`}, []string{sig}, ErrMalformed},
		{"covered field missing", []string{`sig1=("x-absent")`}, []string{sig}, ErrMalformed},
		{"created string", []string{`sig1=();created="1"`}, []string{sig}, ErrMalformed},
		{"created negative", []string{`sig1=();created=-1`}, []string{sig}, ErrMalformed},
		{"created decimal", []string{`sig1=();created=1.5`}, []string{sig}, ErrMalformed},
		{"expires token", []string{`sig1=();expires=soon`}, []string{sig}, ErrMalformed},
		{"keyid token", []string{`sig1=();keyid=k1`}, []string{sig}, ErrMalformed},
		{"alg token", []string{`sig1=();alg=ed25519`}, []string{sig}, ErrMalformed},
		{"nonce integer", []string{`sig1=();nonce=1`}, []string{sig}, ErrMalformed},
		{"nonce bare", []string{`sig1=();nonce`}, []string{sig}, ErrMalformed},
		{"17 components", []string{`sig1=(` + many(17, func(i int) string { return fmt.Sprintf(`"x-h%d"`, i) }) + `)`}, []string{sig}, ErrMalformed},
		{"17 signatures", []string{strings.ReplaceAll(many(17, func(i int) string { return fmt.Sprintf("s%d=()", i) }), " ", ",")}, []string{sig}, ErrMalformed},
		{"17 params", []string{`sig1=()` + strings.ReplaceAll(many(17, func(i int) string { return fmt.Sprintf(";p%d=1", i) }), " ", "")}, []string{sig}, ErrMalformed},
		{"input over 8 KiB", []string{`sig1=();tag="` + strings.Repeat("a", 8<<10) + `"`}, []string{sig}, ErrMalformed},
		{"input over 8 KiB in lines", []string{strings.Repeat("a", 5<<10), strings.Repeat("b", 5<<10)}, []string{sig}, ErrMalformed},
		{"signature over 8 KiB", []string{`sig1=()`}, []string{"sig1=:" + strings.Repeat("A", 8<<10) + ":"}, ErrMalformed},
		{"unterminated list", []string{`sig1=("@method"`}, []string{sig}, ErrMalformed},
		{"trailing comma", []string{`sig1=(),`}, []string{sig}, ErrMalformed},
		{"trailing garbage", []string{`sig1=() x`}, []string{sig}, ErrMalformed},
		{"uppercase label", []string{`Sig1=()`}, []string{sig}, ErrMalformed},
		{"bad base64", []string{`sig1=()`}, []string{"sig1=:A!A=:"}, ErrMalformed},
		{"base64url", []string{`sig1=()`}, []string{"sig1=:A_-A:"}, ErrMalformed},
		{"bad padding", []string{`sig1=()`}, []string{"sig1=:AA=:"}, ErrMalformed},
		{"inner padding", []string{`sig1=()`}, []string{"sig1=:AA==AAAA:"}, ErrMalformed},
		{"unterminated bytes", []string{`sig1=()`}, []string{"sig1=:AAAA"}, ErrMalformed},
		{"tab in inner list", []string{"sig1=(\t\"@method\")"}, []string{sig}, ErrMalformed},
		{"control char in string", []string{"sig1=();tag=\"a\x01\""}, []string{sig}, ErrMalformed},
		{"bad escape", []string{`sig1=();tag="a\n"`}, []string{sig}, ErrMalformed},
		{"integer too long", []string{`sig1=();created=1234567890123456`}, []string{sig}, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := newReq(t, "GET", "https://vellum.example/x", nil)
			for i := 0; i < 17; i++ {
				req.Header.Set(fmt.Sprintf("X-H%d", i), "v")
			}
			if tc.in != nil {
				req.Header["Signature-Input"] = tc.in
			}
			if tc.sig != nil {
				req.Header["Signature"] = tc.sig
			}
			s, err := Parse(req, serverTarget(req))
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if len(s.Base) == 0 {
					t.Fatal("empty base")
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Parse = %v, want %v", err, tc.want)
			}
			t.Logf("%v", err)
		})
	}
}

func TestParseCoveredHeaders(t *testing.T) {
	req := newReq(t, "GET", "https://vellum.example/x?y", nil)
	req.Header.Add("X-Multi", "a")
	req.Header.Add("X-Multi", " b")
	req.Header.Set("X-Fold", "one\r\n two")
	req.Header.Set("Signature-Input", `sig1=("x-multi" "x-fold" "host" "@authority" "@scheme" "@path" "@query");created=5`)
	req.Header.Set("Signature", "sig1=:AA==:")
	s, err := Parse(req, serverTarget(req))
	if err != nil {
		t.Fatal(err)
	}
	want := `"x-multi": a, b
"x-fold": one two
"host": vellum.example
"@authority": vellum.example
"@scheme": https
"@path": /x
"@query": ?y
"@signature-params": ("x-multi" "x-fold" "host" "@authority" "@scheme" "@path" "@query");created=5`
	if string(s.Base) != want {
		t.Errorf("base:\n%s\nwant:\n%s", s.Base, want)
	}
	if !s.Covers("x-fold") || s.Covers("X-Fold") || s.Covers("@method") {
		t.Error("Covers is wrong")
	}
}

// TestSignatureParamsVerbatim checks that @signature-params reproduces the
// inner list exactly as sent, including non-canonical but valid spellings.
func TestSignatureParamsVerbatim(t *testing.T) {
	for _, in := range []string{
		`("@method"  "@path" );created=0001;keyid="a\"b"`,
		`( );alg="ed25519"`,
		`("@method");foo;bar=?0;baz=-1.50;x=*tok/en:1`,
	} {
		req := newReq(t, "GET", "https://h/", nil)
		req.Header.Set("Signature-Input", "  sig1="+in+"  ")
		req.Header.Set("Signature", "sig1=:AA==:")
		s, err := Parse(req, serverTarget(req))
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if !bytes.HasSuffix(s.Base, []byte(`"@signature-params": `+in)) {
			t.Errorf("base:\n%s\nshould end with the inner list %s", s.Base, in)
		}
	}
}

func TestVerifyErrors(t *testing.T) {
	req := newReq(t, "GET", "https://vellum.example/", nil)
	if err := Sign(req, nil, testKeyID, testPriv, testNow); err != nil {
		t.Fatal(err)
	}
	good, err := Parse(req, serverTarget(req))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		s    *Signature
		pub  ed25519.PublicKey
		bad  bool // want ErrBadSignature (else: a non-nil plain error)
	}{
		{"nil signature", nil, testPub, true},
		{"empty base", &Signature{Sig: good.Sig}, testPub, true},
		{"other alg", &Signature{Base: good.Base, Sig: good.Sig, Alg: "rsa-pss-sha512"}, testPub, true},
		{"short sig", &Signature{Base: good.Base, Sig: good.Sig[:32]}, testPub, true},
		{"short public key", good, testPub[:31], false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.s.Verify(tc.pub)
			if err == nil || errors.Is(err, ErrBadSignature) != tc.bad {
				t.Fatalf("Verify = %v", err)
			}
		})
	}
	if err := good.Verify(testPub); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkSign(b *testing.B) {
	body := bytes.Repeat([]byte(`{"event":"login"}`), 64) // ~1 KiB
	req := newReq(b, "POST", "https://vellum.example/v1/entries?tenant=acme", body)
	b.ReportAllocs()
	for b.Loop() {
		if err := Sign(req, body, testKeyID, testPriv, testNow); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseVerify(b *testing.B) {
	body := bytes.Repeat([]byte(`{"event":"login"}`), 64)
	req := newReq(b, "POST", "https://vellum.example/v1/entries?tenant=acme", body)
	if err := Sign(req, body, testKeyID, testPriv, testNow); err != nil {
		b.Fatal(err)
	}
	target := serverTarget(req)
	b.ReportAllocs()
	for b.Loop() {
		s, err := Parse(req, target)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Verify(testPub); err != nil {
			b.Fatal(err)
		}
	}
}
