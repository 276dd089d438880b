package main

// vellum bench: a load generator against a running server (VELLUM_URL).
//
// Each workload runs in three steps:
//
//  1. calibration: a short run (a quarter of --duration, at most 1 s) with a
//     small pool of pre-signed events, which also warms up connections and
//     the server; its events/s sizes the pool of step 2;
//  2. pre-signing: events for about 2 × the calibrated rate × --duration
//     (at most --max-events) are generated and signed (client.Sign: RFC 8785
//     canonicalisation and Ed25519) before any clock starts. Every event has
//     a unique id, so no event is ever sent twice;
//  3. the timed run: producers take requests from the pool until --duration
//     has passed or the pool is exhausted, whichever comes first; requests in
//     flight at the deadline are waited for and counted.
//
// Timed per request: building the request body (JSON), signing the HTTP
// request (RFC 9421), the round trip (which includes the server's durable
// commit) and decoding the receipts. Event signing is not timed.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/client"
)

const (
	defaultMaxEvents = 300_000 // pre-signed events per workload, at most
	poolHeadroom     = 2.0     // pool = calibrated rate × duration × headroom
)

type benchWorkload struct {
	name      string
	producers int
	batch     int // events per request
	// calRate is an events/s figure well above what the workload reaches on
	// one machine; it only sizes the calibration pool.
	calRate float64
}

// benchLatency is in milliseconds.
type benchLatency struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

type benchResult struct {
	Workload       string           `json:"workload"`
	Producers      int              `json:"producers"`
	BatchSize      int              `json:"batch_size"`
	Presigned      int              `json:"presigned_events"`
	SignSeconds    float64          `json:"sign_seconds"`     // pre-signing, not timed below
	CalibratedRate float64          `json:"calibrated_rate"`  // events/s of the calibration run
	Exhausted      bool             `json:"exhausted"`        // the pool ran out before --duration
	Seconds        float64          `json:"seconds"`          // wall time of the timed run
	Requests       int64            `json:"requests"`         // requests sent (answered or failed)
	Events         int64            `json:"events"`           // events acknowledged with a receipt
	Duplicates     int64            `json:"duplicates"`       // receipts marked duplicate (should be 0)
	EventsPerSec   float64          `json:"events_per_sec"`   // Events / Seconds
	RequestsPerSec float64          `json:"requests_per_sec"` // successful requests / Seconds
	Latency        benchLatency     `json:"latency_ms"`       // per successful request
	Errors         map[string]int64 `json:"errors"`           // by HTTP status, or "network", "other"
	ErrorCount     int64            `json:"error_count"`
	FirstError     string           `json:"first_error,omitempty"`
}

type benchReport struct {
	URL       string        `json:"url"`
	Log       string        `json:"log"`
	GoMaxProc int           `json:"gomaxprocs"`
	Note      string        `json:"note"`
	Workloads []benchResult `json:"workloads"`
}

const benchNote = "events are pre-signed before timing (event signing excluded); request body encoding, HTTP request signing (RFC 9421), the round trip with the server's durable commit, and receipt decoding are timed"

