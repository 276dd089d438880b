package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/vellum-audit/vellum/internal/checkpoint"
	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/metrics"
	"github.com/vellum-audit/vellum/internal/store"
)

// The auditor (the "watchman") re-reads every log's stored entries and
// tree hashes, at a bounded rate, and checks them against what this node
// signed: each entry parses and says it is the entry it is stored as, links
// to the previous entry, and yields exactly the tree hashes stored for its
// position; the stored tree at the latest checkpoint's size has the
// checkpoint's root. Data changed behind the server's back (a database
// edited with its triggers dropped, a damaged file, a row removed) fails
// one of these. On a failure the node fails closed for that log (no new
// checkpoint: appends get 503), records an alert.tamper entry in _system,
// and reports it on /healthz and in the metrics; reads keep working, with
// a Vellum-Integrity warning header.

const auditChunk = 256

type auditMetrics struct {
	entries *metrics.CounterVec
	passes  *metrics.CounterVec
	errors  *metrics.CounterVec
}

// auditLoop runs passes over every log until ctx ends, verifying at most
// rate entries per second, pausing between passes.
func (n *Node) auditLoop(ctx context.Context, rate int, pause time.Duration) {
	am := auditMetrics{
		entries: n.Metrics.Counter("vellum_auditor_verified_entries_total", "Entries the background auditor re-verified, by log.", "log"),
		passes:  n.Metrics.Counter("vellum_auditor_passes_total", "Complete passes of the background auditor over every log."),
		errors:  n.Metrics.Counter("vellum_auditor_read_errors_total", "Auditor passes over a log cut short by a storage error (retried at the next pass)."),
	}
	for ctx.Err() == nil {
		logs, err := n.Store.Logs(ctx)
		if err == nil {
			for _, li := range logs {
				if ctx.Err() != nil {
					return
				}
				if n.Ledger.Distrusted(li.Name) != nil {
					continue
				}
				if err := n.auditLog(ctx, li.Name, rate, am); err != nil && ctx.Err() == nil {
					am.errors.Inc()
					n.Config.Logger.Warn("auditor: reading the log failed; retrying at the next pass", "log", li.Name, "err", err)
				}
			}
			am.passes.Inc()
		}
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
	}
}

// auditLog verifies log up to its latest checkpoint. It returns storage
// errors; integrity failures are recorded, not returned.
func (n *Node) auditLog(ctx context.Context, log string, rate int, am auditMetrics) error {
	cpb, err := n.Ledger.Checkpoint(ctx, log)
	if err != nil || cpb == nil {
		return err
	}
	cp, err := checkpoint.Open(cpb, n.Ledger.Verifier(), n.Ledger.Origin(log))
	if err != nil {
		return n.integrityFailure(ctx, log, -1, "the log's checkpoint does not verify: "+err.Error())
	}
	st := n.Store
	var prevLeaf tlog.Hash
	var interval time.Duration
	if rate > 0 {
		interval = time.Second * auditChunk / time.Duration(rate)
	}
	for start := int64(0); start < cp.Size; start += auditChunk {
		t0 := time.Now()
		end := min(start+auditChunk, cp.Size)
		es, err := st.ReadEntries(ctx, log, start, end)
		var missing *store.MissingError
		if errors.As(err, &missing) {
			return n.integrityFailure(ctx, log, missing.Index, "the entry is missing from storage")
		}
		if err != nil {
			return err
		}
		if int64(len(es)) != end-start {
			return n.integrityFailure(ctx, log, start+int64(len(es)), "the entry is missing from storage")
		}
		first, last := tlog.StoredHashCount(start), tlog.StoredHashCount(end)
		ids := make([]int64, 0, last-first)
		for id := first; id < last; id++ {
			ids = append(ids, id)
		}
		stored, err := st.ReadHashes(ctx, log, ids)
		if err != nil {
			return fmt.Errorf("reading tree hashes: %w", err)
		}
		chunk := map[int64]tlog.Hash{}
		for i, id := range ids {
			chunk[id] = stored[i]
		}
		// Earlier hashes come from storage; they were checked when their
		// own entries were.
		r := tlog.HashReaderFunc(func(want []int64) ([]tlog.Hash, error) {
			out := make([]tlog.Hash, len(want))
			var rest []int64
			for i, id := range want {
				if h, ok := chunk[id]; ok {
					out[i] = h
				} else {
					rest = append(rest, id)
				}
			}
			if len(rest) > 0 {
				hs, err := st.ReadHashes(ctx, log, rest)
				if err != nil {
					return nil, err
				}
				k := 0
				for i, id := range want {
					if _, ok := chunk[id]; !ok {
						out[i] = hs[k]
						k++
					}
				}
			}
			return out, nil
		})
		for k, data := range es {
			i := start + int64(k)
			e, err := entry.Parse(data)
			if err != nil {
				return n.integrityFailure(ctx, log, i, "the stored entry does not parse: "+err.Error())
			}
			if e.Index != i || e.Log != log {
				return n.integrityFailure(ctx, log, i, fmt.Sprintf("the stored entry says it is entry %d of log %q", e.Index, e.Log))
			}
			if i > 0 && e.Prev != prevLeaf {
				return n.integrityFailure(ctx, log, i, "the entry does not link to the previous entry (prev hash)")
			}
			hs, err := tlog.StoredHashes(i, data, r)
			if err != nil {
				return fmt.Errorf("computing tree hashes: %w", err)
			}
			base := tlog.StoredHashCount(i)
			for j, h := range hs {
				if chunk[base+int64(j)] != h {
					what := "the entry's bytes do not match its stored leaf hash"
					if j > 0 {
						what = "a stored tree hash at this entry does not match the entries"
					}
					return n.integrityFailure(ctx, log, i, what)
				}
			}
			prevLeaf = hs[0]
		}
		am.entries.Add(float64(len(es)), log)
		if interval > 0 {
			if d := interval*time.Duration(len(es))/auditChunk - time.Since(t0); d > 0 {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(d):
				}
			}
		}
	}
	root, err := tlog.TreeHash(cp.Size, tlog.HashReaderFunc(func(ids []int64) ([]tlog.Hash, error) { return st.ReadHashes(ctx, log, ids) }))
	if err != nil {
		return err
	}
	if root != cp.Hash {
		return n.integrityFailure(ctx, log, -1, fmt.Sprintf("the stored tree of %d entries does not have the root of the signed checkpoint", cp.Size))
	}
	return nil
}

func (n *Node) integrityFailure(ctx context.Context, log string, index int64, reason string) error {
	if err := n.Server.RecordIntegrityFailure(ctx, log, index, reason, "auditor"); err != nil && ctx.Err() == nil {
		n.Config.Logger.Error("auditor: recording the alert in _system failed", "log", log, "err", err)
	}
	return nil
}
