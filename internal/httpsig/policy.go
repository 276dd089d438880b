package httpsig

import (
	"errors"
	"fmt"
	"time"
)

// ErrPolicy is wrapped when a well-formed signature does not meet the
// verifier's policy (coverage, algorithm, freshness, nonce).
var ErrPolicy = errors.New("httpsig: signature does not meet policy")

// DefaultWindow is the freshness window a Policy with a zero Window uses.
const DefaultWindow = 5 * time.Minute

// Policy is what a verifier requires of a signature beyond its validity.
type Policy struct {
	// Window is how far created may be from the verifier's clock, in either
	// direction. Zero or negative means DefaultWindow.
	Window time.Duration
	// RequireNonce makes a signature without a nonce parameter fail.
	RequireNonce bool
}

func (p Policy) window() time.Duration {
	if p.Window <= 0 {
		return DefaultWindow
	}
	return p.Window
}

// Check verifies that s covers @method and @target-uri (and content-digest
// when hasBody), that alg is absent or "ed25519", that created is present and
// within Window of now, that expires (if present) has not passed, and that a
// nonce is present when RequireNonce is set. It returns the first problem
// found, wrapping ErrPolicy (or ErrMalformed for a nil signature).
func (p Policy) Check(s *Signature, hasBody bool, now time.Time) error {
	if s == nil {
		return fmt.Errorf("%w: nil signature", ErrMalformed)
	}
	required := []string{"@method", "@target-uri"}
	if hasBody {
		required = append(required, "content-digest")
	}
	for _, c := range required {
		if !s.Covers(c) {
			return fmt.Errorf("%w: signature does not cover %q", ErrPolicy, c)
		}
	}
	if s.Alg != "" && s.Alg != algEd25519 {
		return fmt.Errorf("%w: alg %q is not %s", ErrPolicy, s.Alg, algEd25519)
	}
	w := p.window()
	switch {
	case s.Created.IsZero():
		return fmt.Errorf("%w: no created parameter", ErrPolicy)
	case now.Sub(s.Created) > w:
		return fmt.Errorf("%w: created %s is more than %v in the past", ErrPolicy, s.Created.UTC().Format(time.RFC3339), w)
	case s.Created.Sub(now) > w:
		return fmt.Errorf("%w: created %s is more than %v in the future", ErrPolicy, s.Created.UTC().Format(time.RFC3339), w)
	}
	if !s.Expires.IsZero() {
		if s.Expires.Before(s.Created) {
			return fmt.Errorf("%w: expires is before created", ErrPolicy)
		}
		if now.After(s.Expires) {
			return fmt.Errorf("%w: signature expired at %s", ErrPolicy, s.Expires.UTC().Format(time.RFC3339))
		}
	}
	if p.RequireNonce && s.Nonce == "" {
		return fmt.Errorf("%w: no nonce parameter", ErrPolicy)
	}
	return nil
}
