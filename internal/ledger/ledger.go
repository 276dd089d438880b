// Package ledger is vellum's trusted core: it turns validated, signed events
// into entries of append-only logs, keeps the RFC 6962 Merkle tree over each
// log's entries and signs a checkpoint after every commit.
//
// Each log has one sequencer goroutine. It takes everything pending in its
// queue (no timer sleeps: an idle log commits a lone event at once, a busy
// one batches naturally), decides duplicates and conflicts, assigns
// indexes, builds the entries (each carries the leaf hash of the one before
// it), computes the new tree hashes and root, signs the checkpoint and hands
// one [store.Batch] to the store, which commits it durably. Only then is any
// waiter answered, each with a receipt: index, leaf hash, entry bytes and a
// C2SP tlog-proof@v1 to the new checkpoint. A request whose events cannot all
// be recorded is refused as a whole; nothing of it is stored.
//
// Event signatures are checked before an event is queued, in the caller's
// goroutine, so verification runs in parallel across requests.
package ledger

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/checkpoint"
	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/metrics"
	"github.com/vellum-audit/vellum/internal/store"
)

// Errors callers branch on. The HTTP edge maps them: ErrNotFound → 404,
// ErrExists and ErrConflict → 409, ErrInvalid and ErrBadSignature → 400,
// ErrTooLarge → 413, ErrOverloaded and ErrClosed and store.ErrUnavailable →
// 503 with Retry-After.
var (
	ErrNotFound     = store.ErrNotFound
	ErrExists       = store.ErrExists
	ErrConflict     = errors.New("conflicts with a recorded event")
	ErrInvalid      = errors.New("invalid request")
	ErrBadSignature = errors.New("event signature does not verify")
	ErrTooLarge     = errors.New("too large")
	ErrOverloaded   = errors.New("sequencer queue is full")
	ErrClosed       = errors.New("ledger is shutting down")
)

// IntegrityError is a log whose stored data failed verification (the
// auditor found an entry or a tree hash that does not match, say). The
// ledger fails closed: it signs no new checkpoint for that log, so every
// append to it is refused, until the process restarts after an operator
// has investigated (and the log loads cleanly again).
type IntegrityError struct {
	Log    string
	Index  int64 // the first entry found wrong (-1 if not one entry)
	Reason string
	Since  time.Time
}

func (e *IntegrityError) Error() string {
	where := ""
	if e.Index >= 0 {
		where = fmt.Sprintf(" at entry %d", e.Index)
	}
	return fmt.Sprintf("log %q failed an integrity check%s (%s); no new checkpoint is signed for it", e.Log, where, e.Reason)
}

// Distrust marks log as failing verification: from now on no round of it
// commits and no checkpoint of it is signed. It reports whether this is
// news (the log was trusted until now).
func (l *Ledger) Distrust(log string, index int64, reason string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.distrust == nil {
		l.distrust = map[string]*IntegrityError{}
	}
	if _, ok := l.distrust[log]; ok {
		return false
	}
	l.distrust[log] = &IntegrityError{Log: log, Index: index, Reason: reason, Since: time.Now().UTC()}
	l.m.integrity.Inc(log)
	return true
}

// Distrusted is log's integrity failure, or nil.
func (l *Ledger) Distrusted(log string) *IntegrityError {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.distrust[log]
}

// Integrity lists the logs that failed verification, by name.
func (l *Ledger) Integrity() []IntegrityError {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]IntegrityError, 0, len(l.distrust))
	for _, e := range l.distrust {
		out = append(out, *e)
	}
	slices.SortFunc(out, func(a, b IntegrityError) int { return strings.Compare(a.Log, b.Log) })
	return out
}

// EventError says which event of a request is to blame.
type EventError struct {
	Index int // position in the request
	Err   error
}

func (e *EventError) Error() string { return fmt.Sprintf("event %d: %v", e.Index, e.Err) }
func (e *EventError) Unwrap() error { return e.Err }

