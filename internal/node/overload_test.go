package node_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/client"
	"github.com/vellum-audit/vellum/internal/node"
	"github.com/vellum-audit/vellum/internal/store"
	"github.com/vellum-audit/vellum/internal/store/sqlite"
)

// gatedStore is the SQLite store with a gate on the commits of one log:
// once armed, an Append of a batch of that log waits (before touching the
// database) until the gate opens. It saturates that log's sequencer without
// timing: the sequencer is stuck in its commit for as long as the test
// wants. Nothing else is gated: node start-up, other logs (_system,
// _access, so reads and /metrics work) and everything before Arm.
// Embedding *sqlite.Store keeps its optional interfaces (the background
// indexer, LookupIDs), so the node behaves as on the plain store.
type gatedStore struct {
	*sqlite.Store
	log     string
	armed   atomic.Bool
	entered chan struct{} // a gated Append is waiting (one signal each)
	open    chan struct{} // closed: the gate is open for good
	once    sync.Once
}

func (g *gatedStore) Append(ctx context.Context, b *store.Batch) error {
	if b.Log == g.log && g.armed.Load() {
		select {
		case g.entered <- struct{}{}:
		default:
		}
		select {
		case <-g.open:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return g.Store.Append(ctx, b)
}

func (g *gatedStore) release() { g.once.Do(func() { close(g.open) }) }

// scrape returns the /metrics text.
func scrape(t *testing.T, raw rawHTTP) string {
	t.Helper()
	resp, body := raw.send(t, "GET", "/metrics", "", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, body)
	}
	return string(body)
}

// metric is the value of the series (name with its labels, as printed) in
// a /metrics text, and whether it is there.
func metric(text, series string) (float64, bool) {
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// TestOverload saturates one log's sequencer (its commit held by a gate in
// the store) and checks the queue bound end to end: appends past
// QueueLimit get 503 at once with Retry-After and a JSON error, the queue
// never holds more than the limit (the queue-depth gauge, sampled while
// the excess is refused), the refusals are counted, nothing of a refused
// request is stored, other logs and reads are served throughout, and once
// the commit goes through every accepted append gets its receipt and the
// log verifies. No assertion depends on timing: the test waits for states
// (the gate reached, the gauge at the limit), each wait bounded.
func TestOverload(t *testing.T) {
	if usePostgres() {
		t.Skip("the gate wraps the SQLite store; the queue bound is in the ledger, the same on every store")
	}
	const limit = 8
	ctx := context.Background()
	dir := t.TempDir()
	var gate *gatedStore
	url, tok, _ := startNodeWith(t, dir, func(c *node.Config) {
		c.QueueLimit = limit
		c.OpenStore = func(ctx context.Context) (store.Store, error) {
			st, err := sqlite.Open(ctx, dir)
			if err != nil {
				return nil, err
			}
			gate = &gatedStore{Store: st, log: "busy", entered: make(chan struct{}, 1), open: make(chan struct{})}
			return gate, nil
		}
	})
	// Registered after startNode's cleanup, so it runs first: the node's
	// Close drains the queue through the gate, and the HTTP server waits
	// for the gated requests.
	t.Cleanup(gate.release)

	c := newClient(t, url, tok)
	noRetry := newClientOpts(t, url, tok, client.WithRetries(0))
	raw := newRaw(t, url, tok)
	raw.hc.Timeout = time.Minute // a request that waits instead of being refused fails the test, never hangs it
	v := verifierFor(t, c, dir)
	createLog(t, c, "busy")
	createLog(t, c, "other")
	mustAppend(t, c, "busy", event("warm.up", "w"))

	type result struct {
		i   int
		rs  []api.Receipt
		err error
	}
	results := make(chan result, limit)
	send := func(i int) {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		rs, err := noRetry.Append(ctx, "busy", event("queued.event", fmt.Sprintf("q%d", i), fmt.Sprintf(`"id":"queued-%d"`, i)))
		results <- result{i, rs, err}
	}
	within := func(what string, ch <-chan struct{}) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(60 * time.Second):
			t.Fatalf("%s: not within 60 s", what)
		}
	}

	// The first append is taken by the sequencer and held in its commit.
	gate.armed.Store(true)
	go send(0)
	within("the sequencer reaching the gate", gate.entered)
	// limit-1 more fill the queue (the held round still counts: its
	// events are in memory until it commits).
	for i := 1; i < limit; i++ {
		go send(i)
	}
	waitFor(t, 60*time.Second, "the queue to fill", func() bool {
		q, _ := metric(scrape(t, raw), `vellum_queue_events{log="busy"}`)
		return q == limit
	})

	// The excess: each refused at once, whatever its size, while a
	// sampler watches the queue-depth gauge.
	var maxSeen atomic.Int64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	sampler := newRaw(t, url, tok)
	sampler.hc.Timeout = time.Minute
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stopSampling:
				return
			default:
			}
			resp, err := sampler.hc.Get(url + "/metrics")
			if err != nil {
				return
			}
			var b strings.Builder
			bufio.NewReader(resp.Body).WriteTo(&b)
			resp.Body.Close()
			if q, ok := metric(b.String(), `vellum_queue_events{log="busy"}`); ok && int64(q) > maxSeen.Load() {
				maxSeen.Store(int64(q))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	var refusedIDs []string
	refused := 0
	for i := range 12 {
		n := 1 + i%3 // 1, 2 or 3 events
		var evs []json.RawMessage
		for j := range n {
			id := fmt.Sprintf("refused-%d-%d", i, j)
			refusedIDs = append(refusedIDs, id)
			evs = append(evs, event("refused.event", "r", fmt.Sprintf(`"id":%q`, id)))
		}
		resp, body := raw.send(t, "POST", "/v1/logs/busy/entries", "application/json", signedBody(t, c, "busy", evs...))
		checkAPIError(t, resp, body, http.StatusServiceUnavailable, api.CodeUnavailable)
		if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
			t.Errorf("overload refusal: Retry-After %q, want a number of seconds", resp.Header.Get("Retry-After"))
		}
		if !strings.Contains(string(body), "nothing was recorded") || !strings.Contains(string(body), "queue is full") {
			t.Errorf("overload refusal: %s, want a message saying the queue is full and nothing was recorded", body)
		}
		refused++
	}
	// The Go client sees the same refusal, as a temporary error.
	_, err := noRetry.Append(ctx, "busy", event("refused.event", "r", `"id":"refused-client"`))
	refusedIDs = append(refusedIDs, "refused-client")
	refused++
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusServiceUnavailable || ce.RetryAfter <= 0 || !ce.Temporary() {
		t.Errorf("client append while overloaded: %v, want a temporary 503 with Retry-After", err)
	}
	// Other logs and reads are not held up by the saturated one.
	mustAppend(t, c, "other", event("still.served", "o"))
	if _, err := c.Entries(ctx, "busy", 0, 1); err != nil {
		t.Errorf("reading the saturated log: %v", err)
	}
	close(stopSampling)
	<-sampled

	text := scrape(t, raw)
	if q, _ := metric(text, `vellum_queue_events{log="busy"}`); q != limit {
		t.Errorf("queue gauge %v while saturated, want %d", q, limit)
	}
	if m := maxSeen.Load(); m > limit {
		t.Errorf("the queue held %d events, above its limit %d", m, limit)
	}
	if o, _ := metric(text, `vellum_overloaded_total{log="busy"}`); int(o) != refused {
		t.Errorf("vellum_overloaded_total{log=busy} = %v, want %d", o, refused)
	}
	if u, _ := metric(text, `vellum_appends_total{log="busy",outcome="unavailable"}`); int(u) != refused {
		t.Errorf("vellum_appends_total{log=busy,outcome=unavailable} = %v, want %d", u, refused)
	}
	select {
	case r := <-results:
		t.Fatalf("append %d answered while its commit is held: %v", r.i, r.err)
	default:
	}

	// Open the gate: every accepted append gets its receipt.
	gate.release()
	got := map[int]api.Receipt{}
	for range limit {
		select {
		case r := <-results:
			if r.err != nil || len(r.rs) != 1 {
				t.Errorf("accepted append %d: %v (%d receipts)", r.i, r.err, len(r.rs))
				continue
			}
			got[r.i] = r.rs[0]
		case <-time.After(60 * time.Second):
			t.Fatalf("accepted appends not answered within 60 s of the gate opening (%d of %d)", len(got), limit)
		}
	}
	for i, rc := range got {
		if _, err := v.VerifyReceipt(rc, c.PublicKey()); err != nil {
			t.Errorf("receipt of append %d: %v", i, err)
		}
	}
	// The log holds the warm-up and the accepted events, nothing refused.
	if n := logSize(t, c, "busy"); n != 1+limit {
		t.Errorf("log size %d, want %d (1 + %d accepted)", n, 1+limit, limit)
	}
	es, err := c.Entries(ctx, "busy", 0, 1+limit)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if strings.Contains(string(e.Data), "refused") {
			t.Errorf("entry %d is of a refused request: %s", e.Index, e.Data)
		}
	}
	// A refused event sent again is new to the log (its id was never
	// recorded), not a duplicate.
	rs := mustAppend(t, c, "busy", event("refused.event", "r", `"id":"refused-0-0"`))
	if rs[0].Duplicate || rs[0].Index != 1+limit {
		t.Errorf("a refused event sent again: index %d duplicate %v, want a new entry %d", rs[0].Index, rs[0].Duplicate, 1+limit)
	}
	if q, _ := metric(scrape(t, raw), `vellum_queue_events{log="busy"}`); q != 0 {
		t.Errorf("queue gauge %v after the commit, want 0", q)
	}
	if err := verifyFull(ctx, c, v, "busy", nil); err != nil {
		t.Errorf("the log does not verify: %v", err)
	}
}

