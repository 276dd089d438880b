package sqlite

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/index"
	"github.com/vellum-audit/vellum/internal/store"
)

// realBatch is a batch of n parseable entries of log from old on, with
// their docs (so that the indexer can also project them from the log).
func realBatch(t *testing.T, log string, old int64, n int) *store.Batch {
	t.Helper()
	b := &store.Batch{Log: log, OldSize: old, Checkpoint: fmt.Appendf(nil, "cp %d", old+int64(n))}
	received := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	for i := range int64(n) {
		idx := old + i
		ev, err := entry.ParseEvent(fmt.Appendf(nil, `{"action":"user.%s","actor":{"id":"user-%d"},"outcome":"success","metadata":{"n":"w%d"}}`, []string{"login", "logout"}[idx%2], idx%4, idx))
		if err != nil {
			t.Fatal(err)
		}
		e := entry.Entry{V: 1, Log: log, Index: idx, Received: entry.FormatReceived(received.Add(time.Duration(idx) * time.Second)),
			KeyID: "00aa", Auth: "sig", Event: ev.Canonical, Sig: make([]byte, 64)}
		data, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		b.Entries = append(b.Entries, data)
		b.Hashes = append(b.Hashes, store.HashRow{ID: 2 * idx, Hash: sha256.Sum256(data)}, store.HashRow{ID: 2*idx + 1, Hash: sha256.Sum256(data)})
		p, _ := entry.Parse(data)
		d, err := index.DocOf(p)
		if err != nil {
			t.Fatal(err)
		}
		b.Docs = append(b.Docs, d)
	}
	return b
}

// TestIndexBehind: a search the indexer has not caught up with waits for
// it, then fails with an *store.IndexBehindError that is ErrUnavailable;
// once the indexer goes on, the search answers.
func TestIndexBehind(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.CreateLog(ctx, "l", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, realBatch(t, "l", 0, 10)); err != nil {
		t.Fatal(err)
	}
	f := index.Filter{Actor: "user-1", Limit: 100, After: -1}
	if res, _, err := s.Search(ctx, "l", f, 10); err != nil || !slices.Equal(res, []int64{9, 5, 1}) {
		t.Fatalf("Search = %v, %v", res, err)
	}

	s.ix.wmu.Lock() // the indexer cannot write
	if err := s.Append(ctx, realBatch(t, "l", 10, 10)); err != nil {
		s.ix.wmu.Unlock()
		t.Fatal(err)
	}
	start := time.Now()
	_, _, err = s.Search(ctx, "l", f, 20)
	waited := time.Since(start)
	var behind *store.IndexBehindError
	if !errors.As(err, &behind) || behind.Log != "l" || behind.Behind != 10 || !errors.Is(err, store.ErrUnavailable) {
		s.ix.wmu.Unlock()
		t.Fatalf("Search while the indexer is stuck: %v; want an IndexBehindError of 10 entries wrapping ErrUnavailable", err)
	}
	if waited < searchWait/2 {
		t.Errorf("Search gave up after %s; want a wait of about %s", waited, searchWait)
	}
	// A query over the indexed part of the log does not wait.
	if res, _, err := s.Search(ctx, "l", f, 10); err != nil || !slices.Equal(res, []int64{9, 5, 1}) {
		t.Errorf("Search up to size 10 while the indexer is stuck = %v, %v", res, err)
	}
	go func() {
		time.Sleep(200 * time.Millisecond)
		s.ix.wmu.Unlock()
	}()
	if res, _, err := s.Search(ctx, "l", f, 20); err != nil || !slices.Equal(res, []int64{17, 13, 9, 5, 1}) {
		t.Fatalf("Search once the indexer goes on = %v, %v", res, err)
	}
	// Results stop at the size the query is given, even when the index
	// holds more.
	if res, _, err := s.Search(ctx, "l", f, 14); err != nil || !slices.Equal(res, []int64{13, 9, 5, 1}) {
		t.Fatalf("Search up to size 14 = %v, %v", res, err)
	}
}

