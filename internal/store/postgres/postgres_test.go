package postgres

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/vellum-audit/vellum/internal/index"
	"github.com/vellum-audit/vellum/internal/pgtest"
	"github.com/vellum-audit/vellum/internal/store"
	"github.com/vellum-audit/vellum/internal/store/storetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var ctx = context.Background()

// testDB is a migrated database whose application role has exactly the
// grants of docs/postgres.md.
type testDB struct{ owner, app string }

func newTestDB(t testing.TB, opts ...pgtest.Option) testDB {
	t.Helper()
	owner, app := pgtest.NewDB(t, opts...)
	if err := Migrate(ctx, owner); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if err := Grant(ctx, owner, pgtest.App); err != nil {
		t.Fatalf("Grant: %v", err)
	}
	return testDB{owner, app}
}

var (
	dbsMu sync.Mutex
	dbs   = map[testing.TB]testDB{}
)

// dbFor is t's database, created on first use.
func dbFor(t *testing.T) testDB {
	dbsMu.Lock()
	db, ok := dbs[t]
	dbsMu.Unlock()
	if ok {
		return db
	}
	db = newTestDB(t)
	dbsMu.Lock()
	dbs[t] = db
	dbsMu.Unlock()
	t.Cleanup(func() {
		dbsMu.Lock()
		delete(dbs, t)
		dbsMu.Unlock()
	})
	return db
}

// open opens a store on url as the tests' stores run: as the application
// role.
func open(t testing.TB, url string) *Store {
	t.Helper()
	s, err := Open(ctx, url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// execAs runs one statement on url.
func execAs(ctx context.Context, url, stmt string, args ...any) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, stmt, args...)
	return err
}

func TestConformance(t *testing.T) {
	storetest.Run(t,
		func(t *testing.T) store.Store {
			s, err := Open(ctx, dbFor(t).app)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			return s
		},
		// The application role holds no privilege to change log data…
		storetest.WithRaw(storetest.Raw{Name: "app role", Refusal: "permission denied", Exec: func(t *testing.T, stmt string) error {
			return execAs(ctx, dbFor(t).app, stmt)
		}}),
		// …and the tables' owner, who does, is stopped by the triggers.
		storetest.WithRaw(storetest.Raw{Name: "owner", Refusal: "append-only", Exec: func(t *testing.T, stmt string) error {
			return execAs(ctx, dbFor(t).owner, stmt)
		}}),
	)
}

func TestMigrations(t *testing.T) {
	owner, app := pgtest.NewDB(t)
	_, err := Open(ctx, app)
	if err == nil || !strings.Contains(err.Error(), "vellum migrate") {
		t.Fatalf("Open as the app role of an empty database: %v; want an error naming vellum migrate", err)
	}
	// Several nodes migrating at once apply each migration once.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = Migrate(ctx, owner) }()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Migrate: %v", err)
		}
	}
	if err := Migrate(ctx, owner); err != nil {
		t.Fatalf("Migrate again: %v", err)
	}
	conn, err := pgx.Connect(ctx, owner)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n, v int
	if err := conn.QueryRow(ctx, `SELECT count(*), max(version) FROM vellum_schema_migrations`).Scan(&n, &v); err != nil || n != len(migrations) || v != SchemaVersion {
		t.Fatalf("vellum_schema_migrations: %d rows, version %d, %v; want %d, %d", n, v, err, len(migrations), SchemaVersion)
	}
	// Migrated but not granted: the app role cannot even read the version.
	if _, err := Open(ctx, app); err == nil {
		t.Fatal("Open as an app role without grants succeeded")
	}
	if err := Grant(ctx, owner, pgtest.App); err != nil {
		t.Fatal(err)
	}
	s := open(t, app)
	if err := s.CreateLog(ctx, "x", time.Now()); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// A schema newer than this binary's is refused.
	if _, err := conn.Exec(ctx, `INSERT INTO vellum_schema_migrations (version) VALUES ($1)`, SchemaVersion+1); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{"Open": func() error { _, err := Open(ctx, app); return err }(), "Migrate": Migrate(ctx, owner)} {
		if err == nil || !strings.Contains(err.Error(), "newer than this vellum knows") {
			t.Errorf("%s of a newer schema: %v", name, err)
		}
	}
}

func TestOpenMigratesAsOwner(t *testing.T) {
	owner, _ := pgtest.NewDB(t)
	s := open(t, owner)
	if err := s.CreateLog(ctx, "x", time.Now()); err != nil {
		t.Fatal(err)
	}
	// Opening again finds the schema current.
	open(t, owner)
}

func TestGrantsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../../docs/postgres.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range GrantStatements(pgtest.App) {
		if !strings.Contains(string(doc), g+";") {
			t.Errorf("docs/postgres.md does not list %q", g+";")
		}
	}
}

