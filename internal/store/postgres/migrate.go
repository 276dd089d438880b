package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The schema is a sequence of migrations, migrations/NNNN_name.sql,
// numbered from 1 without gaps and never edited once released: a change is
// a new file. Each is applied in its own transaction together with its row
// in vellum_schema_migrations, under a transaction-level advisory lock, so
// that nodes starting at once apply each migration exactly once.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

var migrations = mustLoadMigrations()

// SchemaVersion is the schema version this vellum knows: its newest
// migration.
var SchemaVersion = migrations[len(migrations)-1].version

func mustLoadMigrations() []migration {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		panic(err)
	}
	var out []migration
	for _, n := range names { // fs.Glob returns them sorted
		base := path.Base(n)
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v != len(out)+1 {
			panic(fmt.Sprintf("postgres: migration %s: want %04d_name.sql", base, len(out)+1))
		}
		b, err := migrationFiles.ReadFile(n)
		if err != nil {
			panic(err)
		}
		out = append(out, migration{version: v, name: base, sql: string(b)})
	}
	if len(out) == 0 {
		panic("postgres: no migrations")
	}
	return out
}

// migrateLock is the advisory lock key that serialises migrations.
var migrateLock = lockKey("vellum schema migration")

const createMigrationsTable = `CREATE TABLE IF NOT EXISTS vellum_schema_migrations (
	version    integer PRIMARY KEY,
	applied_at timestamptz NOT NULL DEFAULT now()
)`

// Migrate brings the database at url to this vellum's schema version,
// applying the pending migrations in order. It needs a role that may create
// tables in the database (its owner); it is what `vellum migrate` runs.
// Running it again, or on several nodes at once, is safe.
func Migrate(ctx context.Context, url string) error {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return wrap(fmt.Errorf("connecting to PostgreSQL: %w", err))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return migrate(ctx, conn)
}

type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Begin(ctx context.Context) (pgx.Tx, error)
}

// schemaVersion reads the database's schema version (0 for an empty
// database) without changing anything.
func schemaVersion(ctx context.Context, db execer) (int, error) {
	var v int
	err := db.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM vellum_schema_migrations`).Scan(&v)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
		return 0, nil
	}
	if err != nil {
		return 0, wrap(fmt.Errorf("reading the schema version: %w", err))
	}
	return v, nil
}

func errNewer(v int) error {
	return fmt.Errorf("postgres: the database has schema version %d, newer than this vellum knows (%d): upgrade vellum", v, SchemaVersion)
}

func migrate(ctx context.Context, db execer) error {
	for _, m := range migrations {
		if err := applyOne(ctx, db, m); err != nil {
			return err
		}
	}
	return nil
}

func applyOne(ctx context.Context, db execer, m migration) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return wrap(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLock); err != nil {
		return wrap(err)
	}
	if _, err := tx.Exec(ctx, createMigrationsTable); err != nil {
		return fmt.Errorf("postgres: creating vellum_schema_migrations: %w", err)
	}
	var cur int
	if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM vellum_schema_migrations`).Scan(&cur); err != nil {
		return wrap(err)
	}
	switch {
	case cur > SchemaVersion:
		return errNewer(cur)
	case cur >= m.version:
		return nil // applied already (perhaps by another node just now)
	case cur != m.version-1:
		return fmt.Errorf("postgres: schema version %d, cannot apply migration %s", cur, m.name)
	}
	if _, err := tx.Exec(ctx, m.sql); err != nil {
		return fmt.Errorf("postgres: migration %s: %w", m.name, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO vellum_schema_migrations (version) VALUES ($1)`, m.version); err != nil {
		return wrap(err)
	}
	if err := tx.Commit(ctx); err != nil {
		return wrap(fmt.Errorf("migration %s: %w", m.name, err))
	}
	return nil
}

// GrantStatements are the statements that give role what vellum needs and
// nothing more: it can read and append log data but cannot update, delete
// or truncate it, and it can fill and empty the search projection. They
// are listed in docs/postgres.md; run them as the schema owner after every
// migration (they are idempotent).
func GrantStatements(role string) []string {
	r := pgx.Identifier{role}.Sanitize()
	return []string{
		`GRANT USAGE ON SCHEMA public TO ` + r,
		`GRANT SELECT ON vellum_schema_migrations TO ` + r,
		`GRANT SELECT, INSERT ON logs, entries, hashes, checkpoints, event_ids, seqs TO ` + r,
		// PostgreSQL asks for UPDATE on some column before it lets a role
		// lock rows (SELECT ... FOR UPDATE); an UPDATE itself is refused by
		// the append-only trigger (and id is GENERATED ALWAYS).
		`GRANT UPDATE (id) ON logs TO ` + r,
		`GRANT SELECT, INSERT, TRUNCATE ON search, search_targets, search_text TO ` + r,
		// Sequencer leases: the holder of a log's lease records its address.
		`GRANT SELECT, INSERT ON sequencer_leases TO ` + r,
	}
}

// Grant runs GrantStatements(role) on the database at url, connected as
// the schema owner.
func Grant(ctx context.Context, url, role string) error {
	if role == "" {
		return errors.New("postgres: grant: no role named")
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return wrap(fmt.Errorf("connecting to PostgreSQL: %w", err))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, q := range GrantStatements(role) {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("postgres: %s: %w", q, err)
		}
	}
	return nil
}

// isPrivilegeError reports whether err is PostgreSQL refusing a privilege.
func isPrivilegeError(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42501" // insufficient_privilege
}
