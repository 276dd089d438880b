// Package server is vellum's HTTP edge: routing, authentication of every
// request (RFC 9421 HTTP Message Signatures with Ed25519 provisioning keys),
// request parsing and the one place that maps errors to HTTP statuses.
//
// Handlers never return internal detail to clients: an error that is not
// one of the known sentinels becomes a 500 with a generic message, and the
// detail goes to the structured log.
package server

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/alert"
	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/httpsig"
	"github.com/vellum-audit/vellum/internal/index"
	"github.com/vellum-audit/vellum/internal/keys"
	"github.com/vellum-audit/vellum/internal/ledger"
	"github.com/vellum-audit/vellum/internal/metrics"
	"github.com/vellum-audit/vellum/internal/nodeauth"
	"github.com/vellum-audit/vellum/internal/store"
)

// Config configures a Server.
type Config struct {
	Ledger       *ledger.Ledger
	Registry     *keys.Registry
	ServerKey    ed25519.PrivateKey // signs the server's own entries in _system
	VerifierKey  string             // note verifier key of the checkpoint key
	OriginPrefix string
	Version      string
	Logger       *slog.Logger
	Now          func() time.Time
	// Refold rebuilds Registry from _system (used if they ever diverge).
	Refold func(context.Context) error
	// Sync, if set, folds into Registry the _system entries recorded since
	// its last fold (this node's and other nodes'); the server calls it
	// after recording a key change instead of applying the entry itself.
	Sync func(context.Context) error
	// Metrics, if set, receives the server's metrics and is served at
	// GET /metrics to keys that may read _system (auditor, admin).
	Metrics *metrics.Registry
	// BodyBudget bounds the bytes of request bodies held in memory at
	// once (default 64 MiB); a request whose body would exceed it gets 503.
	BodyBudget int64
	// Alerts, if set, is told of refusals and key use (its detectors) and
	// records tamper alerts; GET /v1/alerts works without it.
	Alerts *alert.Engine
	// NodeAuth, if set, serves the internal endpoint through which other
	// nodes of the deployment forward sequencer rounds (forward.go), to
	// requests it authenticates.
	NodeAuth *nodeauth.Verifier
}

// serverMetrics are the server's instruments.
type serverMetrics struct {
	appends      *metrics.CounterVec
	events       *metrics.CounterVec
	batchEvents  *metrics.HistogramVec
	authRefusals *metrics.CounterVec
	busy         *metrics.CounterVec
}

func (s *Server) registerMetrics(r *metrics.Registry) {
	s.m = serverMetrics{
		appends: r.Counter("vellum_appends_total",
			"Append requests by log and outcome: ok, refused (4xx), unavailable (503: overload, storage) or error (other 5xx).", "log", "outcome"),
		events: r.Counter("vellum_events_total",
			"Events of append requests by log and outcome: appended, duplicate (an idempotent retry answered with its receipt) or refused.", "log", "outcome"),
		batchEvents: r.Histogram("vellum_append_request_events",
			"Events per append request.", []float64{1, 10, 100, 1000}),
		authRefusals: r.Counter("vellum_auth_refusals_total",
			"Requests refused by authentication or authorisation, by reason.", "reason"),
		busy: r.Counter("vellum_busy_refusals_total",
			"Requests refused with 503 before their body was read, because the bodies in flight reached their memory budget."),
	}
}

// Server serves HTTP API v1.
type Server struct {
	cfg      Config
	m        serverMetrics
	bodies   *semaphore.Weighted // bytes of request bodies in memory
	nonces   *httpsig.NonceCache
	policy   httpsig.Policy
	mux      *http.ServeMux
	limiter  limiter
	lastUsed sync.Map   // key id → time.Time of its last authenticated request
	keysMu   sync.Mutex // serialises key lifecycle changes (check, append, fold)
	noisy    limiter    // per source address: refusals recorded in _access without a known key

	suppressedMu sync.Mutex
	suppressedBy map[string]int64 // per source address: refusals not recorded one by one
}