// TestAppendOnly covers what the shared suite's UPDATE and DELETE do not:
// TRUNCATE, an upsert, and the one UPDATE privilege the app role holds.
func TestAppendOnly(t *testing.T) {
	db := newTestDB(t)
	s := open(t, db.app)
	if err := s.CreateLog(ctx, "l", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, &store.Batch{Log: "l", Entries: [][]byte{[]byte("e")}, Checkpoint: []byte("cp")}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		url, stmt, want string
	}{
		{db.app, `TRUNCATE entries`, "permission denied"},
		{db.owner, `TRUNCATE entries`, "vellum: entries is append-only: truncate refused"},
		{db.owner, `TRUNCATE checkpoints, search`, "append-only"},
		{db.app, `UPDATE logs SET id = DEFAULT`, "vellum: logs is append-only: update refused"},
		{db.app, `INSERT INTO entries SELECT * FROM entries ON CONFLICT (log, idx) DO UPDATE SET data = excluded.data`, "permission denied"},
		{db.owner, `INSERT INTO entries SELECT * FROM entries ON CONFLICT (log, idx) DO UPDATE SET data = excluded.data`, "append-only"},
		{db.owner, `UPDATE entries SET data = 'x' WHERE false`, "append-only"},
		{db.app, `DELETE FROM search`, "permission denied"},
		{db.app, `CREATE TABLE x (y int)`, "permission denied"},
		{db.app, `ALTER TABLE entries DISABLE TRIGGER entries_append_only`, "must be owner"},
	} {
		err := execAs(ctx, tc.url, tc.stmt)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			role := "app"
			if tc.url == db.owner {
				role = "owner"
			}
			t.Errorf("as %s, %s: %v; want %q", role, tc.stmt, err, tc.want)
		}
	}
	got, err := s.ReadEntries(ctx, "l", 0, 10)
	if err != nil || len(got) != 1 || string(got[0]) != "e" {
		t.Fatalf("entries after the attempts: %q, %v", got, err)
	}
}

// TestFenceRace: two nodes committing on the same size at once: one wins,
// the other is refused, nothing is forked.
func TestFenceRace(t *testing.T) {
	db := newTestDB(t)
	s1, s2 := open(t, db.app), open(t, db.app)
	if err := s1.CreateLog(ctx, "l", time.Now()); err != nil {
		t.Fatal(err)
	}
	for round := range 10 {
		old := int64(round)
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i, s := range []*Store{s1, s2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = s.Append(ctx, &store.Batch{Log: "l", OldSize: old, Entries: [][]byte{[]byte(fmt.Sprint(i))}, Checkpoint: []byte("cp")})
			}()
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			if err == nil {
				ok++
			} else if !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if ok != 1 {
			t.Fatalf("round %d: %d of 2 racing commits succeeded (%v)", round, ok, errs)
		}
	}
	if li, err := s1.Log(ctx, "l"); err != nil || li.Size != 10 {
		t.Fatalf("Log = %+v, %v", li, err)
	}
}

// TestLockReleasedWithSession: a node whose session dies loses its lock
// at once, and the store that held it is not harmed.
func TestLockReleasedWithSession(t *testing.T) {
	db := newTestDB(t)
	s1, s2 := open(t, db.app), open(t, db.app)
	if err := s1.CreateLog(ctx, "l", time.Now()); err != nil {
		t.Fatal(err)
	}
	l1, err := s1.Lock(ctx, "l")
	if err != nil {
		t.Fatal(err)
	}
	unlock1 := l1.Unlock
	conn, err := pgx.Connect(ctx, db.app)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var pid int
	if err := conn.QueryRow(ctx, `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&pid); err != nil {
		t.Fatalf("finding the lock holder: %v", err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend($1, 5000)`, pid); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	l2, err := s2.Lock(wctx, "l")
	unlock2 := l2.Unlock
	if err != nil {
		t.Fatalf("Lock after the holder's session was terminated: %v", err)
	}
	unlock1() // the dead session's unlock fails quietly and drops the connection
	unlock2()
	l1, err = s1.Lock(wctx, "l")
	if err != nil {
		t.Fatalf("Lock again on the first store: %v", err)
	}
	l1.Unlock()
	if err := s1.Append(ctx, &store.Batch{Log: "l", Entries: [][]byte{[]byte("e")}, Checkpoint: []byte("cp")}); err != nil {
		t.Fatal(err)
	}
}