func (m *Main) bench(ctx context.Context, args []string) error {
	fs := m.newFlagSet("bench", "bench [--workload single|concurrent|batch|all] [--log NAME] [--logs N] [--urls URL,URL…] [--duration D] [--producers N] [--batch-size N] [--max-events N] [--json]")
	cf := m.clientFlagsOn(fs)
	workload := fs.String("workload", "all", "workload: single (1 producer, 1 event per request), concurrent (N producers, 1 event per request), batch (N producers, --batch-size events per request) or all")
	logName := fs.String("log", "bench", "log to append to (created if missing)")
	duration := fs.Duration("duration", 10*time.Second, "timed run per workload")
	producers := fs.Int("producers", 0, "concurrent producers for concurrent and batch (default 64 and 4; single always uses 1)")
	batchSize := fs.Int("batch-size", api.MaxBatch, "events per request in the batch workload (1-1000)")
	maxEvents := fs.Int("max-events", defaultMaxEvents, "pre-signed events per workload at most; a workload stops early when they run out")
	asJSON := fs.Bool("json", false, "print the results as JSON")
	urls := fs.String("urls", "", "comma-separated URLs of several nodes sharing one database: producer i sends to node i mod n (default: --url)")
	nlogs := fs.Int("logs", 1, "spread the producers over N logs, NAME-0 … NAME-(N-1): producer i writes to log i mod N (with as many logs as --urls, each node gets the appends of one log)")
	if err := parseFlags(fs, args); err != nil {
		return helpOK(err)
	}
	if fs.NArg() != 0 {
		return usageError("vellum bench -h", "unexpected argument %q", fs.Arg(0))
	}
	switch {
	case *duration <= 0:
		return usageError("for example --duration 10s", "--duration must be positive")
	case *producers < 0:
		return usageError("", "--producers must be positive")
	case *batchSize < 1 || *batchSize > api.MaxBatch:
		return usageError("", "--batch-size must be between 1 and %d", api.MaxBatch)
	case *maxEvents < 1:
		return usageError("", "--max-events must be positive")
	case *nlogs < 1 || *nlogs > 1000:
		return usageError("", "--logs must be between 1 and 1000")
	case !api.ValidLogName(*logName):
		return usageError("log names are 1-63 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit", "invalid log name %q", *logName)
	}
	nprod := func(def int) int {
		if *producers > 0 {
			return *producers
		}
		return def
	}
	all := []benchWorkload{
		{name: "single", producers: 1, batch: 1, calRate: 10_000},
		{name: "concurrent", producers: nprod(64), batch: 1, calRate: 40_000},
		{name: "batch", producers: nprod(4), batch: *batchSize, calRate: 150_000},
	}
	var wls []benchWorkload
	for _, w := range all {
		if *workload == "all" || *workload == w.name {
			wls = append(wls, w)
		}
	}
	if len(wls) == 0 {
		return usageError("use single, concurrent, batch or all", "unknown --workload %q", *workload)
	}
	tok, err := m.token(cf)
	if err != nil {
		return err
	}
	maxProd := 1
	for _, w := range wls {
		maxProd = max(maxProd, w.producers)
	}
	tc, err := cf.tlsConfig()
	if err != nil {
		return err
	}
	hc := benchHTTPClient(maxProd, tc)
	defer hc.CloseIdleConnections()
	// No retries: a refused or failed request is counted, not hidden.
	targets := []string{m.serverURL()}
	if *urls != "" {
		targets = strings.Split(*urls, ",")
	}
	var cs []*client.Client
	for _, u := range targets {
		c, err := client.New(strings.TrimSpace(u), tok, client.WithHTTPClient(hc), client.WithRetries(0))
		if err != nil {
			return errorf("set VELLUM_URL (or --urls) to the server's URL, for example "+defaultURL, "%v", err)
		}
		cs = append(cs, c)
	}
	c := cs[0]
	logs := []string{*logName}
	if *nlogs > 1 {
		logs = logs[:0]
		for i := range *nlogs {
			name := fmt.Sprintf("%s-%d", *logName, i)
			if !api.ValidLogName(name) {
				return usageError("use a shorter --log", "invalid log name %q", name)
			}
			logs = append(logs, name)
		}
	}
	for _, name := range logs {
		if _, err := c.CreateLog(ctx, name); err != nil {
			var ae *client.Error
			if !errors.As(err, &ae) || ae.Status != http.StatusConflict {
				return fmt.Errorf("creating log %q: %w", name, err)
			}
		}
	}
	b := &bencher{m: m, c: c, cs: cs, logs: logs, run: randHex(4)}
	rep := benchReport{URL: strings.Join(targets, ","), Log: strings.Join(logs, ","), GoMaxProc: runtime.GOMAXPROCS(0), Note: benchNote}
	for _, w := range wls {
		r, err := b.workload(ctx, w, *duration, *maxEvents)
		if err != nil {
			return err
		}
		rep.Workloads = append(rep.Workloads, r)
		if !*asJSON {
			m.progress("%s: %d events in %.2fs, %.0f events/s, p99 %.2f ms, %d errors", w.name, r.Events, r.Seconds, r.EventsPerSec, r.Latency.P99, r.ErrorCount)
		}
	}
	if *asJSON {
		return m.printJSON(rep)
	}
	m.printBench(rep)
	return nil
}

// benchHTTPClient is one client for every producer, with enough idle
// connections that no producer ever has to dial again.
func benchHTTPClient(producers int, tc *tls.Config) *http.Client {
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        producers + 16,
		MaxIdleConnsPerHost: producers + 16,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		TLSClientConfig:     tc,
		ForceAttemptHTTP2:   true,
	}
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

func (m *Main) progress(format string, args ...any) {
	fmt.Fprintf(m.Stderr, "vellum: bench: "+format+"\n", args...)
}

type bencher struct {
	m    *Main
	c    *client.Client
	cs   []*client.Client // producer p sends to cs[p % len(cs)]
	logs []string         // producer p writes to logs[p % len(logs)]; request i of a pool is for logs[i % len(logs)]
	run  string           // random per invocation: event ids never repeat across runs

	next atomic.Int64 // event counter for ids
}

