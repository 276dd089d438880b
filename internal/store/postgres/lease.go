package postgres

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vellum-audit/vellum/internal/store"
)

var _ store.Leasing = (*Store)(nil)

// leases are this node's sticky sequencer leases: one session-level
// advisory lock per log, all held on one dedicated connection
// (application_name "vellum lease"). A killed node's session ends, and its
// leases with it; the next node to try takes them at once. A heartbeat
// (every second while any lease is held) notices a lost connection, and the
// node then holds no lease at all: it forwards, or takes the lease again.
type leases struct {
	mu   sync.Mutex // guards everything below; serialises use of conn
	cfg  *pgx.ConnConfig
	conn *pgx.Conn
	hmu  sync.RWMutex // guards held as well (mu and hmu to change it), so that HoldsLease never waits for a round trip
	held map[string]bool
	beat bool // the heartbeat runs
	stop chan struct{}
	done sync.WaitGroup
}

// leaseKey is the advisory lock key of log's lease (distinct from the
// per-round lock that Lock takes).
func leaseKey(log string) int64 { return lockKey("lease " + log) }

// HoldsLease implements store.Leasing.
func (s *Store) HoldsLease(log string) bool {
	s.lease.hmu.RLock()
	defer s.lease.hmu.RUnlock()
	return s.lease.held[log]
}

// TryLease implements store.Leasing.
func (s *Store) TryLease(ctx context.Context, log, url string) (bool, string, error) {
	l := &s.lease
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held[log] {
		return true, "", nil
	}
	if l.stop == nil {
		return false, "", store.ErrUnavailable // closed
	}
	if l.conn == nil || l.conn.IsClosed() {
		c, err := pgx.ConnectConfig(ctx, l.cfg)
		if err != nil {
			return false, "", wrap(err)
		}
		l.conn = c
		l.setHeld(nil)
	}
	var got bool
	var holder *string
	err := l.conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1),
		(SELECT url FROM sequencer_leases WHERE log = $2 ORDER BY id DESC LIMIT 1)`,
		leaseKey(log), log).Scan(&got, &holder)
	if err != nil {
		l.dropLocked()
		return false, "", wrap(err)
	}
	if !got {
		if holder == nil {
			return false, "", nil
		}
		return false, *holder, nil
	}
	if _, err := l.conn.Exec(ctx, `INSERT INTO sequencer_leases (log, url) VALUES ($1, $2)`, log, url); err != nil {
		// Without its row the lease would send the others to the previous
		// holder: give it up (closing the session releases it).
		l.dropLocked()
		return false, "", wrap(err)
	}
	l.hmu.Lock()
	l.held[log] = true
	l.hmu.Unlock()
	if !l.beat {
		l.beat = true
		l.done.Add(1)
		go s.heartbeat(l.stop)
	}
	return true, "", nil
}

// dropLocked closes the lease connection: every lease this node held ends.
func (l *leases) dropLocked() {
	if l.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		l.conn.Close(ctx)
		cancel()
		l.conn = nil
	}
	l.setHeld(nil)
}

// setHeld replaces held (nil: none); l.mu is held.
func (l *leases) setHeld(m map[string]bool) {
	if m == nil {
		m = map[string]bool{}
	}
	l.hmu.Lock()
	l.held = m
	l.hmu.Unlock()
}

// heartbeat checks the lease connection every second while leases are
// held; if it fails, the node holds none.
func (s *Store) heartbeat(stop chan struct{}) {
	l := &s.lease
	defer l.done.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		l.mu.Lock()
		if len(l.held) == 0 || l.conn == nil {
			l.beat = false
			l.mu.Unlock()
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := l.conn.Ping(ctx)
		cancel()
		if err != nil {
			s.logger.Warn("postgres: lost the sequencer lease connection; this node holds no lease now", "err", err)
			l.dropLocked()
			l.beat = false
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
	}
}

// ReleaseLeases implements store.Leasing.
func (s *Store) ReleaseLeases() {
	s.lease.mu.Lock()
	defer s.lease.mu.Unlock()
	s.lease.dropLocked()
}

// closeLeases releases the leases and stops the heartbeat.
func (s *Store) closeLeases() {
	l := &s.lease
	l.mu.Lock()
	l.dropLocked()
	if l.stop != nil {
		close(l.stop)
		l.stop = nil
	}
	l.mu.Unlock()
	l.done.Wait()
}