// KeyResolver returns the public key for a key id that may sign events in
// log at time t, or an error saying why not.
type KeyResolver func(keyID, log string, t time.Time) (ed25519.PublicKey, error)

// Submitted is one event of an append request.
type Submitted struct {
	Event *entry.Event
	KeyID string
	Auth  string // entry.AuthSignature, entry.AuthBearer or entry.AuthServer
	Sig   []byte
	// ServerSigned marks a bearer event the server signed with its own key
	// (the client could not sign); Keys then resolves entry.ServerKeyID.
	ServerSigned bool
}

// Config configures a Ledger.
type Config struct {
	Store        store.Store
	Signer       note.Signer   // the server's checkpoint key
	Verifier     note.Verifier // its verifier
	OriginPrefix string        // checkpoints of log L have origin OriginPrefix + "/" + L
	Keys         KeyResolver
	// Admit, if set, decides whether a new event may be recorded with the
	// given received time; the sequencer calls it for every new event at
	// its round's time. Without it, the key is resolved again at that time.
	Admit func(log string, ev *Submitted, received time.Time) error
	// BeforeRound, if set, runs at the start of every round, after the
	// log's lock is taken on a shared store (the node catches up with
	// _system there, so every node admits events against the same keys).
	BeforeRound func(ctx context.Context, log string, lease store.Lease) error
	// Observe, if set, is told after each committed round what it
	// recorded (one Observation per new event, and one per seq gap), and
	// at once of every event refused because its seq went back with
	// different content. It runs on the sequencer's goroutine: it must
	// not block (the alert detectors take a mutex and return).
	Observe    func(obs []Observation)
	QueueLimit int // events waiting per log before appends get ErrOverloaded (default 65536)
	MaxRound   int // events per commit at most (default 8192)
	Logger     *slog.Logger
	Now        func() time.Time
	// Metrics, if set, receives the ledger's metrics (commit latency and
	// size, failures, queue depth, log sizes).
	Metrics *metrics.Registry
	// Router, if set (a store that several nodes share), sends the rounds
	// of logs whose sequencer lease another node holds to that node
	// (forward.go).
	Router Router
}

// Observation kinds.
const (
	ObsAppend  = "append"      // a new entry
	ObsGap     = "gap"         // a new entry whose seq jumped past LastSeq+1
	ObsRegress = "seq_regress" // a refused event: its seq was used, or is not above LastSeq, with different content
)

// Observation is one thing the sequencer saw, for the alert detectors.
type Observation struct {
	Kind     string
	Log      string
	KeyID    string
	Source   string
	Seq      int64 // with HasSeq
	HasSeq   bool
	LastSeq  int64 // gap and regress: the key and source's last recorded seq (-1: none)
	Index    int64 // append and gap: the new entry's index; regress: the index holding that seq (-1: none)
	Received time.Time
}

// ledgerMetrics are the ledger's instruments.
type ledgerMetrics struct {
	commitSeconds  *metrics.HistogramVec
	commitEntries  *metrics.HistogramVec
	commitFailures *metrics.CounterVec
	overloaded     *metrics.CounterVec
	integrity      *metrics.CounterVec
}

