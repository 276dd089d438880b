package server

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strconv"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/checkpoint"
	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/ledger"
)

func (s *Server) serverInfo(w http.ResponseWriter, r *http.Request, c *call) error {
	writeJSON(w, http.StatusOK, api.ServerInfo{OriginPrefix: s.cfg.OriginPrefix, VerifierKey: s.cfg.VerifierKey, Version: s.cfg.Version})
	return nil
}

func (s *Server) logInfo(ctx context.Context, name string) (api.Log, error) {
	cp, err := s.cfg.Ledger.Checkpoint(ctx, name)
	if err != nil {
		return api.Log{}, err
	}
	li, err := s.cfg.Ledger.Store().Log(ctx, name)
	if err != nil {
		return api.Log{}, err
	}
	c, err := checkpoint.Open(cp, s.cfg.Ledger.Verifier(), "")
	if err != nil {
		return api.Log{}, fmt.Errorf("log %q: own checkpoint does not verify: %v", name, err)
	}
	return api.Log{Name: name, Origin: c.Origin, Size: c.Size, RootHash: c.Hash.String(),
		Created: li.Created.UTC().Format("2006-01-02T15:04:05Z"), Checkpoint: string(cp)}, nil
}

func (s *Server) listLogs(w http.ResponseWriter, r *http.Request, c *call) error {
	all, err := s.cfg.Ledger.Store().Logs(r.Context())
	if err != nil {
		return err
	}
	out := api.LogList{Logs: []api.Log{}}
	for _, li := range all {
		if !c.key.Allows("read", li.Name) && !c.key.Allows("append", li.Name) {
			continue
		}
		l, err := s.logInfo(r.Context(), li.Name)
		if err != nil {
			return err
		}
		out.Logs = append(out.Logs, l)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func requireJSON(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return newHTTPError(http.StatusUnsupportedMediaType, api.CodeUnsupported, "Content-Type must be application/json, not %q", ct)
	}
	return nil
}

func (s *Server) createLog(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := requireJSON(r); err != nil {
		return err
	}
	var req api.CreateLogRequest
	dec := json.NewDecoder(bytes.NewReader(c.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return errBadRequest("body must be {\"name\": \"<log name>\"}: %v", err)
	}
	if api.Reserved(req.Name) || !api.ValidLogName(req.Name) {
		return errBadRequest("invalid log name %q: use 1-63 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit", req.Name)
	}
	if !c.key.Allows("admin", req.Name) {
		return newHTTPError(http.StatusForbidden, api.CodeForbidden, "this key may not create log %q", req.Name)
	}
	if err := s.cfg.Ledger.CreateLog(r.Context(), req.Name); err != nil {
		return err
	}
	if err := s.systemEvent(r.Context(), "log.create", c.key.ID, api.Target{ID: req.Name, Type: "log"}, nil); err != nil {
		return err
	}
	l, err := s.logInfo(r.Context(), req.Name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, l)
	return nil
}

// systemEvent appends an event the server attests to _system.
func (s *Server) systemEvent(ctx context.Context, action, actorKey string, target api.Target, metadata any) error {
	return s.serverEvent(ctx, api.SystemLog, action, api.Actor{ID: actorKey, Type: "key"}, []api.Target{target}, "success", metadata)
}

// serverEvent appends an event the server writes itself (to _system or
// _access), signed with the server's key. It returns the entry bytes.
func (s *Server) serverEvent(ctx context.Context, log, action string, actor api.Actor, targets []api.Target, outcome string, metadata any) error {
	_, err := s.serverEntry(ctx, log, action, actor, targets, outcome, metadata)
	return err
}

func (s *Server) serverEntry(ctx context.Context, log, action string, actor api.Actor, targets []api.Target, outcome string, metadata any) ([]byte, error) {
	ev := api.Event{
		Time:    s.cfg.Now().UTC().Format("2006-01-02T15:04:05.000000Z"),
		Action:  action,
		Actor:   actor,
		Targets: targets,
		Outcome: outcome,
		Source:  "vellum-server",
	}
	if metadata != nil {
		m, err := json.Marshal(metadata)
		if err != nil {
			return nil, err
		}
		ev.Metadata = m
	}
	raw, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	pe, err := entry.ParseEvent(raw)
	if err != nil {
		return nil, err
	}
	sig := ed25519.Sign(s.cfg.ServerKey, entry.Message(log, pe.Canonical))
	rs, err := s.cfg.Ledger.Append(ctx, log, []ledger.Submitted{{Event: pe, KeyID: entry.ServerKeyID, Auth: entry.AuthServer, Sig: sig}})
	if err != nil {
		return nil, err
	}
	return rs[0].Entry, nil
}

func (s *Server) getLog(w http.ResponseWriter, r *http.Request, c *call) error {
	l, err := s.logInfo(r.Context(), c.log)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, l)
	return nil
}

// parseAppend decodes an append body strictly: unknown or duplicate fields
// are refused at every level, and each event is validated and
// canonicalised.
func parseAppend(body []byte, bearer bool) ([]ledger.Submitted, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, errBadRequest(`empty body: send {"events": [{"event": {...}, "key_id": "...", "sig": "..."}]}`)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	bad := func(format string, args ...any) error {
		return newHTTPError(http.StatusBadRequest, api.CodeBadRequest, "malformed append request: "+format, args...)
	}
	expect := func(want json.Delim) error {
		t, err := dec.Token()
		if err != nil {
			return bad("%v", err)
		}
		if d, ok := t.(json.Delim); !ok || d != want {
			return bad("expected %q", string(want))
		}
		return nil
	}
	if err := expect('{'); err != nil {
		return nil, err
	}
	var out []ledger.Submitted
	sawEvents := false
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, bad("%v", err)
		}
		if t != "events" {
			return nil, bad("unknown field %q (only \"events\")", t)
		}
		if sawEvents {
			return nil, bad(`duplicate field "events"`)
		}
		sawEvents = true
		if err := expect('['); err != nil {
			return nil, err
		}
		for i := 0; dec.More(); i++ {
			if i >= api.MaxBatch {
				return nil, newHTTPError(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "more than %d events in one request", api.MaxBatch)
			}
			se, err := parseSigned(dec, i, bearer)
			if err != nil {
				return nil, err
			}
			out = append(out, se)
		}
		if err := expect(']'); err != nil {
			return nil, err
		}
	}
	if err := expect('}'); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err == nil {
		return nil, bad("trailing data after the JSON object")
	}
	if len(out) == 0 {
		return nil, errBadRequest("no events")
	}
	return out, nil
}

