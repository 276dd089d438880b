package alert

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Sink delivers alerts somewhere outside vellum (a webhook, syslog).
//
// Deliver is called from one goroutine per sink, one alert at a time. It
// returns nil when the alert was delivered; an error wrapped with
// [Permanent] when retrying cannot help; an error wrapped with
// [RetryAfter] when the receiver asked for a delay; any other error is
// retried with backoff. Deliver must return promptly when ctx ends.
type Sink interface {
	Name() string
	Deliver(ctx context.Context, a Alert) error
}

// Outcomes reported to DispatchOptions.OnResult and counted in SinkStats.
const (
	OutcomeDelivered = "delivered" // the sink accepted the alert
	OutcomeRetry     = "retry"     // an attempt failed and will be retried
	OutcomeFailed    = "failed"    // gave up: a permanent error or MaxAttempts reached
	OutcomeDropped   = "dropped"   // never attempted: queue full, or closed before its turn
)

// DispatchOptions tunes a Dispatcher. The zero value gives the defaults.
type DispatchOptions struct {
	// QueueSize bounds each sink's queue (default 1024).
	QueueSize int
	// MaxAttempts is how many times one alert is tried on one sink
	// before it counts as failed (default 8). A sink may set its own
	// limit by implementing interface{ MaxAttempts() int } (see [Route]).
	MaxAttempts int
	// InitialBackoff is the wait before the first retry (default 500ms);
	// it doubles per retry up to MaxBackoff (default 30s). Each wait is
	// jittered to between half and all of its nominal value.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// MaxRetryAfter caps a receiver's Retry-After request (default 5m).
	MaxRetryAfter time.Duration
	// OnResult, if set, is called for every outcome, with the sink's
	// name and one of the Outcome constants: to feed metrics. It is
	// called from Send and from the sinks' goroutines, concurrently, and
	// must be quick and never block.
	OnResult func(sink, outcome string)
	// OnError, if set, is called with every failed attempt's error
	// (final reports whether the alert is given up): to log. Same rules
	// as OnResult.
	OnError func(sink string, a Alert, attempt int, err error, final bool)
}

func (o *DispatchOptions) defaults() {
	if o.QueueSize <= 0 {
		o.QueueSize = 1024
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 8
	}
	if o.InitialBackoff <= 0 {
		o.InitialBackoff = 500 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	if o.MaxBackoff < o.InitialBackoff {
		o.MaxBackoff = o.InitialBackoff
	}
	if o.MaxRetryAfter <= 0 {
		o.MaxRetryAfter = 5 * time.Minute
	}
}

// SinkStats is one sink's counters since the Dispatcher started.
type SinkStats struct {
	Name      string
	Queued    int // alerts waiting now (not counting one in flight)
	Delivered int64
	Failed    int64
	Dropped   int64
	Retries   int64
}

// Dispatcher fans alerts out to sinks. Each sink has its own bounded queue
// and goroutine, so a slow or dead sink delays nobody, and Send never
// blocks.
type Dispatcher struct {
	opts    DispatchOptions
	workers []*worker

	mu     sync.RWMutex // guards closed against the queues' close
	closed bool

	abort     chan struct{} // closed when Close's ctx ends: stop now
	abortOnce sync.Once
	wg        sync.WaitGroup
}

type worker struct {
	d           *Dispatcher
	sink        Sink
	name        string
	accepts     func(Alert) bool
	maxAttempts int
	queue       chan Alert

	delivered, failed, dropped, retries atomic.Int64
}

// NewDispatcher starts one goroutine per sink. Stop them with Close.
// A sink that implements interface{ Accepts(Alert) bool } receives only
// the alerts it accepts (see [Route]).
func NewDispatcher(sinks []Sink, opts DispatchOptions) *Dispatcher {
	opts.defaults()
	d := &Dispatcher{opts: opts, abort: make(chan struct{})}
	for _, s := range sinks {
		w := &worker{d: d, sink: s, name: s.Name(), maxAttempts: opts.MaxAttempts,
			queue: make(chan Alert, opts.QueueSize)}
		if f, ok := s.(interface{ Accepts(Alert) bool }); ok {
			w.accepts = f.Accepts
		}
		if m, ok := s.(interface{ MaxAttempts() int }); ok && m.MaxAttempts() > 0 {
			w.maxAttempts = m.MaxAttempts()
		}
		d.workers = append(d.workers, w)
		d.wg.Add(1)
		go w.run()
	}
	return d
}

// Send queues a for every sink that accepts it, and returns at once: where
// a sink's queue is full (or the Dispatcher is closed) the alert is
// dropped for that sink and counted.
func (d *Dispatcher) Send(a Alert) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	for _, w := range d.workers {
		if w.accepts != nil && !w.accepts(a) {
			continue
		}
		if d.closed {
			w.count(OutcomeDropped)
			continue
		}
		select {
		case w.queue <- a:
		default:
			w.count(OutcomeDropped)
		}
	}
}