// New returns a Server.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{
		cfg:    cfg,
		nonces: httpsig.NewNonceCache(2*httpsig.DefaultWindow+time.Minute, 1<<20),
		policy: httpsig.Policy{Window: httpsig.DefaultWindow, RequireNonce: true},
		mux:    http.NewServeMux(),
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewRegistry()
		s.cfg.Metrics = cfg.Metrics
	}
	if cfg.BodyBudget <= 0 {
		cfg.BodyBudget = 64 << 20
	}
	s.bodies = semaphore.NewWeighted(max(cfg.BodyBudget, api.MaxBodySize))
	s.registerMetrics(cfg.Metrics)
	s.routes()
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// A path with '.', '..', '//' or a trailing '/' (decoded from %2e, %2f
	// too) would be redirected by the mux to its clean form; it is refused
	// instead: nothing is served under two names, and no client is sent
	// elsewhere.
	if p := r.URL.Path; p != "/" && (p == "" || path.Clean(p) != p) {
		// Authenticated first, so that the refusal of a request made with
		// a key is recorded under that key.
		s.authed("", func(http.ResponseWriter, *http.Request, *call) error {
			return errBadRequest("the request path %q is not canonical: no '.' or '..' segments, no '//', no trailing '/'", sanitize(truncate(p, 200)))
		})(w, r)
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) routes() {
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("POST "+ForwardPath, s.forward)
	s.handle("GET /metrics", "", s.metrics)
	s.handle("GET /v1/server", "", s.serverInfo)
	s.handle("GET /v1/logs", "", s.listLogs)
	s.handle("POST /v1/logs", "", s.createLog)
	s.handle("GET /v1/keys", "admin", s.listKeys)
	s.handle("POST /v1/keys", "admin", s.changeKey)
	s.handle("GET /v1/keys/{id}", "", s.getKey)
	s.handle("GET /v1/logs/{log}", "read", s.getLog)
	s.handle("POST /v1/logs/{log}/entries", "append", s.appendEntries)
	s.handle("GET /v1/logs/{log}/entries", "read", s.listEntries)
	s.handle("GET /v1/logs/{log}/entries/{index}", "read", s.getEntry)
	s.handle("GET /v1/logs/{log}/checkpoint", "read", s.getCheckpoint)
	s.handle("GET /v1/logs/{log}/proof/inclusion", "read", s.inclusionProof)
	s.handle("GET /v1/logs/{log}/proof/consistency", "read", s.consistencyProof)
	s.handle("GET /v1/logs/{log}/tile/{path...}", "read", s.getTile)
	s.tailRoutes()
	s.exportRoutes()
	s.alertRoutes()
	// Anything else: 404 (after authentication, so that the refusal of a
	// request made with a key is on the record under that key, and no
	// endpoint can be probed for without one).
	s.handle("/", "", func(w http.ResponseWriter, r *http.Request, c *call) error {
		return errNotFound("no such endpoint: %s %s", sanitize(truncate(r.Method, 32)), sanitize(truncate(r.URL.Path, 200)))
	})
}

// metrics serves the Prometheus metrics to keys that may read _system:
// they name every log and key's activity.
func (s *Server) metrics(w http.ResponseWriter, r *http.Request, c *call) error {
	if !c.key.Allows(keys.OpRead, api.SystemLog) {
		return newHTTPError(http.StatusForbidden, api.CodeForbidden, "metrics are for keys that may read %s (auditor or admin)", api.SystemLog)
	}
	s.cfg.Metrics.Handler().ServeHTTP(w, r)
	return nil
}

// healthz reports "ok", or "integrity_failure" with the logs that failed
// verification (this node signs no checkpoint for them). It answers 200
// either way, so that a load balancer keeps the node for reads, unless
// ?strict is given: then a failure is a 503.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	type failure struct {
		Log    string `json:"log"`
		Index  *int64 `json:"index,omitempty"`
		Reason string `json:"reason"`
		Since  string `json:"since"`
	}
	fs := []failure{}
	for _, e := range s.cfg.Ledger.Integrity() {
		f := failure{Log: e.Log, Reason: e.Reason, Since: e.Since.Format(time.RFC3339)}
		if e.Index >= 0 {
			f.Index = &e.Index
		}
		fs = append(fs, f)
	}
	if len(fs) == 0 {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		return
	}
	status := http.StatusOK
	if r.URL.Query().Has("strict") {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, map[string]any{"status": "integrity_failure", "integrity": fs})
}

