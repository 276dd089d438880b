package httpsig

import (
	"errors"
	"testing"
	"time"
)

func TestPolicyCheck(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	base := func() *Signature {
		return &Signature{
			Label:      Label,
			Components: []string{"@method", "@target-uri", "content-digest"},
			KeyID:      "k",
			Alg:        "ed25519",
			Created:    now.Add(-time.Minute),
			Nonce:      "n",
		}
	}
	tests := []struct {
		name    string
		policy  Policy
		mod     func(*Signature)
		hasBody bool
		want    error
	}{
		{"ok", Policy{RequireNonce: true}, nil, true, nil},
		{"ok no body without digest", Policy{}, func(s *Signature) { s.Components = s.Components[:2] }, false, nil},
		{"ok alg absent", Policy{}, func(s *Signature) { s.Alg = "" }, true, nil},
		{"ok extra components", Policy{}, func(s *Signature) { s.Components = append(s.Components, "date") }, true, nil},
		{"ok other order", Policy{}, func(s *Signature) { s.Components = []string{"content-digest", "@target-uri", "@method"} }, true, nil},
		{"ok at window edge past", Policy{}, func(s *Signature) { s.Created = now.Add(-5 * time.Minute) }, true, nil},
		{"ok at window edge future", Policy{}, func(s *Signature) { s.Created = now.Add(5 * time.Minute) }, true, nil},
		{"ok custom window", Policy{Window: time.Hour}, func(s *Signature) { s.Created = now.Add(-59 * time.Minute) }, true, nil},
		{"ok expires in future", Policy{}, func(s *Signature) { s.Expires = now.Add(time.Second) }, true, nil},
		{"ok expires now", Policy{}, func(s *Signature) { s.Expires = now }, true, nil},
		{"ok no nonce when not required", Policy{}, func(s *Signature) { s.Nonce = "" }, true, nil},

		{"nil signature", Policy{}, func(*Signature) {}, true, ErrMalformed},
		{"method not covered", Policy{}, func(s *Signature) { s.Components = []string{"@target-uri", "content-digest"} }, true, ErrPolicy},
		{"uri not covered", Policy{}, func(s *Signature) { s.Components = []string{"@method", "@path", "@authority", "content-digest"} }, true, ErrPolicy},
		{"digest not covered with body", Policy{}, func(s *Signature) { s.Components = s.Components[:2] }, true, ErrPolicy},
		{"other alg", Policy{}, func(s *Signature) { s.Alg = "hmac-sha256" }, true, ErrPolicy},
		{"alg case", Policy{}, func(s *Signature) { s.Alg = "Ed25519" }, true, ErrPolicy},
		{"no created", Policy{}, func(s *Signature) { s.Created = time.Time{} }, true, ErrPolicy},
		{"too old", Policy{}, func(s *Signature) { s.Created = now.Add(-5*time.Minute - time.Second) }, true, ErrPolicy},
		{"too new", Policy{}, func(s *Signature) { s.Created = now.Add(5*time.Minute + time.Second) }, true, ErrPolicy},
		{"too old custom window", Policy{Window: 10 * time.Second}, func(s *Signature) { s.Created = now.Add(-11 * time.Second) }, true, ErrPolicy},
		{"expired", Policy{}, func(s *Signature) { s.Expires = now.Add(-time.Second) }, true, ErrPolicy},
		{"expires before created", Policy{}, func(s *Signature) { s.Expires = s.Created.Add(-time.Second) }, true, ErrPolicy},
		{"nonce required", Policy{RequireNonce: true}, func(s *Signature) { s.Nonce = "" }, true, ErrPolicy},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := base()
			if tc.mod != nil {
				tc.mod(s)
			}
			if tc.name == "nil signature" {
				s = nil
			}
			err := tc.policy.Check(s, tc.hasBody, now)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("got %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			t.Log(err)
		})
	}
}
