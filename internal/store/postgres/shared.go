package postgres

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vellum-audit/vellum/internal/store"
)

// What several nodes sharing one database need: a lock per log for its
// sequencer, and word of each other's commits.

// Lock implements store.Sequencing: a session-level advisory lock, keyed on
// a hash of the log's name, taken on a connection of the lock pool and held
// with it until unlock. Waiting for it respects ctx. If the node dies, or
// its connection does, PostgreSQL ends the session and releases the lock,
// and the next node waiting gets it.
//
// A commit does not depend on the lock for safety: Append checks the
// stored size in its own transaction, so a node that lost its lock without
// noticing cannot fork the log; the lock keeps nodes from wasting rounds.
func (s *Store) Lock(ctx context.Context, log string) (int64, func(), error) {
	id, err := s.id(ctx, log)
	if err != nil {
		return 0, nil, err
	}
	c, err := s.locks.Acquire(ctx)
	if err != nil {
		return 0, nil, wrap(err)
	}
	key := lockKey("log " + log)
	// If ctx ends while PostgreSQL is still waiting for the lock, pgx
	// closes the connection, which ends the wait: the session that might
	// have got the lock is gone.
	if _, err := c.Exec(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		discard(c)
		return 0, nil, wrap(err)
	}
	var size int64
	if err := c.QueryRow(ctx, `SELECT COALESCE(MAX(size), 0) FROM checkpoints WHERE log = $1`, id).Scan(&size); err != nil {
		discard(c) // ends the session, so releases the lock
		return 0, nil, wrap(err)
	}
	var once sync.Once
	unlock := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var released bool
			if err := c.QueryRow(ctx, `SELECT pg_advisory_unlock($1)`, key).Scan(&released); err != nil || !released {
				discard(c)
				return
			}
			c.Release()
		})
	}
	return size, unlock, nil
}

// discard closes a lock connection instead of returning it to the pool:
// whatever its session held goes with it.
func discard(c *pgxpool.Conn) {
	conn := c.Hijack()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	conn.Close(ctx)
}

// Watch implements store.Watcher. It LISTENs on vellum_commit on a
// connection of its own; each notification (sent by the commits and log
// creations of every node, in their transactions) becomes one call of fn.
// Each time the connection is (re)established, after LISTEN and so with no
// gap, fn is also called with every log's current size: what a lost
// connection missed is never lost for good. A lost connection is retried
// with backoff (100 ms doubling up to 5 s) until ctx ends.
func (s *Store) Watch(ctx context.Context, fn func(store.Change)) error {
	backoff := 100 * time.Millisecond
	for {
		err := s.watchOnce(ctx, fn, func() { backoff = 100 * time.Millisecond })
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.logger.Warn("postgres: lost the commit notifications; reconnecting", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// watchOnce listens until the connection fails or ctx ends; connected is
// called once it listens.
func (s *Store) watchOnce(ctx context.Context, fn func(store.Change), connected func()) error {
	conn, err := pgx.ConnectConfig(ctx, s.watch)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `LISTEN vellum_commit`); err != nil {
		return err
	}
	// Every log's size, read after LISTEN: a commit either is in this
	// answer or will be notified.
	logs, err := s.Logs(ctx)
	if err != nil {
		return err
	}
	connected()
	for _, li := range logs {
		fn(store.Change{Log: li.Name, Size: li.Size})
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		c, ok := parsePayload(n.Payload)
		if !ok {
			s.logger.Warn("postgres: ignoring a malformed vellum_commit notification", "payload", n.Payload)
			continue
		}
		fn(c)
	}
}
