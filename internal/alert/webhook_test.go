package alert

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
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
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

func testAlert(n int) Alert {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	return Alert{
		ID:       MakeID(Replay, "billing", "k_1", "api-"+strconv.Itoa(n)),
		Detector: Replay, Severity: Critical,
		Log: "billing", KeyID: "k_1", Source: "api-" + strconv.Itoa(n),
		Summary: "a nonce was replayed", Action: "revoke the key",
		Since: now, Last: now, Count: int64(n + 1), Entry: int64(n), Node: "vellum-1",
	}
}

// delivery is one request as the receiver saw it.
type delivery struct {
	header http.Header
	body   []byte
	err    error // VerifyWebhook's verdict
}

// receiver is a real HTTP server that verifies each request and answers
// with respond(n) for the n-th request (from 1).
type receiver struct {
	srv  *httptest.Server
	got  chan delivery
	hits atomic.Int64
}

func newReceiver(t *testing.T, respond func(n int64, w http.ResponseWriter, r *http.Request)) *receiver {
	t.Helper()
	rc := &receiver{got: make(chan delivery, 100)}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := rc.hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		err := VerifyWebhook(testSecret, r.Header.Get(SignatureHeader), body, time.Now(), time.Minute)
		rc.got <- delivery{r.Header.Clone(), body, err}
		if respond != nil {
			respond(n, w, r)
		}
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func newTestWebhook(t *testing.T, url string) *Webhook {
	t.Helper()
	w, err := NewWebhook(WebhookOptions{Name: "hook", URL: url, Secret: testSecret, Version: "1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

var fastRetries = DispatchOptions{InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}

func stats(t *testing.T, d *Dispatcher) SinkStats {
	t.Helper()
	s := d.Stats()
	if len(s) != 1 {
		t.Fatalf("Stats: %d sinks, want 1", len(s))
	}
	return s[0]
}

func TestWebhookSignedDelivery(t *testing.T) {
	rc := newReceiver(t, nil)
	d := NewDispatcher([]Sink{newTestWebhook(t, rc.srv.URL)}, DispatchOptions{})
	a := testAlert(1)
	d.Send(a)
	got := <-rc.got
	if got.err != nil {
		t.Fatalf("VerifyWebhook: %v", got.err)
	}
	for h, want := range map[string]string{
		"Content-Type":          "application/json",
		"User-Agent":            "vellum/1.2.3",
		"Vellum-Alert-Id":       a.ID,
		"Vellum-Alert-Detector": Replay,
	} {
		if v := got.header.Get(h); v != want {
			t.Errorf("%s = %q, want %q", h, v, want)
		}
	}
	var back Alert
	if err := json.Unmarshal(got.body, &back); err != nil {
		t.Fatal(err)
	}
	if back.ID != a.ID || back.Summary != a.Summary || !back.Since.Equal(a.Since) || back.Count != a.Count {
		t.Errorf("body = %+v, want %+v", back, a)
	}
	// The signature binds the body: another body under it fails.
	if err := VerifyWebhook(testSecret, got.header.Get(SignatureHeader), append(got.body, ' '), time.Now(), time.Minute); !errors.Is(err, ErrBadSignature) {
		t.Errorf("tampered body: %v, want ErrBadSignature", err)
	}
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := stats(t, d); s.Delivered != 1 || s.Failed != 0 || s.Retries != 0 || s.Dropped != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestWebhookRetriesThenSucceeds(t *testing.T) {
	rc := newReceiver(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		switch n {
		case 1:
			w.WriteHeader(http.StatusInternalServerError)
		case 2:
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusTooManyRequests)
		case 3:
			w.WriteHeader(http.StatusBadGateway)
		}
	})
	var mu sync.Mutex
	outcomes := map[string]int{}
	opts := fastRetries
	opts.OnResult = func(sink, outcome string) {
		mu.Lock()
		outcomes[sink+"/"+outcome]++
		mu.Unlock()
	}
	d := NewDispatcher([]Sink{newTestWebhook(t, rc.srv.URL)}, opts)
	d.Send(testAlert(1))
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	close(rc.got)
	var sigs []string
	for g := range rc.got {
		if g.err != nil {
			t.Errorf("attempt not verifiable: %v", g.err)
		}
		sigs = append(sigs, g.header.Get(SignatureHeader))
	}
	if len(sigs) != 4 {
		t.Fatalf("%d attempts, want 4", len(sigs))
	}
	if s := stats(t, d); s.Delivered != 1 || s.Retries != 3 || s.Failed != 0 {
		t.Errorf("stats %+v", s)
	}
	mu.Lock()
	defer mu.Unlock()
	if outcomes["hook/retry"] != 3 || outcomes["hook/delivered"] != 1 || len(outcomes) != 2 {
		t.Errorf("OnResult saw %v", outcomes)
	}
}

func TestWebhookGivesUpAfterMaxAttempts(t *testing.T) {
	rc := newReceiver(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	opts := fastRetries
	opts.MaxAttempts = 3
	var final atomic.Int64
	opts.OnError = func(sink string, a Alert, attempt int, err error, isFinal bool) {
		if isFinal {
			final.Add(1)
		}
	}
	d := NewDispatcher([]Sink{newTestWebhook(t, rc.srv.URL)}, opts)
	d.Send(testAlert(1))
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := rc.hits.Load(); n != 3 {
		t.Errorf("%d attempts, want 3", n)
	}
	if s := stats(t, d); s.Delivered != 0 || s.Retries != 2 || s.Failed != 1 || final.Load() != 1 {
		t.Errorf("stats %+v, final %d", s, final.Load())
	}
}

func TestWebhookClientErrorNotRetried(t *testing.T) {
	for _, code := range []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusNotFound, http.StatusFound} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			rc := newReceiver(t, func(n int64, w http.ResponseWriter, r *http.Request) {
				if code == http.StatusFound {
					w.Header().Set("Location", "/elsewhere")
				}
				w.WriteHeader(code)
			})
			var permanent atomic.Bool
			opts := fastRetries
			opts.OnError = func(_ string, _ Alert, _ int, err error, final bool) {
				permanent.Store(final && IsPermanent(err))
			}
			d := NewDispatcher([]Sink{newTestWebhook(t, rc.srv.URL)}, opts)
			d.Send(testAlert(1))
			if err := d.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if n := rc.hits.Load(); n != 1 {
				t.Errorf("%d requests, want 1", n)
			}
			if s := stats(t, d); s.Failed != 1 || s.Retries != 0 || s.Delivered != 0 || !permanent.Load() {
				t.Errorf("stats %+v, permanent %v", s, permanent.Load())
			}
		})
	}
}

