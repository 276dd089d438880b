package keys

import (
	"bytes"
	"crypto/ed25519"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Lifecycle actions in the _system log. Every change to the registry is
// one of these entries; the registry is their fold.
const (
	ActionKeyCreate = "key.create" // metadata CreateRecord, signed by an admin key (genesis: by the key itself)
	ActionKeyRotate = "key.rotate" // metadata RotateRecord, signed by an admin key
	ActionKeyUpdate = "key.update" // metadata UpdateRecord, signed by an admin key
	ActionKeyRevoke = "key.revoke" // metadata RevokeRecord, signed by an admin key (or by the server, for the auto-revoke policy)
	ActionKeyExpire = "key.expire" // metadata ExpireRecord, signed by the server when expiry takes effect
)

// IsLifecycle reports whether action changes the key registry.
func IsLifecycle(action string) bool {
	switch action {
	case ActionKeyCreate, ActionKeyRotate, ActionKeyUpdate, ActionKeyRevoke, ActionKeyExpire:
		return true
	}
	return false
}

// Roles: named bundles of scopes.
const (
	RoleWriter  = "writer"  // append
	RoleReader  = "reader"  // read, search, tail
	RoleAuditor = "auditor" // read every log, including _system and _access; export
	RoleAdmin   = "admin"   // everything, including keys and logs
)

// Operations a scope grants.
const (
	OpAppend = "append"
	OpRead   = "read"
	OpAdmin  = "admin"
)

// RoleScopes is each role's default scopes, used when a key is created
// with a role and no explicit scopes.
var RoleScopes = map[string][]string{
	RoleWriter:  {"append:*"},
	RoleReader:  {"read:*"},
	RoleAuditor: {"read:*", "read:_*"},
	RoleAdmin:   {"admin:*"},
}

// roleOps is what each role may be given.
var roleOps = map[string]map[string]bool{
	RoleWriter:  {OpAppend: true},
	RoleReader:  {OpRead: true},
	RoleAuditor: {OpRead: true},
	RoleAdmin:   {OpAppend: true, OpRead: true, OpAdmin: true},
	"":          {OpAppend: true, OpRead: true},
}

// Errors. Authentication answers 401 for an unknown or inactive key; after
// it, the HTTP edge maps ErrUnknownKey, ErrKeyInactive and ErrScope to 403,
// ErrNoSuchKey to 404, ErrInvalidRecord to 400 and ErrConflict to 409.
var (
	ErrUnknownKey    = errors.New("unknown key")
	ErrNoSuchKey     = errors.New("no such key")
	ErrKeyInactive   = errors.New("key is not valid at this time")
	ErrScope         = errors.New("key is not allowed to do this")
	ErrInvalidRecord = errors.New("invalid key record")
	ErrConflict      = errors.New("key lifecycle conflict")
)

// Spec is what the creator of a key decides: public material and policy.
// It is the metadata of key.create and key.rotate entries.
type Spec struct {
	ID          string            `json:"id"`
	Name        string            `json:"name,omitempty"`
	Description string            `json:"description,omitempty"`
	PublicKey   ed25519.PublicKey `json:"public_key"`
	Role        string            `json:"role,omitempty"`
	Scopes      []string          `json:"scopes"`
	NotBefore   time.Time         `json:"not_before,omitzero"`
	Expires     time.Time         `json:"expires,omitzero"`
	CIDRs       []string          `json:"cidrs,omitempty"`
	Rate        string            `json:"rate,omitempty"` // "200/s", "5000/m", "" = unlimited
	Bearer      bool              `json:"bearer,omitempty"`
	BearerHash  []byte            `json:"bearer_hash,omitempty"` // SHA-256 of the bearer verifier
	External    bool              `json:"external,omitempty"`    // registered from a public key held elsewhere
	RotatedFrom string            `json:"rotated_from,omitempty"`
}

// Records: the metadata of each lifecycle action.
type (
	CreateRecord struct {
		Key Spec `json:"key"`
	}
	RotateRecord struct {
		Key        Spec      `json:"key"`         // the successor; Key.RotatedFrom is the old key
		OldExpires time.Time `json:"old_expires"` // when the old key stops (end of the overlap)
	}
	UpdateRecord struct {
		KeyID       string    `json:"key_id"`
		Description *string   `json:"description,omitempty"`
		Expires     time.Time `json:"expires,omitzero"` // only shorter
		CIDRs       *[]string `json:"cidrs,omitempty"`
		Rate        *string   `json:"rate,omitempty"`
		Scopes      *[]string `json:"scopes,omitempty"`
	}
	RevokeRecord struct {
		KeyID  string `json:"key_id"`
		Reason string `json:"reason"`
		// Alert is set on a revocation by the server's auto-revoke policy:
		// the id of the alert that caused it. Only such a revocation may be
		// signed by the server (and the server may do nothing else to a key
		// but record its expiry).
		Alert string `json:"alert,omitempty"`
	}
	ExpireRecord struct {
		KeyID string `json:"key_id"`
	}
)

// Key is a registered key at one moment: its spec and its lifecycle.
type Key struct {
	Spec
	Created        time.Time `json:"created"`          // received time of its create or rotate entry
	CreatedBy      string    `json:"created_by"`       // key that signed that entry
	Revoked        time.Time `json:"revoked,omitzero"` // received time of its revoke entry
	Suspended      bool      `json:"-"`                // a revocation or update is being recorded (live server only)
	RevokeReason   string    `json:"revoke_reason,omitempty"`
	RotatedTo      string    `json:"rotated_to,omitempty"`
	ExpiryRecorded bool      `json:"expiry_recorded,omitempty"`
}

// Status is "active", "revoked", "expired" or "pending" (not yet valid) at t.
func (k *Key) Status(t time.Time) string {
	switch {
	case !k.Revoked.IsZero() && !t.Before(k.Revoked):
		return "revoked"
	case !k.Expires.IsZero() && !t.Before(k.Expires):
		return "expired"
	case !k.NotBefore.IsZero() && t.Before(k.NotBefore):
		return "pending"
	case t.Before(k.Created):
		return "pending"
	}
	return "active"
}

// ActiveAt returns nil if k may act at t, or why not (wrapping ErrKeyInactive).
func (k *Key) ActiveAt(t time.Time) error {
	if k.Suspended {
		return fmt.Errorf("%w: a change to this key is being recorded", ErrKeyInactive)
	}
	switch k.Status(t) {
	case "revoked":
		return fmt.Errorf("%w: revoked at %s (%s)", ErrKeyInactive, k.Revoked.UTC().Format(time.RFC3339), k.RevokeReason)
	case "expired":
		return fmt.Errorf("%w: expired at %s", ErrKeyInactive, k.Expires.UTC().Format(time.RFC3339))
	case "pending":
		if t.Before(k.Created) {
			return fmt.Errorf("%w: not registered until %s", ErrKeyInactive, k.Created.UTC().Format(time.RFC3339Nano))
		}
		return fmt.Errorf("%w: not valid before %s", ErrKeyInactive, k.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// Scope is "<op>:<log pattern>": op is append, read or admin; the pattern
// is a log name or a path.Match glob. "admin:*" allows everything.
type Scope struct{ Op, Pattern string }

// ParseScope parses and validates a scope string.
func ParseScope(s string) (Scope, error) {
	op, pat, ok := strings.Cut(s, ":")
	if !ok || pat == "" || len(s) > 200 {
		return Scope{}, fmt.Errorf("%w: scope %q: want <append|read|admin>:<log name or glob>", ErrInvalidRecord, s)
	}
	switch op {
	case OpAppend, OpRead, OpAdmin:
	default:
		return Scope{}, fmt.Errorf("%w: scope %q: unknown operation %q (append, read or admin)", ErrInvalidRecord, s, op)
	}
	for _, c := range pat {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.ContainsRune("._-*?[]^!", c)) {
			return Scope{}, fmt.Errorf("%w: scope %q: pattern may hold log-name characters and * ? [ ] only", ErrInvalidRecord, s)
		}
	}
	if _, err := path.Match(pat, "x"); err != nil {
		return Scope{}, fmt.Errorf("%w: scope %q: bad pattern: %v", ErrInvalidRecord, s, err)
	}
	return Scope{op, pat}, nil
}

// Allows reports whether k's scopes permit op on log. An admin scope
// permits every operation. Reserved logs (starting with "_") are matched
// only by a pattern that itself starts with "_", or by an admin scope.
func (k *Key) Allows(op, log string) bool {
	return scopesAllow(k.Scopes, op, log)
}

func scopesAllow(scopes []string, op, log string) bool {
	for _, s := range scopes {
		sc, err := ParseScope(s)
		if err != nil {
			continue
		}
		if sc.Op != op && sc.Op != OpAdmin {
			continue
		}
		if strings.HasPrefix(log, "_") && sc.Op != OpAdmin && !strings.HasPrefix(sc.Pattern, "_") {
			continue
		}
		if ok, _ := path.Match(sc.Pattern, log); ok {
			return true
		}
	}
	return false
}

// IsAdmin reports whether k may manage keys (an admin scope over every log).
func (k *Key) IsAdmin() bool {
	for _, s := range k.Scopes {
		if sc, err := ParseScope(s); err == nil && sc.Op == OpAdmin && sc.Pattern == "*" {
			return true
		}
	}
	return false
}

// ParseCIDRs parses a list of CIDR prefixes (or single addresses).
func ParseCIDRs(list []string) ([]netip.Prefix, error) {
	if len(list) > 64 {
		return nil, fmt.Errorf("%w: at most 64 CIDRs", ErrInvalidRecord)
	}
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("%w: CIDR %q: want an address or prefix such as 10.0.0.0/8", ErrInvalidRecord, s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("%w: CIDR %q has host bits set (did you mean %s?)", ErrInvalidRecord, s, p.Masked())
		}
		out = append(out, p)
	}
	return out, nil
}

// AllowsAddr reports whether addr is inside k's CIDRs (always, if none).
func (k *Key) AllowsAddr(addr netip.Addr) bool {
	if len(k.CIDRs) == 0 {
		return true
	}
	ps, err := ParseCIDRs(k.CIDRs)
	if err != nil {
		return false
	}
	addr = addr.Unmap()
	for _, p := range ps {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// ParseRate parses "N/s", "N/m" or "N/h" into events per second and a
// burst; "" means unlimited (0, 0).
func ParseRate(s string) (perSecond float64, burst int, err error) {
	if s == "" {
		return 0, 0, nil
	}
	num, unit, ok := strings.Cut(s, "/")
	n, perr := strconv.Atoi(num)
	if !ok || perr != nil || n <= 0 || n > 10_000_000 {
		return 0, 0, fmt.Errorf("%w: rate %q: want N/s, N/m or N/h with N a positive integer", ErrInvalidRecord, s)
	}
	var d float64
	switch unit {
	case "s":
		d = 1
	case "m":
		d = 60
	case "h":
		d = 3600
	default:
		return 0, 0, fmt.Errorf("%w: rate %q: unit must be s, m or h", ErrInvalidRecord, s)
	}
	return float64(n) / d, max(1, n/int(d)*2, 1), nil
}

// Validate checks a spec on its own.
func (s *Spec) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: key %s: "+format, append([]any{ErrInvalidRecord, s.ID}, args...)...)
	}
	if len(s.PublicKey) != ed25519.PublicKeySize {
		return bad("public key has %d bytes, want %d", len(s.PublicKey), ed25519.PublicKeySize)
	}
	if KeyID(s.PublicKey) != s.ID {
		return bad("id does not match its public key (want %s)", KeyID(s.PublicKey))
	}
	if len(s.Name) > 128 || len(s.Description) > 1024 {
		return bad("name or description too long")
	}
	ops, ok := roleOps[s.Role]
	if !ok {
		return bad("unknown role %q (writer, reader, auditor or admin)", s.Role)
	}
	if len(s.Scopes) == 0 || len(s.Scopes) > 64 {
		return bad("needs 1 to 64 scopes")
	}
	for _, sc := range s.Scopes {
		p, err := ParseScope(sc)
		if err != nil {
			return err
		}
		if !ops[p.Op] {
			return bad("scope %q is beyond role %q", sc, s.Role)
		}
	}
	if _, err := ParseCIDRs(s.CIDRs); err != nil {
		return err
	}
	if _, _, err := ParseRate(s.Rate); err != nil {
		return err
	}
	if s.Bearer && (s.External || len(s.BearerHash) != 32) {
		return bad("bearer keys need a 32-byte bearer hash and cannot be external")
	}
	if !s.Bearer && len(s.BearerHash) != 0 {
		return bad("bearer hash without bearer mode")
	}
	if !s.Expires.IsZero() && !s.NotBefore.IsZero() && !s.Expires.After(s.NotBefore) {
		return bad("expires before it becomes valid")
	}
	return nil
}

// CheckBearer compares a presented bearer verifier with the stored hash in
// constant time.
func (k *Key) CheckBearer(verifier []byte) bool {
	if !k.Bearer || len(k.BearerHash) != 32 {
		return false
	}
	h := BearerHash(verifier)
	return subtle.ConstantTimeCompare(h[:], k.BearerHash) == 1
}

// Event is one _system entry as the registry folds it.
type Event struct {
	Index    int64
	Received time.Time
	Signer   string // key id of the entry, or "server"
	Action   string
	Metadata json.RawMessage
}

// ServerSigner is the Signer of entries the server writes itself.
const ServerSigner = "server"

// keyState is a key's history: its spec versions and lifecycle.
type keyState struct {
	versions []version
	created  time.Time
	by       string
	revoked  time.Time
	reason   string
	rotTo    string
	expRec   bool
}

type version struct {
	from time.Time
	spec Spec
}

func (ks *keyState) at(t time.Time) Key {
	v := ks.versions[0]
	for _, x := range ks.versions[1:] {
		if !t.Before(x.from) {
			v = x
		}
	}
	return Key{Spec: v.spec, Created: ks.created, CreatedBy: ks.by, Revoked: ks.revoked, RevokeReason: ks.reason, RotatedTo: ks.rotTo, ExpiryRecorded: ks.expRec}
}

// Registry is the set of keys with their history: the fold of the _system
// log's lifecycle entries. It is safe for concurrent use.
type Registry struct {
	mu        sync.RWMutex
	keys      map[string]*keyState
	suspended map[string]int // live server only: keys refused while a change to them is recorded
}

// Suspend refuses key id from now until Resume: the server calls it before
// it records a revocation or an update of the key, so that no entry can be
// admitted between the change's received time and its application. It is
// not part of the fold.
func (r *Registry) Suspend(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.suspended == nil {
		r.suspended = map[string]int{}
	}
	r.suspended[id]++
}

// Resume undoes one Suspend.
func (r *Registry) Resume(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.suspended[id] <= 1 {
		delete(r.suspended, id)
	} else {
		r.suspended[id]--
	}
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{keys: map[string]*keyState{}} }

// Get returns the key's current state.
func (r *Registry) Get(id string) (*Key, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ks, ok := r.keys[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnknownKey, id)
	}
	k := ks.at(time.Now().Add(100 * 365 * 24 * time.Hour))
	return &k, nil
}

// At returns the key as it was at t: the spec version in force then and
// its lifecycle. Callers check k.ActiveAt(t) and k.Allows.
func (r *Registry) At(id string, t time.Time) (*Key, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ks, ok := r.keys[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnknownKey, id)
	}
	k := ks.at(t)
	k.Suspended = r.suspended[id] > 0
	return &k, nil
}

