package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/keys"
	"github.com/vellum-audit/vellum/internal/node"
)

// tailNode runs a real node; it returns the httptest server (to cut its
// connections) and an admin client.
func tailNode(t *testing.T) (*httptest.Server, *Client) {
	t.Helper()
	dir := t.TempDir()
	n, err := node.Open(context.Background(), node.Config{Dir: dir, OriginPrefix: "test.example/tail"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(n.Handler)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		n.Close()
	})
	tok, err := os.ReadFile(filepath.Join(dir, node.AdminKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(srv.URL, strings.TrimSpace(string(tok)), WithRetries(5))
	if err != nil {
		t.Fatal(err)
	}
	return srv, c
}

func tailEvent(action, actor string, i int) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"action":%q,"actor":{"id":%q},"metadata":{"i":%d}}`, action, actor, i))
}

// shortTail makes reconnection quick for a test.
func shortTail(t *testing.T, idle time.Duration) {
	oldIdle, oldMin, oldMax, oldFail := tailIdle, tailMinBackoff, tailMaxBackoff, tailMaxFailures
	tailIdle, tailMinBackoff, tailMaxBackoff, tailMaxFailures = idle, 10*time.Millisecond, 200*time.Millisecond, 5
	t.Cleanup(func() { tailIdle, tailMinBackoff, tailMaxBackoff, tailMaxFailures = oldIdle, oldMin, oldMax, oldFail })
}

// tailInto runs Tail in the background, sending entries to the returned
// channel; the error channel gets Tail's result.
func tailInto(ctx context.Context, c *Client, log string, from int64, filter url.Values) (<-chan api.Entry, <-chan error) {
	out := make(chan api.Entry, 10000)
	done := make(chan error, 1)
	go func() {
		done <- c.Tail(ctx, log, from, filter, func(e api.Entry) error {
			out <- e
			return nil
		})
	}()
	return out, done
}

func receiveTail(t *testing.T, ch <-chan api.Entry, done <-chan error, n int) []api.Entry {
	t.Helper()
	var out []api.Entry
	timeout := time.After(2 * time.Minute)
	for len(out) < n {
		select {
		case e := <-ch:
			out = append(out, e)
		case err := <-done:
			t.Fatalf("Tail returned after %d of %d entries: %v", len(out), n, err)
		case <-timeout:
			t.Fatalf("got %d of %d entries", len(out), n)
		}
	}
	return out
}

// The server drops every connection now and then; Tail reconnects with
// Last-Event-ID and fn sees every entry once, in order.
func TestTailReconnects(t *testing.T) {
	shortTail(t, time.Minute)
	srv, c := tailNode(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := c.CreateLog(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Append(ctx, "app", tailEvent("a.b", "x", -1)); err != nil {
		t.Fatal(err)
	}
	ch, done := tailInto(ctx, c, "app", 0, nil)
	receiveTail(t, ch, done, 1)
	total := 1
	for round := range 12 {
		var batch []json.RawMessage
		for i := range 1 + round%4 {
			batch = append(batch, tailEvent("a.b", "x", round*10+i))
		}
		if _, err := c.Append(ctx, "app", batch...); err != nil {
			t.Fatal(err)
		}
		total += len(batch)
		if round%3 == 0 {
			// Let the stream deliver some of it first, sometimes.
			time.Sleep(20 * time.Millisecond)
		}
		srv.CloseClientConnections()
	}
	got := receiveTail(t, ch, done, total-1)
	for i, e := range got {
		if e.Index != int64(i+1) {
			t.Fatalf("entry %d of the tail has index %d", i+1, e.Index)
		}
	}
	// Nothing more (no duplicate) until the next append.
	rs, err := c.Append(ctx, "app", tailEvent("a.b", "x", 999))
	if err != nil {
		t.Fatal(err)
	}
	if e := receiveTail(t, ch, done, 1)[0]; e.Index != rs[0].Index {
		t.Fatalf("next entry %d, want %d", e.Index, rs[0].Index)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Tail returned %v after cancel, want context.Canceled", err)
	}
	// It did reconnect: _access holds one record per stream started.
	n := streamsStarted(t, c, "app")
	t.Logf("%d streams started", n)
	if n < 2 {
		t.Fatalf("%d streams started, want reconnections", n)
	}
}

func streamsStarted(t *testing.T, c *Client, log string) int {
	t.Helper()
	ctx := context.Background()
	l, err := c.Log(ctx, api.AccessLog)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for start := int64(0); start < l.Size; {
		es, err := c.Entries(ctx, api.AccessLog, start, l.Size)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if strings.Contains(string(e.Data), `"action":"access.read"`) && strings.Contains(string(e.Data), `"path":"/v1/logs/`+log+`/stream"`) {
				n++
			}
		}
		start += int64(len(es))
	}
	return n
}

func TestTailFilterFromNowAndStop(t *testing.T) {
	_, c := tailNode(t)
	ctx := context.Background()
	if _, err := c.CreateLog(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Append(ctx, "app", tailEvent("user.create", "alice", 0), tailEvent("user.create", "alice", 1)); err != nil {
		t.Fatal(err)
	}
	stop := errors.New("enough")
	var seen []int64
	done := make(chan error, 1)
	go func() {
		done <- c.Tail(ctx, "app", -1, url.Values{"actor": {"alice"}, "action": {"user.*"}}, func(e api.Entry) error {
			seen = append(seen, e.Index)
			if len(seen) == 2 {
				return stop
			}
			return nil
		})
	}()
	// Entries 0 and 1 are older than the tail; of the new ones only
	// alice's user.* count.
	for i := range 6 {
		actor := []string{"bob", "alice"}[i%2]
		if _, err := c.Append(ctx, "app", tailEvent("user.update", actor, i)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-done:
		if !errors.Is(err, stop) {
			t.Fatalf("Tail returned %v, want fn's error", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Tail did not stop")
	}
	if fmt.Sprint(seen) != "[3 5]" {
		t.Fatalf("seen %v, want [3 5]", seen)
	}
}

func TestTailRefusals(t *testing.T) {
	shortTail(t, time.Minute)
	_, c := tailNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	noop := func(api.Entry) error { return nil }
	// Unknown log: 404 at once, no retries.
	err := c.Tail(ctx, "nope", 0, nil, noop)
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Fatalf("unknown log: %v", err)
	}
	if _, err := c.CreateLog(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	// A bad filter: 400.
	err = c.Tail(ctx, "app", 0, url.Values{"order": {"oldest"}}, noop)
	if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
		t.Fatalf("bad filter: %v", err)
	}
	// A key revoked mid-stream: Tail ends with 401.
	nk, err := c.CreateKey(ctx, KeyOptions{Name: "r", Role: "reader"})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := New(c.base.String(), nk.Token)
	if err != nil {
		t.Fatal(err)
	}
	ch, done := tailInto(ctx, rc, "app", 0, nil)
	if _, err := c.Append(ctx, "app", tailEvent("a.b", "x", 0)); err != nil {
		t.Fatal(err)
	}
	receiveTail(t, ch, done, 1)
	if _, err := c.RevokeKey(ctx, nk.Key.ID, "test"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
			t.Fatalf("revoked key: Tail returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Tail of a revoked key did not end")
	}
}

// fakeTailEntry is a well-formed entry (its signature is not checked here).
func fakeTailEntry(t *testing.T, log string, index int64) api.Entry {
	t.Helper()
	ev, err := entry.ParseEvent(tailEvent("a.b", "x", int(index)))
	if err != nil {
		t.Fatal(err)
	}
	e := entry.Entry{V: api.EntryFormatV1, Log: log, Index: index, Received: entry.FormatReceived(time.Now()),
		KeyID: "0123456789abcdef", Auth: entry.AuthSignature, Event: ev.Canonical, Sig: make([]byte, 64)}
	data, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return api.Entry{Log: log, Index: index, LeafHash: entry.LeafHash(data).String(), Data: data}
}

func sseTailEntry(e api.Entry) string {
	b, _ := json.Marshal(e)
	return fmt.Sprintf("id: %d\r\nevent: entry\r\ndata: %s\r\n\r\n", e.Index, b)
}

// fakeStream serves a scripted stream: handler gets the connection number
// (from 0) and the request.
func fakeStream(t *testing.T, handler func(n int, w http.ResponseWriter, r *http.Request)) *Client {
	t.Helper()
	var conns atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/stream") || r.Header.Get("Signature") == "" {
			http.Error(w, "unexpected request", http.StatusTeapot)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		handler(int(conns.Add(1)-1), w, r)
	}))
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	tok, _ := keys.NewToken()
	c, err := New(srv.URL, tok.Encode())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Error events saying "unavailable" and silent connections lead to
// reconnections that resume after the last entry; comments, \r\n line
// ends and unknown events are fine.
func TestTailProtocol(t *testing.T) {
	shortTail(t, 300*time.Millisecond)
	var mu sync.Mutex
	var lastIDs []string
	c := fakeStream(t, func(n int, w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		lastIDs = append(lastIDs, r.Header.Get("Last-Event-ID")+"/"+r.URL.Query().Get("from"))
		mu.Unlock()
		f := w.(http.Flusher)
		switch n {
		case 0:
			fmt.Fprint(w, ": hello\n\nretry: 100\n\n"+sseTailEntry(fakeTailEntry(t, "app", 4))+"event: other\ndata: {}\n\n")
			fmt.Fprint(w, "event: error\ndata: {\"error\":{\"code\":\"unavailable\",\"message\":\"shutting down\"}}\n\n")
		case 1:
			fmt.Fprint(w, sseTailEntry(fakeTailEntry(t, "app", 6)))
			f.Flush()
			<-r.Context().Done() // silent: the client's watchdog must cut it
		case 2:
			fmt.Fprint(w, sseTailEntry(fakeTailEntry(t, "app", 7)))
			f.Flush()
			<-r.Context().Done()
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, done := tailInto(ctx, c, "app", 4, nil)
	got := receiveTail(t, ch, done, 3)
	if got[0].Index != 4 || got[1].Index != 6 || got[2].Index != 7 {
		t.Fatalf("indexes %d %d %d", got[0].Index, got[1].Index, got[2].Index)
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(lastIDs) < 3 || lastIDs[0] != "/4" || lastIDs[1] != "4/4" || lastIDs[2] != "6/4" {
		t.Fatalf("requests (Last-Event-ID/from): %q", lastIDs)
	}
}

func TestTailVerifies(t *testing.T) {
	shortTail(t, time.Minute)
	cases := map[string]func(t *testing.T) string{
		"leaf hash": func(t *testing.T) string {
			e := fakeTailEntry(t, "app", 0)
			e.LeafHash = fakeTailEntry(t, "app", 1).LeafHash
			return sseTailEntry(e)
		},
		"index goes back": func(t *testing.T) string {
			return sseTailEntry(fakeTailEntry(t, "app", 2)) + sseTailEntry(fakeTailEntry(t, "app", 1))
		},
		"repeated index": func(t *testing.T) string {
			return sseTailEntry(fakeTailEntry(t, "app", 2)) + sseTailEntry(fakeTailEntry(t, "app", 2))
		},
		"other log": func(t *testing.T) string { return sseTailEntry(fakeTailEntry(t, "other", 0)) },
		"id differs": func(t *testing.T) string {
			return strings.Replace(sseTailEntry(fakeTailEntry(t, "app", 3)), "id: 3", "id: 4", 1)
		},
		"bytes say another index": func(t *testing.T) string {
			e := fakeTailEntry(t, "app", 5)
			e.Index = 6
			return strings.Replace(sseTailEntry(e), "id: 5", "id: 6", 1)
		},
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			b := body(t)
			c := fakeStream(t, func(n int, w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, b)
				w.(http.Flusher).Flush()
				<-r.Context().Done()
			})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			err := c.Tail(ctx, "app", 0, nil, func(api.Entry) error { return nil })
			if !errors.Is(err, ErrVerification) {
				t.Fatalf("Tail returned %v, want a verification error", err)
			}
		})
	}
}

// A server that is down: Tail gives up after its bounded retries.
func TestTailGivesUp(t *testing.T) {
	shortTail(t, time.Minute)
	var conns atomic.Int32
	c := fakeStream(t, func(n int, w http.ResponseWriter, r *http.Request) {
		conns.Add(1)
		// Hijack and close: a dropped connection, nothing delivered.
		hj, _ := w.(http.Hijacker)
		conn, _, err := hj.Hijack()
		if err == nil {
			conn.Close()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := c.Tail(ctx, "app", 0, nil, func(api.Entry) error { return nil })
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "giving up") {
		t.Fatalf("Tail returned %v", err)
	}
	if n := conns.Load(); n != int32(tailMaxFailures) {
		t.Fatalf("%d connections, want %d", n, tailMaxFailures)
	}
}
