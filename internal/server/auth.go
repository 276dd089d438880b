package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/httpsig"
	"github.com/vellum-audit/vellum/internal/keys"
)

// call is an authenticated request.
type call struct {
	key    *keys.Key
	auth   string // entry.AuthSignature or entry.AuthBearer
	body   []byte
	log    string // the {log} path value, if any
	remote netip.Addr
}

type handlerFunc func(w http.ResponseWriter, r *http.Request, c *call) error

// refusal is why a request was refused: what the client is told (status
// and a message that does not say which check failed) and what _access
// records (the reason).
type refusal struct {
	status int
	keyID  string
	reason string
	client *httpError
}

func (rf *refusal) Error() string { return rf.reason }

func (s *Server) refuse(status int, keyID, reason string) *refusal {
	var he *httpError
	switch status {
	case http.StatusUnauthorized:
		he = errUnauthorized
	case http.StatusForbidden:
		he = newHTTPError(status, api.CodeForbidden, "this key is not allowed to do this")
	case http.StatusTooManyRequests:
		he = &httpError{status: status, code: api.CodeRateLimited, msg: "this key is over its rate limit; retry later", retry: true}
	default:
		he = newHTTPError(status, api.CodeBadRequest, "%s", reason)
	}
	return &refusal{status: status, keyID: keyID, reason: reason, client: he}
}

// handle registers fn behind authentication and, when op is set and the
// route has a {log}, authorisation of op on that log. Every refusal is
// recorded in _access; so is every successful read (GET).
func (s *Server) handle(pattern, op string, fn handlerFunc) {
	s.mux.HandleFunc(pattern, s.authed(op, fn))
}

// authed is fn behind authentication (and authorisation of op), with its
// refusals and reads recorded in _access.
func (s *Server) authed(op string, fn handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			// Request bodies in memory are bounded as a whole: past the
			// budget a request is refused before its body is read.
			n := r.ContentLength
			if n < 0 || n > api.MaxBodySize {
				n = api.MaxBodySize
			}
			n = max(n, 4096)
			if !s.bodies.TryAcquire(n) {
				s.m.busy.Inc()
				writeError(w, r, s.cfg.Logger, &httpError{status: http.StatusServiceUnavailable, code: api.CodeUnavailable, retry: true, after: 1,
					msg: "the server is busy: too many request bodies in flight; nothing was recorded; retry shortly"})
				return
			}
			defer s.bodies.Release(n)
		}
		c, rf := s.authenticate(w, r, op)
		if rf != nil {
			s.m.authRefusals.Inc(refusalClass(rf))
			s.noteRefusal(rf, remoteAddr(r))
			s.recordAccess(r, rf.keyID, rf.status, rf.reason)
			writeError(w, r, s.cfg.Logger, rf.client)
			return
		}
		if c.log != "" {
			if ie := s.cfg.Ledger.Distrusted(c.log); ie != nil {
				w.Header().Set("Vellum-Integrity", "failed; "+ie.Error())
			}
		}
		sw := &statusWriter{ResponseWriter: w}
		if err := fn(sw, r, c); err != nil {
			he := toHTTP(err)
			if he.status >= 400 && he.status < 500 {
				// Every refusal of a request made with a key is on the
				// record, with the message the client got.
				s.recordAccess(r, c.key.ID, he.status, truncate(he.msg, 512))
			}
			writeError(sw, r, s.cfg.Logger, err)
			return
		}
		if r.Method == http.MethodGet && sw.status < 300 {
			s.recordAccess(r, c.key.ID, sw.status, "")
		}
	}
}

// refusalClass is a refusal's reason as a metric label: a few fixed
// values, never the free text (which names keys and addresses).
func refusalClass(rf *refusal) string {
	r := rf.reason
	switch {
	case rf.status == http.StatusRequestEntityTooLarge:
		return "body_too_large"
	case rf.status == http.StatusTooManyRequests:
		return "rate_limit"
	case strings.Contains(r, "outside the key's CIDRs"):
		return "cidr"
	case strings.HasPrefix(r, "scope:"):
		return "scope"
	case strings.HasPrefix(r, "unsigned"):
		return "unsigned"
	case strings.HasPrefix(r, "forged"):
		return "bad_signature"
	case strings.HasPrefix(r, "replay"):
		return "replay"
	case strings.HasPrefix(r, "unknown key"):
		return "unknown_key"
	case strings.HasPrefix(r, "malformed"), strings.HasPrefix(r, "unsupported"), strings.Contains(r, "bearer"):
		return "malformed_credential"
	case rf.status == http.StatusUnauthorized:
		return "key_not_valid" // expired, revoked, not yet valid, signature window
	}
	return "bad_request"
}

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// targetURI reconstructs the absolute URI the client signed.
func targetURI(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + r.URL.RequestURI()
}

func remoteAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}