// List returns every key's current state, by id.
func (r *Registry) List() []*Key {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*Key, 0, len(r.keys))
	far := time.Now().Add(100 * 365 * 24 * time.Hour)
	for _, ks := range r.keys {
		k := ks.at(far)
		out = append(out, &k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Len is the number of registered keys.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.keys)
}

// DueExpiry lists the keys whose expiry has passed at now and is not yet
// recorded (and which were not revoked first).
func (r *Registry) DueExpiry(now time.Time) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	for id, ks := range r.keys {
		k := ks.at(now)
		if !ks.expRec && !k.Expires.IsZero() && !now.Before(k.Expires) && (ks.revoked.IsZero() || ks.revoked.After(k.Expires)) {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// Check validates ev against the registry without changing it.
func (r *Registry) Check(ev Event) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, err := r.plan(ev)
	return err
}

// Apply folds ev into the registry. Events whose action is not a lifecycle
// action are ignored. It refuses (and changes nothing) when ev is not a
// valid transition: an unknown or inactive signer, a signer without admin
// scope, an id already in use, a revoked key's revival, a longer expiry.
func (r *Registry) Apply(ev Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, err := r.plan(ev)
	if err != nil || f == nil {
		return err
	}
	f()
	return nil
}

func decodeStrict(raw json.RawMessage, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: metadata: %v", ErrInvalidRecord, err)
	}
	return nil
}

