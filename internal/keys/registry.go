package keys

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"sync"
	"time"
)

// Actions in the _system log that change the key registry.
const (
	ActionKeyCreate = "key.create"
)

// Roles.
const (
	RoleAdmin = "admin"
)

// Errors of key lookup. The HTTP edge maps ErrUnknownKey and ErrKeyInactive
// to 401 and ErrScope to 403.
var (
	ErrUnknownKey  = errors.New("unknown key")
	ErrKeyInactive = errors.New("key is not valid at this time")
	ErrScope       = errors.New("key is not allowed to do this")
)

// Key is a registered provisioning key: public material and policy only.
type Key struct {
	ID        string            `json:"id"`
	Name      string            `json:"name,omitempty"`
	PublicKey ed25519.PublicKey `json:"public_key"`
	Role      string            `json:"role,omitempty"`
	Scopes    []string          `json:"scopes"`
	Created   time.Time         `json:"created"`
	NotBefore time.Time         `json:"not_before,omitzero"`
	Expires   time.Time         `json:"expires,omitzero"`
}

// Record is the metadata of a key.create event in _system.
type Record struct {
	Key Key `json:"key"`
}

// Scope is "<op>:<log pattern>"; op is append, read or admin; the pattern is
// a log name or a path.Match glob. "admin:*" allows everything on every log.
type Scope struct{ Op, Pattern string }

// ParseScope parses and validates a scope string.
func ParseScope(s string) (Scope, error) {
	op, pat, ok := strings.Cut(s, ":")
	if !ok || pat == "" {
		return Scope{}, fmt.Errorf("scope %q: want <append|read|admin>:<log or glob>", s)
	}
	switch op {
	case "append", "read", "admin":
	default:
		return Scope{}, fmt.Errorf("scope %q: unknown operation %q", s, op)
	}
	if _, err := path.Match(pat, "x"); err != nil {
		return Scope{}, fmt.Errorf("scope %q: bad pattern: %v", s, err)
	}
	return Scope{op, pat}, nil
}

// Allows reports whether k's scopes permit op on log. Admin scopes permit
// every operation. Reserved logs (starting with "_") are matched only by a
// pattern that itself starts with "_" or by an admin scope.
func (k *Key) Allows(op, log string) bool {
	for _, s := range k.Scopes {
		sc, err := ParseScope(s)
		if err != nil {
			continue
		}
		if sc.Op != op && sc.Op != "admin" {
			continue
		}
		if strings.HasPrefix(log, "_") && sc.Op != "admin" && !strings.HasPrefix(sc.Pattern, "_") {
			continue
		}
		if ok, _ := path.Match(sc.Pattern, log); ok {
			return true
		}
	}
	return false
}

// ActiveAt reports whether k is valid at t.
func (k *Key) ActiveAt(t time.Time) error {
	if !k.NotBefore.IsZero() && t.Before(k.NotBefore) {
		return fmt.Errorf("%w: not valid before %s", ErrKeyInactive, k.NotBefore.UTC().Format(time.RFC3339))
	}
	if !k.Expires.IsZero() && !t.Before(k.Expires) {
		return fmt.Errorf("%w: expired at %s", ErrKeyInactive, k.Expires.UTC().Format(time.RFC3339))
	}
	return nil
}

// Registry is the set of keys: the fold of the _system log's key events.
// It is safe for concurrent use.
type Registry struct {
	mu   sync.RWMutex
	keys map[string]*Key
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{keys: map[string]*Key{}} }

// Add registers k. It refuses a key id that does not match the public key
// or is already registered.
func (r *Registry) Add(k Key) error {
	if len(k.PublicKey) != ed25519.PublicKeySize {
		return fmt.Errorf("key %s: public key has %d bytes", k.ID, len(k.PublicKey))
	}
	if KeyID(k.PublicKey) != k.ID {
		return fmt.Errorf("key %s: id does not match its public key", k.ID)
	}
	for _, s := range k.Scopes {
		if _, err := ParseScope(s); err != nil {
			return err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.keys[k.ID]; ok {
		return fmt.Errorf("key %s is already registered", k.ID)
	}
	r.keys[k.ID] = &k
	return nil
}

// Get returns the key with id.
func (r *Registry) Get(id string) (*Key, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	k, ok := r.keys[id]
	if !ok {
		return nil, ErrUnknownKey
	}
	return k, nil
}

// List returns all keys by id.
func (r *Registry) List() []*Key {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*Key, 0, len(r.keys))
	for _, k := range r.keys {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// ApplyEvent folds one _system event (its action and metadata) into the
// registry. Events that do not concern keys are ignored.
func (r *Registry) ApplyEvent(action string, metadata json.RawMessage) error {
	switch action {
	case ActionKeyCreate:
		var rec Record
		if err := json.Unmarshal(metadata, &rec); err != nil {
			return fmt.Errorf("key.create: bad metadata: %v", err)
		}
		return r.Add(rec.Key)
	}
	return nil
}
