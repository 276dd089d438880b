package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/client"
	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/node"
	"github.com/vellum-audit/vellum/internal/server"
)

// streamEnv is a real node behind an httptest server.
type streamEnv struct {
	t     *testing.T
	n     *node.Node
	srv   *httptest.Server
	admin *client.Client
	tok   string
	small bool // small socket buffers

	mu    sync.Mutex
	conns []*net.TCPConn // client connections with small buffers
}

// widen gives the client connections normal receive buffers again, so
// that reading what piled up is quick.
func (e *streamEnv) widen() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, c := range e.conns {
		c.SetReadBuffer(4 << 20)
	}
}

func newStreamEnv(t *testing.T) *streamEnv { return newStreamEnvOpts(t, false) }

// newStreamEnvOpts with small makes the server's sockets' send buffers
// small, so that a consumer that stops reading stalls the stream's writes
// after little data.
func newStreamEnvOpts(t *testing.T, small bool) *streamEnv {
	t.Helper()
	dir := t.TempDir()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("STREAM_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	n, err := node.Open(context.Background(), node.Config{Dir: dir, OriginPrefix: "test.example/stream", Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(n.Handler)
	if small {
		srv.Listener = smallBufListener{srv.Listener}
	}
	srv.Start()
	t.Cleanup(func() {
		srv.CloseClientConnections() // streams a test left open
		srv.Close()
		n.Close()
	})
	b, err := os.ReadFile(filepath.Join(dir, node.AdminKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(b))
	c, err := client.New(srv.URL, tok)
	if err != nil {
		t.Fatal(err)
	}
	return &streamEnv{t: t, n: n, srv: srv, admin: c, tok: tok, small: small}
}

type smallBufListener struct{ net.Listener }

func (l smallBufListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(4 << 10)
	}
	return c, err
}

func (e *streamEnv) createLog(name string) {
	e.t.Helper()
	if _, err := e.admin.CreateLog(context.Background(), name); err != nil {
		e.t.Fatal(err)
	}
}

func (e *streamEnv) append(log string, events ...json.RawMessage) []api.Receipt {
	e.t.Helper()
	rs, err := e.admin.Append(context.Background(), log, events...)
	if err != nil {
		e.t.Fatalf("append to %s: %v", log, err)
	}
	return rs
}

// sev is a valid event; extra members are added verbatim.
func sev(action, actor string, extra ...string) json.RawMessage {
	s := fmt.Sprintf(`{"action":%q,"actor":{"id":%q},"outcome":"success"`, action, actor)
	for _, x := range extra {
		s += "," + x
	}
	return json.RawMessage(s + "}")
}

// sseEvent is one event block of a stream.
type sseEvent struct {
	id, name, data string
	hasID          bool
	comments       []string
	raw            string
}

type sseConn struct {
	resp   *http.Response
	rd     *bufio.Reader
	cancel context.CancelFunc
}

// get sends a stream request signed with tok (unsigned if tok is empty).
func (e *streamEnv) get(tok, log string, q url.Values, lastID string) (*http.Response, context.CancelFunc, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	u := e.srv.URL + "/v1/logs/" + log + "/stream"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	hc := &http.Client{}
	if e.small {
		// A small receive buffer too: little data fills the pipe.
		hc.Transport = &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetReadBuffer(4 << 10)
				e.mu.Lock()
				e.conns = append(e.conns, tc)
				e.mu.Unlock()
			}
			return c, err
		}}
	}
	if tok != "" {
		tr, err := client.NewTransport(tok, hc.Transport)
		if err != nil {
			cancel()
			return nil, nil, err
		}
		hc.Transport = tr
	}
	resp, err := hc.Do(req)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	return resp, cancel, nil
}