// TestIndexCatchUp: the indexer projects from the log what index.db lacks
// when the store opens (index.db deleted, or behind after a crash), and
// follows new commits afterwards.
func TestIndexCatchUp(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateLog(ctx, "l", time.Now()); err != nil {
		t.Fatal(err)
	}
	for old := int64(0); old < 3000; old += 1000 {
		b := realBatch(t, "l", old, 1000)
		if old == 1000 {
			b.Docs = nil // not indexed by the commit: the next commit's docs leave a gap
		}
		if err := s.Append(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	want := func(size int64) []int64 {
		var out []int64
		for i := size - 1; i >= 0 && len(out) < 50; i-- {
			if i%4 == 3 && i%2 == 1 {
				out = append(out, i)
			}
		}
		return out
	}
	f := index.Filter{Actor: "user-3", ActionPrefix: "user.log", Limit: 50, After: -1}
	if res, more, err := searchCaughtUp(t, s, f, 3000); err != nil || !more || !slices.Equal(res, want(3000)) {
		t.Fatalf("Search after a gap = %v, %v, %v; want %v", res, more, err, want(3000))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{IndexFileName, IndexFileName + "-wal", IndexFileName + "-shm"} {
		os.Remove(filepath.Join(dir, name))
	}
	s, err = Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if res, _, err := searchCaughtUp(t, s, f, 3000); err != nil || !slices.Equal(res, want(3000)) {
		t.Fatalf("Search after index.db was deleted = %v, %v; want %v", res, err, want(3000))
	}
	if err := s.Append(ctx, realBatch(t, "l", 3000, 10)); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Indexed(ctx, "l"); err != nil || n != 3010 {
		t.Fatalf("Indexed = %d, %v; want 3010", n, err)
	}
}

// searchCaughtUp searches log l once the indexer has projected it up to
// size: projecting thousands of entries from the log may take longer than
// one search waits on a loaded machine (or under the race detector).
func searchCaughtUp(t *testing.T, s *Store, f index.Filter, size int64) ([]int64, bool, error) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; {
		res, more, err := s.Search(context.Background(), "l", f, size)
		var behind *store.IndexBehindError
		if !errors.As(err, &behind) || behind.Err != nil || time.Now().After(deadline) {
			return res, more, err
		}
		t.Logf("index still behind: %v", err)
	}
}

// TestIndexerQueueBounded: while the indexer cannot write, the docs that
// commits hand it stay within maxQueuedBytes (queued and being written,
// over all logs); past that the log is projected from its entries instead,
// and once the indexer goes on the index catches up with the whole log.
func TestIndexerQueueBounded(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.CreateLog(ctx, "l", time.Now()); err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("x", 16<<10)
	s.ix.wmu.Lock() // the indexer cannot write
	locked := true
	defer func() {
		if locked {
			s.ix.wmu.Unlock()
		}
	}()
	const batches, per = 40, 100 // 40 × 100 docs of 16 KiB: 64 MiB offered
	for k := range batches {
		b := realBatch(t, "l", int64(k*per), per)
		for i := range b.Docs {
			b.Docs[i].Text = pad
		}
		if err := s.Append(ctx, b); err != nil {
			t.Fatal(err)
		}
		s.ix.mu.Lock()
		held := s.ix.queued + s.ix.writing
		s.ix.mu.Unlock()
		if held > maxQueuedBytes {
			t.Fatalf("after commit %d the indexer holds %d bytes of docs, above its bound %d", k, held, maxQueuedBytes)
		}
	}
	id, err := s.id(ctx, "l")
	if err != nil {
		t.Fatal(err)
	}
	s.ix.mu.Lock()
	fromLog := s.ix.logs[id].fromLog
	s.ix.mu.Unlock()
	if !fromLog {
		t.Errorf("64 MiB of docs offered to a stuck indexer, and it still queues them")
	}
	// What the metrics show of it.
	if st := s.IndexStats(); st.Behind["l"] != batches*per || st.LogReads < 1 || st.QueuedBytes > maxQueuedBytes {
		t.Errorf("stuck indexer: IndexStats = %+v, want %d behind on log l, log reads ≥ 1, queued ≤ %d bytes", st, batches*per, maxQueuedBytes)
	}
	s.ix.wmu.Unlock()
	locked = false
	deadline := time.Now().Add(time.Minute)
	for {
		n, err := s.Indexed(ctx, "l")
		if err != nil {
			t.Fatal(err)
		}
		if n == batches*per {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the index holds %d of %d entries a minute after the indexer went on", n, batches*per)
		}
		time.Sleep(20 * time.Millisecond)
	}
	f := index.Filter{Actor: "user-1", Limit: 2000, After: -1}
	res, _, err := s.Search(ctx, "l", f, batches*per)
	if err != nil || len(res) != batches*per/4 {
		t.Errorf("Search of every fourth entry: %d results, %v; want %d", len(res), err, batches*per/4)
	}
	if st := s.IndexStats(); len(st.Behind) != 0 || st.QueuedBytes != 0 {
		t.Errorf("caught up: IndexStats = %+v, want nothing behind or queued", st)
	}
	s.ix.mu.Lock()
	defer s.ix.mu.Unlock()
	if s.ix.queued != 0 || s.ix.writing != 0 {
		t.Errorf("caught up, the indexer still counts %d bytes queued and %d being written", s.ix.queued, s.ix.writing)
	}
}