// authenticate reads the (bounded) body, identifies the key (RFC 9421
// signature, or a bearer token for keys made for it) and checks that it is
// valid now, allowed from this address, allowed op on the {log} and within
// its rate.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, op string) (*call, *refusal) {
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		var err error
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, api.MaxBodySize))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				rf := s.refuse(http.StatusRequestEntityTooLarge, "", fmt.Sprintf("request body over %d bytes", api.MaxBodySize))
				rf.client = newHTTPError(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "request body over %d bytes", api.MaxBodySize)
				return nil, rf
			}
			return nil, s.refuse(http.StatusBadRequest, "", "reading request body: "+err.Error())
		}
	}
	now := s.cfg.Now()
	c := &call{body: body, remote: remoteAddr(r)}
	var keyID string
	if authz := r.Header.Get("Authorization"); authz != "" {
		scheme, tokStr, _ := strings.Cut(authz, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			return nil, s.refuse(http.StatusUnauthorized, "", "unsupported Authorization scheme")
		}
		if strings.HasPrefix(strings.TrimSpace(tokStr), keys.TokenPrefix) {
			// A whole token: never accepted as a bearer credential (it holds the signing secret).
			s.cfg.Logger.Warn("a full provisioning key token was sent as a bearer credential; the key should be rotated", "remote", remoteAddr(r).String())
			return nil, s.refuse(http.StatusUnauthorized, "", "a full token was sent as a bearer credential (send the vlmb_ credential instead; rotate the key)")
		}
		id, verifier, err := keys.ParseBearer(tokStr)
		if err != nil {
			return nil, s.refuse(http.StatusUnauthorized, "", "malformed bearer credential")
		}
		keyID = id
		k, err := s.cfg.Registry.At(keyID, now)
		if err != nil {
			return nil, s.refuse(http.StatusUnauthorized, keyID, "unknown key")
		}
		if !k.CheckBearer(verifier) {
			return nil, s.refuse(http.StatusUnauthorized, keyID, "bearer token presented for a key without bearer mode, or not matching it")
		}
		c.key, c.auth = k, entry.AuthBearer
	} else {
		sig, err := httpsig.Parse(r, targetURI(r))
		if err != nil {
			if errors.Is(err, httpsig.ErrMissing) {
				rf := s.refuse(http.StatusUnauthorized, "", "unsigned request")
				rf.client = newHTTPError(http.StatusUnauthorized, api.CodeUnauthorized, "the request is not signed: sign it with a provisioning key (RFC 9421; the vellum CLI and Go SDK do this)")
				return nil, rf
			}
			return nil, s.refuse(http.StatusUnauthorized, "", "malformed signature: "+err.Error())
		}
		keyID = sig.KeyID
		if !keys.ValidKeyID(keyID) {
			return nil, s.refuse(http.StatusUnauthorized, "", "malformed key id")
		}
		if err := s.policy.Check(sig, len(body) > 0, now); err != nil {
			return nil, s.refuse(http.StatusUnauthorized, keyID, err.Error())
		}
		k, err := s.cfg.Registry.At(keyID, now)
		if err != nil {
			return nil, s.refuse(http.StatusUnauthorized, keyID, "unknown key")
		}
		if err := sig.Verify(k.PublicKey); err != nil {
			return nil, s.refuse(http.StatusUnauthorized, keyID, "forged: "+err.Error())
		}
		if digest := strings.Join(r.Header.Values("Content-Digest"), ", "); len(body) > 0 || digest != "" {
			if err := httpsig.VerifyContentDigest(digest, body); err != nil {
				return nil, s.refuse(http.StatusUnauthorized, keyID, err.Error())
			}
		}
		// The nonce is recorded only for a verified signature, so that a
		// forged request cannot burn a legitimate client's nonce.
		if err := s.nonces.Check(sig.KeyID, sig.Nonce, sig.Created, now); err != nil {
			return nil, s.refuse(http.StatusUnauthorized, keyID, "replay: "+err.Error())
		}
		c.key, c.auth = k, entry.AuthSignature
	}
	if err := c.key.ActiveAt(now); err != nil {
		return nil, s.refuse(http.StatusUnauthorized, keyID, err.Error())
	}
	if !c.key.AllowsAddr(c.remote) {
		return nil, s.refuse(http.StatusForbidden, keyID, fmt.Sprintf("source address %s is outside the key's CIDRs", c.remote))
	}
	if name := r.PathValue("log"); name != "" {
		if !api.ValidLogName(name) && !api.Reserved(name) {
			rf := s.refuse(http.StatusBadRequest, keyID, "invalid log name")
			rf.client = newHTTPError(http.StatusBadRequest, api.CodeBadRequest, "invalid log name %q: use 1-63 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit", name)
			return nil, rf
		}
		c.log = name
		if op != "" && !c.key.Allows(op, name) {
			return nil, s.refuse(http.StatusForbidden, keyID, fmt.Sprintf("scope: may not %s log %q", op, name))
		}
	} else if op == keys.OpAdmin && !c.key.IsAdmin() {
		return nil, s.refuse(http.StatusForbidden, keyID, "scope: not an admin key")
	}
	if wait, ok := s.limiter.allow(c.key, now); !ok {
		rf := s.refuse(http.StatusTooManyRequests, keyID, "rate limit "+c.key.Rate)
		rf.client.msg = fmt.Sprintf("this key is over its rate limit (%s); retry in %s", c.key.Rate, wait.Round(time.Millisecond))
		rf.client.after = int((wait + time.Second - 1) / time.Second)
		return nil, rf
	}
	s.lastUsed.Store(keyID, now)
	if s.cfg.Alerts != nil {
		s.cfg.Alerts.Used(keyID, c.remote)
	}
	return c, nil
}