func (b *bencher) workload(ctx context.Context, w benchWorkload, d time.Duration, maxEvents int) (benchResult, error) {
	// Calibration (and warm-up).
	calDur := min(d/4, time.Second)
	calN := min(maxEvents, max(int(w.calRate*calDur.Seconds()), 2*w.producers*w.batch))
	b.m.progress("%s: calibrating for %v (%d producers, %d events per request)", w.name, calDur, w.producers, w.batch)
	pool, _, err := b.presign(w, calN)
	if err != nil {
		return benchResult{}, err
	}
	cal := b.drive(ctx, w, pool, calDur)
	if err := ctx.Err(); err != nil {
		return benchResult{}, err
	}
	if cal.Events == 0 {
		msg := "no event was acknowledged"
		if cal.FirstError != "" {
			msg += ": " + cal.FirstError
		}
		return benchResult{}, errorf("check VELLUM_URL, VELLUM_KEY and that the key may append to the log", "bench %s: %s", w.name, msg)
	}
	// The pool for the timed run.
	n := int(math.Ceil(cal.EventsPerSec*d.Seconds()*poolHeadroom)) + w.producers*w.batch
	n = max(min(n, maxEvents), 1)
	b.m.progress("%s: calibrated at %.0f events/s; pre-signing %d events", w.name, cal.EventsPerSec, n)
	pool, signDur, err := b.presign(w, n)
	if err != nil {
		return benchResult{}, err
	}
	b.m.progress("%s: signed in %.1fs; running for %v", w.name, signDur.Seconds(), d)
	r := b.drive(ctx, w, pool, d)
	if err := ctx.Err(); err != nil {
		return benchResult{}, err
	}
	r.Presigned = 0
	for _, req := range pool {
		r.Presigned += len(req)
	}
	r.SignSeconds = signDur.Seconds()
	r.CalibratedRate = cal.EventsPerSec
	return r, nil
}

// presign generates and signs n events (in requests of w.batch), in
// parallel.
func (b *bencher) presign(w benchWorkload, n int) ([][]api.SignedEvent, time.Duration, error) {
	start := time.Now()
	events := make([]api.SignedEvent, n)
	first := b.next.Add(int64(n)) - int64(n)
	workers := runtime.GOMAXPROCS(0)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for k := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := newEventGen(uint64(first) + uint64(k)<<40)
			for i := k; i < n; i += workers {
				raw := g.event(b.run + "-" + strconv.FormatInt(first+int64(i), 36))
				se, err := b.c.Sign(b.logs[(i/w.batch)%len(b.logs)], raw)
				if err != nil {
					errs[k] = fmt.Errorf("signing a generated event: %w", err)
					return
				}
				events[i] = se
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, 0, err
	}
	pool := make([][]api.SignedEvent, 0, (n+w.batch-1)/w.batch)
	for i := 0; i < n; i += w.batch {
		pool = append(pool, events[i:min(i+w.batch, n)])
	}
	return pool, time.Since(start), nil
}

