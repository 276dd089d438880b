// Package client is vellum's Go SDK: it signs and appends audit events,
// reads entries, checkpoints and proofs, and verifies what it gets back
// against a trusted checkpoint key, so a producer needs to trust nothing the
// server says without proof.
//
// Every request is signed with the provisioning key (RFC 9421 HTTP Message
// Signatures, Ed25519, covering method, target URI and Content-Digest, with
// created and nonce). [Transport] does the same for any other HTTP code, such
// as a tlog-tiles client reading a log.
package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/httpsig"
	"github.com/vellum-audit/vellum/internal/jcs"
	"github.com/vellum-audit/vellum/internal/keys"
)

// Error is an error answer from the server.
type Error struct {
	Status     int
	Code       string
	Message    string
	Index      *int // the event of a batch to blame, if any
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Index != nil && !strings.Contains(e.Message, fmt.Sprintf("event %d", *e.Index)) {
		return fmt.Sprintf("server answered %d %s: event %d: %s", e.Status, e.Code, *e.Index, e.Message)
	}
	return fmt.Sprintf("server answered %d %s: %s", e.Status, e.Code, e.Message)
}

// Temporary reports whether retrying later may succeed.
func (e *Error) Temporary() bool {
	return e.Status == http.StatusServiceUnavailable || e.Status == http.StatusTooManyRequests || e.Status == http.StatusBadGateway || e.Status == http.StatusGatewayTimeout
}

// ErrTokenRequired is returned when a client without a token is asked to
// do something that needs one.
var ErrTokenRequired = errors.New("a provisioning key token is required (set VELLUM_KEY)")

// Client talks to one vellum server with one provisioning key.
type Client struct {
	base    *url.URL
	tok     *keys.Token
	hc      *http.Client
	retries int
	bearer  bool

	mu  sync.Mutex
	seq map[string]int64 // next seq per source, for WithSequence
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the underlying HTTP client (for TLS settings, say).
// Its Transport is used as is: requests are signed before they reach it.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithRetries sets how many times a temporary failure (503, 429, network
// error) is retried with backoff. Appends are always safe to retry: every
// event carries an id (the client assigns one when it has none), so a
// retry of an event that was recorded returns its original receipt.
func WithRetries(n int) Option { return func(c *Client) { c.retries = n } }

// WithSequence numbers the events of source: each appended event whose
// source is source and whose seq is unset gets next, next+1, … A producer
// keeps next across restarts (the last receipt's seq + 1).
func WithSequence(source string, next int64) Option {
	return func(c *Client) { c.seq[source] = next }
}

// New returns a client for the server at baseURL using token (which may be
// empty for a client that only verifies offline).
func New(baseURL, token string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("bad server URL %q: want http://host:port or https://host:port", baseURL)
	}
	c := &Client{base: u, hc: &http.Client{Timeout: 60 * time.Second}, retries: 3, seq: map[string]int64{}}
	if token != "" {
		if c.tok, err = keys.ParseToken(token); err != nil {
			return nil, err
		}
	}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// KeyID is the id of the client's key.
func (c *Client) KeyID() string {
	if c.tok == nil {
		return ""
	}
	return c.tok.ID()
}

// PublicKey is the public half of the client's key.
func (c *Client) PublicKey() ed25519.PublicKey {
	if c.tok == nil {
		return nil
	}
	return c.tok.PublicKey()
}

// Transport is an http.RoundTripper that signs every request with a
// provisioning key. Request bodies are read into memory to compute their
// Content-Digest.
type Transport struct {
	Token *keys.Token
	Base  http.RoundTripper // nil means http.DefaultTransport
}

// NewTransport returns a signing Transport for token.
func NewTransport(token string, base http.RoundTripper) (*Transport, error) {
	t, err := keys.ParseToken(token)
	if err != nil {
		return nil, err
	}
	return &Transport{Token: t, Base: base}, nil
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		var err error
		body, err = io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.ContentLength = int64(len(body))
	}
	if body != nil && len(body) == 0 {
		body = nil
	}
	if err := httpsig.Sign(req, body, t.Token.ID(), t.Token.SigningKey(), time.Now()); err != nil {
		return nil, err
	}
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	return base.RoundTrip(req)
}

