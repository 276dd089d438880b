// Package store defines what vellum's storage backends hold and the
// contract they keep: logs, entries, Merkle tree hashes and checkpoints, all
// append-only. A backend never updates or deletes any of them; it commits a
// [Batch] atomically and durably (fsync) or not at all.
//
// Backends live in subpackages named after what they wrap (sqlite); they
// share this contract and the conformance tests, not code.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/vellum-audit/vellum/internal/index"
)

// Sentinel errors. The HTTP edge maps ErrNotFound to 404, ErrExists to 409
// and ErrUnavailable to 503 with Retry-After.
var (
	ErrNotFound    = errors.New("not found")
	ErrExists      = errors.New("already exists")
	ErrUnavailable = errors.New("storage unavailable")
	// ErrWriteFailed is storage refusing a write: a full disk, a file size
	// limit, a failing disk or fsync. Errors that are it are also
	// ErrUnavailable (503): nothing of the write was stored.
	ErrWriteFailed = errors.New("storage refused a write (disk full or failing)")
	// ErrNotDurable marks a write failure whose outcome is unknown: the
	// data was written but making it durable failed (fsync). The commit is
	// reported failed and the next commit overwrites it, but a crash before
	// then may leave it stored (SQLite's WAL recovery replays complete
	// frames). Errors that are it are also ErrWriteFailed.
	ErrNotDurable = errors.New("making the write durable failed (fsync)")
)

// IndexBehindError is a search the search index cannot answer yet: it has
// not projected the last Behind entries of the log the query covers (an
// index written after the commits, by a background indexer, fell behind or
// stopped on Err). It wraps ErrUnavailable: HTTP 503 with Retry-After.
type IndexBehindError struct {
	Log    string
	Behind int64 // entries the index lacks
	Err    error // why the indexer stopped, if it did
}

func (e *IndexBehindError) Error() string {
	msg := fmt.Sprintf("the search index of log %q is behind the log by %d entries", e.Log, e.Behind)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap makes errors.Is(err, ErrUnavailable) hold, and reaches Err.
func (e *IndexBehindError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrUnavailable, e.Err}
	}
	return []error{ErrUnavailable}
}

// MissingError is an entry that the log's size says is stored but that
// storage does not return: removed behind the store's back, or storage
// that lost it. It wraps ErrUnavailable (nothing can be served for it);
// the auditor treats it as an integrity failure.
type MissingError struct {
	Log   string
	Index int64
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("%v: log %q: entry %d missing", ErrUnavailable, e.Log, e.Index)
}

func (e *MissingError) Unwrap() error { return ErrUnavailable }

// LogInfo describes a stored log.
type LogInfo struct {
	Name    string
	Created time.Time
	Size    int64
}

// HashRow is one stored tree hash: tlog's stored-hash index and the hash.
type HashRow struct {
	ID   int64
	Hash tlog.Hash
}

// Dedup remembers an event's producer-chosen id or (source, seq), so that a
// retry finds its original entry and a conflicting reuse is refused.
type Dedup struct {
	KeyID     string
	EventID   string // for id rows
	Source    string // for seq rows
	Seq       int64  // for seq rows
	Index     int64
	EventHash [32]byte
}

// Batch is everything one sequencer commit writes to one log.
type Batch struct {
	Log        string
	OldSize    int64    // the log's size before the batch; the commit fails if it differs
	Entries    [][]byte // entries OldSize, OldSize+1, …
	Hashes     []HashRow
	IDs        []Dedup
	Seqs       []Dedup
	Checkpoint []byte // signed checkpoint at the new size
	// Docs are the search index rows of the entries (one per entry, same
	// order). They are a projection: a backend commits them with the
	// entries (postgres) or indexes them after the commit (sqlite).
	Docs []index.Doc
}