// Close stops accepting alerts and delivers what is queued, retries
// included, until everything is done or ctx ends. When ctx ends first the
// attempt in flight is cancelled, what is still queued is counted as
// dropped, and Close returns ctx's error. Close waits for the sinks'
// goroutines in every case; it is safe to call more than once.
func (d *Dispatcher) Close(ctx context.Context) error {
	d.mu.Lock()
	if !d.closed {
		d.closed = true
		for _, w := range d.workers {
			close(w.queue)
		}
	}
	d.mu.Unlock()

	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		d.abortOnce.Do(func() { close(d.abort) })
		<-done
		return ctx.Err()
	}
}

// Stats returns each sink's counters, in the order the sinks were given.
func (d *Dispatcher) Stats() []SinkStats {
	out := make([]SinkStats, len(d.workers))
	for i, w := range d.workers {
		out[i] = SinkStats{Name: w.name, Queued: len(w.queue),
			Delivered: w.delivered.Load(), Failed: w.failed.Load(),
			Dropped: w.dropped.Load(), Retries: w.retries.Load()}
	}
	return out
}

func (w *worker) count(outcome string) {
	switch outcome {
	case OutcomeDelivered:
		w.delivered.Add(1)
	case OutcomeFailed:
		w.failed.Add(1)
	case OutcomeDropped:
		w.dropped.Add(1)
	case OutcomeRetry:
		w.retries.Add(1)
	}
	if w.d.opts.OnResult != nil {
		w.d.opts.OnResult(w.name, outcome)
	}
}

func (w *worker) aborted() bool {
	select {
	case <-w.d.abort:
		return true
	default:
		return false
	}
}

func (w *worker) run() {
	defer w.d.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-w.d.abort:
			cancel()
		case <-ctx.Done():
		}
	}()
	for a := range w.queue {
		if w.aborted() {
			w.count(OutcomeDropped)
			continue
		}
		w.deliver(ctx, a)
	}
}

// deliver tries a until it is delivered, fails for good, or the
// Dispatcher is aborted.
func (w *worker) deliver(ctx context.Context, a Alert) {
	o := &w.d.opts
	for attempt := 1; ; attempt++ {
		err := w.sink.Deliver(ctx, a)
		if err == nil {
			w.count(OutcomeDelivered)
			return
		}
		final := attempt >= w.maxAttempts || IsPermanent(err) || ctx.Err() != nil
		if o.OnError != nil {
			o.OnError(w.name, a, attempt, err, final)
		}
		if final {
			w.count(OutcomeFailed)
			return
		}
		w.count(OutcomeRetry)
		wait := Backoff(attempt, o.InitialBackoff, o.MaxBackoff)
		var ra *retryAfterError
		if errors.As(err, &ra) && ra.after > wait {
			wait = min(ra.after, o.MaxRetryAfter)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			w.count(OutcomeFailed)
			return
		}
	}
}

// Backoff returns the jittered wait before retry number n (n ≥ 1):
// initial·2^(n-1), capped at max, then drawn uniformly from [d/2, d].
func Backoff(n int, initial, max time.Duration) time.Duration {
	d := initial
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying: the Dispatcher gives up on
// the alert at once.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

type retryAfterError struct {
	err   error
	after time.Duration
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }

// RetryAfter marks err as retryable no sooner than after d (the
// receiver's Retry-After); the Dispatcher waits the longer of d (capped
// by MaxRetryAfter) and its own backoff.
func RetryAfter(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return &retryAfterError{err, d}
}

// Route wraps a Sink with a filter and its own attempt limit; the
// Dispatcher consults both. The zero filter accepts every alert.
type Route struct {
	Sink
	// Detectors, if not empty, lists the only detectors delivered.
	Detectors []string
	// MinSeverity, if set, drops alerts below it (info < warning < critical).
	MinSeverity string
	// Attempts overrides DispatchOptions.MaxAttempts when > 0.
	Attempts int
}

// Accepts reports whether the route delivers a.
func (r *Route) Accepts(a Alert) bool {
	if len(r.Detectors) > 0 {
		found := false
		for _, d := range r.Detectors {
			if d == a.Detector {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	// An alert of unknown severity passes: better noise than silence.
	rank := SeverityRank(a.Severity)
	return rank == 0 || rank >= SeverityRank(r.MinSeverity)
}

// MaxAttempts is the route's attempt limit (0: the Dispatcher's).
func (r *Route) MaxAttempts() int { return r.Attempts }

// SeverityRank orders severities: info 1, warning 2, critical 3; anything
// else (including "") 0.
func SeverityRank(s string) int {
	switch s {
	case Info:
		return 1
	case Warning:
		return 2
	case Critical:
		return 3
	}
	return 0
}
