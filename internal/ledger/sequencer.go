package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/checkpoint"
	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/index"
	"github.com/vellum-audit/vellum/internal/store"
)

type request struct {
	events []Submitted
	hashes [][32]byte // SHA-256 of each canonical event
	taken  int64
	expect int64 // the log's size the request needs (-1: any)
	local  bool  // forwarded here by another node: sequence it here, never forward it again
	// unverified: its event signatures were left to the node holding the
	// lease; if it is sequenced here after all, commit verifies them first.
	unverified bool

	// set by the sequencer before done is closed
	receipts []api.Receipt
	err      error
	done     chan struct{}
}

type seqKey struct{ key, source string }

type sequencer struct {
	l      *Ledger
	log    string
	origin string
	q      chan *request
	stop   chan struct{}

	pending atomic.Int64 // events queued, bounded by Config.QueueLimit

	// Forwarding (forward.go): calls in flight hold a slot; a round the
	// holder did not take comes back on fallback to be sequenced here.
	slots    chan struct{}
	fallback chan []*request
	forwards sync.WaitGroup

	mu         sync.Mutex    // guards size, checkpoint, changed for readers
	changed    chan struct{} // closed (and replaced) after every commit
	size       int64
	root       tlog.Hash
	checkpoint []byte

	// owned by the sequencer goroutine
	base     int64 // the size the state below belongs to (size may run ahead: other nodes' commits)
	prevLeaf tlog.Hash
	cache    map[int64]tlog.Hash // hashes written by the last commit
	seqs     map[seqKey]int64    // last seq per key and source, as committed
	broken   bool                // a failed commit left the state unknown: reload first

	lastReceived time.Time // received time of the last entry
}

func (s *sequencer) load(ctx context.Context) error {
	st := s.l.cfg.Store
	cp, err := st.Checkpoint(ctx, s.log)
	if err != nil {
		return err
	}
	if cp != nil {
		c, err := checkpoint.Open(cp, s.l.cfg.Verifier, s.origin)
		if err != nil {
			return fmt.Errorf("log %q: stored checkpoint: %w", s.log, err)
		}
		if _, shared := st.(store.Sequencing); shared && c.Size != s.base {
			// Other nodes commit between the two reads (the log's size,
			// then its checkpoint): on a shared store the log's size is
			// its checkpoint's, committed with the entries in one
			// transaction, so the state starts from the checkpoint, and
			// the next round's lock catches up with anything later.
			s.base = c.Size
		}
		if c.Size != s.base {
			return fmt.Errorf("log %q: stored checkpoint has size %d, log has %d", s.log, c.Size, s.base)
		}
		root, err := tlog.TreeHash(s.base, s.l.reader(ctx, s.log))
		if err != nil {
			return fmt.Errorf("log %q: reading tree: %w", s.log, err)
		}
		if root != c.Hash {
			return fmt.Errorf("log %q: stored tree hashes do not match the stored checkpoint", s.log)
		}
		s.publish(s.base, cp, root)
	}
	if s.base > 0 {
		h, err := st.ReadHashes(ctx, s.log, []int64{tlog.StoredHashIndex(0, s.base-1)})
		if err != nil {
			return err
		}
		s.prevLeaf = h[0]
		es, err := st.ReadEntries(ctx, s.log, s.base-1, s.base)
		if err != nil {
			return err
		}
		if len(es) == 1 {
			if e, err := entry.Parse(es[0]); err == nil {
				s.lastReceived = e.ReceivedTime()
			}
		}
	}
	return nil
}

// publish makes a checkpoint of size the one readers see, unless they
// already see a larger one, and wakes the waiters (tails).
func (s *sequencer) publish(size int64, cp []byte, root tlog.Hash) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.checkpoint != nil && size <= s.size {
		return
	}
	s.size, s.checkpoint, s.root = size, cp, root
	close(s.changed) // never blocks
	s.changed = make(chan struct{})
}

// ensureCheckpoint signs and stores the empty log's first checkpoint.
func (s *sequencer) ensureCheckpoint(ctx context.Context) error {
	s.mu.Lock()
	have := s.checkpoint != nil
	s.mu.Unlock()
	if have {
		return nil
	}
	r := &request{expect: -1, done: make(chan struct{})}
	select {
	case s.q <- r:
	case <-s.stop:
		return ErrClosed
	}
	<-r.done
	return r.err
}

