package client

import (
	"bufio"
	"bytes"
	"context"
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
)

// Tail reconnection policy. A connection that delivered anything (an entry
// or a heartbeat) resets the count of failures.
var (
	tailMaxFailures = 8                      // consecutive failed connections before Tail gives up
	tailMinBackoff  = 100 * time.Millisecond // wait before the first reconnection
	tailMaxBackoff  = 10 * time.Second       // longest wait between reconnections
	tailIdle        = 90 * time.Second       // silence (no heartbeat) after which a connection is presumed dead
)

// maxSSELine bounds one line of the stream (an entry is at most 64 KiB,
// its JSON a little more).
const maxSSELine = 1 << 20

// Tail follows log live (GET /v1/logs/{log}/stream, Server-Sent Events) and
// calls fn with each entry matching filter (the search filters: action,
// actor, target, key, outcome, source, q, since, …), in index order,
// starting at index from; a negative from means only entries appended from
// now on.
//
// Tail remembers the index of the last entry it passed to fn; when the
// connection drops (or the server ends the stream to shut down) it
// reconnects with backoff, sending Last-Event-ID, so fn sees every matching
// entry exactly once and in order. It gives up after several consecutive
// failed connections, or at once on an answer that retrying cannot change
// (401, 403, 404, 400). Each entry's leaf hash is checked against its bytes
// and indexes must only increase; a failed check ends Tail with an error
// wrapping ErrVerification.
//
// Tail returns when ctx ends (with ctx.Err()) or fn returns an error (that
// error).
func (c *Client) Tail(ctx context.Context, log string, from int64, filter url.Values, fn func(api.Entry) error) error {
	if c.tok == nil {
		return ErrTokenRequired
	}
	if !api.ValidLogName(log) && !api.Reserved(log) {
		return fmt.Errorf("invalid log name %q", log)
	}
	q := url.Values{}
	for k, v := range filter {
		if k == "from" {
			return errors.New(`Tail: give the start index as from, not as a filter parameter`)
		}
		q[k] = append([]string(nil), v...)
	}
	if from < 0 {
		// "From now on", made explicit so that a reconnection before the
		// first entry does not skip what was appended meanwhile.
		l, err := c.Log(ctx, log)
		if err != nil {
			return err
		}
		from = l.Size
	}
	t := &tailer{c: c, log: log, q: q, from: from, last: -1, fn: fn}
	// Streams live long: no overall request timeout (the idle watchdog
	// replaces it).
	hc := *c.hc
	hc.Timeout = 0
	t.hc = &hc
	return t.run(ctx)
}

type tailer struct {
	c    *Client
	hc   *http.Client
	log  string
	q    url.Values
	from int64
	last int64 // index of the last entry passed to fn; -1 for none
	fn   func(api.Entry) error
}

// fnError marks an error returned by the caller's fn.
type fnError struct{ err error }

func (e *fnError) Error() string { return e.err.Error() }

func (t *tailer) run(ctx context.Context) error {
	failures := 0
	for {
		progressed, err := t.connect(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var fe *fnError
		if errors.As(err, &fe) {
			return fe.err
		}
		if errors.Is(err, ErrVerification) {
			return err
		}
		var ae *Error
		if errors.As(err, &ae) && !ae.Temporary() {
			return err
		}
		if progressed {
			failures = 0
		}
		failures++
		if failures >= tailMaxFailures {
			return fmt.Errorf("tail of %s: giving up after %d failed connections: %w", t.log, failures, err)
		}
		wait := tailMinBackoff << (failures - 1)
		if wait > tailMaxBackoff || wait <= 0 {
			wait = tailMaxBackoff
		}
		if ae != nil && ae.RetryAfter > wait {
			wait = min(ae.RetryAfter, tailMaxBackoff)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// connect runs one connection until it ends. progressed reports whether it
// delivered anything.
func (t *tailer) connect(ctx context.Context) (progressed bool, err error) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	q := url.Values{}
	for k, v := range t.q {
		q[k] = v
	}
	q.Set("from", strconv.FormatInt(t.from, 10))
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, t.c.url(api.LogPath(t.log)+"/stream", q), nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-store")
	if t.last >= 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(t.last, 10))
	}
	if t.c.bearer {
		req.Header.Set("Authorization", "Bearer "+t.c.tok.Encode())
	} else if err := httpsig.Sign(req, nil, t.c.tok.ID(), t.c.tok.SigningKey(), time.Now()); err != nil {
		return false, err
	}
	resp, err := t.hc.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, errorFrom(resp)
	}
	if mt := resp.Header.Get("Content-Type"); !strings.HasPrefix(mt, "text/event-stream") {
		return false, fmt.Errorf("tail: server answered Content-Type %q, not text/event-stream", mt)
	}
	// The server accepted the stream: a cut from here on is a dropped
	// connection, not a refusal, and does not count towards giving up.
	progressed = true
	body := &watchdog{r: resp.Body, idle: tailIdle, cancel: cancel}
	defer body.stop()
	rd := bufio.NewReaderSize(body, 64<<10)
	var ev sseEvent
	for {
		line, err := readLine(rd)
		if err != nil {
			if body.fired() {
				return progressed, fmt.Errorf("tail: no data for %s; reconnecting", tailIdle)
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // the server never ends a stream cleanly but with an error event
			}
			return progressed, err
		}
		if len(line) > 0 {
			if line[0] == ':' {
				progressed = true // a heartbeat
				continue
			}
			ev.field(line)
			continue
		}
		// A blank line dispatches the event.
		e := ev
		ev = sseEvent{}
		if !e.hasData {
			continue
		}
		switch e.name {
		case "entry":
			progressed = true
			if err := t.deliver(e); err != nil {
				return progressed, err
			}
		case "error":
			var body api.Error
			se := &Error{Status: http.StatusServiceUnavailable, Code: api.CodeUnavailable, Message: "the server ended the stream"}
			if json.Unmarshal(e.data, &body) == nil && body.Error.Code != "" {
				se.Code, se.Message = body.Error.Code, body.Error.Message
				se.Status = statusOfCode(body.Error.Code)
			}
			return progressed, se
		}
	}
}