// drive runs w's producers over pool until d has passed or the pool is
// used up, then waits for the requests in flight.
func (b *bencher) drive(ctx context.Context, w benchWorkload, pool [][]api.SignedEvent, d time.Duration) benchResult {
	type producerStats struct {
		lat        []time.Duration
		requests   int64
		events     int64
		duplicates int64
		errors     map[string]int64
		firstErr   error
	}
	stats := make([]producerStats, w.producers)
	next := make([]atomic.Int64, len(b.logs)) // per log: its requests are pool[k*len(b.logs)+log]
	var exhausted atomic.Bool
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for p := range w.producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := &stats[p]
			st.errors = map[string]int64{}
			l := p % len(b.logs)
			for ctx.Err() == nil && time.Now().Before(deadline) {
				i := (next[l].Add(1)-1)*int64(len(b.logs)) + int64(l)
				if i >= int64(len(pool)) {
					exhausted.Store(true)
					return
				}
				evs := pool[i]
				t0 := time.Now()
				receipts, err := b.cs[p%len(b.cs)].AppendSigned(ctx, b.logs[l], evs)
				el := time.Since(t0)
				st.requests++
				if err != nil {
					st.errors[benchErrorClass(err)]++
					if st.firstErr == nil {
						st.firstErr = err
					}
					continue
				}
				st.lat = append(st.lat, el)
				st.events += int64(len(receipts))
				for _, rc := range receipts {
					if rc.Duplicate {
						st.duplicates++
					}
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	r := benchResult{Workload: w.name, Producers: w.producers, BatchSize: w.batch, Seconds: elapsed.Seconds(), Errors: map[string]int64{}, Exhausted: exhausted.Load()}
	var lat []time.Duration
	for i := range stats {
		st := &stats[i]
		lat = append(lat, st.lat...)
		r.Requests += st.requests
		r.Events += st.events
		r.Duplicates += st.duplicates
		for k, v := range st.errors {
			r.Errors[k] += v
			r.ErrorCount += v
		}
		if st.firstErr != nil && r.FirstError == "" {
			r.FirstError = st.firstErr.Error()
		}
	}
	if elapsed > 0 {
		r.EventsPerSec = float64(r.Events) / elapsed.Seconds()
		r.RequestsPerSec = float64(len(lat)) / elapsed.Seconds()
	}
	r.Latency = latencySummary(lat)
	return r
}

// benchErrorClass is the HTTP status of a failed request, or the kind of
// failure when there was no answer.
func benchErrorClass(err error) string {
	var ae *client.Error
	var ne net.Error
	switch {
	case errors.As(err, &ae):
		return strconv.Itoa(ae.Status)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	case errors.As(err, &ne):
		return "network"
	}
	return "other"
}

// latencySummary returns nearest-rank percentiles in milliseconds.
func latencySummary(lat []time.Duration) benchLatency {
	if len(lat) == 0 {
		return benchLatency{}
	}
	slices.Sort(lat)
	pct := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(lat)))) - 1
		i = max(0, min(i, len(lat)-1))
		return ms(lat[i])
	}
	return benchLatency{P50: pct(0.50), P95: pct(0.95), P99: pct(0.99), Max: ms(lat[len(lat)-1])}
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

func (m *Main) printBench(rep benchReport) {
	fmt.Fprintf(m.Stdout, "vellum bench against %s, log %q\n(%s)\n\n", rep.URL, rep.Log, rep.Note)
	tw := tabwriter.NewWriter(m.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tproducers\tbatch\tseconds\trequests\tevents\tevents/s\tp50 ms\tp95 ms\tp99 ms\tmax ms\terrors\t")
	for _, r := range rep.Workloads {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f\t%d\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%s\t\n",
			r.Workload, r.Producers, r.BatchSize, r.Seconds, r.Requests, r.Events, r.EventsPerSec,
			r.Latency.P50, r.Latency.P95, r.Latency.P99, r.Latency.Max, errorSummary(r.Errors))
	}
	tw.Flush()
	for _, r := range rep.Workloads {
		if r.Exhausted {
			fmt.Fprintf(m.Stdout, "note: %s used all %d pre-signed events after %.2fs (raise --max-events for a longer run)\n", r.Workload, r.Presigned, r.Seconds)
		}
		if r.Duplicates > 0 {
			fmt.Fprintf(m.Stdout, "note: %s: %d receipts were duplicates\n", r.Workload, r.Duplicates)
		}
		if r.FirstError != "" {
			fmt.Fprintf(m.Stdout, "note: %s: first error: %s\n", r.Workload, r.FirstError)
		}
	}
}

func errorSummary(errs map[string]int64) string {
	if len(errs) == 0 {
		return "0"
	}
	keys := make([]string, 0, len(errs))
	for k := range errs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s:%d", k, errs[k]))
	}
	return strings.Join(parts, ",")
}

func randHex(n int) string {
	const hexdig = "0123456789abcdef"
	var sb strings.Builder
	for range 2 * n {
		sb.WriteByte(hexdig[rand.IntN(16)])
	}
	return sb.String()
}

// Realistic audit events: a few thousand actors (mostly people, some
// services), dozens of actions, one to three targets, and metadata whose
// size is spread between about 100 bytes and 2 KiB (log-uniform: most
// events are small).

var benchActions = []string{
	"user.create", "user.update", "user.delete", "user.login", "user.logout", "user.login_failed",
	"user.password_reset", "user.mfa_enable", "user.mfa_disable", "user.invite",
	"role.grant", "role.revoke", "role.create", "role.delete",
	"group.create", "group.add_member", "group.remove_member",
	"config.update", "config.read", "policy.update", "sso.configure",
	"api_key.create", "api_key.revoke", "api_key.rotate",
	"repo.create", "repo.delete", "repo.push", "repo.clone", "repo.visibility_change",
	"secret.read", "secret.write", "secret.rotate",
	"billing.update", "invoice.download", "org.settings_update",
	"webhook.create", "webhook.delete", "export.start", "export.download",
	"session.revoke", "file.download", "file.share", "db.query", "deploy.start", "deploy.rollback",
}

