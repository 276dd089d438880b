package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/checkpoint"
	"github.com/vellum-audit/vellum/internal/metrics"
)

// Forwarding: on a store that several nodes share, one node at a time holds
// a log's sticky sequencer lease and sequences it; the others send it their
// rounds. A forwarding node's sequencer still gathers everything pending
// (authenticated, parsed and signature-checked here) into one round, and
// sends the round in one call; the holder verifies every event again, feeds
// them to its own sequencer and answers each request with its receipts or
// its refusal. The holder's per-round lock and the store's commit fence stay
// in place, so a node that sequences without the lease (after a failed
// forward, say) is slower, never unsafe.

// Router decides where a log's rounds are sequenced, and sends them there.
type Router interface {
	// Route reports whether this node sequences log's next round itself
	// (it holds the lease, or just took it, or nobody can be forwarded to)
	// and, if not, the address of the node to forward it to.
	Route(ctx context.Context, log string) (holder string, local bool)
	// Forward sends one round to holder in one call and returns one result
	// per request, in order, and the holder's checkpoint after the round.
	// An error wrapping ErrNotForwarded means that the holder did not take
	// any of it (unreachable, or it refused the call as a whole): the
	// round may be sequenced here instead. Any other error leaves the
	// outcome unknown.
	Forward(ctx context.Context, holder, log string, reqs []ForwardRequest) (ForwardResponse, error)
	// Remote reports, without waiting for anything, whether log's rounds
	// go to another node now (this node does not hold the lease and knows
	// who does). Append then leaves the event signatures to the holder,
	// which verifies every one; a request that is sequenced here after
	// all is verified here before it is decided.
	Remote(log string) bool
}

// ErrNotForwarded wraps a Forward error after which nothing was sequenced.
var ErrNotForwarded = errors.New("the round was not forwarded")

// ForwardRequest is one append request of a forwarded round.
type ForwardRequest struct {
	Events []Submitted
}

// ForwardResult is the holder's answer to one ForwardRequest: its
// receipts, or Err (a *RemoteError on the forwarding node).
type ForwardResult struct {
	Receipts []api.Receipt
	Err      error
}

// ForwardResponse is the holder's answer to a forwarded round.
type ForwardResponse struct {
	Results    []ForwardResult
	Checkpoint []byte // the holder's latest checkpoint of the log
}

// RemoteError is a request refused by the node that sequenced it, as that
// node answered it over HTTP; the HTTP edge passes it on unchanged.
type RemoteError struct {
	Status     int
	Code       string
	Message    string
	Index      *int
	RetryAfter int // seconds; 0: none
}

func (e *RemoteError) Error() string { return e.Message }

// forwardMetrics are the forwarding instruments.
type forwardMetrics struct {
	rounds, events, fallbacks, unknown, received *metrics.CounterVec
}

func (l *Ledger) registerForwardMetrics(r *metrics.Registry) {
	l.fm = forwardMetrics{
		rounds: r.Counter("vellum_forwarded_rounds_total",
			"Sequencer rounds this node sent to the node holding the log's sequencer lease, by log.", "log"),
		events: r.Counter("vellum_forwarded_events_total",
			"Events this node sent to the node holding the log's sequencer lease, by log.", "log"),
		fallbacks: r.Counter("vellum_forward_fallbacks_total",
			"Rounds sequenced here because the lease holder could not be reached (or refused the call), by log.", "log"),
		unknown: r.Counter("vellum_forward_failures_total",
			"Forwarded rounds whose outcome is unknown (the holder failed mid-call; their appends got 503), by log.", "log"),
		received: r.Counter("vellum_forward_received_events_total",
			"Events other nodes forwarded to this node for sequencing, by log.", "log"),
	}
}

// ForwardStats are one log's forwarding counters on this node.
type ForwardStats struct {
	Rounds, Events, Fallbacks, Unknown, Received int64
}

// Forwarded returns log's forwarding counters on this node.
func (l *Ledger) Forwarded(log string) ForwardStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fstats[log]
}

func (l *Ledger) countForward(log string, f func(*ForwardStats)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fstats == nil {
		l.fstats = map[string]ForwardStats{}
	}
	st := l.fstats[log]
	f(&st)
	l.fstats[log] = st
}

// ForwardRoundBytes bounds a forwarded round: a forwarding sequencer stops
// gathering requests once their canonical events reach it.
const ForwardRoundBytes = 8 << 20

// maxForwards bounds the forwarded calls in flight per log on one node.
// With one, requests that arrive while a call is out gather for the next
// call, so every call carries everything pending: the fewest calls, and on
// a machine whose CPU is the limit (BENCHMARKS.md, issue 5) the best
// throughput; two in flight measured no better there. More would help a
// holder that is far away (long round trips), at the cost of more calls.
const maxForwards = 1