func TestWebhookNetworkErrorRetried(t *testing.T) {
	rc := newReceiver(t, nil)
	url := rc.srv.URL
	rc.srv.Close() // nothing listens there now
	opts := fastRetries
	opts.MaxAttempts = 2
	d := NewDispatcher([]Sink{newTestWebhook(t, url)}, opts)
	d.Send(testAlert(1))
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := stats(t, d); s.Retries != 1 || s.Failed != 1 {
		t.Errorf("stats %+v", s)
	}
}

// A receiver that never answers must not block Send: the queue fills,
// the rest is dropped and counted.
func TestStalledReceiverNeverBlocksSend(t *testing.T) {
	release := make(chan struct{})
	rc := newReceiver(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		<-release
	})
	const queue = 4
	d := NewDispatcher([]Sink{newTestWebhook(t, rc.srv.URL)}, DispatchOptions{QueueSize: queue})
	d.Send(testAlert(0))
	<-rc.got // the first alert is in flight and stuck
	for i := 1; i <= 100; i++ {
		d.Send(testAlert(i))
	}
	s := stats(t, d)
	if s.Queued != queue || s.Dropped != 100-queue || s.Delivered != 0 {
		t.Fatalf("while stalled: %+v", s)
	}
	close(release)
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	s = stats(t, d)
	if s.Delivered != 1+queue || s.Dropped != 100-queue || s.Queued != 0 {
		t.Errorf("after Close: %+v", s)
	}
	// After Close, Send drops.
	d.Send(testAlert(200))
	if s := stats(t, d); s.Dropped != 100-queue+1 {
		t.Errorf("Send after Close: %+v", s)
	}
}