// open opens a stream and expects it to start.
func (e *streamEnv) open(tok, log string, q url.Values, lastID string) *sseConn {
	e.t.Helper()
	resp, cancel, err := e.get(tok, log, q, lastID)
	if err != nil {
		e.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		e.t.Fatalf("stream of %s?%s: %d %s", log, q.Encode(), resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		e.t.Errorf("Content-Type %q", ct)
	}
	s := &sseConn{resp: resp, rd: bufio.NewReader(resp.Body), cancel: cancel}
	e.t.Cleanup(s.close)
	return s
}

func (s *sseConn) close() {
	s.cancel()
	s.resp.Body.Close()
}

// next reads one event block (an event, or comments only).
func (s *sseConn) next() (sseEvent, error) {
	var ev sseEvent
	var raw strings.Builder
	for {
		line, err := s.rd.ReadString('\n')
		if err != nil {
			return ev, err
		}
		raw.WriteString(line)
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if raw.Len() == 1 {
				raw.Reset()
				continue
			}
			ev.raw = raw.String()
			return ev, nil
		}
		if strings.HasPrefix(line, ":") {
			ev.comments = append(ev.comments, line)
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "id":
			ev.id, ev.hasID = value, true
		case "event":
			ev.name = value
		case "data":
			if ev.data != "" {
				ev.data += "\n"
			}
			ev.data += value
		default:
			return ev, fmt.Errorf("unexpected field %q", line)
		}
	}
}

