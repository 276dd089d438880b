package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/alert"
	"github.com/vellum-audit/vellum/internal/checkpoint"
	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/index"
	"github.com/vellum-audit/vellum/internal/keys"
)

// Alert entries in _system: "alert.<detector>" with the alert as metadata,
// and "alert.ack" when an operator acknowledges one.
const (
	alertActionPrefix = "alert."
	alertAck          = "alert.ack"
)

func (s *Server) alertRoutes() {
	s.handle("GET "+api.PathAlerts, "", s.listAlerts)
	s.handle("POST "+api.PathAlerts+"/{id}/ack", "admin", s.ackAlert)
	s.handle("POST /v1/logs/{log}/checkpoint/report", "read", s.reportCheckpoint)
}

// noteRefusal tells the alert engine of a refusal made with a registered
// key: what the detectors make of it (CIDR, replay, revoked or expired
// use, runs of bad signatures and scope refusals).
func (s *Server) noteRefusal(rf *refusal, remote netip.Addr) {
	e := s.cfg.Alerts
	if e == nil || rf.keyID == "" || !keys.ValidKeyID(rf.keyID) || !s.knownKey(rf.keyID) {
		return
	}
	class := ""
	switch refusalClass(rf) {
	case "cidr":
		class = alert.RefusedCIDR
	case "replay":
		class = alert.RefusedReplay
	case "bad_signature":
		class = alert.RefusedSignature
	case "scope":
		class = alert.RefusedScope
	case "key_not_valid":
		switch {
		case strings.Contains(rf.reason, "revoked at"):
			class = alert.RefusedRevoked
		case strings.Contains(rf.reason, "expired at"), strings.Contains(rf.reason, "not valid before"):
			class = alert.RefusedExpired
		}
	}
	if class != "" {
		e.Refused(rf.keyID, remote, class, truncate(rf.reason, 256))
	}
}

// RecordAlert appends an alert's entry to _system ("alert.<detector>",
// signed by the server) and returns its index. The alert engine calls it.
func (s *Server) RecordAlert(ctx context.Context, a alert.Alert) (int64, error) {
	var targets []api.Target
	if a.Log != "" {
		targets = append(targets, api.Target{ID: a.Log, Type: "log"})
	}
	if a.KeyID != "" {
		targets = append(targets, api.Target{ID: a.KeyID, Type: "key"})
	}
	if a.Source != "" {
		targets = append(targets, api.Target{ID: truncate(a.Source, 200), Type: "source"})
	}
	data, err := s.serverEntry(ctx, api.SystemLog, alertActionPrefix+a.Detector, api.Actor{ID: "vellum-server", Type: "server"}, targets, "failure", a)
	if err != nil {
		return -1, err
	}
	e, err := entry.Parse(data)
	if err != nil {
		return -1, err
	}
	return e.Index, nil
}

// RevokeByPolicy revokes keyID for the auto-revoke policy: a key.revoke
// entry in _system signed by the server, naming the alert. Like an
// admin's revocation, the key is refused from the moment the change is
// checked.
func (s *Server) RevokeByPolicy(ctx context.Context, keyID, alertID, reason string) error {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	rec := keys.RevokeRecord{KeyID: keyID, Reason: reason, Alert: alertID}
	md, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	ev := keys.Event{Received: s.cfg.Now(), Signer: keys.ServerSigner, Action: keys.ActionKeyRevoke, Metadata: md}
	if err := s.cfg.Registry.Check(ev); err != nil {
		return err
	}
	s.cfg.Registry.Suspend(keyID)
	defer s.cfg.Registry.Resume(keyID)
	data, err := s.serverEntry(ctx, api.SystemLog, keys.ActionKeyRevoke, api.Actor{ID: entry.ServerKeyID, Type: "server"},
		[]api.Target{{ID: keyID, Type: "key"}}, "success", rec)
	if err != nil {
		return err
	}
	return s.applyRecorded(data)
}

// maxAlertEntries bounds how many alert entries of _system a listing folds.
const maxAlertEntries = 5000