func (s *sequencer) release(n int64) { s.pending.Add(-n) }

// reserve takes n events of queue space if that keeps pending within limit.
// pending never exceeds limit, not even for a moment (the queue-depth gauge
// reads it at any time).
func (s *sequencer) reserve(n, limit int64) bool {
	for {
		cur := s.pending.Load()
		if cur+n > limit {
			return false
		}
		if s.pending.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

func (s *sequencer) run() {
	for {
		var first *request
		select {
		case first = <-s.q:
		case back := <-s.fallback:
			// A forward that the holder did not take: sequenced here.
			lease, err := s.lock()
			s.commit(back, lease, err)
			continue
		case <-s.stop:
			// Forwards in flight finish; what they hand back, and what
			// was queued before the stop, is sequenced here.
			s.forwards.Wait()
			for {
				select {
				case back := <-s.fallback:
					lease, err := s.lock()
					s.commit(back, lease, err)
					continue
				default:
				}
				break
			}
			for {
				select {
				case r := <-s.q:
					lease, err := s.lock()
					s.commit([]*request{r}, lease, err)
				default:
					return
				}
			}
		}
		if holder, ok := s.route(first); ok {
			// Another node holds the log's lease: everything pending
			// that may be forwarded goes to it in one call. At most
			// maxForwards calls are in flight; while they are, requests
			// gather for the next one.
			s.slots <- struct{}{}
			round := []*request{first}
			var local []*request
			n, size := len(first.events), first.bytes()
		gather:
			for n < s.l.cfg.MaxRound && size < ForwardRoundBytes {
				select {
				case r := <-s.q:
					if forwardable(r) {
						round = append(round, r)
						n += len(r.events)
						size += r.bytes()
					} else {
						local = append(local, r)
					}
				default:
					break gather
				}
			}
			s.forwards.Add(1)
			go func() {
				defer s.forwards.Done()
				if back := s.forward(holder, round); len(back) > 0 {
					s.fallback <- back // never blocks: one per slot
				}
				<-s.slots
			}()
			if len(local) > 0 {
				lease, err := s.lock()
				s.commit(local, lease, err)
			}
			continue
		}
		round := []*request{first}
		n := len(first.events)
		// On a shared store the lock is taken before the round is
		// gathered: what queued while another node held it joins it.
		lease, err := s.lock()
	more:
		for n < s.l.cfg.MaxRound {
			select {
			case r := <-s.q:
				round = append(round, r)
				n += len(r.events)
			default:
				break more
			}
		}
		s.commit(round, lease, err)
	}
}

// bytes is the size of r's canonical events.
func (r *request) bytes() int {
	n := 0
	for _, ev := range r.events {
		n += len(ev.Event.Canonical)
	}
	return n
}

// forwardable reports whether r may be sequenced by another node: not a
// request that another node forwarded here, nor one that needs an exact
// log size (the genesis entry), nor the empty checkpoint's.
func forwardable(r *request) bool {
	return !r.local && r.expect < 0 && r.events != nil
}

// route reports whether the round that starts with first goes to another
// node, and to which.
func (s *sequencer) route(first *request) (string, bool) {
	if s.l.cfg.Router == nil || !forwardable(first) {
		return "", false
	}
	holder, local := s.l.cfg.Router.Route(s.l.ctx, s.log)
	if local || holder == "" {
		return "", false
	}
	return holder, true
}

// lock takes the log's lock on a store that several nodes share (a zero
// lease otherwise).
func (s *sequencer) lock() (store.Lease, error) {
	sq, ok := s.l.cfg.Store.(store.Sequencing)
	if !ok {
		return store.Lease{}, nil
	}
	return sq.Lock(s.l.ctx, s.log)
}

// slot is where one event of a request ends up.
type slot struct {
	index int64
	dup   bool
}

type idKey struct{ key, id string }
type seqExact struct {
	key, source string
	seq         int64
}
type seen struct {
	index int64
	hash  [32]byte
}

// roundState is what a commit has decided so far.
type roundState struct {
	ids     map[idKey]seen
	exact   map[seqExact]seen
	lastSeq map[seqKey]int64
	newEvs  []*Submitted
	gaps    map[*Submitted]int64 // new events whose seq jumped: the last seq before them
	slots   [][]slot
	batch   store.Batch
	// stored holds the event ids of the round's events that storage has,
	// when prefetchIDs read them all; nil means look each one up.
	stored map[idKey]seen

	received       time.Time           // after build: the round's received time
	lastLeaf, root tlog.Hash           // after build
	frontier       map[int64]tlog.Hash // after build: the edge subtree hashes, before and after the round
}

// commit decides, builds and commits one round; lease is the log's lock on
// a shared store (lerr: taking it failed), released once Append returns.
func (s *sequencer) commit(round []*request, lease store.Lease, lerr error) {
	ctx := s.l.ctx
	defer func() {
		for _, r := range round {
			s.release(r.taken)
			close(r.done)
		}
	}()
	fail := func(err error) {
		for _, r := range round {
			r.err = fmt.Errorf("%w: %v", store.ErrUnavailable, err)
		}
	}
	// A store that several nodes share: catch up with what other nodes
	// committed since this sequencer's last round.
	if lerr != nil {
		fail(lerr)
		return
	}
	if lease.Unlock != nil {
		defer func() {
			if lease.Unlock != nil {
				lease.Unlock()
			}
		}()
		if lease.Size != s.base && !s.broken {
			if err := s.catchUp(ctx, lease.Size); err != nil {
				s.l.cfg.Logger.Warn("catching up with other nodes; reloading", "log", s.log, "err", err)
				s.broken = true
			}
		}
	}
	if s.broken {
		if err := s.reload(ctx); err != nil {
			fail(err)
			return
		}
		s.broken = false
	}
	rs := &roundState{ids: map[idKey]seen{}, exact: map[seqExact]seen{}, lastSeq: map[seqKey]int64{}}
	// The round's received time is fixed before anything is decided, and
	// every new event is admitted at that time: a key that expires or is
	// revoked while requests wait cannot sign an entry stamped after it.
	// Received times never go backwards within a log (the search index maps
	// time windows to index ranges): a clock step back is absorbed.
	rs.received = s.l.cfg.Now()
	if s.l.storeClock && !lease.Now.IsZero() {
		rs.received = lease.Now // one clock for every node
	}
	rs.received = rs.received.UTC().Truncate(time.Microsecond)
	if rs.received.Before(s.lastReceived) {
		rs.received = s.lastReceived
	}
	if s.l.cfg.BeforeRound != nil {
		if err := s.l.cfg.BeforeRound(ctx, s.log, lease); err != nil {
			fail(err)
			return
		}
	}
	s.prefetchIDs(ctx, round, rs)
	rs.slots = make([][]slot, len(round))
	accepted := make([]bool, len(round))
	for i, r := range round {
		if r.unverified {
			if err := s.l.verifyAll(s.log, r.events); err != nil {
				r.err = err
				continue
			}
			r.unverified = false
		}
		slots, err := s.decide(ctx, r, rs)
		if err != nil {
			r.err = err
			continue
		}
		rs.slots[i] = slots
		accepted[i] = true
	}

	if ie := s.l.Distrusted(s.log); ie != nil && (len(rs.newEvs) > 0 || s.checkpoint == nil) {
		// Fail closed: no checkpoint over data this node cannot vouch for.
		for i, r := range round {
			if accepted[i] {
				r.err = ie
			}
		}
		return
	}
	s.mu.Lock()
	cp := s.checkpoint
	s.mu.Unlock()
	oldSize := s.base
	newSize := oldSize + int64(len(rs.newEvs))
	written := map[int64]tlog.Hash{}
	if len(rs.newEvs) > 0 || cp == nil {
		var err error
		cp, err = s.build(ctx, rs, oldSize, written)
		if err == nil {
			t0 := time.Now()
			err = s.l.cfg.Store.Append(ctx, &rs.batch)
			if err == nil {
				s.l.m.commitSeconds.Observe(time.Since(t0).Seconds(), s.log)
				s.l.m.commitEntries.Observe(float64(len(rs.newEvs)), s.log)
			}
		}
		if lease.Unlock != nil {
			lease.Unlock()
			lease.Unlock = nil
		}
		if err != nil {
			s.l.cfg.Logger.Error("commit failed", "log", s.log, "events", len(rs.newEvs), "err", err)
			s.l.m.commitFailures.Inc(s.log)
			if !errors.Is(err, store.ErrUnavailable) {
				err = fmt.Errorf("%w: %v", store.ErrUnavailable, err)
			}
			for i, r := range round {
				if accepted[i] {
					r.err = err
				}
			}
			// Reload the state from storage: it is the truth.
			s.cache = map[int64]tlog.Hash{}
			s.seqs = map[seqKey]int64{}
			if s.reload(ctx) != nil {
				s.broken = true
			}
			return
		}
		s.base = newSize
		s.publish(newSize, cp, rs.root)
		s.prevLeaf = rs.lastLeaf
		if len(rs.newEvs) > 0 {
			s.lastReceived = rs.received
		}
		s.cache = written
		for id, h := range rs.frontier {
			s.cache[id] = h
		}
		for k, v := range rs.lastSeq {
			s.seqs[k] = v
		}
		if len(s.seqs) > 100000 {
			s.seqs = map[seqKey]int64{}
		}
		s.observe(rs, oldSize)
	}

	// Receipts, against the checkpoint just committed.
	memo := s.memoReader(ctx, written)
	entries := map[int64][]byte{}
	for i, data := range rs.batch.Entries {
		entries[oldSize+int64(i)] = data
	}
	for i, r := range round {
		if !accepted[i] || r.events == nil {
			continue
		}
		r.receipts = make([]api.Receipt, len(r.events))
		for j, sl := range rs.slots[i] {
			rc, err := s.receipt(ctx, sl, cp, newSize, memo, entries)
			if err != nil {
				r.err = fmt.Errorf("%w: building receipt: %v", store.ErrUnavailable, err)
				r.receipts = nil
				break
			}
			r.receipts[j] = rc
		}
	}
}

// observe tells Config.Observe what a committed round recorded.
func (s *sequencer) observe(rs *roundState, oldSize int64) {
	if s.l.cfg.Observe == nil || len(rs.newEvs) == 0 {
		return
	}
	obs := make([]Observation, 0, len(rs.newEvs)+len(rs.gaps))
	for i, ev := range rs.newEvs {
		o := Observation{Kind: ObsAppend, Log: s.log, KeyID: ev.KeyID, Source: ev.Event.Source, Index: oldSize + int64(i), Received: rs.received, LastSeq: -1}
		if ev.Event.Seq != nil {
			o.Seq, o.HasSeq = *ev.Event.Seq, true
		}
		obs = append(obs, o)
		if last, ok := rs.gaps[ev]; ok {
			o.Kind, o.LastSeq = ObsGap, last
			obs = append(obs, o)
		}
	}
	s.l.cfg.Observe(obs)
}

// observeRegress tells Config.Observe of an event refused because its seq
// went back with different content.
func (s *sequencer) observeRegress(ev *Submitted, seq, lastSeq, index int64, received time.Time) {
	if s.l.cfg.Observe == nil {
		return
	}
	s.l.cfg.Observe([]Observation{{Kind: ObsRegress, Log: s.log, KeyID: ev.KeyID, Source: ev.Event.Source,
		Seq: seq, HasSeq: true, LastSeq: lastSeq, Index: index, Received: received}})
}

// catchUp moves the sequencer's state from base to size, after other
// nodes' commits, with three reads: the stored checkpoint (its signature
// checked), the frontier of the tree at size with the last leaf (checked
// against the checkpoint's root) and the last entry (its received time).
// Anything else cached is dropped. On an error the caller reloads.
func (s *sequencer) catchUp(ctx context.Context, size int64) error {
	st := s.l.cfg.Store
	cp, err := st.Checkpoint(ctx, s.log)
	if err != nil {
		return err
	}
	c, err := checkpoint.Open(cp, s.l.cfg.Verifier, s.origin)
	if err != nil {
		return fmt.Errorf("stored checkpoint: %w", err)
	}
	if c.Size != size || size == 0 {
		return fmt.Errorf("stored checkpoint has size %d, the lock said %d", c.Size, size)
	}
	ids := append(frontierIDs(size), tlog.StoredHashIndex(0, size-1))
	hs, err := st.ReadHashes(ctx, s.log, ids)
	if err != nil {
		return err
	}
	cache := make(map[int64]tlog.Hash, len(ids))
	for i, id := range ids {
		cache[id] = hs[i]
	}
	root, err := tlog.TreeHash(size, tlog.HashReaderFunc(func(want []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(want))
		for i, id := range want {
			h, ok := cache[id]
			if !ok {
				return nil, fmt.Errorf("tree hash %d not read", id)
			}
			out[i] = h
		}
		return out, nil
	}))
	if err != nil {
		return err
	}
	if root != c.Hash {
		return fmt.Errorf("stored tree hashes do not match the stored checkpoint of size %d", size)
	}
	es, err := st.ReadEntries(ctx, s.log, size-1, size)
	if err != nil {
		return err
	}
	if len(es) != 1 || entry.LeafHash(es[0]) != cache[tlog.StoredHashIndex(0, size-1)] {
		return fmt.Errorf("stored entry %d does not match its leaf hash", size-1)
	}
	e, err := entry.Parse(es[0])
	if err != nil {
		return fmt.Errorf("stored entry %d: %w", size-1, err)
	}
	s.base = size
	s.prevLeaf = cache[tlog.StoredHashIndex(0, size-1)]
	s.lastReceived = e.ReceivedTime()
	s.cache = cache
	s.seqs = map[seqKey]int64{} // other nodes recorded seqs too
	s.publish(size, cp, root)
	return nil
}

func (s *sequencer) reload(ctx context.Context) error {
	li, err := s.l.cfg.Store.Log(ctx, s.log)
	if err != nil {
		return err
	}
	s.base = li.Size
	s.cache = map[int64]tlog.Hash{}
	s.seqs = map[seqKey]int64{}
	return s.load(ctx)
}

// idsLookup is implemented by stores that look up many event ids of a key
// at once (sqlite does).
type idsLookup interface {
	LookupIDs(ctx context.Context, log, keyID string, eventIDs []string) (map[string]store.Dedup, error)
}

// prefetchIDs reads from storage, in a few queries, the event ids of every
// event of the round, so that decide does not query once per event. Nothing
// writes to the log's storage during the round, so the answers are the ones
// decide would get. On any error it leaves rs.stored nil and decide looks
// each id up itself, as without prefetching.
func (s *sequencer) prefetchIDs(ctx context.Context, round []*request, rs *roundState) {
	bl, ok := s.l.cfg.Store.(idsLookup)
	if !ok {
		return
	}
	byKey := map[string][]string{}
	for _, r := range round {
		for i := range r.events {
			if ev := &r.events[i]; ev.Event.ID != "" {
				byKey[ev.KeyID] = append(byKey[ev.KeyID], ev.Event.ID)
			}
		}
	}
	if len(byKey) == 0 {
		return
	}
	stored := map[idKey]seen{}
	for key, ids := range byKey {
		found, err := bl.LookupIDs(ctx, s.log, key, ids)
		if err != nil {
			return
		}
		for id, d := range found {
			stored[idKey{key, id}] = seen{d.Index, d.EventHash}
		}
	}
	rs.stored = stored
}

// decide classifies each event of r as new or a duplicate, or refuses r.
// It only adds to rs when the whole request is accepted.
func (s *sequencer) decide(ctx context.Context, r *request, rs *roundState) ([]slot, error) {
	st := s.l.cfg.Store
	slots := make([]slot, len(r.events))
	ids := map[idKey]seen{}
	exact := map[seqExact]seen{}
	last := map[seqKey]int64{}
	gaps := map[*Submitted]int64{}
	next := int64(len(rs.newEvs))
	var fresh []*Submitted
	base := s.base
	if r.expect >= 0 && base != r.expect {
		return nil, fmt.Errorf("%w: the log has %d entries, not %d", ErrConflict, base, r.expect)
	}
	for i := range r.events {
		ev := &r.events[i]
		h := r.hashes[i]
		conflict := func(format string, args ...any) error {
			return &EventError{Index: i, Err: fmt.Errorf("%w: "+format, append([]any{ErrConflict}, args...)...)}
		}
		dupOf := int64(-1)
		if id := ev.Event.ID; id != "" {
			k := idKey{ev.KeyID, id}
			prev, ok := ids[k]
			if !ok {
				prev, ok = rs.ids[k]
			}
			if !ok && rs.stored != nil {
				prev, ok = rs.stored[k]
			} else if !ok {
				d, found, err := st.LookupID(ctx, s.log, ev.KeyID, id)
				if err != nil {
					return nil, err
				}
				prev, ok = seen{d.Index, d.EventHash}, found
			}
			if ok {
				if prev.hash != h {
					return nil, conflict("id %q was already used by this key for a different event (index %d)", id, prev.index)
				}
				dupOf = prev.index
			}
		}
		if ev.Event.Seq != nil && dupOf < 0 {
			seq := *ev.Event.Seq
			k := seqExact{ev.KeyID, ev.Event.Source, seq}
			prev, ok := exact[k]
			if !ok {
				prev, ok = rs.exact[k]
			}
			if !ok {
				d, found, err := st.LookupSeq(ctx, s.log, ev.KeyID, ev.Event.Source, seq)
				if err != nil {
					return nil, err
				}
				prev, ok = seen{d.Index, d.EventHash}, found
			}
			if ok {
				if prev.hash != h {
					s.observeRegress(ev, seq, -1, prev.index, rs.received)
					return nil, conflict("seq %d of source %q was already used by this key for a different event (index %d)", seq, ev.Event.Source, prev.index)
				}
				dupOf = prev.index
			} else {
				sk := seqKey{ev.KeyID, ev.Event.Source}
				lastSeq, have := last[sk]
				if !have {
					lastSeq, have = rs.lastSeq[sk]
				}
				if !have {
					lastSeq, have = s.seqs[sk]
				}
				if !have {
					var err error
					lastSeq, have, err = st.LastSeq(ctx, s.log, ev.KeyID, ev.Event.Source)
					if err != nil {
						return nil, err
					}
					if !have {
						lastSeq = -1
					}
				}
				if seq <= lastSeq {
					s.observeRegress(ev, seq, lastSeq, -1, rs.received)
					return nil, conflict("seq %d of source %q is not above the last recorded seq %d", seq, ev.Event.Source, lastSeq)
				}
				if lastSeq >= 0 && seq > lastSeq+1 {
					gaps[ev] = lastSeq
				}
				last[sk] = seq
			}
		}
		if dupOf >= 0 {
			slots[i] = slot{index: dupOf, dup: true}
			continue
		}
		if err := s.l.admit(s.log, ev, rs.received); err != nil {
			return nil, &EventError{Index: i, Err: err}
		}
		idx := base + next
		next++
		fresh = append(fresh, ev)
		slots[i] = slot{index: idx}
		if id := ev.Event.ID; id != "" {
			ids[idKey{ev.KeyID, id}] = seen{idx, h}
		}
		if ev.Event.Seq != nil {
			exact[seqExact{ev.KeyID, ev.Event.Source, *ev.Event.Seq}] = seen{idx, h}
		}
	}
	// Accepted: merge into the round.
	for k, v := range ids {
		rs.ids[k] = v
		rs.batch.IDs = append(rs.batch.IDs, store.Dedup{KeyID: k.key, EventID: k.id, Index: v.index, EventHash: v.hash})
	}
	for k, v := range exact {
		rs.exact[k] = v
		rs.batch.Seqs = append(rs.batch.Seqs, store.Dedup{KeyID: k.key, Source: k.source, Seq: k.seq, Index: v.index, EventHash: v.hash})
	}
	for k, v := range last {
		rs.lastSeq[k] = v
	}
	for k, v := range gaps {
		if rs.gaps == nil {
			rs.gaps = map[*Submitted]int64{}
		}
		rs.gaps[k] = v
	}
	rs.newEvs = append(rs.newEvs, fresh...)
	return slots, nil
}

// build makes the entries, tree hashes and signed checkpoint of the round.
func (s *sequencer) build(ctx context.Context, rs *roundState, oldSize int64, written map[int64]tlog.Hash) ([]byte, error) {
	now := rs.received
	received := entry.FormatReceived(now)
	r := s.memoReader(ctx, written)
	prev := s.prevLeaf
	rs.batch.Log = s.log
	rs.batch.OldSize = oldSize
	rs.batch.Entries = make([][]byte, 0, len(rs.newEvs))
	for i, ev := range rs.newEvs {
		idx := oldSize + int64(i)
		e := entry.Entry{
			V: api.EntryFormatV1, Log: s.log, Index: idx, Received: received, Prev: prev,
			KeyID: ev.KeyID, Auth: ev.Auth, Event: ev.Event.Canonical, Sig: ev.Sig,
		}
		data, err := e.Encode()
		if err != nil {
			return nil, err
		}
		leaf := entry.LeafHash(data)
		hs, err := tlog.StoredHashesForRecordHash(idx, leaf, r)
		if err != nil {
			return nil, fmt.Errorf("computing tree hashes: %w", err)
		}
		first := tlog.StoredHashCount(idx)
		for k, h := range hs {
			written[first+int64(k)] = h
			rs.batch.Hashes = append(rs.batch.Hashes, store.HashRow{ID: first + int64(k), Hash: h})
		}
		rs.batch.Entries = append(rs.batch.Entries, data)
		rs.batch.Docs = append(rs.batch.Docs, index.DocFromEvent(idx, now, ev.KeyID, &ev.Event.Event))
		prev = leaf
	}
	newSize := oldSize + int64(len(rs.newEvs))
	root, err := tlog.TreeHash(newSize, r)
	if err != nil {
		return nil, fmt.Errorf("computing root: %w", err)
	}
	cp, err := checkpoint.Sign(checkpoint.Checkpoint{Origin: s.origin, Size: newSize, Hash: root}, s.l.cfg.Signer)
	if err != nil {
		return nil, fmt.Errorf("signing checkpoint: %w", err)
	}
	rs.batch.Checkpoint = cp
	rs.lastLeaf, rs.root = prev, root
	// Keep the hashes of the complete subtrees along the right edge of the
	// tree, before and after the round: they are what the next round's tree
	// hashes, root and receipts read, and they were read just now, so the
	// next commit need not read them from storage again. (A cache only: on
	// an error here the next commit reads them from storage.)
	ids := append(frontierIDs(oldSize), frontierIDs(newSize)...)
	if hs, err := r.ReadHashes(ids); err == nil {
		rs.frontier = make(map[int64]tlog.Hash, len(ids))
		for i, id := range ids {
			rs.frontier[id] = hs[i]
		}
	}
	return cp, nil
}

// frontierIDs returns the stored-hash indexes of the complete subtrees that
// make up a tree of size n (one per bit of n), from the left.
func frontierIDs(n int64) []int64 {
	var ids []int64
	var start int64
	for level := 62; level >= 0; level-- {
		if n&(1<<level) != 0 {
			ids = append(ids, tlog.StoredHashIndex(level, start>>level))
			start += 1 << level
		}
	}
	return ids
}

// memoReader reads hashes from this round, the last commit, then storage,
// remembering what it read.
func (s *sequencer) memoReader(ctx context.Context, written map[int64]tlog.Hash) tlog.HashReader {
	memo := map[int64]tlog.Hash{}
	return tlog.HashReaderFunc(func(ids []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(ids))
		var missing []int64
		var where []int
		for i, id := range ids {
			if h, ok := written[id]; ok {
				out[i] = h
			} else if h, ok := s.cache[id]; ok {
				out[i] = h
			} else if h, ok := memo[id]; ok {
				out[i] = h
			} else {
				missing = append(missing, id)
				where = append(where, i)
			}
		}
		if len(missing) > 0 {
			hs, err := s.l.cfg.Store.ReadHashes(ctx, s.log, missing)
			if err != nil {
				return nil, err
			}
			for k, h := range hs {
				out[where[k]] = h
				memo[missing[k]] = h
			}
		}
		return out, nil
	})
}

func (s *sequencer) receipt(ctx context.Context, sl slot, cp []byte, size int64, r tlog.HashReader, entries map[int64][]byte) (api.Receipt, error) {
	p, err := tlog.ProveRecord(size, sl.index, r)
	if err != nil {
		return api.Receipt{}, err
	}
	leaf, err := r.ReadHashes([]int64{tlog.StoredHashIndex(0, sl.index)})
	if err != nil {
		return api.Receipt{}, err
	}
	data, ok := entries[sl.index]
	if !ok {
		es, err := s.l.cfg.Store.ReadEntries(ctx, s.log, sl.index, sl.index+1)
		if err != nil {
			return api.Receipt{}, err
		}
		if len(es) != 1 || entry.LeafHash(es[0]) != leaf[0] {
			return api.Receipt{}, fmt.Errorf("stored entry %d does not match its leaf hash", sl.index)
		}
		data = es[0]
	}
	pr := checkpoint.Proof{Index: sl.index, Hashes: p, Checkpoint: cp}
	return api.Receipt{
		Log: s.log, Index: sl.index, LeafHash: leaf[0].String(), Duplicate: sl.dup,
		Entry: bytes.Clone(data), Proof: string(pr.Format()),
	}, nil
}