func (l *Ledger) registerMetrics(r *metrics.Registry) {
	l.m = ledgerMetrics{
		commitSeconds: r.Histogram("vellum_commit_seconds",
			"Time of one durable commit of a sequencer round (the store's transaction, its fsync included), by log.",
			metrics.ExponentialBuckets(0.0005, 2, 14), "log"),
		commitEntries: r.Histogram("vellum_commit_entries",
			"New entries per committed round, by log.", metrics.ExponentialBuckets(1, 4, 8), "log"),
		commitFailures: r.Counter("vellum_commit_failures_total",
			"Rounds whose commit failed (their appends got 503), by log.", "log"),
		overloaded: r.Counter("vellum_overloaded_total",
			"Appends refused with 503 because the log's queue was full, by log.", "log"),
		integrity: r.Counter("vellum_integrity_failures_total",
			"Logs found failing verification (the server stops signing checkpoints for them), by log.", "log"),
	}
	r.GaugeFunc("vellum_queue_events", "Events waiting for their log's sequencer, by log.", []string{"log"}, func(emit func(float64, ...string)) {
		for _, s := range l.sequencers() {
			emit(float64(s.pending.Load()), s.log)
		}
	})
	r.GaugeFunc("vellum_log_size", "Entries in each log, as this node last saw it.", []string{"log"}, func(emit func(float64, ...string)) {
		for _, s := range l.sequencers() {
			s.mu.Lock()
			n := s.size
			s.mu.Unlock()
			emit(float64(n), s.log)
		}
	})
}

func (l *Ledger) sequencers() []*sequencer {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*sequencer, 0, len(l.seqs))
	for _, s := range l.seqs {
		out = append(out, s)
	}
	return out
}

// Ledger owns the sequencers of all logs.
type Ledger struct {
	cfg    Config
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the store watcher
	seqWG  sync.WaitGroup // the sequencers

	// storeClock: received times come from the store's clock (a shared
	// store's lease), unless Config.Now was set.
	storeClock bool
	m          ledgerMetrics
	fm         forwardMetrics

	mu       sync.Mutex
	seqs     map[string]*sequencer
	distrust map[string]*IntegrityError // logs that failed verification
	fstats   map[string]ForwardStats    // forwarding counters, by log
	closed   bool
	inflight sync.WaitGroup // Append and CreateLog calls under way
}

// enter registers an in-flight call; it fails once Close has begun.
func (l *Ledger) enter() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	l.inflight.Add(1)
	return nil
}

// New returns a Ledger. Call Close to stop its sequencers.
func New(cfg Config) (*Ledger, error) {
	if cfg.Store == nil || cfg.Signer == nil || cfg.Verifier == nil || cfg.Keys == nil {
		return nil, errors.New("ledger: Store, Signer, Verifier and Keys are required")
	}
	if cfg.QueueLimit <= 0 {
		cfg.QueueLimit = 65536
	}
	if cfg.MaxRound <= 0 {
		cfg.MaxRound = 8192
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	storeClock := cfg.Now == nil
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Ledger{cfg: cfg, ctx: ctx, cancel: cancel, seqs: map[string]*sequencer{}, storeClock: storeClock}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewRegistry() // instruments nobody reads
	}
	l.registerMetrics(cfg.Metrics)
	l.registerForwardMetrics(cfg.Metrics)
	if w, ok := cfg.Store.(store.Watcher); ok {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			w.Watch(ctx, l.observe)
		}()
	}
	return l, nil
}

// observe publishes a commit that another node made to a shared store: the
// log's readers and tails on this node see the new checkpoint. The
// sequencer's own state catches up under the log's lock, at its next round.
func (l *Ledger) observe(c store.Change) {
	l.mu.Lock()
	s, ok := l.seqs[c.Log]
	l.mu.Unlock()
	if !ok {
		return // not open here: it is read from the store when first used
	}
	s.mu.Lock()
	cur := s.size
	s.mu.Unlock()
	if c.Size <= cur {
		return
	}
	cp, err := l.cfg.Store.Checkpoint(l.ctx, c.Log)
	if err != nil || cp == nil {
		return
	}
	ck, err := checkpoint.Open(cp, l.cfg.Verifier, s.origin)
	if err != nil {
		l.cfg.Logger.Error("a stored checkpoint does not verify", "log", c.Log, "err", err)
		return
	}
	s.publish(ck.Size, cp, ck.Hash)
}

// Origin is the checkpoint origin of log.
func (l *Ledger) Origin(log string) string { return l.cfg.OriginPrefix + "/" + log }