func parseSigned(dec *json.Decoder, i int, bearer bool) (ledger.Submitted, error) {
	bad := func(format string, args ...any) error {
		he := newHTTPError(http.StatusBadRequest, api.CodeBadRequest, fmt.Sprintf("event %d: ", i)+format, args...)
		he.index = &i
		return he
	}
	t, err := dec.Token()
	if err != nil {
		return ledger.Submitted{}, bad("%v", err)
	}
	if d, ok := t.(json.Delim); !ok || d != '{' {
		return ledger.Submitted{}, bad(`each element of "events" must be an object {"event", "key_id", "sig"}`)
	}
	var raw json.RawMessage
	var keyID, sig string
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return ledger.Submitted{}, bad("%v", err)
		}
		name, _ := t.(string)
		if seen[name] {
			return ledger.Submitted{}, bad("duplicate field %q", name)
		}
		seen[name] = true
		switch name {
		case "event":
			err = dec.Decode(&raw)
		case "key_id":
			err = dec.Decode(&keyID)
		case "sig":
			err = dec.Decode(&sig)
		default:
			return ledger.Submitted{}, bad("unknown field %q", name)
		}
		if err != nil {
			return ledger.Submitted{}, bad("field %q: %v", name, err)
		}
	}
	if _, err := dec.Token(); err != nil {
		return ledger.Submitted{}, bad("%v", err)
	}
	if raw == nil || (sig == "" && !bearer) {
		return ledger.Submitted{}, bad(`"event" and "sig" are required ("sig" may be left out only by keys in bearer mode)`)
	}
	ev, err := entry.ParseEvent(raw)
	if err != nil {
		he := newHTTPError(http.StatusBadRequest, api.CodeInvalidEvent, "event %d: %v", i, err)
		he.index = &i
		return ledger.Submitted{}, he
	}
	var sb []byte
	if sig != "" {
		sb, err = base64.StdEncoding.Strict().DecodeString(sig)
		if err != nil || len(sb) != ed25519.SignatureSize {
			return ledger.Submitted{}, bad(`"sig" must be a base64 Ed25519 signature (64 bytes)`)
		}
	}
	return ledger.Submitted{Event: ev, KeyID: keyID, Sig: sb}, nil
}