// limiter holds one token bucket per rate-limited key.
type limiter struct {
	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	rate   float64 // tokens per second
	burst  float64
	tokens float64
	last   time.Time
	spec   string
}

func (l *limiter) allow(k *keys.Key, now time.Time) (time.Duration, bool) {
	if k.Rate == "" {
		return 0, true
	}
	return l.take(k.ID, k.Rate, now)
}

// take takes one token from the bucket named name with rate spec.
func (l *limiter) take(name, spec string, now time.Time) (time.Duration, bool) {
	rate, burst, err := keys.ParseRate(spec)
	if err != nil || rate <= 0 {
		return 0, true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buckets == nil || len(l.buckets) > 100_000 {
		l.buckets = map[string]*bucket{}
	}
	b := l.buckets[name]
	if b == nil || b.spec != spec {
		b = &bucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: now, spec: spec}
		l.buckets[name] = b
	}
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	if b.tokens < 1 {
		return time.Duration((1 - b.tokens) / b.rate * float64(time.Second)), false
	}
	b.tokens--
	return 0, true
}

// recordAccess appends a record of a read or a refusal to _access, signed
// by the server. It waits for the record to be durable: a read is answered
// only once it is on the record. Failures are logged, never hidden.
func (s *Server) recordAccess(r *http.Request, keyID string, status int, reason string) {
	action, outcome := "access.read", "success"
	if status >= 400 {
		action, outcome = "access.refused", "failure"
	}
	if status >= 400 && (keyID == "" || !keys.ValidKeyID(keyID) || !s.knownKey(keyID)) {
		// Refusals without a registered key are recorded at most at
		// anonRecordRate per source address; the rest are counted, and the
		// count goes into the next record from that address, so a flood
		// cannot turn _access into a disk-filling write amplifier.
		src := remoteAddr(r).String()
		if _, ok := s.noisy.take("anon:"+src, anonRecordRate, s.cfg.Now()); !ok {
			s.suppressed(src, 1)
			return
		}
		if n := s.suppressed(src, 0); n > 0 {
			reason += fmt.Sprintf(" (and %d earlier refusals from this address not recorded one by one)", n)
		}
	}
	actor := api.Actor{ID: keyID, Type: "key", IP: remoteAddr(r).String()}
	if keyID == "" {
		actor = api.Actor{ID: "anonymous", Type: "anonymous", IP: actor.IP}
	}
	md := map[string]any{"method": sanitize(truncate(r.Method, 32)), "path": sanitize(truncate(r.URL.Path, 512)), "status": status}
	if r.URL.RawQuery != "" && len(r.URL.RawQuery) < 1024 {
		md["query"] = sanitize(r.URL.RawQuery)
	}
	if reason != "" {
		md["reason"] = sanitize(reason)
	}
	var targets []api.Target
	if l := r.PathValue("log"); l != "" && len(l) <= 63 {
		targets = []api.Target{{ID: sanitize(l), Type: "log"}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.serverEvent(ctx, api.AccessLog, action, actor, targets, outcome, md); err != nil {
		s.cfg.Logger.Error("recording access", "action", action, "key", keyID, "err", err)
	}
}

// anonRecordRate bounds the _access records of refusals without a known
// key, per source address.
const anonRecordRate = "20/s"

func (s *Server) knownKey(id string) bool {
	_, err := s.cfg.Registry.Get(id)
	return err == nil
}

// suppressed adds n to the count of unrecorded refusals from src; with n
// == 0 it returns the count and resets it.
func (s *Server) suppressed(src string, n int64) int64 {
	s.suppressedMu.Lock()
	defer s.suppressedMu.Unlock()
	if n > 0 {
		if s.suppressedBy == nil || len(s.suppressedBy) > 100_000 {
			s.suppressedBy = map[string]int64{}
		}
		s.suppressedBy[src] += n
		return 0
	}
	c := s.suppressedBy[src]
	delete(s.suppressedBy, src)
	return c
}

// sanitize keeps a string printable for the record.
// truncate cuts s to at most n bytes, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func sanitize(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