// RecordIntegrityFailure makes log fail closed (no new checkpoint) and,
// the first time, records an alert entry in _system saying what was found
// where. _system itself failing cannot record its own alert: /healthz and
// the metrics still report it.
func (s *Server) RecordIntegrityFailure(ctx context.Context, log string, index int64, reason, detector string) error {
	if !s.cfg.Ledger.Distrust(log, index, reason) {
		return nil
	}
	s.cfg.Logger.Error("integrity failure: no new checkpoint will be signed for this log", "log", log, "index", index, "reason", reason, "detector", detector)
	if log == api.SystemLog {
		return nil
	}
	if s.cfg.Alerts != nil {
		d := map[string]any{"found_by": detector, "reason": reason}
		if index >= 0 {
			d["index"] = index
		}
		s.cfg.Alerts.Raise(alert.Alert{Detector: alert.Tamper, Severity: alert.Critical, Log: log, Details: d,
			Summary: fmt.Sprintf("log %s failed verification (%s): %s", log, detector, reason),
			Action:  "Compare the log with an exported bundle or a replica, find how the database was changed, restore it from a verified backup; this node signs no new checkpoint for the log (appends get 503) until it is restarted on data that verifies."})
		return nil
	}
	md := map[string]any{"detector": detector, "reason": reason,
		"action_needed": "compare the log with an exported bundle or a replica, find how the database was changed, restore it from a verified backup; the node refuses appends to this log until restarted on data that verifies"}
	if index >= 0 {
		md["index"] = index
	}
	return s.serverEvent(ctx, api.SystemLog, "alert.tamper", api.Actor{ID: "vellum-server", Type: "server"},
		[]api.Target{{ID: log, Type: "log"}}, "failure", md)
}

// httpError is an error with a status and a message safe for clients.
type httpError struct {
	status int
	code   string
	msg    string
	index  *int
	retry  bool
	after  int // Retry-After seconds when retry (default 1)
}

func (e *httpError) Error() string { return e.msg }