func (c *Client) url(path string, q url.Values) string {
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + path
	if q != nil {
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// do sends one signed request and decodes a JSON answer into out (or
// returns the raw body when out is a *[]byte).
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body []byte, out any) error {
	if c.tok == nil {
		return ErrTokenRequired
	}
	var lastErr error
	for attempt := 0; ; attempt++ {
		err := c.once(ctx, method, path, q, body, out)
		if err == nil {
			return nil
		}
		lastErr = err
		var ae *Error
		temporary := !errors.As(err, &ae) || ae.Temporary()
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			temporary = false
		}
		if !temporary || attempt >= c.retries || (ae != nil && ae.RetryAfter > 30*time.Second) {
			return lastErr
		}
		wait := time.Duration(100<<attempt) * time.Millisecond
		if ae != nil && ae.RetryAfter > wait {
			wait = ae.RetryAfter
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return lastErr
		}
	}
}

func (c *Client) once(ctx context.Context, method, path string, q url.Values, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url(path, q), rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.bearer {
		req.Header.Set("Authorization", "Bearer "+c.tok.BearerCredential())
	} else if err := httpsig.Sign(req, body, c.tok.ID(), c.tok.SigningKey(), time.Now()); err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return responseError(resp, data)
	}
	if raw, ok := out.(*[]byte); ok {
		*raw = data
		return nil
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decoding server answer: %w", err)
		}
	}
	return nil
}

// responseError is the *Error of a response with status ≥ 300 and body data.
func responseError(resp *http.Response, data []byte) *Error {
	e := &Error{Status: resp.StatusCode, Code: "http_" + strconv.Itoa(resp.StatusCode), Message: http.StatusText(resp.StatusCode)}
	var body api.Error
	if json.Unmarshal(data, &body) == nil && body.Error.Code != "" {
		e.Code, e.Message, e.Index = body.Error.Code, body.Error.Message, body.Error.Index
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	return e
}

// openStream sends a signed GET for a long answer (no overall timeout)
// and returns the response of status 200; any other status is returned as
// an *Error.
func (c *Client) openStream(ctx context.Context, path string, q url.Values) (*http.Response, error) {
	if c.tok == nil {
		return nil, ErrTokenRequired
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url(path, q), nil)
	if err != nil {
		return nil, err
	}
	if c.bearer {
		req.Header.Set("Authorization", "Bearer "+c.tok.BearerCredential())
	} else if err := httpsig.Sign(req, nil, c.tok.ID(), c.tok.SigningKey(), time.Now()); err != nil {
		return nil, err
	}
	hc := *c.hc
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		return nil, responseError(resp, data)
	}
	return resp, nil
}

// ServerInfo returns the server's origin prefix and checkpoint verifier key.
func (c *Client) ServerInfo(ctx context.Context) (api.ServerInfo, error) {
	var si api.ServerInfo
	err := c.do(ctx, http.MethodGet, api.PathServer, nil, nil, &si)
	return si, err
}

// CreateLog creates a log.
func (c *Client) CreateLog(ctx context.Context, name string) (api.Log, error) {
	b, _ := json.Marshal(api.CreateLogRequest{Name: name})
	var l api.Log
	err := c.do(ctx, http.MethodPost, api.PathLogs, nil, b, &l)
	return l, err
}

// Logs lists the logs the key may read or append to.
func (c *Client) Logs(ctx context.Context) ([]api.Log, error) {
	var ll api.LogList
	err := c.do(ctx, http.MethodGet, api.PathLogs, nil, nil, &ll)
	return ll.Logs, err
}

// Log describes one log.
func (c *Client) Log(ctx context.Context, name string) (api.Log, error) {
	var l api.Log
	err := c.do(ctx, http.MethodGet, api.LogPath(name), nil, nil, &l)
	return l, err
}

// Checkpoint returns the latest signed checkpoint of log (unverified).
func (c *Client) Checkpoint(ctx context.Context, log string) ([]byte, error) {
	var b []byte
	err := c.do(ctx, http.MethodGet, api.LogPath(log)+"/checkpoint", nil, nil, &b)
	return b, err
}

// Entry returns entry index of log, with a tlog-proof receipt when proof.
func (c *Client) Entry(ctx context.Context, log string, index int64, proof bool) (api.Entry, error) {
	var q url.Values
	if proof {
		q = url.Values{"proof": {"true"}}
	}
	var e api.Entry
	err := c.do(ctx, http.MethodGet, api.LogPath(log)+"/entries/"+strconv.FormatInt(index, 10), q, nil, &e)
	return e, err
}

// Entries returns entries [start, end) of log; the server may return fewer
// (at most 1,000 at a time).
func (c *Client) Entries(ctx context.Context, log string, start, end int64) ([]api.Entry, error) {
	var el api.EntryList
	q := url.Values{"start": {strconv.FormatInt(start, 10)}, "end": {strconv.FormatInt(end, 10)}}
	err := c.do(ctx, http.MethodGet, api.LogPath(log)+"/entries", q, nil, &el)
	return el.Entries, err
}