// TestWatchReconnects: after its connection is killed Watch comes back and
// reports every log's size, then goes on reporting commits.
func TestWatchReconnects(t *testing.T) {
	db := newTestDB(t)
	s1, s2 := open(t, db.app), open(t, db.app)
	for _, l := range []string{"a", "b"} {
		if err := s2.CreateLog(ctx, l, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if err := s2.Append(ctx, &store.Batch{Log: "a", Entries: [][]byte{[]byte("e")}, Checkpoint: []byte("cp")}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	changes := storetest.NewChanges()
	done := make(chan error, 1)
	go func() { done <- s1.Watch(wctx, changes.Add) }()
	is := func(log string, size int64) func(store.Change) bool {
		return func(c store.Change) bool { return c == store.Change{Log: log, Size: size} }
	}
	seen := changes.Wait(0, 10*time.Second, is("b", 0))
	if seen < 0 {
		t.Fatal("Watch did not report the logs' sizes on connecting")
	}
	conn, err := pgx.Connect(ctx, db.app)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tag, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'vellum watch' AND datname = current_database()`)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("terminating the watch connection: %v, %v", tag, err)
	}
	if seen = changes.Wait(seen, 10*time.Second, is("a", 1)); seen < 0 {
		t.Fatal("Watch did not report the logs' sizes after reconnecting")
	}
	if err := s2.Append(ctx, &store.Batch{Log: "a", OldSize: 1, Entries: [][]byte{[]byte("f")}, Checkpoint: []byte("cp")}); err != nil {
		t.Fatal(err)
	}
	if changes.Wait(seen, 10*time.Second, is("a", 2)) < 0 {
		t.Fatal("Watch did not report a commit after reconnecting")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch returned %v", err)
	}
}

// TestAddDocsRace: two nodes catching up the same entries at once.
func TestAddDocsRace(t *testing.T) {
	db := newTestDB(t)
	s1, s2 := open(t, db.app), open(t, db.app)
	if err := s1.CreateLog(ctx, "l", time.Now()); err != nil {
		t.Fatal(err)
	}
	b := &store.Batch{Log: "l", Checkpoint: []byte("cp")}
	var docs []index.Doc
	for i := range 500 {
		b.Entries = append(b.Entries, []byte(fmt.Sprint(i)))
		docs = append(docs, index.Doc{Index: int64(i), Received: time.Now(), Action: "a.b", Actor: "x", Targets: [][2]string{{"t", "u"}}, Text: "hello world"})
	}
	if err := s1.Append(ctx, b); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		var wg sync.WaitGroup
		for _, s := range []*Store{s1, s2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.AddDocs(ctx, "l", docs); err != nil {
					t.Errorf("AddDocs: %v", err)
				}
			}()
		}
		wg.Wait()
	}
	if n, err := s2.Indexed(ctx, "l"); err != nil || n != 500 {
		t.Fatalf("Indexed = %d, %v", n, err)
	}
	res, more, err := s2.Search(ctx, "l", index.Filter{Target: "t", Text: "hello", Limit: 1000, After: -1}, 500)
	if err != nil || len(res) != 500 || more {
		t.Fatalf("Search = %d results, %v, %v", len(res), more, err)
	}
}

func TestBadInput(t *testing.T) {
	db := newTestDB(t)
	s := open(t, db.app)
	if err := s.CreateLog(ctx, "l", time.Now()); err != nil {
		t.Fatal(err)
	}
	doc := func(i int64) index.Doc {
		return index.Doc{Index: i, Received: time.Now(), Action: "a", Actor: "x"}
	}
	for name, b := range map[string]*store.Batch{
		"no checkpoint":   {Log: "l", Entries: [][]byte{{1}}},
		"docs short":      {Log: "l", Entries: [][]byte{{1}, {2}}, Docs: []index.Doc{doc(0)}, Checkpoint: []byte("cp")},
		"doc index":       {Log: "l", Entries: [][]byte{{1}}, Docs: []index.Doc{doc(1)}, Checkpoint: []byte("cp")},
		"NUL actor":       {Log: "l", Entries: [][]byte{{1}}, Docs: []index.Doc{{Index: 0, Received: time.Now(), Actor: "a\x00b"}}, Checkpoint: []byte("cp")},
		"bad UTF-8 id":    {Log: "l", Entries: [][]byte{{1}}, IDs: []store.Dedup{{KeyID: "k", EventID: "\xff"}}, Checkpoint: []byte("cp")},
		"id out of batch": {Log: "l", Entries: [][]byte{{1}}, IDs: []store.Dedup{{KeyID: "k", EventID: "e", Index: 5}}, Checkpoint: []byte("cp")},
		"negative size":   {Log: "l", OldSize: -1, Entries: [][]byte{{1}}, Checkpoint: []byte("cp")},
	} {
		err := s.Append(ctx, b)
		if err == nil || errors.Is(err, store.ErrUnavailable) {
			t.Errorf("Append(%s): %v; want an error that is not ErrUnavailable", name, err)
		}
	}
	if li, err := s.Log(ctx, "l"); err != nil || li.Size != 0 {
		t.Fatalf("after bad batches: %+v, %v", li, err)
	}
	if err := s.CreateLog(ctx, "a\x00b", time.Now()); err == nil || errors.Is(err, store.ErrUnavailable) {
		t.Errorf("CreateLog with a NUL: %v", err)
	}
	if _, ok, err := s.LookupID(ctx, "l", "k", "a\x00b"); ok || err != nil {
		t.Errorf("LookupID with a NUL = %v, %v; want not found", ok, err)
	}
	if res, _, err := s.Search(ctx, "l", index.Filter{Actor: "a\x00b", Limit: 5, After: -1}, 10); len(res) != 0 || err != nil {
		t.Errorf("Search for a NUL = %v, %v", res, err)
	}
	if _, _, err := s.Search(ctx, "l", index.Filter{Limit: 0, After: -1}, 10); !errors.Is(err, index.ErrBadFilter) {
		t.Errorf("Search with limit 0: %v", err)
	}
	if _, _, err := s.Search(ctx, "l", index.Filter{Text: "--", Limit: 5, After: -1}, 10); !errors.Is(err, index.ErrBadFilter) {
		t.Errorf("Search for text without words: %v", err)
	}
	if _, err := Open(ctx, "postgres://%zz"); err == nil {
		t.Error("Open of a malformed URL succeeded")
	}
	if _, err := Open(ctx, db.app, WithMaxLocks(0)); err == nil {
		t.Error("Open with WithMaxLocks(0) succeeded")
	}
}

func TestUnavailable(t *testing.T) {
	db := newTestDB(t)
	s := open(t, db.app)
	if err := s.CreateLog(ctx, "l", time.Now()); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := s.Logs(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Logs on a closed store: %v, want ErrUnavailable", err)
	}
	if err := s.Append(ctx, &store.Batch{Log: "l", Entries: [][]byte{{1}}, Checkpoint: []byte("cp")}); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Append on a closed store: %v, want ErrUnavailable", err)
	}
}

// TestSessionSettings: every connection of the pool commits durably and
// plans searches for their actual values.
func TestSessionSettings(t *testing.T) {
	db := newTestDB(t)
	s := open(t, db.app)
	for name, want := range map[string]string{"synchronous_commit": "on", "plan_cache_mode": "force_custom_plan", "application_name": "vellum"} {
		var got string
		if err := s.pool.QueryRow(ctx, "SHOW "+name).Scan(&got); err != nil || got != want {
			t.Errorf("SHOW %s = %q, %v; want %q", name, got, err, want)
		}
	}
}

// TestSearchPool: searches run on their own bounded pool with a statement
// timeout, so searches holding every search connection do not stop a
// commit, and a runaway statement is cancelled by PostgreSQL.
func TestSearchPool(t *testing.T) {
	db := newTestDB(t)
	s, err := Open(ctx, db.app, WithMaxSearches(1), WithSearchTimeout(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for name, want := range map[string]string{"statement_timeout": "300ms", "plan_cache_mode": "force_custom_plan", "synchronous_commit": "on", "application_name": "vellum search"} {
		var got string
		if err := s.search.QueryRow(ctx, "SHOW "+name).Scan(&got); err != nil || got != want {
			t.Errorf("search connection: SHOW %s = %q, %v; want %q", name, got, err, want)
		}
	}
	var got string
	if err := s.pool.QueryRow(ctx, "SHOW statement_timeout").Scan(&got); err != nil || got != "0" {
		t.Errorf("commit connection: statement_timeout = %q, %v; want 0 (no timeout)", got, err)
	}
	if err := s.CreateLog(ctx, "l", time.Now()); err != nil {
		t.Fatal(err)
	}

	busy, err := s.search.Acquire(ctx) // the only search connection
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, &store.Batch{Log: "l", Entries: [][]byte{[]byte("e0")}, Checkpoint: []byte("cp")}); err != nil {
		t.Fatalf("Append while every search connection is busy: %v", err)
	}
	f := index.Filter{Actor: "alice", Limit: 10, After: -1}
	wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, _, err = s.Search(wctx, "l", f, 1)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Search while every search connection is busy: %v, want it to wait for one (deadline exceeded)", err)
	}
	busy.Release()
	if _, _, err := s.Search(ctx, "l", f, 1); err != nil {
		t.Errorf("Search once a connection is free: %v", err)
	}

	start := time.Now()
	_, err = s.search.Exec(ctx, "SELECT pg_sleep(5)")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "57014" {
		t.Errorf("a 5 s statement on a search connection: %v, want query_canceled (57014) by statement_timeout", err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("the statement ran %v despite a 300ms statement_timeout", d)
	}
}