// forwardTimeout bounds one forwarded round's call.
const forwardTimeout = 30 * time.Second

// forward sends round to holder (in a goroutine of its own: it touches no
// state of the sequencer goroutine). It returns the requests to sequence
// here instead (all of them if the holder did not take the round), having
// answered the others.
func (s *sequencer) forward(holder string, round []*request) (local []*request) {
	l := s.l
	reqs := make([]ForwardRequest, len(round))
	n := 0
	for i, r := range round {
		reqs[i] = ForwardRequest{Events: r.events}
		n += len(r.events)
	}
	ctx, cancel := context.WithTimeout(l.ctx, forwardTimeout)
	defer cancel()
	resp, err := l.cfg.Router.Forward(ctx, holder, s.log, reqs)
	if err == nil && len(resp.Results) != len(round) {
		err = fmt.Errorf("the holder answered %d requests of %d", len(resp.Results), len(round))
	}
	if errors.Is(err, ErrNotForwarded) {
		l.cfg.Logger.Warn("forwarding to the sequencer lease holder failed; sequencing here", "log", s.log, "holder", holder, "err", err)
		l.fm.fallbacks.Inc(s.log)
		l.countForward(s.log, func(f *ForwardStats) { f.Fallbacks++ })
		return round
	}
	l.fm.rounds.Inc(s.log)
	l.fm.events.Add(float64(n), s.log)
	l.countForward(s.log, func(f *ForwardStats) { f.Rounds++; f.Events += int64(n) })
	if err != nil {
		l.cfg.Logger.Error("a forwarded round failed; its outcome is unknown", "log", s.log, "holder", holder, "events", n, "err", err)
		l.fm.unknown.Inc(s.log)
		l.countForward(s.log, func(f *ForwardStats) { f.Unknown++ })
		for _, r := range round {
			r.err = &RemoteError{Status: 503, Code: api.CodeUnavailable, RetryAfter: 1,
				Message: "the node sequencing this log failed while recording the events: they may or may not be recorded; retry (events with an id or seq are not recorded twice)"}
		}
	} else {
		for i, r := range round {
			r.receipts, r.err = resp.Results[i].Receipts, resp.Results[i].Err
			if r.err == nil && len(r.receipts) != len(r.events) {
				r.receipts, r.err = nil, &RemoteError{Status: 503, Code: api.CodeUnavailable, RetryAfter: 1,
					Message: "the node sequencing this log gave a malformed answer: the events may or may not be recorded; retry"}
			}
		}
		// Readers on this node see the holder's checkpoint at once (the
		// store's notification would bring it a moment later).
		if c, err := checkpoint.Open(resp.Checkpoint, l.cfg.Verifier, s.origin); err == nil {
			s.publish(c.Size, resp.Checkpoint, c.Hash)
		}
	}
	for _, r := range round {
		s.release(r.taken)
		close(r.done)
	}
	return nil
}

// AppendForwarded sequences a round that another node forwarded: each
// request is checked as Append checks it (signatures verified again, sizes,
// the queue limit) and queued, all before the first is answered so that
// they share rounds; then it waits for every answer. It fails as a whole
// (nothing queued) only if the ledger is closing or the log cannot be
// opened. Forwarded requests are sequenced here, never forwarded again.
func (l *Ledger) AppendForwarded(ctx context.Context, log string, reqs []ForwardRequest) (ForwardResponse, error) {
	if err := l.enter(); err != nil {
		return ForwardResponse{}, err
	}
	defer l.inflight.Done()
	s, err := l.sequencer(ctx, log)
	if err != nil {
		return ForwardResponse{}, err
	}
	out := ForwardResponse{Results: make([]ForwardResult, len(reqs))}
	queued := make([]*request, len(reqs))
	n := 0
	for i, fr := range reqs {
		n += len(fr.Events)
		r, err := l.prepare(s, log, -1, fr.Events, true)
		if err == nil {
			r.local = true
			err = s.enqueue(ctx, r)
		}
		if err != nil {
			out.Results[i].Err = err
			continue
		}
		queued[i] = r
	}
	l.fm.received.Add(float64(n), log)
	l.countForward(log, func(f *ForwardStats) { f.Received += int64(n) })
	for i, r := range queued {
		if r == nil {
			continue
		}
		<-r.done
		out.Results[i] = ForwardResult{Receipts: r.receipts, Err: r.err}
	}
	s.mu.Lock()
	out.Checkpoint = s.checkpoint
	s.mu.Unlock()
	return out, nil
}

// OpenLogs names the logs whose sequencer runs on this node.
func (l *Ledger) OpenLogs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.seqs))
	for name := range l.seqs {
		out = append(out, name)
	}
	return out
}