func (s *Server) appendEntries(w http.ResponseWriter, r *http.Request, c *call) (err error) {
	var events []ledger.Submitted
	var receipts []api.Receipt
	defer func() { s.countAppend(c.log, len(events), receipts, err) }()
	if api.Reserved(c.log) {
		return newHTTPError(http.StatusForbidden, api.CodeForbidden, "log %q is written by the server only", c.log)
	}
	if err := requireJSON(r); err != nil {
		return err
	}
	events, err = parseAppend(c.body, c.auth == entry.AuthBearer)
	if err != nil {
		return err
	}
	for i := range events {
		if events[i].KeyID == "" {
			events[i].KeyID = c.key.ID
		}
		if events[i].KeyID != c.key.ID {
			he := newHTTPError(http.StatusForbidden, api.CodeForbidden, "event %d is signed by key %q but the request by key %q: a key appends only its own events", i, events[i].KeyID, c.key.ID)
			he.index = &i
			return he
		}
		events[i].Auth = c.auth
		if events[i].Sig == nil {
			// A bearer client that cannot sign: the server attests the event.
			events[i].Sig = ed25519.Sign(s.cfg.ServerKey, entry.Message(c.log, events[i].Event.Canonical))
			events[i].ServerSigned = true
		}
	}
	receipts, err = s.cfg.Ledger.Append(r.Context(), c.log, events)
	if err != nil {
		return err
	}
	writeReceipts(w, receipts)
	return nil
}

// countAppend records an append request's outcome in the metrics.
func (s *Server) countAppend(log string, n int, receipts []api.Receipt, err error) {
	if err == nil {
		s.m.appends.Inc(log, "ok")
		s.m.batchEvents.Observe(float64(n))
		dup := 0
		for _, rc := range receipts {
			if rc.Duplicate {
				dup++
			}
		}
		s.m.events.Add(float64(len(receipts)-dup), log, "appended")
		s.m.events.Add(float64(dup), log, "duplicate")
		return
	}
	he := toHTTP(err)
	if he.status == http.StatusNotFound {
		log = "-" // no such log: not a label value of its own
	}
	outcome := "refused"
	switch {
	case he.status == http.StatusServiceUnavailable:
		outcome = "unavailable"
	case he.status >= 500:
		outcome = "error"
	}
	s.m.appends.Inc(log, outcome)
	if n > 0 {
		s.m.events.Add(float64(n), log, "refused")
	}
}

func parseIndex(name, v string) (int64, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, errBadRequest("%s must be a non-negative integer, not %q", name, v)
	}
	return n, nil
}

// current returns log's latest checkpoint, parsed and as signed.
func (s *Server) current(ctx context.Context, log string) (checkpoint.Checkpoint, []byte, error) {
	cp, err := s.cfg.Ledger.Checkpoint(ctx, log)
	if err != nil {
		return checkpoint.Checkpoint{}, nil, err
	}
	c, err := checkpoint.Open(cp, s.cfg.Ledger.Verifier(), "")
	if err != nil {
		return checkpoint.Checkpoint{}, nil, err
	}
	return c, cp, nil
}

const maxRange = 1000

// leafHashes returns the leaf hashes the Merkle tree holds for n entries
// from start. They are served beside the entry bytes (not recomputed from
// them), so a verifier can tell which stored entry no longer matches its
// leaf.
func (s *Server) leafHashes(ctx context.Context, log string, start, n int64) ([]tlog.Hash, error) {
	ids := make([]int64, n)
	for i := range ids {
		ids[i] = tlog.StoredHashIndex(0, start+int64(i))
	}
	return s.cfg.Ledger.Store().ReadHashes(ctx, log, ids)
}

