package node

import (
	"context"
	"fmt"

	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/index"
)

// backgroundIndexer is a store whose search index follows its logs by
// itself (sqlite: an indexer goroutine writes index.db after each commit
// and catches up with the logs when the store opens). A node does not run
// CatchUpIndex at start on such a store.
type backgroundIndexer interface {
	IndexesInBackground()
}

// CatchUpIndex brings the search index of every log up to the log: rows
// missing after an upgrade or a rebuild are projected from the entries.
// New entries are indexed from the docs each commit carries: in the same
// transaction on PostgreSQL, by the store's indexer right after the commit
// on SQLite (see backgroundIndexer).
func (n *Node) CatchUpIndex(ctx context.Context, progress func(log string, done, total int64)) error {
	logs, err := n.Store.Logs(ctx)
	if err != nil {
		return err
	}
	for _, li := range logs {
		from, err := n.Store.Indexed(ctx, li.Name)
		if err != nil {
			return err
		}
		for from < li.Size {
			end := min(from+2000, li.Size)
			es, err := n.Store.ReadEntries(ctx, li.Name, from, end)
			if err != nil {
				return err
			}
			docs := make([]index.Doc, 0, len(es))
			for i, data := range es {
				e, err := entry.Parse(data)
				if err != nil {
					return fmt.Errorf("log %q entry %d: %w", li.Name, from+int64(i), err)
				}
				d, err := index.DocOf(e)
				if err != nil {
					return fmt.Errorf("log %q entry %d: %w", li.Name, from+int64(i), err)
				}
				docs = append(docs, d)
			}
			if err := n.Store.AddDocs(ctx, li.Name, docs); err != nil {
				return err
			}
			from = end
			if progress != nil {
				progress(li.Name, from, li.Size)
			}
		}
	}
	return nil
}

// RebuildIndex drops the search index and projects it again from the logs.
func (n *Node) RebuildIndex(ctx context.Context, progress func(log string, done, total int64)) error {
	if err := n.Store.DropIndex(ctx); err != nil {
		return err
	}
	return n.CatchUpIndex(ctx, progress)
}
