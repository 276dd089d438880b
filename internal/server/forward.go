package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/ledger"
)

// The internal endpoint through which a node forwards a sequencer round to
// the node that holds the log's sequencer lease (docs/postgres.md). Only the
// nodes of this deployment may call it: requests are authenticated with the
// node-auth key derived from the server key (package nodeauth); anything
// else is refused with 401.

// ForwardPath is the internal endpoint's path.
const ForwardPath = "/internal/v1/forward"

// MaxForwardBody bounds a forwarded round's request body. A forwarding node
// stops gathering a round at ledger.ForwardRoundBytes of events, so a round
// is at most that plus one request (api.MaxBodySize), base64-encoded, with
// each event's key id, auth and signature.
const MaxForwardBody = 2 * (ledger.ForwardRoundBytes + api.MaxBodySize)

// ForwardBody is a forwarded round.
type ForwardBody struct {
	Log      string             `json:"log"`
	Requests []ForwardedRequest `json:"requests"`
}

// ForwardedRequest is one append request of a forwarded round.
type ForwardedRequest struct {
	Events []ForwardedEvent `json:"events"`
}

// ForwardedEvent is one event, as the forwarding node authenticated it.
type ForwardedEvent struct {
	Event        []byte `json:"event"` // the canonical event bytes
	KeyID        string `json:"key_id"`
	Auth         string `json:"auth"`
	Sig          []byte `json:"sig"`
	ServerSigned bool   `json:"server_signed,omitempty"`
}

// ForwardAnswer is the holder's answer: one result per request, in order,
// and its checkpoint after the round.
type ForwardAnswer struct {
	Results    []ForwardedResult `json:"results"`
	Checkpoint []byte            `json:"checkpoint"`
}

// ForwardedResult is one request's receipts, or its refusal as the holder
// would have answered it (Status, Error, RetryAfter).
type ForwardedResult struct {
	Receipts   []api.Receipt    `json:"receipts,omitempty"`
	Status     int              `json:"status,omitempty"`
	Error      *api.ErrorDetail `json:"error,omitempty"`
	RetryAfter int              `json:"retry_after,omitempty"`
}

