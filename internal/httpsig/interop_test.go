package httpsig

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/yaronf/httpsign"
)

// TestInteropOursToTheirs signs with Sign and verifies with
// github.com/yaronf/httpsign.
func TestInteropOursToTheirs(t *testing.T) {
	tests := []struct {
		name   string
		method string
		url    string
		body   []byte
	}{
		{"post with body", "POST", "https://vellum.example/v1/entries?tenant=acme&x=%2F", []byte(`{"event":"login"}`)},
		{"get", "GET", "https://vellum.example:8443/v1/entries/42", nil},
		{"empty body", "PUT", "http://127.0.0.1:8080/v1/x", []byte{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := newReq(t, tc.method, tc.url, tc.body)
			if err := Sign(req, tc.body, testKeyID, testPriv, time.Now()); err != nil {
				t.Fatal(err)
			}
			fields := httpsign.Headers("@method", "@target-uri")
			if tc.body != nil {
				fields = httpsign.Headers("@method", "@target-uri", "content-digest")
			}
			verifier, err := httpsign.NewEd25519Verifier(testPub,
				httpsign.NewVerifyConfig().SetKeyID(testKeyID).SetAllowedAlgs([]string{"ed25519"}), fields)
			if err != nil {
				t.Fatal(err)
			}
			if err := httpsign.VerifyRequest(Label, *verifier, req); err != nil {
				t.Fatalf("httpsign.VerifyRequest: %v\nSignature-Input: %s", err, req.Header.Get("Signature-Input"))
			}
			if tc.body != nil {
				if err := httpsign.ValidateContentDigestHeader(req.Header.Values("Content-Digest"), &req.Body,
					[]string{httpsign.DigestSha256}); err != nil {
					t.Fatalf("httpsign.ValidateContentDigestHeader: %v", err)
				}
			}
			details, err := httpsign.RequestDetails(Label, req)
			if err != nil {
				t.Fatal(err)
			}
			if details.KeyID != testKeyID || details.Alg != "ed25519" || details.Nonce == nil || details.Created == nil {
				t.Errorf("httpsign sees %+v", details)
			}

			// And a tampered request must fail there too.
			req.Method = "PATCH"
			if err := httpsign.VerifyRequest(Label, *verifier, req); err == nil {
				t.Error("httpsign verified a tampered request")
			}
		})
	}
}