var benchTargetTypes = []string{"user", "role", "group", "project", "repository", "config", "api_key", "secret", "bucket", "deployment"}

var benchFields = []string{"email", "display_name", "role", "visibility", "retention_days", "mfa", "quota", "region", "plan", "webhook_url", "allowed_ips", "timeout", "owner", "description"}

var benchWords = []string{"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu"}

var benchAgents = []string{
	"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
	"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
	"terraform-provider-acme/3.2.1", "acme-cli/2.14.0 (linux; amd64)", "Go-http-client/1.1", "python-requests/2.32.3",
}

type eventGen struct{ rng *rand.Rand }

func newEventGen(seed uint64) *eventGen {
	return &eventGen{rng: rand.New(rand.NewPCG(seed, 0x76656c6c756d))}
}

type benchChange struct {
	Field string `json:"field"`
	Old   string `json:"old"`
	New   string `json:"new"`
}

type benchMetadata struct {
	RequestID string        `json:"request_id"`
	UserAgent string        `json:"user_agent,omitempty"`
	Reason    string        `json:"reason,omitempty"`
	Changes   []benchChange `json:"changes,omitempty"`
}

func (g *eventGen) word() string { return benchWords[g.rng.IntN(len(benchWords))] }

// skewed returns an integer in [0, n) where small values are more frequent.
func (g *eventGen) skewed(n int) int { return g.rng.IntN(g.rng.IntN(n) + 1) }

func (g *eventGen) event(id string) json.RawMessage {
	r := g.rng
	var actor api.Actor
	if r.IntN(10) == 0 {
		n := g.skewed(300)
		actor = api.Actor{ID: fmt.Sprintf("svc-%03d", n), Type: "service", Name: fmt.Sprintf("%s-%s-worker", benchWords[n%len(benchWords)], benchWords[(n/len(benchWords))%len(benchWords)])}
	} else {
		n := g.skewed(4000)
		actor = api.Actor{ID: fmt.Sprintf("u-%05d", n), Type: "user", Name: fmt.Sprintf("%s.%s%d@example.com", benchWords[n%len(benchWords)], benchWords[(n/7)%len(benchWords)], n)}
	}
	actor.IP = fmt.Sprintf("10.%d.%d.%d", r.IntN(256), r.IntN(256), 1+r.IntN(254))
	targets := make([]api.Target, 1+g.skewed(3))
	for i := range targets {
		tt := benchTargetTypes[r.IntN(len(benchTargetTypes))]
		targets[i] = api.Target{ID: fmt.Sprintf("%s-%d", tt, g.skewed(50000)), Type: tt, Name: g.word() + "-" + g.word()}
	}
	outcome := "success"
	switch n := r.IntN(100); {
	case n < 4:
		outcome = "failure"
	case n < 5:
		outcome = "unknown"
	}
	// Metadata of a log-uniform size between 100 B and 2 KiB.
	want := int(math.Exp(math.Log(100) + r.Float64()*(math.Log(2048)-math.Log(100))))
	md := benchMetadata{RequestID: fmt.Sprintf("req_%016x", r.Uint64())}
	size := 40
	if want > 120 {
		md.UserAgent = benchAgents[r.IntN(len(benchAgents))]
		size += len(md.UserAgent) + 16
	}
	if want > 300 && r.IntN(2) == 0 {
		md.Reason = "ticket " + strconv.Itoa(10000+r.IntN(90000)) + ": " + g.word() + " " + g.word() + " " + g.word()
		size += len(md.Reason) + 12
	}
	for size < want {
		c := benchChange{Field: benchFields[r.IntN(len(benchFields))], Old: g.word() + "-" + strconv.Itoa(r.IntN(1000)), New: g.word() + "-" + strconv.Itoa(r.IntN(1000))}
		md.Changes = append(md.Changes, c)
		size += len(c.Field) + len(c.Old) + len(c.New) + 30
	}
	mdRaw, _ := json.Marshal(md)
	ev := api.Event{
		Time:     time.Now().UTC().Format(time.RFC3339Nano),
		Action:   benchActions[g.skewed(len(benchActions))],
		Actor:    actor,
		Targets:  targets,
		Outcome:  outcome,
		Source:   "vellum-bench",
		ID:       id,
		Metadata: mdRaw,
	}
	raw, _ := json.Marshal(ev)
	return raw
}