func newHTTPError(status int, code, format string, args ...any) *httpError {
	return &httpError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

func errBadRequest(format string, args ...any) error {
	return newHTTPError(http.StatusBadRequest, api.CodeBadRequest, format, args...)
}

func errNotFound(format string, args ...any) error {
	return newHTTPError(http.StatusNotFound, api.CodeNotFound, format, args...)
}

var errUnauthorized = newHTTPError(http.StatusUnauthorized, api.CodeUnauthorized, "the request is not authenticated by a valid key")

// toHTTP is the one place that maps errors to statuses.
func toHTTP(err error) *httpError {
	var he *httpError
	if errors.As(err, &he) {
		return he
	}
	if he, ok := remoteToHTTP(err); ok {
		return he
	}
	var ee *ledger.EventError
	var behind *store.IndexBehindError
	var integrity *ledger.IntegrityError
	var idx *int
	if errors.As(err, &ee) {
		i := ee.Index
		idx = &i
	}
	mk := func(status int, code string) *httpError {
		return &httpError{status: status, code: code, msg: err.Error(), index: idx}
	}
	switch {
	case errors.Is(err, entry.ErrInvalidEvent), errors.Is(err, ledger.ErrInvalid):
		return mk(http.StatusBadRequest, api.CodeInvalidEvent)
	case errors.Is(err, ledger.ErrBadSignature):
		return mk(http.StatusBadRequest, api.CodeInvalidEvent)
	case errors.Is(err, ledger.ErrTooLarge):
		return mk(http.StatusRequestEntityTooLarge, api.CodeTooLarge)
	case errors.Is(err, ledger.ErrConflict), errors.Is(err, store.ErrExists):
		return mk(http.StatusConflict, api.CodeConflict)
	case errors.Is(err, store.ErrNotFound):
		return mk(http.StatusNotFound, api.CodeNotFound)
	case errors.Is(err, keys.ErrInvalidRecord):
		return mk(http.StatusBadRequest, api.CodeInvalidEvent)
	case errors.Is(err, index.ErrBadFilter):
		return mk(http.StatusBadRequest, api.CodeBadRequest)
	case errors.Is(err, keys.ErrNoSuchKey):
		return mk(http.StatusNotFound, api.CodeNotFound)
	case errors.Is(err, keys.ErrConflict):
		return mk(http.StatusConflict, api.CodeConflict)
	case errors.Is(err, keys.ErrUnknownKey), errors.Is(err, keys.ErrKeyInactive), errors.Is(err, keys.ErrScope):
		return mk(http.StatusForbidden, api.CodeForbidden)
	case errors.Is(err, ledger.ErrOverloaded):
		return &httpError{status: http.StatusServiceUnavailable, code: api.CodeUnavailable, retry: true, after: 1,
			msg: "overloaded: the log's " + err.Error() + "; nothing was recorded; retry after the Retry-After delay"}
	case errors.Is(err, ledger.ErrClosed):
		return &httpError{status: http.StatusServiceUnavailable, code: api.CodeUnavailable, msg: err.Error() + "; nothing was recorded; retry on another node or after the restart", retry: true}
	case errors.As(err, &integrity):
		return &httpError{status: http.StatusServiceUnavailable, code: api.CodeUnavailable, retry: true, after: 60,
			msg: "nothing was recorded: " + integrity.Error() + "; reads still work and carry a Vellum-Integrity warning; an operator must investigate (docs/guarantees.md)"}
	case errors.As(err, &behind):
		return &httpError{status: http.StatusServiceUnavailable, code: api.CodeUnavailable, retry: true, after: 2,
			msg: fmt.Sprintf("the search index of log %q is behind the log by %d entries; retry shortly (the entries themselves are stored and readable by index)", behind.Log, behind.Behind)}
	case errors.Is(err, store.ErrNotDurable):
		return &httpError{status: http.StatusServiceUnavailable, code: api.CodeUnavailable, retry: true, after: 5,
			msg: "storage is failing: it refused a write (making it durable failed: fsync); the request was not acknowledged, but should the server crash before its next commit it may still turn out stored: retry with the same event ids (an event already stored is answered with its receipt); reads still work"}
	case errors.Is(err, store.ErrWriteFailed):
		return &httpError{status: http.StatusServiceUnavailable, code: api.CodeUnavailable, retry: true, after: 5,
			msg: "storage is full or failing: it refused a write; nothing was recorded; retry once space is freed (reads still work)"}
	case errors.Is(err, store.ErrUnavailable):
		return &httpError{status: http.StatusServiceUnavailable, code: api.CodeUnavailable, msg: "storage is unavailable; nothing was recorded, retry later", retry: true}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &httpError{status: http.StatusServiceUnavailable, code: api.CodeUnavailable, msg: "request cancelled", retry: true}
	}
	return &httpError{status: http.StatusInternalServerError, code: api.CodeInternal, msg: "internal error"}
}

func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	he := toHTTP(err)
	if he.status >= 500 {
		log.Error("request failed", "method", r.Method, "path", r.URL.Path, "status", he.status, "err", err)
	} else {
		log.Debug("request refused", "method", r.Method, "path", r.URL.Path, "status", he.status, "err", err)
	}
	if he.retry {
		w.Header().Set("Retry-After", strconv.Itoa(max(1, he.after)))
	}
	writeJSON(w, he.status, api.Error{Error: api.ErrorDetail{Code: he.code, Message: he.msg, Index: he.index}})
}

// writeJSON writes v without HTML escaping, so that embedded canonical
// entry bytes reach the client unchanged.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":{"code":"internal","message":"internal error"}}` + "\n")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}
