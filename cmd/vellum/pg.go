package main

import (
	"context"
	"fmt"
	"net/url"

	"github.com/vellum-audit/vellum/internal/store"
	"github.com/vellum-audit/vellum/internal/store/postgres"
)

func (m *Main) openPostgres(dsn string) func(context.Context) (store.Store, error) {
	return func(ctx context.Context) (store.Store, error) {
		return postgres.Open(ctx, dsn)
	}
}

// redactURL hides a password in a PostgreSQL URL for messages.
func redactURL(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return "the PostgreSQL database"
	}
	return u.Redacted()
}

// migrate applies the embedded schema migrations to a PostgreSQL database
// and exits: run it once as the database's owner, then run the servers as a
// role that may only read and append (docs/postgres.md).
func (m *Main) migrate(ctx context.Context, args []string) error {
	fs := m.newFlagSet("migrate", "migrate --postgres URL")
	dsn := fs.String("postgres", m.Getenv("VELLUM_POSTGRES"), "PostgreSQL URL of the schema's owner (env VELLUM_POSTGRES)")
	if err := parseFlags(fs, args); err != nil {
		return helpOK(err)
	}
	if *dsn == "" {
		return usageError("give --postgres postgres://owner@host/db (or set VELLUM_POSTGRES)", "no database given")
	}
	if err := postgres.Migrate(ctx, *dsn); err != nil {
		return errorf("run it as the role that owns the schema (see docs/postgres.md)", "migrating %s: %v", redactURL(*dsn), err)
	}
	fmt.Fprintf(m.Stderr, "vellum: %s is at the current schema\n", redactURL(*dsn))
	return nil
}
