package sqlite

import (
	"errors"
	"fmt"
	"testing"

	"github.com/vellum-audit/vellum/internal/store"
)

// codeError is an error with a SQLite result code, as the driver's.
type codeError int

func (c codeError) Error() string { return fmt.Sprintf("sqlite error %d", int(c)) }
func (c codeError) Code() int     { return int(c) }

// TestWrapWriteFailures: the result codes of a write the disk refused are
// store.ErrWriteFailed (503 "storage refused a write"), an fsync failure
// also store.ErrNotDurable (its outcome is unknown), other errors only
// store.ErrUnavailable.
func TestWrapWriteFailures(t *testing.T) {
	for _, tc := range []struct {
		name               string
		code               int
		failed, notDurable bool
	}{
		{"SQLITE_FULL", 13, true, false},
		{"SQLITE_IOERR_WRITE", 10 | 3<<8, true, false},
		{"SQLITE_IOERR_FSYNC", 10 | 4<<8, true, true},
		{"SQLITE_IOERR_DIR_FSYNC", 10 | 5<<8, true, true},
		{"SQLITE_IOERR_TRUNCATE", 10 | 6<<8, true, false},
		{"SQLITE_IOERR_SHMSIZE", 10 | 13<<8, true, false},
		{"SQLITE_IOERR_READ", 10 | 1<<8, false, false},
		{"SQLITE_BUSY", 5, false, false},
		{"SQLITE_CORRUPT", 11, false, false},
	} {
		err := wrap(fmt.Errorf("exec: %w", codeError(tc.code)))
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s: %v is not ErrUnavailable", tc.name, err)
		}
		if got := errors.Is(err, store.ErrWriteFailed); got != tc.failed {
			t.Errorf("%s: ErrWriteFailed %v, want %v", tc.name, got, tc.failed)
		}
		if got := errors.Is(err, store.ErrNotDurable); got != tc.notDurable {
			t.Errorf("%s: ErrNotDurable %v, want %v", tc.name, got, tc.notDurable)
		}
	}
}