// TestInteropTheirsToOurs signs with github.com/yaronf/httpsign (created,
// nonce, keyid and alg ed25519) and parses and verifies with this package.
func TestInteropTheirsToOurs(t *testing.T) {
	tests := []struct {
		name    string
		label   string
		method  string
		url     string
		body    []byte
		digests []string
		fields  []string
	}{
		{"post sha-256", "sig1", "POST", "https://vellum.example/v1/entries?tenant=acme",
			[]byte(`{"event":"login"}`), []string{httpsign.DigestSha256}, []string{"@method", "@target-uri", "content-digest"}},
		{"post sha-512 and sha-256", "sig1", "POST", "https://vellum.example/v1/entries",
			[]byte(`{"event":"logout"}`), []string{httpsign.DigestSha512, httpsign.DigestSha256}, []string{"@method", "@target-uri", "content-digest"}},
		{"get other label", "theirs", "GET", "https://vellum.example:8443/v1/entries/42?a=1&b=%20", nil, nil,
			[]string{"@method", "@target-uri"}},
		{"extra components", "sig1", "POST", "https://vellum.example/v1/e?q=1",
			[]byte("x"), []string{httpsign.DigestSha256},
			[]string{"content-digest", "@authority", "@path", "@query", "@scheme", "content-type", "@method", "@target-uri"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := newReq(t, tc.method, tc.url, tc.body)
			req.Header.Set("Content-Type", "application/json")
			if tc.body != nil {
				cd, err := httpsign.GenerateContentDigestHeader(&req.Body, tc.digests)
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Content-Digest", cd)
			}
			var rnd [16]byte
			if _, err := rand.Read(rnd[:]); err != nil {
				t.Fatal(err)
			}
			nonce := base64.RawURLEncoding.EncodeToString(rnd[:])
			config := httpsign.NewSignConfig().SetKeyID(testKeyID).SetNonce(nonce) // created and alg are on by default
			signer, err := httpsign.NewEd25519Signer(testPriv, config, httpsign.Headers(tc.fields...))
			if err != nil {
				t.Fatal(err)
			}
			sigInput, sig, err := httpsign.SignRequest(tc.label, *signer, req)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Signature-Input", sigInput)
			req.Header.Set("Signature", sig)

			t.Logf("httpsign produced\nSignature-Input: %s\nSignature: %s", sigInput, sig)
			now := time.Now()
			s, err := Parse(req, serverTarget(req))
			if err != nil {
				t.Fatalf("Parse: %v\nSignature-Input: %s", err, sigInput)
			}
			if err := s.Verify(testPub); err != nil {
				t.Fatalf("Verify: %v\nSignature-Input: %s\nbase:\n%s", err, sigInput, s.Base)
			}
			if s.Label != tc.label || s.KeyID != testKeyID || s.Alg != "ed25519" || s.Nonce != nonce ||
				now.Sub(s.Created) > time.Minute || strings.Join(s.Components, " ") != strings.Join(tc.fields, " ") {
				t.Errorf("parsed %+v", s)
			}
			if tc.body != nil {
				if err := VerifyContentDigest(strings.Join(req.Header.Values("Content-Digest"), ", "), tc.body); err != nil {
					t.Fatalf("VerifyContentDigest(%s): %v", req.Header.Get("Content-Digest"), err)
				}
			}
			if err := (Policy{RequireNonce: true}).Check(s, tc.body != nil, now); err != nil {
				t.Fatalf("Policy.Check: %v", err)
			}
			if err := NewNonceCache(DefaultWindow, 10).Check(s.KeyID, s.Nonce, s.Created, now); err != nil {
				t.Fatalf("NonceCache.Check: %v", err)
			}

			req.Header.Set("Content-Type", "text/plain")
			req.Method = "DELETE"
			if s, err := Parse(req, serverTarget(req)); err != nil {
				t.Fatal(err)
			} else if err := s.Verify(testPub); err == nil {
				t.Error("verified a tampered request")
			}
		})
	}
}

// TestOverTheWire signs a request with Sign, sends it through a real HTTP
// server and verifies it there the way vellum does, target URI reconstructed
// from Host and RequestURI.
func TestOverTheWire(t *testing.T) {
	nonces := NewNonceCache(DefaultWindow, 1000)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		err = func() error {
			s, err := Parse(r, "https://"+r.Host+r.RequestURI)
			if err != nil {
				return err
			}
			hasBody := len(body) > 0 || r.Header.Get("Content-Digest") != ""
			if err := (Policy{RequireNonce: true}).Check(s, hasBody, time.Now()); err != nil {
				return err
			}
			if err := s.Verify(testPub); err != nil {
				return err
			}
			if hasBody {
				if err := VerifyContentDigest(strings.Join(r.Header.Values("Content-Digest"), ", "), body); err != nil {
					return err
				}
			}
			return nonces.Check(s.KeyID, s.Nonce, s.Created, time.Now())
		}()
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	client := srv.Client()

	send := func(req *http.Request) (int, string) {
		t.Helper()
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	tests := []struct {
		name, method, path string
		body               []byte
	}{
		{"post", "POST", "/v1/entries?tenant=a%20b&k=%2F", []byte(`{"event":"login"}`)},
		{"get", "GET", "/v1/entries/1", nil},
		{"root without slash", "GET", "", nil},
		{"escaped path", "GET", "/v1/a%2Fb/%C3%A9", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := newReq(t, tc.method, srv.URL+tc.path, tc.body)
			if err := Sign(req, tc.body, testKeyID, testPriv, time.Now()); err != nil {
				t.Fatal(err)
			}
			replay := req.Clone(req.Context())
			replay.Body = io.NopCloser(bytes.NewReader(tc.body))
			if code, msg := send(req); code != 200 {
				t.Fatalf("status %d: %s", code, msg)
			}
			if code, msg := send(replay); code != http.StatusUnauthorized || !strings.Contains(msg, ErrReplay.Error()) {
				t.Fatalf("replay: status %d: %s", code, msg)
			}
		})
	}
}
