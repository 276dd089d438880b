package sqlite

import (
	"context"
	"database/sql"
	"path/filepath"
	"sync"
	"testing"

	"github.com/vellum-audit/vellum/internal/store"
	"github.com/vellum-audit/vellum/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	var dirs sync.Map // *testing.T → its data directory
	dir := func(t *testing.T) string {
		d, _ := dirs.LoadOrStore(t, t.TempDir())
		return d.(string)
	}
	open := func(t *testing.T) store.Store {
		s, err := Open(context.Background(), dir(t))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// The database file opened directly, as anyone with access to the data
	// directory could: the triggers refuse.
	file := storetest.Raw{
		Name:    "database file",
		Refusal: "append-only",
		Exec: func(t *testing.T, stmt string) error {
			db, err := sql.Open("sqlite", "file:"+filepath.Join(dir(t), FileName)+"?_pragma=busy_timeout(10000)")
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			_, err = db.Exec(stmt)
			return err
		},
	}
	storetest.Run(t, open, storetest.WithRaw(file))
}