// plan validates ev and returns the change to make (nil for no change).
// Called with r.mu held.
func (r *Registry) plan(ev Event) (func(), error) {
	if !IsLifecycle(ev.Action) {
		return nil, nil
	}
	t := ev.Received
	// Who may sign: an admin key active at t; the genesis key itself for
	// the first create; the server for expiry records only.
	if ev.Action == ActionKeyExpire {
		if ev.Signer != ServerSigner {
			return nil, fmt.Errorf("%w: %s is recorded by the server only", ErrScope, ev.Action)
		}
	} else if ev.Signer == ServerSigner {
		if ev.Action != ActionKeyRevoke || !policyRevocation(ev.Metadata) {
			return nil, fmt.Errorf("%w: %s must be signed by an admin key", ErrScope, ev.Action)
		}
	} else if !(len(r.keys) == 0 && ev.Action == ActionKeyCreate) {
		ks, ok := r.keys[ev.Signer]
		if !ok {
			return nil, fmt.Errorf("%w: signer %s", ErrUnknownKey, ev.Signer)
		}
		k := ks.at(t)
		if err := k.ActiveAt(t); err != nil {
			return nil, fmt.Errorf("signer %s: %w", ev.Signer, err)
		}
		if !k.IsAdmin() {
			return nil, fmt.Errorf("%w: signer %s is not an admin key", ErrScope, ev.Signer)
		}
	}
	switch ev.Action {
	case ActionKeyCreate:
		var rec CreateRecord
		if err := decodeStrict(ev.Metadata, &rec); err != nil {
			return nil, err
		}
		spec := rec.Key
		if err := spec.Validate(); err != nil {
			return nil, err
		}
		if len(r.keys) == 0 && (ev.Signer != spec.ID || !scopesAllow(spec.Scopes, OpAdmin, "*")) {
			return nil, fmt.Errorf("%w: the first key must be an admin key that registers itself", ErrInvalidRecord)
		}
		if spec.RotatedFrom != "" {
			return nil, fmt.Errorf("%w: rotated_from is set by key.rotate only", ErrInvalidRecord)
		}
		if _, ok := r.keys[spec.ID]; ok {
			return nil, fmt.Errorf("%w: key %s is already registered", ErrConflict, spec.ID)
		}
		return func() {
			r.keys[spec.ID] = &keyState{versions: []version{{t, spec}}, created: t, by: ev.Signer}
		}, nil
	case ActionKeyRotate:
		var rec RotateRecord
		if err := decodeStrict(ev.Metadata, &rec); err != nil {
			return nil, err
		}
		spec := rec.Key
		if err := spec.Validate(); err != nil {
			return nil, err
		}
		old, ok := r.keys[spec.RotatedFrom]
		if !ok {
			return nil, fmt.Errorf("%w: rotated_from %q", ErrNoSuchKey, spec.RotatedFrom)
		}
		ok2 := old.at(t)
		if err := ok2.ActiveAt(t); err != nil {
			return nil, fmt.Errorf("%w: cannot rotate key %s: %v", ErrConflict, spec.RotatedFrom, err)
		}
		if old.rotTo != "" {
			return nil, fmt.Errorf("%w: key %s was already rotated to %s", ErrConflict, spec.RotatedFrom, old.rotTo)
		}
		if _, ok := r.keys[spec.ID]; ok {
			return nil, fmt.Errorf("%w: key %s is already registered", ErrConflict, spec.ID)
		}
		if !sameStrings(spec.Scopes, ok2.Scopes) || spec.Role != ok2.Role {
			return nil, fmt.Errorf("%w: a successor keeps the role and scopes of the key it replaces", ErrInvalidRecord)
		}
		if rec.OldExpires.IsZero() {
			return nil, fmt.Errorf("%w: old_expires (the end of the overlap) is required", ErrInvalidRecord)
		}
		if rec.OldExpires.Before(t) {
			// The old key was admitted up to this entry: it cannot have expired before it.
			rec.OldExpires = t
		}
		if !ok2.Expires.IsZero() && rec.OldExpires.After(ok2.Expires) {
			rec.OldExpires = ok2.Expires
		}
		return func() {
			r.keys[spec.ID] = &keyState{versions: []version{{t, spec}}, created: t, by: ev.Signer}
			o := ok2.Spec
			o.Expires = rec.OldExpires
			old.versions = append(old.versions, version{t, o})
			old.rotTo = spec.ID
		}, nil
	case ActionKeyUpdate:
		var rec UpdateRecord
		if err := decodeStrict(ev.Metadata, &rec); err != nil {
			return nil, err
		}
		ks, ok := r.keys[rec.KeyID]
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrNoSuchKey, rec.KeyID)
		}
		cur := ks.at(t)
		if !ks.revoked.IsZero() {
			return nil, fmt.Errorf("%w: key %s is revoked", ErrConflict, rec.KeyID)
		}
		next := cur.Spec
		next.Scopes = append([]string(nil), cur.Scopes...)
		if rec.Description != nil {
			next.Description = *rec.Description
		}
		if !rec.Expires.IsZero() {
			if !cur.Expires.IsZero() && rec.Expires.After(cur.Expires) {
				return nil, fmt.Errorf("%w: expiry can only be made shorter (now %s)", ErrInvalidRecord, cur.Expires.UTC().Format(time.RFC3339))
			}
			next.Expires = rec.Expires
		}
		if rec.CIDRs != nil {
			next.CIDRs = *rec.CIDRs
		}
		if rec.Rate != nil {
			next.Rate = *rec.Rate
		}
		if rec.Scopes != nil {
			next.Scopes = *rec.Scopes
		}
		if err := next.Validate(); err != nil {
			return nil, err
		}
		return func() { ks.versions = append(ks.versions, version{t, next}) }, nil
	case ActionKeyRevoke:
		var rec RevokeRecord
		if err := decodeStrict(ev.Metadata, &rec); err != nil {
			return nil, err
		}
		if strings.TrimSpace(rec.Reason) == "" || len(rec.Reason) > 1024 {
			return nil, fmt.Errorf("%w: a revocation needs a reason (at most 1024 bytes)", ErrInvalidRecord)
		}
		ks, ok := r.keys[rec.KeyID]
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrNoSuchKey, rec.KeyID)
		}
		if !ks.revoked.IsZero() {
			return nil, fmt.Errorf("%w: key %s was already revoked", ErrConflict, rec.KeyID)
		}
		return func() { ks.revoked, ks.reason = t, rec.Reason }, nil
	case ActionKeyExpire:
		var rec ExpireRecord
		if err := decodeStrict(ev.Metadata, &rec); err != nil {
			return nil, err
		}
		ks, ok := r.keys[rec.KeyID]
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrNoSuchKey, rec.KeyID)
		}
		k := ks.at(t)
		if k.Expires.IsZero() || t.Before(k.Expires) || ks.expRec {
			return nil, fmt.Errorf("%w: key %s is not due to expire at %s", ErrConflict, rec.KeyID, t.UTC().Format(time.RFC3339))
		}
		return func() { ks.expRec = true }, nil
	}
	return nil, nil
}