// TestShutdownDrainsQueued closes a node while appends wait in its
// saturated sequencer's queue: new appends are refused (503) from the
// moment Close begins, Close waits for the queued ones instead of dropping
// them, each gets its receipt once the commit goes through, and after a
// restart the receipts are in the log, which verifies.
func TestShutdownDrainsQueued(t *testing.T) {
	if usePostgres() {
		t.Skip("the gate wraps the SQLite store")
	}
	const queued = 4
	ctx := context.Background()
	dir := t.TempDir()
	var gate *gatedStore
	n, err := node.Open(ctx, node.Config{Dir: dir, OriginPrefix: testOriginPrefix, Version: "test",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		OpenStore: func(ctx context.Context) (store.Store, error) {
			st, err := sqlite.Open(ctx, dir)
			if err != nil {
				return nil, err
			}
			gate = &gatedStore{Store: st, log: "busy", entered: make(chan struct{}, 1), open: make(chan struct{})}
			return gate, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(n.Handler)
	t.Cleanup(func() { srv.Close(); n.Close() })
	t.Cleanup(gate.release) // runs first
	tokB, err := os.ReadFile(filepath.Join(dir, node.AdminKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(tokB))
	c := newClient(t, srv.URL, tok)
	noRetry := newClientOpts(t, srv.URL, tok, client.WithRetries(0))
	raw := newRaw(t, srv.URL, tok)
	raw.hc.Timeout = time.Minute
	createLog(t, c, "busy")
	createLog(t, c, "other")

	type result struct {
		rs  []api.Receipt
		err error
	}
	results := make(chan result, queued)
	send := func(i int) {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		rs, err := noRetry.Append(ctx, "busy", event("queued.event", fmt.Sprintf("q%d", i)))
		results <- result{rs, err}
	}
	gate.armed.Store(true)
	go send(0)
	select {
	case <-gate.entered:
	case <-time.After(time.Minute):
		t.Fatal("the sequencer did not reach the gate within a minute")
	}
	for i := 1; i < queued; i++ {
		go send(i)
	}
	waitFor(t, time.Minute, "the appends to queue", func() bool {
		q, _ := metric(scrape(t, raw), `vellum_queue_events{log="busy"}`)
		return q == queued
	})

	closed := make(chan error, 1)
	go func() { closed <- n.Close() }()
	// From the moment Close begins, new appends are refused.
	waitFor(t, time.Minute, "appends to be refused after Close began", func() bool {
		_, err := noRetry.Append(ctx, "other", event("late.event", "l"))
		var ce *client.Error
		if errors.As(err, &ce) && ce.Status == http.StatusServiceUnavailable {
			if ce.RetryAfter <= 0 || !strings.Contains(ce.Message, "shutting down") || !strings.Contains(ce.Message, "nothing was recorded") {
				t.Errorf("append during shutdown: %v (Retry-After %v), want 503 saying the server is shutting down and nothing was recorded, with Retry-After", err, ce.RetryAfter)
			}
			return true
		}
		if err != nil {
			t.Fatalf("append during shutdown: %v", err)
		}
		return false
	})
	// Close waits for the queued appends: it cannot finish while their
	// commit is held.
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) with %d appends queued behind a held commit", err, queued)
	case r := <-results:
		t.Fatalf("a queued append was answered before its commit: %v", r.err)
	default:
	}
	gate.release()
	var acked []api.Receipt
	for range queued {
		select {
		case r := <-results:
			if r.err != nil || len(r.rs) != 1 {
				t.Fatalf("a queued append at shutdown: %v (%d receipts), want its receipt", r.err, len(r.rs))
			}
			acked = append(acked, r.rs...)
		case <-time.After(time.Minute):
			t.Fatalf("queued appends not answered within a minute of the gate opening")
		}
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Close did not return within a minute of the queue draining")
	}
	srv.Close()

	url, _, stop := startNode(t, dir)
	defer stop()
	c2 := newClient(t, url, tok)
	v := verifierFor(t, c2, dir)
	for _, r := range acked {
		e, err := c2.Entry(ctx, "busy", r.Index, false)
		if err != nil || string(e.Data) != string(r.Entry) {
			t.Fatalf("acknowledged entry %d after the restart: %v", r.Index, err)
		}
		if _, err := v.VerifyReceipt(r, c2.PublicKey()); err != nil {
			t.Errorf("receipt %d: %v", r.Index, err)
		}
	}
	if n := logSize(t, c2, "busy"); n != queued {
		t.Errorf("log size %d after the restart, want %d", n, queued)
	}
	if err := verifyFull(ctx, c2, v, "busy", nil); err != nil {
		t.Errorf("the log does not verify after the restart: %v", err)
	}
}
