package client

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/jcs"
	"github.com/vellum-audit/vellum/internal/keys"
)

// KeyOptions describe a new provisioning key.
type KeyOptions struct {
	Name        string
	Description string
	Role        string   // writer, reader, auditor or admin
	Scopes      []string // default: the role's scopes
	NotBefore   time.Time
	Expires     time.Time
	CIDRs       []string
	Rate        string // "200/s"
	Bearer      bool
	// PublicKey registers a key held elsewhere (an HSM, a vault): no token
	// is made, and bearer mode is not available.
	PublicKey ed25519.PublicKey
}

// NewKey is a key just made: its token (empty for an external public key;
// shown once, never stored by the server) and the server's description.
type NewKey struct {
	Token string
	// BearerCredential, for keys created with Bearer, is what goes in
	// "Authorization: Bearer …" (it does not contain the signing secret).
	BearerCredential string
	Key              api.Key
	Receipt          api.Receipt
}

func (o *KeyOptions) spec() (keys.Spec, *keys.Token, error) {
	scopes := o.Scopes
	if len(scopes) == 0 {
		var ok bool
		if scopes, ok = keys.RoleScopes[o.Role]; !ok {
			return keys.Spec{}, nil, fmt.Errorf("give a role (writer, reader, auditor, admin) or scopes")
		}
	}
	sp := keys.Spec{Name: o.Name, Description: o.Description, Role: o.Role, Scopes: scopes,
		NotBefore: o.NotBefore.UTC(), Expires: o.Expires.UTC(), CIDRs: o.CIDRs, Rate: o.Rate}
	if o.NotBefore.IsZero() {
		sp.NotBefore = time.Time{}
	}
	if o.Expires.IsZero() {
		sp.Expires = time.Time{}
	}
	var tok *keys.Token
	if o.PublicKey != nil {
		if o.Bearer {
			return keys.Spec{}, nil, fmt.Errorf("a key registered from a public key cannot use bearer mode")
		}
		sp.PublicKey, sp.External = o.PublicKey, true
	} else {
		var err error
		if tok, err = keys.NewToken(); err != nil {
			return keys.Spec{}, nil, err
		}
		sp.PublicKey = tok.PublicKey()
		if o.Bearer {
			h := keys.BearerHash(tok.BearerVerifier())
			sp.Bearer, sp.BearerHash = true, h[:]
		}
	}
	sp.ID = keys.KeyID(sp.PublicKey)
	return sp, tok, sp.Validate()
}

// lifecycle signs and sends one key lifecycle event for _system.
func (c *Client) lifecycle(ctx context.Context, action, targetID string, metadata any) (api.KeyChange, error) {
	if c.tok == nil {
		return api.KeyChange{}, ErrTokenRequired
	}
	md, err := json.Marshal(metadata)
	if err != nil {
		return api.KeyChange{}, err
	}
	raw, err := marshal(api.Event{
		Time: time.Now().UTC().Format(time.RFC3339Nano), Action: action,
		Actor:   api.Actor{ID: c.tok.ID(), Type: "key"},
		Targets: []api.Target{{ID: targetID, Type: "key"}},
		Outcome: "success", Source: "vellum-client", Metadata: md,
	})
	if err != nil {
		return api.KeyChange{}, err
	}
	canon, err := jcs.Canonicalize(raw)
	if err != nil {
		return api.KeyChange{}, err
	}
	sig := ed25519.Sign(c.tok.SigningKey(), entry.Message(api.SystemLog, canon))
	body, err := marshal(api.AppendRequest{Events: []api.SignedEvent{{Event: canon, KeyID: c.tok.ID(), Sig: base64.StdEncoding.EncodeToString(sig)}}})
	if err != nil {
		return api.KeyChange{}, err
	}
	var out api.KeyChange
	err = c.do(ctx, http.MethodPost, api.PathKeys, nil, body, &out)
	return out, err
}