// entry reads events up to the next entry, skipping heartbeats; an error
// event is returned as an error.
func (s *sseConn) entry() (api.Entry, error) {
	for {
		ev, err := s.next()
		if err != nil {
			return api.Entry{}, err
		}
		switch ev.name {
		case "":
			if ev.hasID || ev.data != "" {
				return api.Entry{}, fmt.Errorf("unnamed event %q", ev.raw)
			}
			continue // comments only
		case "error":
			return api.Entry{}, fmt.Errorf("error event: %s", ev.data)
		case "entry":
		default:
			return api.Entry{}, fmt.Errorf("unknown event %q", ev.raw)
		}
		var e api.Entry
		dec := json.NewDecoder(strings.NewReader(ev.data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			return api.Entry{}, fmt.Errorf("entry event %q: %v", ev.raw, err)
		}
		if ev.id != strconv.FormatInt(e.Index, 10) {
			return api.Entry{}, fmt.Errorf("event id %q for entry %d", ev.id, e.Index)
		}
		if got := entry.LeafHash(e.Data).String(); got != e.LeafHash {
			return api.Entry{}, fmt.Errorf("entry %d: leaf hash %s, bytes hash to %s", e.Index, e.LeafHash, got)
		}
		pe, err := entry.Parse(e.Data)
		if err != nil || pe.Index != e.Index {
			return api.Entry{}, fmt.Errorf("entry %d: data %s: %v", e.Index, e.Data, err)
		}
		return e, nil
	}
}

// entries reads n entries.
func (s *sseConn) entries(t *testing.T, n int) []api.Entry {
	t.Helper()
	out := make([]api.Entry, 0, n)
	for len(out) < n {
		e, err := s.entry()
		if err != nil {
			t.Fatalf("after %d of %d entries: %v", len(out), n, err)
		}
		out = append(out, e)
	}
	return out
}

func streamIndexes(es []api.Entry) []int64 {
	out := make([]int64, len(es))
	for i, e := range es {
		out[i] = e.Index
	}
	return out
}

func TestStreamConcurrentAppends(t *testing.T) {
	e := newStreamEnv(t)
	e.createLog("app")
	e.append("app", sev("warm.up", "w"), sev("warm.up", "w"))
	s := e.open(e.tok, "app", url.Values{"from": {"0"}}, "")

	const writers, rounds = 6, 30
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	total := 2
	for w := range writers {
		total += rounds * (1 + w%3)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				var batch []json.RawMessage
				for i := range 1 + w%3 {
					batch = append(batch, sev("doc.write", fmt.Sprintf("w%d", w), fmt.Sprintf(`"metadata":{"r":%d,"i":%d}`, r, i)))
				}
				if _, err := e.admin.Append(context.Background(), "app", batch...); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	got := s.entries(t, total)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i, en := range got {
		if en.Index != int64(i) || en.Log != "app" {
			t.Fatalf("event %d is entry %d of %q", i, en.Index, en.Log)
		}
	}
	// What the stream served is what the log holds, leaf hashes included.
	stored, err := e.admin.Entries(context.Background(), "app", 0, int64(total))
	if err != nil {
		t.Fatal(err)
	}
	for i := range stored {
		if stored[i].LeafHash != got[i].LeafHash || !bytes.Equal(stored[i].Data, got[i].Data) {
			t.Fatalf("entry %d differs from the range read", i)
		}
	}
}

func TestStreamFilters(t *testing.T) {
	e := newStreamEnv(t)
	e.createLog("app")
	var events []json.RawMessage
	for i := range 300 {
		actor := []string{"alice", "bob", "carol"}[i%3]
		action := []string{"user.create", "user.delete", "doc.read", "user.login"}[i%4]
		events = append(events, sev(action, actor, fmt.Sprintf(`"targets":[{"id":"t%d","type":"user"}]`, i%5), fmt.Sprintf(`"metadata":{"note":"round %d"}`, i)))
	}
	e.append("app", events...)
	// Matching entries: user.* by alice with target t2.
	var want []int64
	for i := range 300 {
		if i%3 == 0 && i%4 != 2 && i%5 == 2 {
			want = append(want, int64(i))
		}
	}
	q := url.Values{"from": {"0"}, "action": {"user.*"}, "actor": {"alice"}, "target": {"t2"}}
	s := e.open(e.tok, "app", q, "")
	got := streamIndexes(s.entries(t, len(want)))
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("filtered stream %v, want %v", got, want)
	}
	// Live: non-matching entries pass by unseen; the next match arrives.
	e.append("app", sev("user.create", "bob", `"targets":[{"id":"t2"}]`), sev("doc.read", "alice", `"targets":[{"id":"t2"}]`))
	rs := e.append("app", sev("user.update", "alice", `"targets":[{"id":"t2"}]`))
	if en := s.entries(t, 1)[0]; en.Index != rs[0].Index {
		t.Fatalf("next match is entry %d, want %d", en.Index, rs[0].Index)
	}

	// Full text and outcome.
	s2 := e.open(e.tok, "app", url.Values{"from": {"0"}, "q": {"round 17"}, "outcome": {"success"}}, "")
	if en := s2.entries(t, 1)[0]; en.Index != 17 {
		t.Fatalf("q=round 17 matched entry %d first", en.Index)
	}
	rs = e.append("app", sev("x.y", "z", `"metadata":{"note":"round 17"}`))
	if en := s2.entries(t, 1)[0]; en.Index != rs[0].Index {
		t.Fatalf("q=round 17 matched entry %d next, want %d", en.Index, rs[0].Index)
	}
}

// A consumer that reads nothing must not hold up appends; once it reads
// again it gets everything.
func TestStreamStalledReader(t *testing.T) {
	e := newStreamEnvOpts(t, true)
	e.createLog("app")
	s := e.open(e.tok, "app", url.Values{"from": {"0"}}, "")
	pad := strings.Repeat("x", 300)
	const batches, per = 4, 100 // ~200 KB of stream: far more than the socket buffers hold
	for b := range batches {
		batch := make([]json.RawMessage, per)
		for i := range batch {
			batch[i] = sev("bulk.write", "loader", fmt.Sprintf(`"metadata":{"b":%d,"i":%d,"pad":%q}`, b, i, pad))
		}
		e.append("app", batch...) // would hang here if the stream held up the sequencer
	}
	e.widen()
	got := s.entries(t, batches*per)
	for i, en := range got {
		if en.Index != int64(i) {
			t.Fatalf("event %d is entry %d", i, en.Index)
		}
	}
	// And it is still live.
	rs := e.append("app", sev("after.stall", "loader"))
	if en := s.entries(t, 1)[0]; en.Index != rs[0].Index {
		t.Fatalf("after catching up: entry %d, want %d", en.Index, rs[0].Index)
	}
}

// A consumer that stalls for longer than the stall limit is dropped; the
// log goes on.
func TestStreamDropsStalledConsumer(t *testing.T) {
	defer server.SetStreamTiming(0, 300*time.Millisecond)()
	e := newStreamEnvOpts(t, true)
	e.createLog("app")
	s := e.open(e.tok, "app", url.Values{"from": {"0"}}, "")
	pad := strings.Repeat("y", 300)
	batch := make([]json.RawMessage, 300)
	for i := range batch {
		batch[i] = sev("bulk.write", "loader", fmt.Sprintf(`"metadata":{"i":%d,"pad":%q}`, i, pad))
	}
	e.append("app", batch...)
	time.Sleep(2 * time.Second) // the stream's write times out meanwhile
	n := 0
	var err error
	for ; n <= len(batch); n++ {
		if _, err = s.entry(); err != nil {
			break
		}
	}
	if err == nil || n >= len(batch) {
		t.Fatalf("the stalled consumer read %d of %d entries and then %v; want the stream cut short", n, len(batch), err)
	}
	t.Logf("stalled consumer got %d entries, then %v", n, err)
	e.append("app", sev("after.drop", "loader"))
}

func TestStreamResume(t *testing.T) {
	e := newStreamEnv(t)
	e.createLog("app")
	for range 10 {
		e.append("app", sev("a.b", "x"))
	}
	// Last-Event-ID takes precedence over from.
	s := e.open(e.tok, "app", url.Values{"from": {"0"}}, "5")
	if got := streamIndexes(s.entries(t, 4)); fmt.Sprint(got) != "[6 7 8 9]" {
		t.Fatalf("resumed after 5: %v", got)
	}
	s.close()
	s = e.open(e.tok, "app", url.Values{"from": {"3"}}, "")
	if got := streamIndexes(s.entries(t, 2)); fmt.Sprint(got) != "[3 4]" {
		t.Fatalf("from=3: %v", got)
	}
	s.close()
	// Without from: only what is appended from now on.
	s = e.open(e.tok, "app", nil, "")
	rs := e.append("app", sev("a.c", "x"))
	if en := s.entries(t, 1)[0]; en.Index != 10 || rs[0].Index != 10 {
		t.Fatalf("new-only stream: entry %d (appended %d)", en.Index, rs[0].Index)
	}
	// Resuming after the last entry waits for the next.
	s2 := e.open(e.tok, "app", nil, "10")
	e.append("app", sev("a.d", "x"))
	if en := s2.entries(t, 1)[0]; en.Index != 11 {
		t.Fatalf("after Last-Event-ID 10: entry %d", en.Index)
	}
}

func TestStreamRevokedKey(t *testing.T) {
	e := newStreamEnv(t)
	ctx := context.Background()
	e.createLog("app")
	nk, err := e.admin.CreateKey(ctx, client.KeyOptions{Name: "tailer", Role: "reader"})
	if err != nil {
		t.Fatal(err)
	}
	s := e.open(nk.Token, "app", url.Values{"from": {"0"}}, "")
	e.append("app", sev("a.b", "x"))
	if en := s.entries(t, 1)[0]; en.Index != 0 {
		t.Fatalf("entry %d", en.Index)
	}
	if _, err := e.admin.RevokeKey(ctx, nk.Key.ID, "test"); err != nil {
		t.Fatal(err)
	}
	// The stream ends (at once: the revocation is a _system commit) with
	// an error event, without any further entry.
	done := make(chan error, 1)
	go func() {
		for {
			ev, err := s.next()
			if err != nil {
				done <- fmt.Errorf("stream ended without an error event: %v", err)
				return
			}
			switch ev.name {
			case "entry":
				done <- fmt.Errorf("entry after revocation: %s", ev.raw)
				return
			case "error":
				if !strings.Contains(ev.data, api.CodeUnauthorized) {
					done <- fmt.Errorf("error event %q", ev.data)
					return
				}
				if _, err := s.next(); !errors.Is(err, io.EOF) {
					done <- fmt.Errorf("after the error event: %v, want EOF", err)
					return
				}
				done <- nil
				return
			}
		}
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second): // far below the 15 s heartbeat
		t.Fatal("the revoked key's stream did not end")
	}
	resp, cancel, err := e.get(nk.Token, "app", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("revoked key reconnecting: %d", resp.StatusCode)
	}
}

