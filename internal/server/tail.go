package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/index"
	"github.com/vellum-audit/vellum/internal/keys"
)

// The live tail: GET /v1/logs/{log}/stream answers Server-Sent Events,
// one "entry" event per matching entry, from a cursor (the next index) that
// only moves forward. The stream reads the log from storage in chunks of at
// most streamChunk entries until it has caught up with the log's size, then
// waits for the next commit (Ledger.Size's channel), a heartbeat or the end
// of the request. It never holds up the sequencer: a consumer that reads
// slowly only makes its stream read from storage later, and one that reads
// nothing at all is dropped after DefaultStreamStall without progress.

// Stream timing defaults.
const (
	// DefaultStreamHeartbeat is how long a stream stays silent before it
	// sends a heartbeat comment.
	DefaultStreamHeartbeat = 15 * time.Second
	// DefaultStreamStall is how long one write to a stream may take before
	// the consumer is considered gone and the stream ends.
	DefaultStreamStall = 60 * time.Second
	// streamChunk is how many entries a stream reads from storage at once;
	// it bounds a stream's memory.
	streamChunk = maxRange
)

// The stream timings are process-wide (the Server's fields live in
// server.go); tests shorten them with SetStreamTiming.
var streamHeartbeat, streamStall atomic.Int64

// SetStreamTiming sets the heartbeat interval and the write stall limit of
// every stream (zero keeps a value) and returns a function that restores
// the previous ones. It is meant for tests.
func SetStreamTiming(heartbeat, stall time.Duration) (restore func()) {
	oldHB, oldStall := streamHeartbeat.Load(), streamStall.Load()
	if heartbeat > 0 {
		streamHeartbeat.Store(int64(heartbeat))
	}
	if stall > 0 {
		streamStall.Store(int64(stall))
	}
	return func() {
		streamHeartbeat.Store(oldHB)
		streamStall.Store(oldStall)
	}
}

func heartbeatInterval() time.Duration {
	if d := streamHeartbeat.Load(); d > 0 {
		return time.Duration(d)
	}
	return DefaultStreamHeartbeat
}

func stallLimit() time.Duration {
	if d := streamStall.Load(); d > 0 {
		return time.Duration(d)
	}
	return DefaultStreamStall
}

// tailRoutes registers the live tail (Server-Sent Events).
func (s *Server) tailRoutes() {
	s.handleStream("GET /v1/logs/{log}/stream", keys.OpRead, s.streamEntries)
}

// handleStream is handle for long-lived answers: authentication and
// authorisation are the same, refusals are recorded the same way, but the
// successful read is recorded in _access by fn itself when the stream
// starts (handle records a read when its handler returns, which for a
// stream would be when it ends, or never). fn returns an error only before
// it has written anything.
func (s *Server) handleStream(pattern, op string, fn handlerFunc) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		c, rf := s.authenticate(w, r, op)
		if rf != nil {
			s.recordAccess(r, rf.keyID, rf.status, rf.reason)
			writeError(w, r, s.cfg.Logger, rf.client)
			return
		}
		if err := fn(w, r, c); err != nil {
			if he := toHTTP(err); he.status == http.StatusForbidden {
				s.recordAccess(r, c.key.ID, he.status, he.msg)
			}
			writeError(w, r, s.cfg.Logger, err)
		}
	})
}

// streamRefused are search parameters that make no sense for a stream.
var streamRefused = []string{"order", "limit", "cursor"}

// streamEntries answers GET /v1/logs/{log}/stream.
func (s *Server) streamEntries(w http.ResponseWriter, r *http.Request, c *call) error {
	ctx := r.Context()
	q := r.URL.Query()
	for _, p := range streamRefused {
		if q.Has(p) {
			return errBadRequest("parameter %q has no meaning for a stream (it follows the log in index order; resume with from= or Last-Event-ID)", p)
		}
	}
	f, err := index.ParseFilter(q, s.cfg.Now(), "from")
	if err != nil {
		return errBadRequest("%v", err)
	}
	size, _, err := s.cfg.Ledger.Size(ctx, c.log)
	if err != nil {
		return err
	}
	next := size
	if v := q.Get("from"); v != "" {
		if next, err = parseIndex("from", v); err != nil {
			return err
		}
		if next > size {
			return errBadRequest("from %d is beyond the log's current size %d", next, size)
		}
	}
	if vs := r.Header.Values("Last-Event-ID"); len(vs) > 0 && strings.TrimSpace(strings.Join(vs, "")) != "" {
		if len(vs) > 1 {
			return errBadRequest("Last-Event-ID given %d times", len(vs))
		}
		last, err := parseIndex("Last-Event-ID", strings.TrimSpace(vs[0]))
		if err != nil {
			return err
		}
		if last >= size {
			return errBadRequest("Last-Event-ID %d is not an entry of the log (its size is %d)", last, size)
		}
		next = last + 1
	}

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // ask proxies not to buffer
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return nil
	}
	// From here on the answer is the stream: record it, then send headers.
	s.recordAccess(r, c.key.ID, http.StatusOK, "")
	st := &stream{s: s, w: w, rc: http.NewResponseController(w), c: c, f: f, next: next}
	w.WriteHeader(http.StatusOK)
	if err := st.flush(); err != nil {
		return nil
	}
	st.lastWrite = time.Now()
	if err := st.run(ctx, shutdownSignal(r)); err != nil {
		s.cfg.Logger.Debug("stream ended", "log", c.log, "key", c.key.ID, "next", st.next, "err", err)
	}
	return nil
}

