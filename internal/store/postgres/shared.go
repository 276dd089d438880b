package postgres

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/store"
)

// What several nodes sharing one database need: a lock per log for its
// sequencer, and word of each other's commits.

// Lock implements store.Sequencing: session-level advisory locks, taken on
// a connection of the lock pool and held with it until unlock. Waiting for
// them respects ctx. If the node dies, or its connection does, PostgreSQL
// ends the session and releases the locks, and the next node waiting gets
// them.
//
// Two locks are taken, always in this order (so no two callers can wait
// for each other): the registry lock, shared by every log's sequencer and
// exclusive for _system's, then the log's own lock, keyed on a hash of its
// name. So a key change in _system is ordered against every round of every
// node: the rounds that started before it have committed, and the rounds
// after it see it (the node catches up with _system under its lock).
//
// The lease carries the stored size and the database's clock, read once the
// locks are held: every node stamps received times from that one clock.
//
// A commit does not depend on the lock for safety: Append checks the
// stored size in its own transaction, so a node that lost its lock without
// noticing cannot fork the log; the lock keeps nodes from wasting rounds.
func (s *Store) Lock(ctx context.Context, log string) (store.Lease, error) {
	id, err := s.id(ctx, log)
	if err != nil {
		return store.Lease{}, err
	}
	c, err := s.locks.Acquire(ctx)
	if err != nil {
		return store.Lease{}, wrap(err)
	}
	reg := `SELECT pg_advisory_lock_shared($1)`
	if log == api.SystemLog {
		reg = `SELECT pg_advisory_lock($1)`
	}
	// If ctx ends while PostgreSQL is still waiting for a lock, pgx closes
	// the connection, which ends the wait: the session that might have got
	// the lock is gone.
	for _, q := range []struct {
		sql string
		key int64
	}{{reg, lockKey("registry")}, {`SELECT pg_advisory_lock($1)`, lockKey("log " + log)}} {
		if _, err := c.Exec(ctx, q.sql, q.key); err != nil {
			discard(c)
			return store.Lease{}, wrap(err)
		}
	}
	l := store.Lease{}
	// One statement, after both locks are held: the log's size, the clock,
	// and _system's size (no _system round can commit while this lock is
	// held, so the node's registry catch-up needs no query of its own).
	if err := c.QueryRow(ctx, `SELECT
		(SELECT COALESCE(MAX(size), 0) FROM checkpoints WHERE log = $1),
		clock_timestamp(),
		COALESCE((SELECT MAX(c.size) FROM checkpoints c JOIN logs l ON l.id = c.log WHERE l.name = $2), -1)`,
		id, api.SystemLog).Scan(&l.Size, &l.Now, &l.SystemSize); err != nil {
		discard(c) // ends the session, so releases the locks
		return store.Lease{}, wrap(err)
	}
	var once sync.Once
	l.Unlock = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := c.Exec(ctx, `SELECT pg_advisory_unlock_all()`); err != nil {
				discard(c)
				return
			}
			c.Release()
		})
	}
	return l, nil
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