// Store is a storage backend.
type Store interface {
	// CreateLog creates an empty log; ErrExists if it exists.
	CreateLog(ctx context.Context, name string, created time.Time) error
	// Logs lists the logs by name.
	Logs(ctx context.Context) ([]LogInfo, error)
	// Log describes one log; ErrNotFound if it does not exist.
	Log(ctx context.Context, name string) (LogInfo, error)
	// Checkpoint returns the latest stored checkpoint of log (nil if none).
	Checkpoint(ctx context.Context, log string) ([]byte, error)
	// ReadHashes returns the stored hashes with the given ids, in order.
	ReadHashes(ctx context.Context, log string, ids []int64) ([]tlog.Hash, error)
	// ReadEntriesAt returns the entries at the given indexes, in order.
	ReadEntriesAt(ctx context.Context, log string, idxs []int64) ([][]byte, error)
	// ReadEntries returns entries [start, end) (fewer if the log is shorter).
	ReadEntries(ctx context.Context, log string, start, end int64) ([][]byte, error)
	// LookupID finds a producer-chosen event id of a key.
	LookupID(ctx context.Context, log, keyID, eventID string) (Dedup, bool, error)
	// LookupSeq finds the entry with exactly this key, source and seq.
	LookupSeq(ctx context.Context, log, keyID, source string, seq int64) (Dedup, bool, error)
	// LastSeq returns the highest seq recorded for key and source.
	LastSeq(ctx context.Context, log, keyID, source string) (int64, bool, error)
	// Append commits b atomically and durably.
	Append(ctx context.Context, b *Batch) error
	// Search returns the indexes of the entries of log below size that
	// match f, in f's order, at most f.Limit of them, and whether more may
	// follow. A backend that indexes after the commit waits a bounded time
	// for its index to reach size, else returns an *IndexBehindError.
	Search(ctx context.Context, log string, f index.Filter, size int64) ([]int64, bool, error)
	// Indexed returns how many leading entries of log the search index holds.
	Indexed(ctx context.Context, log string) (int64, error)
	// AddDocs adds index rows for entries already in the log (catch-up and
	// rebuild); they must continue from Indexed.
	AddDocs(ctx context.Context, log string, docs []index.Doc) error
	// DropIndex empties the search index of every log (before a rebuild).
	DropIndex(ctx context.Context) error
	// Close releases the store.
	Close() error
}

// Sequencing is implemented by stores that several vellum nodes share
// (postgres). Before it decides a round, a node's sequencer takes the log's
// lock; it releases it (Lease.Unlock) after the round's Append has returned.
// The lease carries the log's stored size once the lock is held, so a
// sequencer whose state is older (another node committed since) reloads it
// first, and the database's clock, so that every node stamps received times
// from one clock. The lock ends with the node: a killed node's lock is
// released by the database, and another node takes over at once. Append
// still refuses a batch whose OldSize is not the stored size, so a node that
// lost its lock cannot fork the log.
//
// The lock of the _system log (api.SystemLog) also excludes the locks of
// every other log: a key's revocation or update is ordered against every
// round of every node, which catches up with _system under its lock.
type Sequencing interface {
	Lock(ctx context.Context, log string) (Lease, error)
}

// Lease is a held sequencer lock.
type Lease struct {
	Size int64     // the log's stored size
	Now  time.Time // the database's clock when the lock was taken
	// SystemSize is _system's stored size when the lock was taken: the
	// node's key registry must have folded that many entries before the
	// round admits anything (-1: unknown, ask the store).
	SystemSize int64
	Unlock     func()
}

// Change is a commit seen in a shared store: log now has at least Size
// entries (Size 0 when a log was created).
type Change struct {
	Log  string
	Size int64
}

// Watcher is implemented by stores that several nodes share. Watch calls fn
// (from one goroutine) for the commits of every node, this one's included,
// until ctx ends; it returns ctx's error. Changes may be coalesced or
// repeated. After a lost connection it reconnects by itself and reports
// every log's current size, so a missed notification is never lost for good.
type Watcher interface {
	Watch(ctx context.Context, fn func(Change)) error
}

// Leasing is implemented by stores that several nodes share (postgres): a
// sticky sequencer lease per log. The node that holds a log's lease
// sequences it; the others forward their appends to it (the address it
// advertised when it took the lease). The lease lasts as long as the
// holder's connection to the store (a killed node's lease ends with its
// session), and is not a safety mechanism: every round still takes the
// log's lock (Sequencing) and every commit checks the stored size.
type Leasing interface {
	// TryLease takes log's lease for this node, advertised at url, if no
	// other node holds it. It reports whether this node holds it now and,
	// if not, the address the holder advertised ("" if unknown). It costs
	// no round trip when this node already holds it.
	TryLease(ctx context.Context, log, url string) (held bool, holder string, err error)
	// HoldsLease reports whether this node holds log's lease (as far as it
	// knows: a lost connection is noticed within about a second).
	HoldsLease(log string) bool
	// ReleaseLeases gives up every lease this node holds.
	ReleaseLeases()
}