// stream is one client's live tail.
type stream struct {
	s         *Server
	w         http.ResponseWriter
	rc        *http.ResponseController
	c         *call
	f         index.Filter
	next      int64 // the index of the next entry to look at
	lastWrite time.Time
	buf       bytes.Buffer
}

// errStreamEnded ends a stream after an error event was sent.
var errStreamEnded = errors.New("stream ended by the server")

// run streams until the request ends, the consumer stalls, the key is no
// longer valid, the server shuts down or storage fails.
func (st *stream) run(ctx context.Context, shutdown <-chan struct{}) error {
	s, log := st.s, st.c.log
	timer := time.NewTimer(heartbeatInterval())
	defer timer.Stop()
	for {
		if err := st.keyValid(); err != nil {
			return err
		}
		size, changed, err := s.cfg.Ledger.Size(ctx, log)
		if err != nil {
			return st.fail(err)
		}
		// Key lifecycle changes are commits to _system: wake for them too,
		// so that a revoked key's stream ends at once.
		_, sysChanged, err := s.cfg.Ledger.Size(ctx, api.SystemLog)
		if err != nil {
			return st.fail(err)
		}
		for st.next < size {
			if err := st.chunk(ctx, size); err != nil {
				return err
			}
			if err := st.keyValid(); err != nil {
				return err
			}
			select {
			case <-shutdown:
				return st.fail(fmt.Errorf("%w: server shutting down", errShutdown))
			default:
			}
		}
		wait := heartbeatInterval() - time.Since(st.lastWrite)
		if wait <= 0 {
			if err := st.heartbeat(); err != nil {
				return err
			}
			continue
		}
		timer.Reset(wait)
		select {
		case <-changed:
		case <-sysChanged:
			// A lifecycle change is applied to the registry just after
			// its _system commit, under keysMu: wait for that.
			// (An empty critical section: waiting is the point.)
			s.keysMu.Lock()
			s.keysMu.Unlock()
		case <-timer.C:
		case <-shutdown:
			return st.fail(fmt.Errorf("%w: server shutting down", errShutdown))
		case <-ctx.Done():
			return ctx.Err()
		}
		timer.Stop() // Go ≥ 1.23 timers: no stale tick after Stop or Reset
	}
}

var errShutdown = errors.New("shutting down")

// chunk sends the matching entries of [next, min(size, next+streamChunk)).
func (st *stream) chunk(ctx context.Context, size int64) error {
	s, log := st.s, st.c.log
	end := min(size, st.next+streamChunk)
	es, err := s.cfg.Ledger.Store().ReadEntries(ctx, log, st.next, end)
	if err != nil {
		return st.fail(err)
	}
	if len(es) == 0 {
		return st.fail(fmt.Errorf("log %q: storage returned no entries in [%d, %d) below the log's size %d", log, st.next, end, size))
	}
	leaves, err := s.leafHashes(ctx, log, st.next, int64(len(es)))
	if err != nil {
		return st.fail(err)
	}
	sent := false
	for i, data := range es {
		idx := st.next + int64(i)
		e, err := entry.Parse(data)
		if err == nil && (e.Index != idx || e.Log != log) {
			err = fmt.Errorf("entry claims log %q index %d", e.Log, e.Index)
		}
		if err != nil {
			// Skipping it would hide it; sending it might break the
			// framing. End the stream and say where.
			s.cfg.Logger.Error("stream: stored entry does not parse", "log", log, "index", idx, "err", err)
			st.next = idx
			return st.fail(newHTTPError(http.StatusInternalServerError, api.CodeInternal,
				"entry %d of log %q in storage is not a valid entry; run 'vellum verify --log %s --full'", idx, log, log))
		}
		doc, err := index.DocOf(e)
		if err != nil || !st.f.Match(doc) {
			continue
		}
		st.buf.Reset()
		st.buf.WriteString("id: ")
		st.buf.WriteString(strconv.FormatInt(idx, 10))
		st.buf.WriteString("\nevent: entry\ndata: ")
		// The api.Entry JSON, written directly: the log name and the
		// base64 hash need no escaping, and data is canonical JSON (one
		// line, kept byte for byte).
		st.buf.WriteString(`{"log":"`)
		st.buf.WriteString(log)
		st.buf.WriteString(`","index":`)
		st.buf.WriteString(strconv.FormatInt(idx, 10))
		st.buf.WriteString(`,"leaf_hash":"`)
		st.buf.WriteString(leaves[i].String())
		st.buf.WriteString(`","data":`)
		st.buf.Write(data)
		st.buf.WriteString("}\n\n")
		if err := st.write(st.buf.Bytes()); err != nil {
			return err
		}
		sent = true
	}
	st.next += int64(len(es))
	if sent {
		if err := st.flush(); err != nil {
			return err
		}
		st.lastWrite = time.Now()
	} else if time.Since(st.lastWrite) >= heartbeatInterval() {
		// A long run of entries that do not match: keep the consumer
		// (and any proxy) sure that the stream is alive.
		return st.heartbeat()
	}
	return nil
}