// deliver checks one entry event and passes it to fn.
func (t *tailer) deliver(ev sseEvent) error {
	var e api.Entry
	if err := json.Unmarshal(ev.data, &e); err != nil {
		return fmt.Errorf("%w: tail: malformed entry event: %v", ErrVerification, err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: tail of %s, entry %d: "+format, append([]any{ErrVerification, t.log, e.Index}, args...)...)
	}
	if ev.id != strconv.FormatInt(e.Index, 10) {
		return bad("event id %q differs from the entry's index", ev.id)
	}
	if e.Log != t.log {
		return bad("belongs to log %q", e.Log)
	}
	if e.Index < t.from || e.Index <= t.last {
		return bad("index does not increase (previous %d, start %d)", t.last, t.from)
	}
	if got := entry.LeafHash(e.Data).String(); got != e.LeafHash {
		return bad("leaf hash %s does not match the entry bytes (%s)", e.LeafHash, got)
	}
	pe, err := entry.Parse(e.Data)
	if err != nil {
		return bad("%v", err)
	}
	if pe.Log != t.log || pe.Index != e.Index {
		return bad("the entry bytes say log %q index %d", pe.Log, pe.Index)
	}
	if err := t.fn(e); err != nil {
		return &fnError{err}
	}
	t.last = e.Index
	return nil
}

// sseEvent is an event being read (the fields this client uses).
type sseEvent struct {
	id, name string
	data     []byte
	hasData  bool
}

// field processes one non-empty, non-comment line.
func (ev *sseEvent) field(line []byte) {
	name, value, ok := bytes.Cut(line, []byte(":"))
	if ok && len(value) > 0 && value[0] == ' ' {
		value = value[1:]
	}
	switch string(name) {
	case "id":
		ev.id = string(value)
	case "event":
		ev.name = string(value)
	case "data":
		if ev.hasData {
			ev.data = append(ev.data, '\n')
		}
		ev.data = append(ev.data, value...)
		ev.hasData = true
	}
}

// readLine reads one line without its ending (\n or \r\n), at most
// maxSSELine bytes.
func readLine(rd *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, isPrefix, err := rd.ReadLine()
		if err != nil {
			return nil, err
		}
		line = append(line, chunk...)
		if len(line) > maxSSELine {
			return nil, fmt.Errorf("tail: stream line over %d bytes", maxSSELine)
		}
		if !isPrefix {
			return line, nil
		}
	}
}

// errorFrom turns an error answer into an *Error.
func errorFrom(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
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

// statusOfCode is the HTTP status that goes with an error code (for error
// events, which carry only the code).
func statusOfCode(code string) int {
	switch code {
	case api.CodeUnauthorized:
		return http.StatusUnauthorized
	case api.CodeForbidden:
		return http.StatusForbidden
	case api.CodeNotFound:
		return http.StatusNotFound
	case api.CodeBadRequest:
		return http.StatusBadRequest
	case api.CodeUnavailable:
		return http.StatusServiceUnavailable
	case api.CodeRateLimited:
		return http.StatusTooManyRequests
	}
	return http.StatusInternalServerError
}

// watchdog cancels a connection whose reads block for longer than idle
// (the server sends a heartbeat well within it). Time the caller spends
// between reads (in fn, say) does not count.
type watchdog struct {
	r      io.Reader
	idle   time.Duration
	cancel context.CancelFunc

	mu    sync.Mutex
	timer *time.Timer
	fire  bool
}

func (w *watchdog) Read(p []byte) (int, error) {
	w.mu.Lock()
	if w.timer == nil {
		w.timer = time.AfterFunc(w.idle, func() {
			w.mu.Lock()
			w.fire = true
			w.mu.Unlock()
			w.cancel()
		})
	} else {
		w.timer.Reset(w.idle)
	}
	w.mu.Unlock()
	n, err := w.r.Read(p)
	w.mu.Lock()
	w.timer.Stop()
	w.mu.Unlock()
	return n, err
}

func (w *watchdog) fired() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.fire
}

func (w *watchdog) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.timer != nil {
		w.timer.Stop()
	}
}
