package node_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/vellum-audit/vellum/internal/pgtest"
	"github.com/vellum-audit/vellum/internal/store"
	"github.com/vellum-audit/vellum/internal/store/postgres"
	"github.com/vellum-audit/vellum/internal/store/sqlite"
)

// The end-to-end tests of this package run against one store backend:
// SQLite in the data directory by default, or PostgreSQL with
// VELLUM_TEST_STORE=postgres (a throwaway cluster, one database per data
// directory, used as the restricted role of docs/postgres.md). .ci/run runs
// them both ways: one behaviour, two backends.
func TestMain(m *testing.M) { pgtest.Main(m) }

func usePostgres() bool { return os.Getenv("VELLUM_TEST_STORE") == "postgres" }

type pgDB struct{ owner, app string }

var pgDBs sync.Map // data directory → *pgDB

// pgFor returns the database of the data directory dir, made (migrated, and
// granted to the app role) on first use; it lives as long as t.
func pgFor(t *testing.T, dir string) *pgDB {
	t.Helper()
	if v, ok := pgDBs.Load(dir); ok {
		return v.(*pgDB)
	}
	owner, app := pgtest.NewDB(t)
	ctx := context.Background()
	if err := postgres.Migrate(ctx, owner); err != nil {
		t.Fatal(err)
	}
	if err := postgres.Grant(ctx, owner, pgtest.App); err != nil {
		t.Fatal(err)
	}
	db := &pgDB{owner: owner, app: app}
	pgDBs.Store(dir, db)
	t.Cleanup(func() { pgDBs.Delete(dir) })
	return db
}

// storeOpener is node.Config.OpenStore for dir (nil: SQLite in dir).
func storeOpener(t *testing.T, dir string) func(context.Context) (store.Store, error) {
	if !usePostgres() {
		return nil
	}
	db := pgFor(t, dir)
	return func(ctx context.Context) (store.Store, error) { return postgres.Open(ctx, db.app) }
}

// openStore opens dir's store as its node does.
func openStore(t *testing.T, dir string) store.Store {
	t.Helper()
	ctx := context.Background()
	var st store.Store
	var err error
	if usePostgres() {
		st, err = postgres.Open(ctx, pgFor(t, dir).app)
	} else {
		st, err = sqlite.Open(ctx, dir)
	}
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// tamperEntry changes entry idx of log behind the server's back with
// forge, after checking that the store refuses to change it (triggers, and
// on PostgreSQL the app role's missing privileges), and returns the forged
// bytes. The server must be stopped.
func tamperEntry(t *testing.T, dir, log string, idx int64, forge func([]byte) []byte) []byte {
	t.Helper()
	if usePostgres() {
		return tamperPostgres(t, dir, log, idx, forge)
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var logID int64
	if err := db.QueryRow(`SELECT id FROM logs WHERE name = ?`, log).Scan(&logID); err != nil {
		t.Fatal(err)
	}
	var data []byte
	if err := db.QueryRow(`SELECT data FROM entries WHERE log = ? AND idx = ?`, logID, idx).Scan(&data); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, q, want string }{
		{"update", `UPDATE entries SET data = data WHERE log = ? AND idx = 7`, "vellum: entries is append-only: update refused"},
		{"delete", `DELETE FROM entries WHERE log = ? AND idx = 7`, "vellum: entries is append-only: delete refused"},
		{"hashes update", `UPDATE hashes SET hash = hash WHERE log = ?`, "vellum: hashes is append-only: update refused"},
		{"checkpoints delete", `DELETE FROM checkpoints WHERE log = ?`, "vellum: checkpoints is append-only: delete refused"},
	} {
		_, err := db.Exec(tc.q, logID)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	forged := forge(data)
	if _, err := db.Exec(`DROP TRIGGER entries_no_update`); err != nil {
		t.Fatal(err)
	}
	res, err := db.Exec(`UPDATE entries SET data = ? WHERE log = ? AND idx = ?`, forged, logID, idx)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("UPDATE changed %d rows", n)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return forged
}

func tamperPostgres(t *testing.T, dir, log string, idx int64, forge func([]byte) []byte) []byte {
	t.Helper()
	ctx := context.Background()
	db := pgFor(t, dir)
	app, err := pgx.Connect(ctx, db.app)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(ctx)
	owner, err := pgx.Connect(ctx, db.owner)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(ctx)
	var logID int64
	if err := owner.QueryRow(ctx, `SELECT id FROM logs WHERE name = $1`, log).Scan(&logID); err != nil {
		t.Fatal(err)
	}
	var data []byte
	if err := owner.QueryRow(ctx, `SELECT data FROM entries WHERE log = $1 AND idx = $2`, logID, idx).Scan(&data); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		c    *pgx.Conn
		q    string
		want string
	}{
		{"app update", app, `UPDATE entries SET data = data WHERE log = $1 AND idx = 7`, "permission denied"},
		{"app delete", app, `DELETE FROM entries WHERE log = $1 AND idx = 7`, "permission denied"},
		{"owner update", owner, `UPDATE entries SET data = data WHERE log = $1 AND idx = 7`, "vellum: entries is append-only: update refused"},
		{"owner delete", owner, `DELETE FROM entries WHERE log = $1 AND idx = 7`, "vellum: entries is append-only: delete refused"},
		{"owner hashes update", owner, `UPDATE hashes SET hash = hash WHERE log = $1`, "vellum: hashes is append-only: update refused"},
		{"owner checkpoints delete", owner, `DELETE FROM checkpoints WHERE log = $1`, "vellum: checkpoints is append-only: delete refused"},
	} {
		_, err := tc.c.Exec(ctx, tc.q, logID)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	forged := forge(data)
	// The owner can still drop its own table's trigger: the log's evidence
	// (hashes, checkpoints) is what catches that.
	if _, err := owner.Exec(ctx, `ALTER TABLE entries DISABLE TRIGGER entries_append_only`); err != nil {
		t.Fatal(err)
	}
	tag, err := owner.Exec(ctx, `UPDATE entries SET data = $1 WHERE log = $2 AND idx = $3`, forged, logID, idx)
	if err != nil {
		t.Fatal(err)
	}
	if tag.RowsAffected() != 1 {
		t.Fatalf("UPDATE changed %d rows", tag.RowsAffected())
	}
	return forged
}

// insertBareLog adds a log row without a checkpoint behind the server's
// back (what a crash between creating a log and signing its first
// checkpoint leaves).
func insertBareLog(t *testing.T, dir, name string) {
	t.Helper()
	if usePostgres() {
		ctx := context.Background()
		c, err := pgx.Connect(ctx, pgFor(t, dir).owner)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, `INSERT INTO logs(name, created) VALUES ($1, '2026-01-01T00:00:00Z')`, name); err != nil {
			t.Fatal(err)
		}
		return
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`INSERT INTO logs(name, created) VALUES (?, '2026-01-01T00:00:00Z')`, name); err != nil {
		t.Fatal(err)
	}
}