// write writes b, giving the consumer stallLimit to take it.
func (st *stream) write(b []byte) error {
	if err := st.rc.SetWriteDeadline(time.Now().Add(stallLimit())); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	_, err := st.w.Write(b)
	return err
}

func (st *stream) flush() error {
	if err := st.rc.SetWriteDeadline(time.Now().Add(stallLimit())); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return st.rc.Flush()
}

func (st *stream) heartbeat() error {
	if err := st.write([]byte(": heartbeat " + strconv.FormatInt(time.Now().Unix(), 10) + "\n\n")); err != nil {
		return err
	}
	if err := st.flush(); err != nil {
		return err
	}
	st.lastWrite = time.Now()
	return nil
}

// keyValid checks the stream's key as a new request would be checked:
// registered, active now, allowed from the client's address and allowed
// to read the log. If not, the stream ends with an error event.
func (st *stream) keyValid() error {
	s, c := st.s, st.c
	code, msg, err := st.checkKey()
	if errors.Is(err, errSuspended) {
		// A revocation or update of the key is being recorded; changeKey
		// holds keysMu until it is applied (or abandoned). Judge the key
		// as it is then, rather than ending a stream that the change
		// may well leave alone.
		s.keysMu.Lock()
		s.keysMu.Unlock()
		code, msg, err = st.checkKey()
	}
	if err == nil {
		return nil
	}
	s.cfg.Logger.Info("stream ended: key no longer valid", "log", c.log, "key", c.key.ID, "err", err)
	st.event("error", api.Error{Error: api.ErrorDetail{Code: code, Message: msg}})
	return fmt.Errorf("%w: key %s: %v", errStreamEnded, c.key.ID, err)
}

var errSuspended = errors.New("a change to the key is being recorded")

// checkKey says why the stream's key may not read the log now, if it may
// not, with the error code and message for the client.
func (st *stream) checkKey() (code, msg string, err error) {
	s, c := st.s, st.c
	now := s.cfg.Now()
	k, err := s.cfg.Registry.At(c.key.ID, now)
	if err != nil {
		return api.CodeUnauthorized, "the key is no longer valid", err
	}
	if k.Suspended {
		return api.CodeUnauthorized, "the key is no longer valid", errSuspended
	}
	if err := k.ActiveAt(now); err != nil {
		return api.CodeUnauthorized, "the key is no longer valid", err
	}
	code, msg = api.CodeForbidden, "this key is no longer allowed to read this log"
	if !k.AllowsAddr(c.remote) {
		return code, msg, fmt.Errorf("source address %s is outside the key's CIDRs", c.remote)
	}
	if !k.Allows(keys.OpRead, c.log) {
		return code, msg, fmt.Errorf("scope: may not read log %q", c.log)
	}
	return "", "", nil
}

// fail ends the stream with an error event saying what went wrong (as
// much as a client may know).
func (st *stream) fail(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	he := toHTTP(err)
	if errors.Is(err, errShutdown) {
		he = &httpError{status: http.StatusServiceUnavailable, code: api.CodeUnavailable, msg: "the server is shutting down; reconnect with Last-Event-ID", retry: true}
	}
	if he.status >= 500 && !errors.Is(err, errShutdown) {
		st.s.cfg.Logger.Error("stream failed", "log", st.c.log, "next", st.next, "err", err)
	}
	st.event("error", api.Error{Error: api.ErrorDetail{Code: he.code, Message: he.msg}})
	return fmt.Errorf("%w: %v", errStreamEnded, err)
}

// event sends one event without an id (best effort: the stream is ending).
func (st *stream) event(name string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	if st.write([]byte("event: "+name+"\ndata: "+string(b)+"\n\n")) == nil {
		st.flush()
	}
}

// shutdowns maps each *http.Server that serves streams to a channel closed
// when its Shutdown begins: Shutdown does not end long-lived answers by
// itself, it waits for them.
var shutdowns sync.Map // *http.Server → chan struct{}

func shutdownSignal(r *http.Request) <-chan struct{} {
	hs, ok := r.Context().Value(http.ServerContextKey).(*http.Server)
	if !ok || hs == nil {
		return nil
	}
	if ch, ok := shutdowns.Load(hs); ok {
		return ch.(chan struct{})
	}
	ch := make(chan struct{})
	if prev, loaded := shutdowns.LoadOrStore(hs, ch); loaded {
		return prev.(chan struct{})
	}
	hs.RegisterOnShutdown(func() {
		close(ch)
		shutdowns.Delete(hs)
	})
	return ch
}