// CreateKey makes a key pair on this machine and registers its public half
// (and, for bearer keys, a hash of the bearer verifier). The returned token
// is the only copy of the secret.
func (c *Client) CreateKey(ctx context.Context, o KeyOptions) (NewKey, error) {
	sp, tok, err := o.spec()
	if err != nil {
		return NewKey{}, err
	}
	kc, err := c.lifecycle(ctx, keys.ActionKeyCreate, sp.ID, keys.CreateRecord{Key: sp})
	if err != nil {
		return NewKey{}, err
	}
	nk := NewKey{Key: kc.Key, Receipt: kc.Receipt}
	if tok != nil {
		nk.Token = tok.Encode()
		if sp.Bearer {
			nk.BearerCredential = tok.BearerCredential()
		}
	}
	return nk, nil
}

// RotateKey makes a successor of key id with the same role, scopes and
// policy and a new token; the old key stays valid for overlap, then
// expires.
func (c *Client) RotateKey(ctx context.Context, id string, overlap time.Duration) (NewKey, error) {
	old, err := c.Key(ctx, id)
	if err != nil {
		return NewKey{}, err
	}
	o := KeyOptions{Name: old.Name, Description: old.Description, Role: old.Role, Scopes: old.Scopes, CIDRs: old.CIDRs, Rate: old.Rate, Bearer: old.Bearer}
	if old.Expires != "" {
		// The successor gets a lifetime as long as the old key's was.
		exp, err1 := time.Parse(time.RFC3339, old.Expires)
		created, err2 := time.Parse(time.RFC3339, old.Created)
		if err1 == nil && err2 == nil && exp.After(created) {
			o.Expires = time.Now().Add(exp.Sub(created)).UTC().Truncate(time.Second)
		}
	}
	if old.External {
		return NewKey{}, fmt.Errorf("key %s is held outside vellum (registered from a public key): register its successor with keys create --public-key, then revoke it", id)
	}
	sp, tok, err := o.spec()
	if err != nil {
		return NewKey{}, err
	}
	sp.RotatedFrom = id
	kc, err := c.lifecycle(ctx, keys.ActionKeyRotate, id, keys.RotateRecord{Key: sp, OldExpires: time.Now().Add(overlap).UTC()})
	if err != nil {
		return NewKey{}, err
	}
	nk := NewKey{Token: tok.Encode(), Key: kc.Key, Receipt: kc.Receipt}
	if sp.Bearer {
		nk.BearerCredential = tok.BearerCredential()
	}
	return nk, nil
}

// RevokeKey revokes key id at once, with a reason recorded in _system.
func (c *Client) RevokeKey(ctx context.Context, id, reason string) (api.KeyChange, error) {
	return c.lifecycle(ctx, keys.ActionKeyRevoke, id, keys.RevokeRecord{KeyID: id, Reason: reason})
}

// KeyUpdate is a change to a key; nil fields stay as they are.
type KeyUpdate struct {
	Description *string
	Expires     time.Time // only shorter
	CIDRs       *[]string
	Rate        *string
	Scopes      *[]string
}

// UpdateKey changes a key's description, expiry (shorter only), CIDRs,
// rate or scopes; the change is recorded in _system.
func (c *Client) UpdateKey(ctx context.Context, id string, u KeyUpdate) (api.KeyChange, error) {
	rec := keys.UpdateRecord{KeyID: id, Description: u.Description, CIDRs: u.CIDRs, Rate: u.Rate, Scopes: u.Scopes}
	if !u.Expires.IsZero() {
		rec.Expires = u.Expires.UTC()
	}
	return c.lifecycle(ctx, keys.ActionKeyUpdate, id, rec)
}

// Keys lists every key (admin keys only).
func (c *Client) Keys(ctx context.Context) ([]api.Key, error) {
	var kl api.KeyList
	err := c.do(ctx, http.MethodGet, api.PathKeys, nil, nil, &kl)
	return kl.Keys, err
}

// Key describes one key (an admin key, or the key itself).
func (c *Client) Key(ctx context.Context, id string) (api.Key, error) {
	var k api.Key
	err := c.do(ctx, http.MethodGet, api.PathKeys+"/"+id, nil, nil, &k)
	return k, err
}

// WithBearer makes the client authenticate with Authorization: Bearer
// instead of RFC 9421 signatures (only for keys created with bearer mode).
// Events are still signed by the client.
func WithBearer() Option { return func(c *Client) { c.bearer = true } }