// Verifier is the checkpoint verifier.
func (l *Ledger) Verifier() note.Verifier { return l.cfg.Verifier }

// Store is the underlying store, for reads.
func (l *Ledger) Store() store.Store { return l.cfg.Store }

// Close stops accepting appends, lets every sequencer finish what is queued
// and waits for them (and the store watcher).
func (l *Ledger) Close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.mu.Unlock()
	// In-flight appends finish first: their sequencers are still running.
	l.inflight.Wait()
	l.mu.Lock()
	for _, s := range l.seqs {
		close(s.stop)
	}
	l.mu.Unlock()
	// The sequencers drain their queues with l.ctx live; then the watcher stops.
	l.seqWG.Wait()
	l.cancel()
	l.wg.Wait()
}

// CreateLog creates an empty log and signs its first (empty) checkpoint.
func (l *Ledger) CreateLog(ctx context.Context, name string) error {
	if err := l.enter(); err != nil {
		return err
	}
	defer l.inflight.Done()
	if err := l.cfg.Store.CreateLog(ctx, name, l.cfg.Now()); err != nil {
		return err
	}
	_, err := l.sequencer(ctx, name)
	return err
}

// sequencer returns the running sequencer of log name, starting it if
// needed. A log without a stored checkpoint (a crash between creating the
// log and signing its first checkpoint) gets its empty checkpoint now.
func (l *Ledger) sequencer(ctx context.Context, name string) (*sequencer, error) {
	s, err := l.startSequencer(ctx, name)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	have := s.checkpoint != nil
	s.mu.Unlock()
	if !have {
		if err := s.ensureCheckpoint(ctx); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (l *Ledger) startSequencer(ctx context.Context, name string) (*sequencer, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	if s, ok := l.seqs[name]; ok {
		return s, nil
	}
	li, err := l.cfg.Store.Log(ctx, name)
	if err != nil {
		return nil, err
	}
	s := &sequencer{
		l:       l,
		log:     name,
		origin:  l.Origin(name),
		q:       make(chan *request, 1024),
		stop:    make(chan struct{}),
		size:    li.Size,
		base:    li.Size,
		cache:   map[int64]tlog.Hash{},
		changed: make(chan struct{}),
		seqs:    map[seqKey]int64{},

		slots:    make(chan struct{}, maxForwards),
		fallback: make(chan []*request, maxForwards),
	}
	if err := s.load(ctx); err != nil {
		return nil, err
	}
	l.seqs[name] = s
	l.seqWG.Add(1)
	go func() {
		defer l.seqWG.Done()
		s.run()
	}()
	return s, nil
}

// Checkpoint returns the latest signed checkpoint of log.
func (l *Ledger) Checkpoint(ctx context.Context, log string) ([]byte, error) {
	s, err := l.sequencer(ctx, log)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.checkpoint, nil
}

// Size returns the size of log's latest checkpoint and a channel that is
// closed at the next commit to log. Waiting on it never slows the
// sequencer: a tail that falls behind reads the entries from storage.
func (l *Ledger) Size(ctx context.Context, log string) (int64, <-chan struct{}, error) {
	s, err := l.sequencer(ctx, log)
	if err != nil {
		return 0, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size, s.changed, nil
}

// Append verifies and records events in log, all or nothing, and returns a
// receipt for each (in order).
func (l *Ledger) Append(ctx context.Context, log string, events []Submitted) ([]api.Receipt, error) {
	return l.AppendAt(ctx, log, -1, events)
}

// AppendAt is Append for a log that must have exactly size entries when
// the events are sequenced (ErrConflict otherwise); size -1 is any. The
// node writes the genesis entry of _system with size 0, so that two nodes
// starting on one empty database cannot both write one.
func (l *Ledger) AppendAt(ctx context.Context, log string, size int64, events []Submitted) ([]api.Receipt, error) {
	if len(events) == 0 {
		return nil, fmt.Errorf("%w: no events", ErrInvalid)
	}
	if err := l.enter(); err != nil {
		return nil, err
	}
	defer l.inflight.Done()
	if len(events) > api.MaxBatch {
		return nil, fmt.Errorf("%w: %d events in one request, at most %d", ErrTooLarge, len(events), api.MaxBatch)
	}
	if ie := l.Distrusted(log); ie != nil {
		return nil, ie
	}
	s, err := l.sequencer(ctx, log)
	if err != nil {
		return nil, err
	}
	// A request that will be forwarded is verified by the node that
	// sequences it, not twice.
	remote := size < 0 && l.cfg.Router != nil && l.cfg.Router.Remote(log)
	r, err := l.prepare(s, log, size, events, !remote)
	if err != nil {
		return nil, err
	}
	if err := s.enqueue(ctx, r); err != nil {
		return nil, err
	}
	// Once queued, the request is committed or refused by the sequencer; the
	// caller waits for the answer even if its context ends, so that a
	// receipt is never lost between commit and reply.
	<-r.done
	return r.receipts, r.err
}

// prepare checks a request's events (signatures unless !verify, sizes, the
// log's integrity) and reserves their room in the log's queue. A request
// whose signatures are not checked here is marked unverified: the node that
// sequences it checks them.
func (l *Ledger) prepare(s *sequencer, log string, size int64, events []Submitted, verify bool) (*request, error) {
	if len(events) == 0 {
		return nil, fmt.Errorf("%w: no events", ErrInvalid)
	}
	if len(events) > api.MaxBatch {
		return nil, fmt.Errorf("%w: %d events in one request, at most %d", ErrTooLarge, len(events), api.MaxBatch)
	}
	if ie := l.Distrusted(log); ie != nil {
		return nil, ie
	}
	if verify {
		if err := l.verifyAll(log, events); err != nil {
			return nil, err
		}
	}
	r := &request{events: events, expect: size, done: make(chan struct{}), unverified: !verify}
	overhead := map[[2]string]int{} // per key and auth: a request's events almost always share one
	for i, ev := range events {
		r.hashes = append(r.hashes, sha256.Sum256(ev.Event.Canonical))
		// Conservative size bound: the entry's fixed fields with a 19-digit index.
		ka := [2]string{ev.KeyID, ev.Auth}
		o, ok := overhead[ka]
		if !ok {
			o = entryOverhead(log, ev.KeyID, ev.Auth)
			overhead[ka] = o
		}
		if n := len(ev.Event.Canonical) + o; n > api.MaxEntrySize {
			return nil, &EventError{Index: i, Err: fmt.Errorf("%w: the entry would be about %d bytes; at most %d", ErrTooLarge, n, api.MaxEntrySize)}
		}
	}
	// Reserve queue space for the events: bounded memory, refusal instead of waiting.
	n := int64(len(events))
	if !s.reserve(n, int64(l.cfg.QueueLimit)) {
		l.m.overloaded.Inc(log)
		return nil, ErrOverloaded
	}
	r.taken = n
	return r, nil
}

// enqueue hands a prepared request to the sequencer (releasing its queue
// room if it cannot).
func (s *sequencer) enqueue(ctx context.Context, r *request) error {
	select {
	case s.q <- r:
		return nil
	case <-s.stop:
		s.release(r.taken)
		return ErrClosed
	case <-ctx.Done():
		s.release(r.taken)
		return ctx.Err()
	}
}

func entryOverhead(log, keyID, auth string) int {
	e := entry.Entry{V: api.EntryFormatV1, Log: log, Index: 1e18, Received: entry.ReceivedLayout, KeyID: keyID, Auth: auth, Sig: make([]byte, ed25519.SignatureSize)}
	b, err := e.Encode()
	if err != nil {
		return api.MaxEntrySize + 1
	}
	return len(b)
}

// verifyAll checks every event signature, spreading a large batch over the
// available CPUs.
func (l *Ledger) verifyAll(log string, events []Submitted) error {
	now := l.cfg.Now()
	check := func(i int) error {
		ev := events[i]
		pub, err := l.cfg.Keys(ev.KeyID, log, now)
		if err != nil {
			return &EventError{Index: i, Err: err}
		}
		if ev.ServerSigned {
			if ev.Auth != entry.AuthBearer {
				return &EventError{Index: i, Err: ErrBadSignature}
			}
			if pub, err = l.cfg.Keys(entry.ServerKeyID, log, now); err != nil {
				return &EventError{Index: i, Err: err}
			}
		}
		if len(ev.Sig) != ed25519.SignatureSize || !ed25519.Verify(pub, entry.Message(log, ev.Event.Canonical), ev.Sig) {
			return &EventError{Index: i, Err: ErrBadSignature}
		}
		return nil
	}
	workers := min(runtime.GOMAXPROCS(0), len(events)/64+1)
	if workers <= 1 {
		for i := range events {
			if err := check(i); err != nil {
				return err
			}
		}
		return nil
	}
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(events); i += workers {
				if err := check(i); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	// Report the lowest failing index for a deterministic answer.
	var first *EventError
	for _, err := range errs {
		var ee *EventError
		if errors.As(err, &ee) && (first == nil || ee.Index < first.Index) {
			first = ee
		}
	}
	if first != nil {
		return first
	}
	return nil
}

func (l *Ledger) admit(log string, ev *Submitted, t time.Time) error {
	if l.cfg.Admit != nil {
		return l.cfg.Admit(log, ev, t)
	}
	_, err := l.cfg.Keys(ev.KeyID, log, t)
	return err
}

// Prove returns the inclusion proof of index in the tree of size, and the
// leaf hash.
func (l *Ledger) Prove(ctx context.Context, log string, index, size int64) (tlog.RecordProof, tlog.Hash, error) {
	r := l.reader(ctx, log)
	p, err := tlog.ProveRecord(size, index, r)
	if err != nil {
		return nil, tlog.Hash{}, err
	}
	h, err := r.ReadHashes([]int64{tlog.StoredHashIndex(0, index)})
	if err != nil {
		return nil, tlog.Hash{}, err
	}
	return p, h[0], nil
}

// ProveTree returns the consistency proof from size old to size new.
func (l *Ledger) ProveTree(ctx context.Context, log string, oldSize, newSize int64) (tlog.TreeProof, error) {
	return tlog.ProveTree(newSize, oldSize, l.reader(ctx, log))
}

// TreeHash returns the root hash of log at size n.
func (l *Ledger) TreeHash(ctx context.Context, log string, n int64) (tlog.Hash, error) {
	return tlog.TreeHash(n, l.reader(ctx, log))
}

// ReadTile returns the data of tile t of log (tlog's stored hashes).
func (l *Ledger) ReadTile(ctx context.Context, log string, t tlog.Tile) ([]byte, error) {
	return tlog.ReadTileData(t, l.reader(ctx, log))
}

func (l *Ledger) reader(ctx context.Context, log string) tlog.HashReader {
	return tlog.HashReaderFunc(func(ids []int64) ([]tlog.Hash, error) {
		return l.cfg.Store.ReadHashes(ctx, log, ids)
	})
}

// ProofText builds the tlog-proof@v1 receipt text for index against the
// signed checkpoint cp (of size).
func (l *Ledger) ProofText(ctx context.Context, log string, index int64, cp []byte, size int64) ([]byte, tlog.Hash, error) {
	p, leaf, err := l.Prove(ctx, log, index, size)
	if err != nil {
		return nil, tlog.Hash{}, err
	}
	pr := checkpoint.Proof{Index: index, Hashes: p, Checkpoint: cp}
	return pr.Format(), leaf, nil
}
