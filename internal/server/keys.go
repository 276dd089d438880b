package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/keys"
	"github.com/vellum-audit/vellum/internal/ledger"
)

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// apiKey describes k for clients.
func (s *Server) apiKey(k *keys.Key, now time.Time) api.Key {
	out := api.Key{
		ID: k.ID, Name: k.Name, Description: k.Description,
		PublicKey: base64.StdEncoding.EncodeToString(k.PublicKey),
		Role:      k.Role, Scopes: k.Scopes, Status: k.Status(now),
		Created: fmtTime(k.Created), CreatedBy: k.CreatedBy,
		NotBefore: fmtTime(k.NotBefore), Expires: fmtTime(k.Expires),
		CIDRs: k.CIDRs, Rate: k.Rate, Bearer: k.Bearer, External: k.External,
		RotatedFrom: k.RotatedFrom, RotatedTo: k.RotatedTo,
		Revoked: fmtTime(k.Revoked), RevokeReason: k.RevokeReason,
	}
	if v, ok := s.lastUsed.Load(k.ID); ok {
		out.LastUsed = fmtTime(v.(time.Time))
	}
	return out
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request, c *call) error {
	now := s.cfg.Now()
	out := api.KeyList{Keys: []api.Key{}}
	for _, k := range s.cfg.Registry.List() {
		out.Keys = append(out.Keys, s.apiKey(k, now))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// getKey answers for an admin key, or for a key asking about itself.
func (s *Server) getKey(w http.ResponseWriter, r *http.Request, c *call) error {
	id := r.PathValue("id")
	if id != c.key.ID && !c.key.IsAdmin() {
		return newHTTPError(http.StatusForbidden, api.CodeForbidden, "only an admin key may look at other keys")
	}
	k, err := s.cfg.Registry.Get(id)
	if err != nil {
		return errNotFound("no key %q", id)
	}
	writeJSON(w, http.StatusOK, s.apiKey(k, s.cfg.Now()))
	return nil
}

// changeKey records one key lifecycle change: a _system event (key.create,
// key.rotate, key.update or key.revoke) signed by the admin key that sends
// it. The change is checked against the registry, appended to _system, and
// only then applied: the registry stays the fold of _system.
func (s *Server) changeKey(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := requireJSON(r); err != nil {
		return err
	}
	evs, err := parseAppend(c.body, false)
	if err != nil {
		return err
	}
	if len(evs) != 1 {
		return errBadRequest("send exactly one lifecycle event")
	}
	sub := evs[0]
	if sub.KeyID == "" {
		sub.KeyID = c.key.ID
	}
	if sub.KeyID != c.key.ID {
		return newHTTPError(http.StatusForbidden, api.CodeForbidden, "the event must be signed by the key that sends it")
	}
	if c.auth != entry.AuthSignature {
		return newHTTPError(http.StatusForbidden, api.CodeForbidden, "key lifecycle changes need a signed request, not a bearer token")
	}
	sub.Auth = c.auth
	action := sub.Event.Action
	if !keys.IsLifecycle(action) || action == keys.ActionKeyExpire {
		return errBadRequest("action must be key.create, key.rotate, key.update or key.revoke, not %q", action)
	}
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	ev := keys.Event{Received: s.cfg.Now(), Signer: sub.KeyID, Action: action, Metadata: sub.Event.Metadata}
	if err := s.cfg.Registry.Check(ev); err != nil {
		return err
	}
	if action == keys.ActionKeyRevoke || action == keys.ActionKeyUpdate {
		// The key is refused from now until the change is applied, so that
		// nothing it signs can land after the change's received time.
		// (The sequencer checks the change itself again at that time.)
		if id, err := lifecycleTarget(action, sub.Event.Metadata); err == nil {
			s.cfg.Registry.Suspend(id)
			defer s.cfg.Registry.Resume(id)
		}
	}
	rs, err := s.cfg.Ledger.Append(r.Context(), api.SystemLog, []ledger.Submitted{sub})
	if err != nil {
		return err
	}
	if err := s.applyRecorded(rs[0].Entry); err != nil {
		return err
	}
	id, err := lifecycleTarget(action, sub.Event.Metadata)
	if err != nil {
		return err
	}
	k, err := s.cfg.Registry.Get(id)
	if err != nil {
		return err
	}
	s.cfg.Logger.Info("key lifecycle", "action", action, "key", id, "by", c.key.ID, "index", rs[0].Index)
	writeJSON(w, http.StatusOK, api.KeyChange{Receipt: rs[0], Key: s.apiKey(k, s.cfg.Now())})
	return nil
}

// applyRecorded folds a just-recorded _system entry into the registry (with
// Sync: every _system entry not yet folded, other nodes' included). If
// that fails (the registry moved between check and commit), the registry
// is rebuilt from _system, which is the truth.
func (s *Server) applyRecorded(data []byte) error {
	if s.cfg.Sync != nil {
		return s.cfg.Sync(context.Background())
	}
	e, err := entry.Parse(data)
	if err != nil {
		return err
	}
	var ev struct {
		Action   string          `json:"action"`
		Metadata json.RawMessage `json:"metadata"`
	}
	if err := json.Unmarshal(e.Event, &ev); err != nil {
		return err
	}
	if err := s.cfg.Registry.Apply(keys.Event{Index: e.Index, Received: e.ReceivedTime(), Signer: e.KeyID, Action: ev.Action, Metadata: ev.Metadata}); err != nil {
		s.cfg.Logger.Error("registry diverged from _system; rebuilding it", "index", e.Index, "err", err)
		if s.cfg.Refold == nil {
			return err
		}
		return s.cfg.Refold(context.Background())
	}
	return nil
}

func lifecycleTarget(action string, md json.RawMessage) (string, error) {
	var x struct {
		KeyID string `json:"key_id"`
		Key   struct {
			ID string `json:"id"`
		} `json:"key"`
	}
	if err := json.Unmarshal(md, &x); err != nil {
		return "", err
	}
	if action == keys.ActionKeyCreate || action == keys.ActionKeyRotate {
		return x.Key.ID, nil
	}
	return x.KeyID, nil
}

// RecordExpiries appends a key.expire entry to _system for every key whose
// expiry has passed and is not yet recorded. Expiry is enforced from the
// expiry time itself; the record makes it visible in the log.
func (s *Server) RecordExpiries(ctx context.Context) error {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	for _, id := range s.cfg.Registry.DueExpiry(s.cfg.Now()) {
		data, err := s.serverEntry(ctx, api.SystemLog, keys.ActionKeyExpire, api.Actor{ID: entry.ServerKeyID, Type: "server"},
			[]api.Target{{ID: id, Type: "key"}}, "success", keys.ExpireRecord{KeyID: id})
		if err != nil {
			return fmt.Errorf("recording expiry of key %s: %w", id, err)
		}
		if err := s.applyRecorded(data); err != nil {
			return err
		}
		s.cfg.Logger.Info("key expired", "key", id)
	}
	return nil
}