// InclusionProof fetches the inclusion proof of index in the tree of size.
func (c *Client) InclusionProof(ctx context.Context, log string, index, size int64) (api.InclusionProof, error) {
	var p api.InclusionProof
	q := url.Values{"index": {strconv.FormatInt(index, 10)}, "size": {strconv.FormatInt(size, 10)}}
	err := c.do(ctx, http.MethodGet, api.LogPath(log)+"/proof/inclusion", q, nil, &p)
	return p, err
}

// ConsistencyProof fetches the consistency proof between two tree sizes.
func (c *Client) ConsistencyProof(ctx context.Context, log string, oldSize, newSize int64) (api.ConsistencyProof, error) {
	var p api.ConsistencyProof
	q := url.Values{"old": {strconv.FormatInt(oldSize, 10)}, "new": {strconv.FormatInt(newSize, 10)}}
	err := c.do(ctx, http.MethodGet, api.LogPath(log)+"/proof/consistency", q, nil, &p)
	return p, err
}

// Sign prepares one event for log: it assigns a seq when WithSequence
// covers its source, and a random id when the event has neither id nor seq
// (so that retries are always safe),
// canonicalises it (RFC 8785) and signs it.
func (c *Client) Sign(log string, event json.RawMessage) (api.SignedEvent, error) {
	if c.tok == nil {
		return api.SignedEvent{}, ErrTokenRequired
	}
	ev, err := entry.ParseEvent(event)
	if err != nil {
		return api.SignedEvent{}, err
	}
	changed := false
	if ev.ID == "" && ev.Seq == nil && !c.numbers(ev.Source) {
		var b [16]byte
		rand.Read(b[:])
		ev.ID = hex.EncodeToString(b[:])
		changed = true
	}
	c.mu.Lock()
	if next, ok := c.seq[ev.Source]; ok && ev.Seq == nil {
		n := next
		ev.Seq = &n
		c.seq[ev.Source] = next + 1
		changed = true
	}
	c.mu.Unlock()
	canon := ev.Canonical
	if changed {
		raw, err := marshal(ev.Event)
		if err != nil {
			return api.SignedEvent{}, err
		}
		if canon, err = jcs.Canonicalize(raw); err != nil {
			return api.SignedEvent{}, err
		}
	}
	sig := ed25519.Sign(c.tok.SigningKey(), entry.Message(log, canon))
	return api.SignedEvent{Event: canon, KeyID: c.tok.ID(), Sig: base64.StdEncoding.EncodeToString(sig)}, nil
}

func (c *Client) numbers(source string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.seq[source]
	return ok
}

// marshal encodes v without HTML escaping (canonical bytes stay as they are).
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Append signs and appends events to log, in batches of up to 1,000 events
// and 4 MiB, and returns one receipt per event, in order. Each batch is
// recorded entirely or not at all; when a later batch fails, the receipts of
// the earlier ones are returned with the error.
func (c *Client) Append(ctx context.Context, log string, events ...json.RawMessage) ([]api.Receipt, error) {
	signed := make([]api.SignedEvent, 0, len(events))
	for i, e := range events {
		se, err := c.Sign(log, e)
		if err != nil {
			return nil, fmt.Errorf("event %d: %w", i, err)
		}
		signed = append(signed, se)
	}
	return c.AppendSigned(ctx, log, signed)
}

// AppendSigned appends events signed earlier (by Sign).
func (c *Client) AppendSigned(ctx context.Context, log string, events []api.SignedEvent) ([]api.Receipt, error) {
	var out []api.Receipt
	for start := 0; start < len(events); {
		end, size := start, 32
		for end < len(events) && end-start < api.MaxBatch {
			n := len(events[end].Event) + len(events[end].Sig) + len(events[end].KeyID) + 40
			if end > start && size+n > api.MaxBodySize {
				break
			}
			size += n
			end++
		}
		body, err := marshal(api.AppendRequest{Events: events[start:end]})
		if err != nil {
			return out, err
		}
		var resp api.AppendResponse
		if err := c.do(ctx, http.MethodPost, api.LogPath(log)+"/entries", nil, body, &resp); err != nil {
			var ae *Error
			if errors.As(err, &ae) && ae.Index != nil {
				i := *ae.Index + start
				ae.Index = &i
			}
			return out, err
		}
		if len(resp.Receipts) != end-start {
			return out, fmt.Errorf("server returned %d receipts for %d events", len(resp.Receipts), end-start)
		}
		out = append(out, resp.Receipts...)
		start = end
	}
	return out, nil
}
