package pgtest_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/vellum-audit/vellum/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestNewDB(t *testing.T) {
	ctx := context.Background()
	owner, app := pgtest.NewDB(t)
	exec := func(url, sql string) error {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, sql)
		return err
	}
	if err := exec(owner, `CREATE TABLE t (x int)`); err != nil {
		t.Fatalf("the owner cannot create a table: %v", err)
	}
	for _, q := range []string{`CREATE TABLE u (x int)`, `SELECT * FROM t`, `INSERT INTO t VALUES (1)`} {
		if err := exec(app, q); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("app role, %s: %v; want permission denied", q, err)
		}
	}
	var super bool
	conn, err := pgx.Connect(ctx, app)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super); err != nil || super {
		t.Fatalf("app role superuser = %v, %v", super, err)
	}
	// Each test gets its own database.
	owner2, _ := pgtest.NewDB(t)
	if owner2 == owner {
		t.Fatal("NewDB returned the same database twice")
	}
	if err := exec(owner2, `SELECT * FROM t`); err == nil {
		t.Fatal("a new database holds another test's table")
	}
}