// Close with a context that ends gives up on the stalled delivery and
// counts what was queued as dropped.
func TestCloseGivesUpWhenContextEnds(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	rc := newReceiver(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	d := NewDispatcher([]Sink{newTestWebhook(t, rc.srv.URL)}, DispatchOptions{})
	d.Send(testAlert(0))
	<-rc.got
	d.Send(testAlert(1))
	d.Send(testAlert(2))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.Close(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Close = %v, want context.Canceled", err)
	}
	if s := stats(t, d); s.Failed != 1 || s.Dropped != 2 || s.Delivered != 0 || s.Queued != 0 {
		t.Errorf("stats %+v", s)
	}
}

// Two sinks: one stalled, one healthy; the healthy one is unaffected.
func TestSlowSinkDoesNotDelayOthers(t *testing.T) {
	release := make(chan struct{})
	slow := newReceiver(t, func(int64, http.ResponseWriter, *http.Request) { <-release })
	fast := newReceiver(t, nil)
	d := NewDispatcher([]Sink{newTestWebhook(t, slow.srv.URL), newTestWebhook(t, fast.srv.URL)}, DispatchOptions{QueueSize: 2})
	for i := 0; i < 10; i++ {
		d.Send(testAlert(i))
		<-fast.got // delivered while the other sink is stuck
	}
	close(release)
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := d.Stats()
	if st[1].Delivered != 10 || st[1].Dropped != 0 || st[0].Dropped == 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestRouteFilters(t *testing.T) {
	rc := newReceiver(t, nil)
	r := &Route{Sink: newTestWebhook(t, rc.srv.URL), Detectors: []string{Replay, Tamper}, MinSeverity: Warning}
	d := NewDispatcher([]Sink{r}, DispatchOptions{})
	a := testAlert(1)
	d.Send(a) // replay, critical: yes
	a.Severity = Info
	d.Send(a) // too low
	a.Severity, a.Detector = Critical, Burst
	d.Send(a) // not listed
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := rc.hits.Load(); n != 1 {
		t.Errorf("%d deliveries, want 1", n)
	}
}

func TestVerifyWebhook(t *testing.T) {
	body := []byte(`{"id":"al_1"}`)
	now := time.Unix(1_700_000_000, 0)
	good := SignWebhook(testSecret, body, now)
	if err := VerifyWebhook(testSecret, good, body, now.Add(4*time.Minute), 0); err != nil {
		t.Errorf("good: %v", err)
	}
	other := SignWebhook([]byte("another secret, another secret!!"), body, now)
	_, otherSig, _ := strings.Cut(other, ",")
	for name, tc := range map[string]struct {
		header string
		body   []byte
		now    time.Time
		want   error
	}{
		"stale":         {good, body, now.Add(6 * time.Minute), ErrStale},
		"future":        {good, body, now.Add(-6 * time.Minute), ErrStale},
		"body":          {good, []byte(`{"id":"al_2"}`), now, ErrBadSignature},
		"wrong secret":  {other, body, now, ErrBadSignature},
		"empty":         {"", body, now, ErrNoSignature},
		"no t":          {otherSig, body, now, ErrNoSignature},
		"no v1":         {"t=1700000000", body, now, ErrNoSignature},
		"bad hex":       {"t=1700000000,v1=zz", body, now, ErrNoSignature},
		"short sig":     {"t=1700000000,v1=abcd", body, now, ErrNoSignature},
		"bad t":         {strings.Replace(good, "t=", "t=+", 1), body, now, ErrNoSignature},
		"two t":         {"t=1," + good, body, now, ErrNoSignature},
		"huge t":        {"t=99999999999999999999,v1=" + strings.Repeat("00", 32), body, now, ErrNoSignature},
		"rotated (ok)":  {good + "," + otherSig, body, now, nil},
		"rotated other": {other + "," + strings.SplitN(good, ",", 2)[1], body, now, nil},
		"v2 ignored":    {good + ",v2=whatever", body, now, nil},
	} {
		if err := VerifyWebhook(testSecret, tc.header, tc.body, tc.now, 5*time.Minute); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"7":                             7 * time.Second,
		"Wed, 01 Jan 2025 00:00:30 GMT": 30 * time.Second,
		"Tue, 31 Dec 2024 00:00:30 GMT": 0,
	} {
		if d, ok := parseRetryAfter(v, now); !ok || d != want {
			t.Errorf("%q: %v %v, want %v", v, d, ok, want)
		}
	}
	for _, v := range []string{"", "-1", "soon"} {
		if _, ok := parseRetryAfter(v, now); ok {
			t.Errorf("%q accepted", v)
		}
	}
}

func TestBackoffBounds(t *testing.T) {
	initial, max := 500*time.Millisecond, 30*time.Second
	for n := 1; n <= 12; n++ {
		nominal := initial << (n - 1)
		if nominal > max {
			nominal = max
		}
		for i := 0; i < 50; i++ {
			if d := Backoff(n, initial, max); d < nominal/2 || d > nominal {
				t.Fatalf("Backoff(%d) = %v, want in [%v, %v]", n, d, nominal/2, nominal)
			}
		}
	}
}

func TestNewWebhookRejects(t *testing.T) {
	for name, o := range map[string]WebhookOptions{
		"no secret":    {URL: "https://x.example/"},
		"ftp":          {URL: "ftp://x.example/", Secret: testSecret},
		"no host":      {URL: "https:///path", Secret: testSecret},
		"ca with http": {URL: "http://x.example/", Secret: testSecret, CAFile: "ca.pem"},
	} {
		if _, err := NewWebhook(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestRedactURL(t *testing.T) {
	got := redactURL("https://user:hunter2@h.example/p?token=abc&x=1#frag")
	if strings.Contains(got, "hunter2") || strings.Contains(got, "abc") || !strings.Contains(got, "h.example/p") {
		t.Errorf("redactURL = %s", got)
	}
}

// An https receiver with its own CA: trusted through ca_file, refused
// without it.
func TestWebhookCAFile(t *testing.T) {
	got := make(chan error, 10)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- VerifyWebhook(testSecret, r.Header.Get(SignatureHeader), body, time.Now(), time.Minute)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake below
	srv.StartTLS()
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := NewWebhook(WebhookOptions{URL: srv.URL, Secret: testSecret, CAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Deliver(context.Background(), testAlert(1)); err != nil {
		t.Fatalf("with ca_file: %v", err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	plain, err := NewWebhook(WebhookOptions{URL: srv.URL, Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.Deliver(context.Background(), testAlert(1)); err == nil {
		t.Fatal("an unknown CA was trusted")
	}
	if _, err := NewWebhook(WebhookOptions{URL: srv.URL, Secret: testSecret, CAFile: filepath.Join(t.TempDir(), "none.pem")}); err == nil {
		t.Error("missing ca_file accepted")
	}
}