func (s *Server) listEntries(w http.ResponseWriter, r *http.Request, c *call) error {
	q := r.URL.Query()
	_, hasStart := q["start"]
	_, hasEnd := q["end"]
	if !hasStart && !hasEnd {
		return s.search(w, r, c)
	}
	for k := range q {
		if k != "start" && k != "end" {
			return errBadRequest("parameter %q does not go with start and end: a range read takes start and end only; a search takes filters (see docs/api.md)", k)
		}
	}
	cur, _, err := s.current(r.Context(), c.log)
	if err != nil {
		return err
	}
	start, end := int64(0), cur.Size
	if v := q.Get("start"); v != "" {
		if start, err = parseIndex("start", v); err != nil {
			return err
		}
	}
	if v := q.Get("end"); v != "" {
		if end, err = parseIndex("end", v); err != nil {
			return err
		}
	}
	end = min(end, cur.Size, start+maxRange)
	out := api.EntryList{Entries: []api.Entry{}}
	if start < end {
		es, err := s.cfg.Ledger.Store().ReadEntries(r.Context(), c.log, start, end)
		if err != nil {
			return err
		}
		leaves, err := s.leafHashes(r.Context(), c.log, start, int64(len(es)))
		if err != nil {
			return err
		}
		for i, data := range es {
			out.Entries = append(out.Entries, api.Entry{Log: c.log, Index: start + int64(i), LeafHash: leaves[i].String(), Data: data})
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getEntry(w http.ResponseWriter, r *http.Request, c *call) error {
	idx, err := parseIndex("index", r.PathValue("index"))
	if err != nil {
		return err
	}
	q := r.URL.Query()
	for k := range q {
		if k != "proof" {
			return errBadRequest("unknown parameter %q (use proof=true)", k)
		}
	}
	cur, cp, err := s.current(r.Context(), c.log)
	if err != nil {
		return err
	}
	if idx >= cur.Size {
		return errNotFound("log %q has %d entries; index %d is not one of them", c.log, cur.Size, idx)
	}
	es, err := s.cfg.Ledger.Store().ReadEntries(r.Context(), c.log, idx, idx+1)
	if err != nil {
		return err
	}
	if len(es) != 1 {
		return errNotFound("entry %d not found", idx)
	}
	leaves, err := s.leafHashes(r.Context(), c.log, idx, 1)
	if err != nil {
		return err
	}
	e := api.Entry{Log: c.log, Index: idx, LeafHash: leaves[0].String(), Data: es[0]}
	if v := q.Get("proof"); v != "" && v != "false" && v != "0" {
		text, _, err := s.cfg.Ledger.ProofText(r.Context(), c.log, idx, cp, cur.Size)
		if err != nil {
			return err
		}
		e.Proof = string(text)
	}
	writeJSON(w, http.StatusOK, e)
	return nil
}

func (s *Server) getCheckpoint(w http.ResponseWriter, r *http.Request, c *call) error {
	cp, err := s.cfg.Ledger.Checkpoint(r.Context(), c.log)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(cp)
	return nil
}

func (s *Server) sizeParam(r *http.Request, name string, cur int64, def int64) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := parseIndex(name, v)
	if err != nil {
		return 0, err
	}
	if n > cur {
		return 0, errBadRequest("%s %d is beyond the log's current size %d", name, n, cur)
	}
	return n, nil
}

func onlyParams(r *http.Request, names ...string) error {
	for k := range r.URL.Query() {
		ok := false
		for _, n := range names {
			ok = ok || k == n
		}
		if !ok {
			return errBadRequest("unknown parameter %q", k)
		}
	}
	return nil
}

func (s *Server) inclusionProof(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := onlyParams(r, "index", "size"); err != nil {
		return err
	}
	cur, _, err := s.current(r.Context(), c.log)
	if err != nil {
		return err
	}
	if r.URL.Query().Get("index") == "" {
		return errBadRequest("index is required")
	}
	idx, err := parseIndex("index", r.URL.Query().Get("index"))
	if err != nil {
		return err
	}
	size, err := s.sizeParam(r, "size", cur.Size, cur.Size)
	if err != nil {
		return err
	}
	if idx >= size {
		return errBadRequest("index %d is not below size %d", idx, size)
	}
	p, leaf, err := s.cfg.Ledger.Prove(r.Context(), c.log, idx, size)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.InclusionProof{Index: idx, Size: size, LeafHash: leaf.String(), Hashes: hashStrings(p)})
	return nil
}

func hashStrings(hs []tlog.Hash) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.String()
	}
	return out
}

func (s *Server) consistencyProof(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := onlyParams(r, "old", "new"); err != nil {
		return err
	}
	cur, _, err := s.current(r.Context(), c.log)
	if err != nil {
		return err
	}
	if r.URL.Query().Get("old") == "" {
		return errBadRequest("old is required")
	}
	oldSize, err := s.sizeParam(r, "old", cur.Size, 0)
	if err != nil {
		return err
	}
	newSize, err := s.sizeParam(r, "new", cur.Size, cur.Size)
	if err != nil {
		return err
	}
	if oldSize > newSize {
		return errBadRequest("old %d is above new %d", oldSize, newSize)
	}
	var p tlog.TreeProof
	if oldSize > 0 && oldSize < newSize {
		if p, err = s.cfg.Ledger.ProveTree(r.Context(), c.log, oldSize, newSize); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, api.ConsistencyProof{Old: oldSize, New: newSize, Hashes: hashStrings(p)})
	return nil
}