// listAlerts answers GET /v1/alerts: the alerts recorded in _system, one
// per alert id (its latest entry, with the count of entries), open (not
// acknowledged since its latest entry) by default; ?state=acked or all,
// ?detector=, ?limit= (default 100, at most 1000).
func (s *Server) listAlerts(w http.ResponseWriter, r *http.Request, c *call) error {
	if !c.key.Allows(keys.OpRead, api.SystemLog) {
		return newHTTPError(http.StatusForbidden, api.CodeForbidden, "alerts are in %s: they are for keys that may read it (auditor or admin)", api.SystemLog)
	}
	q := r.URL.Query()
	for k := range q {
		if k != "state" && k != "detector" && k != "limit" {
			return errBadRequest("unknown parameter %q (use state, detector, limit)", k)
		}
	}
	state := q.Get("state")
	switch state {
	case "":
		state = "open"
	case "open", "acked", "all":
	default:
		return errBadRequest("state must be open, acked or all, not %q", state)
	}
	det := q.Get("detector")
	if det != "" && !alert.Known(det) {
		return errBadRequest("unknown detector %q (known: %s)", det, strings.Join(alert.Detectors, ", "))
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return errBadRequest("limit must be 1 to 1000")
		}
		limit = n
	}
	all, err := s.foldAlerts(r.Context())
	if err != nil {
		return err
	}
	out := api.AlertList{Alerts: []api.AlertState{}}
	for _, a := range all {
		if (state != "all" && a.State != state) || (det != "" && a.Detector != det) {
			continue
		}
		if len(out.Alerts) == limit {
			out.More = true
			break
		}
		out.Alerts = append(out.Alerts, a)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// foldAlerts reads the newest alert entries of _system (newest first) and
// folds them into one state per alert id: its latest entry, and acked if
// an ack follows it.
func (s *Server) foldAlerts(ctx context.Context) ([]api.AlertState, error) {
	cur, _, err := s.current(ctx, api.SystemLog)
	if err != nil {
		return nil, err
	}
	st := s.cfg.Ledger.Store()
	byID := map[string]*api.AlertState{}
	var order []string
	acks := map[string]api.AlertState{} // the newest ack of each id (seen before its alert: newest first)
	f := index.Filter{ActionPrefix: alertActionPrefix, Limit: 1000, After: -1}
	seen := 0
	for seen < maxAlertEntries {
		idxs, more, err := st.Search(ctx, api.SystemLog, f, cur.Size)
		if err != nil {
			return nil, err
		}
		es, err := st.ReadEntriesAt(ctx, api.SystemLog, idxs)
		if err != nil {
			return nil, err
		}
		for i, data := range es {
			seen++
			e, err := entry.Parse(data)
			if err != nil {
				return nil, err
			}
			var ev struct {
				Action   string          `json:"action"`
				Actor    api.Actor       `json:"actor"`
				Metadata json.RawMessage `json:"metadata"`
			}
			if err := json.Unmarshal(e.Event, &ev); err != nil {
				return nil, err
			}
			if ev.Action == alertAck {
				var ack struct {
					ID   string `json:"id"`
					Note string `json:"note"`
				}
				if json.Unmarshal(ev.Metadata, &ack) == nil && ack.ID != "" {
					if _, ok := acks[ack.ID]; !ok {
						acks[ack.ID] = api.AlertState{AckedBy: ev.Actor.ID, AckedAt: e.ReceivedTime().UTC().Format("2006-01-02T15:04:05.000000Z"), AckNote: ack.Note, AckEntry: idxs[i]}
					}
				}
				continue
			}
			var a api.AlertState
			if err := json.Unmarshal(ev.Metadata, &a); err != nil || a.ID == "" {
				// alert.tamper entries written before the alert engine
				// carry their own metadata: keep them visible.
				a = api.AlertState{ID: fmt.Sprintf("entry-%d", idxs[i]), Detector: strings.TrimPrefix(ev.Action, alertActionPrefix), Severity: alert.Critical, Count: 1}
				a.Details = ev.Metadata
			}
			if p := byID[a.ID]; p != nil {
				p.Entries++
				continue
			}
			a.Entry = idxs[i]
			a.Recorded = e.ReceivedTime().UTC().Format("2006-01-02T15:04:05.000000Z")
			a.Entries = 1
			a.State = "open"
			if ack, ok := acks[a.ID]; ok {
				// The newest ack is newer than this, the alert's newest entry.
				a.State, a.AckedBy, a.AckedAt, a.AckNote, a.AckEntry = "acked", ack.AckedBy, ack.AckedAt, ack.AckNote, ack.AckEntry
			}
			byID[a.ID] = &a
			order = append(order, a.ID)
		}
		if !more || len(idxs) == 0 {
			break
		}
		f.After = idxs[len(idxs)-1]
	}
	out := make([]api.AlertState, 0, len(order))
	for _, id := range order {
		out = append(out, *byID[id])
	}
	return out, nil
}

// ackAlert answers POST /v1/alerts/{id}/ack: an alert.ack entry in
// _system naming the alert, the admin key that acknowledged it and its
// note. An alert raised again after its ack is open again.
func (s *Server) ackAlert(w http.ResponseWriter, r *http.Request, c *call) error {
	id := r.PathValue("id")
	if id == "" || len(id) > 64 || strings.ContainsFunc(id, func(r rune) bool {
		return !(r == '_' || r == '-' || (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9'))
	}) {
		return errBadRequest("invalid alert id")
	}
	var req api.AlertAck
	if len(c.body) > 0 {
		if err := requireJSON(r); err != nil {
			return err
		}
		dec := json.NewDecoder(strings.NewReader(string(c.body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return errBadRequest("ack body: %v (send {\"note\": \"...\"})", err)
		}
	}
	if len(req.Note) > 1024 {
		return errBadRequest("note over 1024 bytes")
	}
	all, err := s.foldAlerts(r.Context())
	if err != nil {
		return err
	}
	var found *api.AlertState
	for i := range all {
		if all[i].ID == id {
			found = &all[i]
			break
		}
	}
	if found == nil {
		return errNotFound("no alert %q in %s", id, api.SystemLog)
	}
	data, err := s.serverEntry(r.Context(), api.SystemLog, alertAck, api.Actor{ID: c.key.ID, Type: "key"},
		[]api.Target{{ID: id, Type: "alert"}}, "success", map[string]string{"id": id, "note": sanitize(req.Note)})
	if err != nil {
		return err
	}
	e, err := entry.Parse(data)
	if err != nil {
		return err
	}
	found.State, found.AckedBy, found.AckNote, found.AckEntry = "acked", c.key.ID, sanitize(req.Note), e.Index
	found.AckedAt = e.ReceivedTime().UTC().Format("2006-01-02T15:04:05.000000Z")
	s.cfg.Logger.Info("alert acknowledged", "id", id, "by", c.key.ID, "entry", e.Index)
	writeJSON(w, http.StatusOK, found)
	return nil
}

// reportCheckpoint answers POST /v1/logs/{log}/checkpoint/report: a client
// sends a checkpoint it was given (text/plain, the signed note). A
// checkpoint this server did not sign is refused (400: it proves nothing).
// One it signed that the stored tree contradicts (another root at its
// size, or a size the log no longer reaches) is evidence of tampering or a
// split view: the log fails closed and a tamper alert is recorded.
func (s *Server) reportCheckpoint(w http.ResponseWriter, r *http.Request, c *call) error {
	if len(c.body) == 0 {
		return errBadRequest("send the checkpoint (the signed note text) as the body")
	}
	got, err := checkpoint.Open(c.body, s.cfg.Ledger.Verifier(), s.cfg.Ledger.Origin(c.log))
	if err != nil {
		return errBadRequest("not a checkpoint of log %q signed by this server: %v", c.log, err)
	}
	cur, _, err := s.current(r.Context(), c.log)
	if err != nil {
		return err
	}
	res := api.CheckpointReport{Log: c.log, Size: got.Size, Current: cur.Size, Consistent: true}
	reason := ""
	if got.Size > cur.Size {
		reason = fmt.Sprintf("a client holds a checkpoint of size %d signed by this server, but the log has only %d entries: the log was rolled back or a split view was served", got.Size, cur.Size)
	} else {
		h, err := s.cfg.Ledger.TreeHash(r.Context(), c.log, got.Size)
		if err != nil {
			return err
		}
		if h != got.Hash {
			reason = fmt.Sprintf("a client holds a checkpoint of size %d signed by this server whose root %s differs from the stored tree's %s: the stored tree was changed or a split view was served", got.Size, got.Hash, h)
		}
	}
	if reason != "" {
		res.Consistent = false
		res.Reason = reason
		if err := s.RecordIntegrityFailure(r.Context(), c.log, -1, reason, "client-report"); err != nil {
			s.cfg.Logger.Error("recording a reported inconsistency", "log", c.log, "err", err)
		}
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// LastUsed is when key id last passed authentication on this node (zero:
// not since it started).
func (s *Server) LastUsed(id string) time.Time {
	if v, ok := s.lastUsed.Load(id); ok {
		return v.(time.Time)
	}
	return time.Time{}
}

// RecordServerEvent appends an entry signed by the server to log (the
// node records its configuration this way).
func (s *Server) RecordServerEvent(ctx context.Context, log, action string, target api.Target, metadata any) error {
	return s.serverEvent(ctx, log, action, api.Actor{ID: "vellum-server", Type: "server"}, []api.Target{target}, "success", metadata)
}
