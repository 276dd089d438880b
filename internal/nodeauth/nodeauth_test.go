package nodeauth

import (
	"bytes"
	"errors"
	"net/http"
	"testing"
	"time"
)

func TestSignVerify(t *testing.T) {
	seed := bytes.Repeat([]byte{1}, 32)
	k, err := DeriveKey(seed)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := DeriveKey(bytes.Repeat([]byte{2}, 32))
	if bytes.Equal(k.k, seed) || bytes.Equal(k.k, other.k) {
		t.Fatal("the node-auth key is the seed, or does not depend on it")
	}
	v := NewVerifier(k)
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"log":"app"}`)
	req := func(method, url string, key *Key, at time.Time) *http.Request {
		r, _ := http.NewRequest(method, url, nil)
		if key != nil {
			key.Sign(r, body, at)
		}
		return r
	}
	if err := v.Verify(req("POST", "http://a/internal/v1/forward", k, now), body, now); err != nil {
		t.Fatalf("a node's request: %v", err)
	}
	moved := req("POST", "http://a/internal/v1/forward", k, now)
	moved.URL.Path = "/internal/v1/other"
	retimed := req("POST", "http://a/internal/v1/forward", k, now)
	retimed.Header.Set(HeaderTime, "1800000001")
	for name, tc := range map[string]struct {
		r    *http.Request
		body []byte
		at   time.Time
	}{
		"no headers":   {req("POST", "http://a/x", nil, now), body, now},
		"another key":  {req("POST", "http://a/x", other, now), body, now},
		"another body": {req("POST", "http://a/x", k, now), []byte(`{"log":"b"}`), now},
		"another path": {moved, body, now},
		"another time": {retimed, body, now},
		"method":       {func() *http.Request { r := req("POST", "http://a/x", k, now); r.Method = "PUT"; return r }(), body, now},
		"stale":        {req("POST", "http://a/x", k, now.Add(-Window-time.Second)), body, now},
		"future":       {req("POST", "http://a/x", k, now.Add(Window+time.Second)), body, now},
	} {
		if err := v.Verify(tc.r, tc.body, tc.at); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("%s: %v; want ErrUnauthenticated", name, err)
		}
	}
	r := req("POST", "http://a/y", k, now)
	if err := v.Verify(r, body, now); err != nil {
		t.Fatal(err)
	}
	if err := v.Verify(r, body, now.Add(time.Second)); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("a replay: %v; want ErrUnauthenticated", err)
	}
}