// EncodeJSON encodes v as the server writes JSON: without HTML escaping, so
// that embedded canonical entry bytes travel unchanged.
func EncodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// forward serves ForwardPath.
func (s *Server) forward(w http.ResponseWriter, r *http.Request) {
	if s.cfg.NodeAuth == nil {
		writeError(w, r, s.cfg.Logger, errNotFound("no such endpoint: %s %s", r.Method, ForwardPath))
		return
	}
	n := r.ContentLength
	if n < 0 || n > MaxForwardBody {
		n = MaxForwardBody
	}
	n = max(n, 4096)
	if !s.bodies.TryAcquire(n) {
		s.m.busy.Inc()
		writeError(w, r, s.cfg.Logger, &httpError{status: http.StatusServiceUnavailable, code: api.CodeUnavailable, retry: true, after: 1,
			msg: "the server is busy: too many request bodies in flight; nothing was recorded; retry shortly"})
		return
	}
	defer s.bodies.Release(n)
	if err := s.cfg.NodeAuth.Precheck(r, time.Now()); err != nil {
		s.refuseNode(w, r, err)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxForwardBody+1))
	if err != nil {
		writeError(w, r, s.cfg.Logger, errBadRequest("reading the request body: %v", err))
		return
	}
	// Authenticated before the size is judged: nobody else learns anything.
	if err := s.cfg.NodeAuth.Verify(r, body, time.Now()); err != nil {
		s.refuseNode(w, r, err)
		return
	}
	if len(body) > MaxForwardBody {
		writeError(w, r, s.cfg.Logger, newHTTPError(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "a forwarded round is at most %d bytes", MaxForwardBody))
		return
	}
	var fb ForwardBody
	if err := json.Unmarshal(body, &fb); err != nil || !api.ValidLogName(fb.Log) {
		writeError(w, r, s.cfg.Logger, errBadRequest("malformed forwarded round"))
		return
	}
	reqs := make([]ledger.ForwardRequest, len(fb.Requests))
	bad := make([]error, len(fb.Requests))
	for i, fr := range fb.Requests {
		evs := make([]ledger.Submitted, len(fr.Events))
		for j, fe := range fr.Events {
			// Parsed and validated again here: the canonical bytes must be
			// exactly what this node would make of them.
			pe, err := entry.ParseEvent(fe.Event)
			if err == nil && !bytes.Equal(pe.Canonical, fe.Event) {
				err = fmt.Errorf("%w: the forwarded event is not in canonical form", entry.ErrInvalidEvent)
			}
			if err != nil {
				bad[i] = &ledger.EventError{Index: j, Err: err}
				break
			}
			evs[j] = ledger.Submitted{Event: pe, KeyID: fe.KeyID, Auth: fe.Auth, Sig: fe.Sig, ServerSigned: fe.ServerSigned}
		}
		if bad[i] == nil {
			reqs[i].Events = evs
		}
	}
	// Requests refused here are not sent to the ledger (an empty request
	// would be refused by it anyway, as invalid).
	var send []ledger.ForwardRequest
	var where []int
	for i := range reqs {
		if bad[i] == nil {
			send = append(send, reqs[i])
			where = append(where, i)
		}
	}
	ans := ForwardAnswer{Results: make([]ForwardedResult, len(reqs))}
	if len(send) > 0 {
		resp, err := s.cfg.Ledger.AppendForwarded(r.Context(), fb.Log, send)
		if err != nil {
			// Nothing was queued: the forwarding node may sequence the
			// round itself.
			writeError(w, r, s.cfg.Logger, err)
			return
		}
		for k, i := range where {
			res := resp.Results[k]
			if res.Err != nil {
				bad[i] = res.Err
				continue
			}
			ans.Results[i].Receipts = res.Receipts
		}
		ans.Checkpoint = resp.Checkpoint
	} else if cp, err := s.cfg.Ledger.Checkpoint(r.Context(), fb.Log); err == nil {
		ans.Checkpoint = cp
	}
	for i, err := range bad {
		if err == nil {
			continue
		}
		he := toHTTP(err)
		if he.status >= 500 {
			s.cfg.Logger.Error("forwarded request failed", "log", fb.Log, "status", he.status, "err", err)
		}
		res := &ans.Results[i]
		res.Status = he.status
		res.Error = &api.ErrorDetail{Code: he.code, Message: he.msg, Index: he.index}
		if he.retry {
			res.RetryAfter = max(1, he.after)
		}
	}
	b, err := EncodeJSON(ans)
	if err != nil {
		writeError(w, r, s.cfg.Logger, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

// refuseNode answers 401 to a request not authenticated as a node, and
// records why (never the key, nor the MAC).
func (s *Server) refuseNode(w http.ResponseWriter, r *http.Request, err error) {
	s.m.authRefusals.Inc("node_auth")
	s.cfg.Logger.Warn("refused an internal request", "path", r.URL.Path, "remote", r.RemoteAddr, "reason", err)
	s.recordAccess(r, "", http.StatusUnauthorized, "internal endpoint: "+err.Error())
	writeError(w, r, s.cfg.Logger, newHTTPError(http.StatusUnauthorized, api.CodeUnauthorized, "the request is not authenticated as a vellum node of this deployment"))
}

// remoteToHTTP passes a refusal by the sequencing node on unchanged.
func remoteToHTTP(err error) (*httpError, bool) {
	var re *ledger.RemoteError
	if !errors.As(err, &re) {
		return nil, false
	}
	he := &httpError{status: re.Status, code: re.Code, msg: re.Message, index: re.Index}
	if re.RetryAfter > 0 || re.Status == http.StatusServiceUnavailable {
		he.retry, he.after = true, re.RetryAfter
	}
	return he, true
}