// A key whose scopes stop covering the log (update) loses its stream too;
// a key without read scope never gets one.
func TestStreamScopes(t *testing.T) {
	e := newStreamEnv(t)
	ctx := context.Background()
	e.createLog("app")
	e.createLog("other")
	w, err := e.admin.CreateKey(ctx, client.KeyOptions{Name: "w", Role: "writer"})
	if err != nil {
		t.Fatal(err)
	}
	resp, cancel, err := e.get(w.Token, "app", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cancel()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("writer key: %d, want 403", resp.StatusCode)
	}
	r, err := e.admin.CreateKey(ctx, client.KeyOptions{Name: "r", Role: "reader"})
	if err != nil {
		t.Fatal(err)
	}
	s := e.open(r.Token, "app", nil, "")
	// A change that leaves the key allowed leaves the stream alone.
	desc := "still a reader"
	if _, err := e.admin.UpdateKey(ctx, r.Key.ID, client.KeyUpdate{Description: &desc}); err != nil {
		t.Fatal(err)
	}
	rs := e.append("app", sev("a.b", "x"))
	if en := s.entries(t, 1)[0]; en.Index != rs[0].Index {
		t.Fatalf("entry %d, want %d", en.Index, rs[0].Index)
	}
	scopes := []string{"read:other"}
	if _, err := e.admin.UpdateKey(ctx, r.Key.ID, client.KeyUpdate{Scopes: &scopes}); err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 1)
	go func() {
		for {
			ev, err := s.next()
			if err != nil {
				ch <- "EOF without error event"
				return
			}
			if ev.name != "" {
				ch <- ev.name + " " + ev.data
				return
			}
		}
	}()
	select {
	case got := <-ch:
		if !strings.HasPrefix(got, "error ") || !strings.Contains(got, api.CodeForbidden) {
			t.Fatalf("after losing the scope: %s", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stream did not end after the key lost its scope")
	}
}

func TestStreamBadRequests(t *testing.T) {
	e := newStreamEnv(t)
	e.createLog("app")
	e.append("app", sev("a.b", "x"), sev("a.b", "y"))
	cases := []struct {
		q      string
		lastID string
	}{
		{"order=oldest", ""},
		{"limit=10", ""},
		{"cursor=AQAAAAAAAAAAAAAAAA", ""},
		{"action=*", ""},
		{"action=user*", ""},
		{"outcome=maybe", ""},
		{"since=yesterday", ""},
		{"target_type=user", ""},
		{"q=a", ""},
		{"nonsense=1", ""},
		{"actor=a&actor=b", ""},
		{"from=-1", ""},
		{"from=x", ""},
		{"from=3", ""}, // beyond the size
		{"", "x"},
		{"", "-4"},
		{"", "2"}, // not an entry yet
		{"from=0", "2"},
	}
	for _, c := range cases {
		q, _ := url.ParseQuery(c.q)
		resp, cancel, err := e.get(e.tok, "app", q, c.lastID)
		if err != nil {
			t.Fatal(err)
		}
		var body api.Error
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		cancel()
		if resp.StatusCode != http.StatusBadRequest || body.Error.Code != api.CodeBadRequest || body.Error.Message == "" {
			t.Errorf("?%s Last-Event-ID %q: %d %+v, want 400", c.q, c.lastID, resp.StatusCode, body)
		}
	}
	// Unknown log.
	resp, cancel, err := e.get(e.tok, "nope", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cancel()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown log: %d", resp.StatusCode)
	}
	// Unauthenticated.
	resp, cancel, err = e.get("", "app", url.Values{"from": {"0"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cancel()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unsigned: %d, want 401", resp.StatusCode)
	}
	// A Bearer header for a key without bearer mode.
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/v1/logs/app/stream", nil)
	req.Header.Set("Authorization", "Bearer "+e.tok)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("bearer for a signing key: %d, want 401", resp.StatusCode)
	}
}

// streamAccessRecords returns the _access records of path: action and status.
func streamAccessRecords(t *testing.T, e *streamEnv, path string) []string {
	t.Helper()
	ctx := context.Background()
	l, err := e.admin.Log(ctx, api.AccessLog)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for start := int64(0); start < l.Size; {
		es, err := e.admin.Entries(ctx, api.AccessLog, start, l.Size)
		if err != nil {
			t.Fatal(err)
		}
		for _, en := range es {
			pe, err := entry.Parse(en.Data)
			if err != nil {
				t.Fatal(err)
			}
			var rec struct {
				Action   string `json:"action"`
				Metadata struct {
					Path   string `json:"path"`
					Status int    `json:"status"`
					Query  string `json:"query"`
				} `json:"metadata"`
			}
			if err := json.Unmarshal(pe.Event, &rec); err != nil {
				t.Fatal(err)
			}
			if rec.Metadata.Path == path {
				out = append(out, fmt.Sprintf("%s %d %s", rec.Action, rec.Metadata.Status, rec.Metadata.Query))
			}
		}
		start += int64(len(es))
	}
	return out
}

func TestStreamAccessRecord(t *testing.T) {
	e := newStreamEnv(t)
	e.createLog("app")
	e.append("app", sev("a.b", "x"))
	s := e.open(e.tok, "app", url.Values{"from": {"0"}, "actor": {"x"}}, "")
	// Recorded when the stream starts, before any entry.
	if got := streamAccessRecords(t, e, "/v1/logs/app/stream"); len(got) != 1 || got[0] != "access.read 200 actor=x&from=0" {
		t.Fatalf("_access records of the stream: %q", got)
	}
	s.entries(t, 1)
	s.close()
	// A refused stream is recorded as such.
	resp, cancel, err := e.get("", "app", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cancel()
	// And the stream that ended is not recorded a second time.
	time.Sleep(200 * time.Millisecond)
	got := streamAccessRecords(t, e, "/v1/logs/app/stream")
	if len(got) != 2 || got[0] != "access.read 200 actor=x&from=0" || got[1] != "access.refused 401 " {
		t.Fatalf("_access records of the stream: %q", got)
	}
}

func TestStreamHeartbeat(t *testing.T) {
	defer server.SetStreamTiming(50*time.Millisecond, 0)()
	e := newStreamEnv(t)
	e.createLog("app")
	s := e.open(e.tok, "app", nil, "")
	for i := 0; i < 3; i++ {
		ev, err := s.next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.name != "" || ev.hasID || len(ev.comments) != 1 {
			t.Fatalf("expected a heartbeat, got %q", ev.raw)
		}
		n, ok := strings.CutPrefix(ev.raw, ": heartbeat ")
		if !ok || !strings.HasSuffix(n, "\n\n") {
			t.Fatalf("heartbeat %q", ev.raw)
		}
		if ts, err := strconv.ParseInt(strings.TrimSpace(n), 10, 64); err != nil || time.Since(time.Unix(ts, 0)).Abs() > time.Minute {
			t.Fatalf("heartbeat time %q", n)
		}
	}
	// Entries still arrive between heartbeats, framed exactly.
	rs := e.append("app", sev("a.b", "x"))
	for {
		ev, err := s.next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.name == "" {
			continue
		}
		want := fmt.Sprintf("id: 0\nevent: entry\ndata: {\"log\":\"app\",\"index\":0,\"leaf_hash\":%q,\"data\":%s}\n\n", rs[0].LeafHash, rs[0].Entry)
		if ev.raw != want {
			t.Fatalf("entry event\n%q\nwant\n%q", ev.raw, want)
		}
		break
	}
}

// Shutdown of the http.Server ends streams (with an error event saying
// so) instead of waiting for them.
func TestStreamEndsAtShutdown(t *testing.T) {
	e := newStreamEnv(t)
	e.createLog("app")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: e.n.Handler, WriteTimeout: 120 * time.Second}
	go hs.Serve(ln)
	c, err := client.New("http://"+ln.Addr().String(), e.tok)
	if err != nil {
		t.Fatal(err)
	}
	tr, _ := client.NewTransport(e.tok, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ln.Addr().String()+"/v1/logs/app/stream", nil)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if _, err := c.Append(ctx, "app", sev("a.b", "x")); err != nil {
		t.Fatal(err)
	}
	s := &sseConn{resp: resp, rd: bufio.NewReader(resp.Body), cancel: cancel}
	s.entries(t, 1)
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	start := time.Now()
	if err := hs.Shutdown(sctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Shutdown took %s", d)
	}
	ev, err := s.next()
	if err != nil || ev.name != "error" || !strings.Contains(ev.data, api.CodeUnavailable) {
		t.Fatalf("last event %q, %v; want an unavailable error event", ev.raw, err)
	}
}