// policyRevocation reports whether md is a RevokeRecord made by the
// auto-revoke policy (it names the alert that caused it).
func policyRevocation(md json.RawMessage) bool {
	var rec RevokeRecord
	return decodeStrict(md, &rec) == nil && rec.Alert != ""
}

func sameStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	x := append([]string(nil), a...)
	y := append([]string(nil), b...)
	sort.Strings(x)
	sort.Strings(y)
	for i := range x {
		if x[i] != y[i] {
			return false
		}
	}
	return true
}

// Equal reports whether two registries hold the same keys with the same
// history (used to check a live registry against a fresh fold).
func (r *Registry) Equal(o *Registry) bool {
	a, _ := json.Marshal(r.snapshot())
	b, _ := json.Marshal(o.snapshot())
	return bytes.Equal(a, b)
}

func (r *Registry) snapshot() any {
	r.mu.RLock()
	defer r.mu.RUnlock()
	type v struct {
		From time.Time
		Spec Spec
	}
	type s struct {
		Versions          []v
		Created, Revoked  time.Time
		By, Reason, RotTo string
		ExpRec            bool
	}
	out := map[string]s{}
	for id, ks := range r.keys {
		x := s{Created: ks.created, Revoked: ks.revoked, By: ks.by, Reason: ks.reason, RotTo: ks.rotTo, ExpRec: ks.expRec}
		for _, ver := range ks.versions {
			x.Versions = append(x.Versions, v{ver.from.UTC(), ver.spec})
		}
		out[id] = x
	}
	return out
}

// Replace makes r hold exactly what o holds (o must not be used after).
func (r *Registry) Replace(o *Registry) {
	o.mu.Lock()
	keys := o.keys
	o.keys = map[string]*keyState{}
	o.mu.Unlock()
	r.mu.Lock()
	r.keys = keys
	r.mu.Unlock()
}
