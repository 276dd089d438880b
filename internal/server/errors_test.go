package server

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/vellum-audit/vellum/internal/store"
)

func TestToHTTPIndexBehind(t *testing.T) {
	for name, err := range map[string]error{
		"plain":   &store.IndexBehindError{Log: "billing", Behind: 1234},
		"wrapped": fmt.Errorf("search: %w", &store.IndexBehindError{Log: "billing", Behind: 1234, Err: errors.New("disk full")}),
	} {
		t.Run(name, func(t *testing.T) {
			he := toHTTP(err)
			if he.status != http.StatusServiceUnavailable || !he.retry {
				t.Fatalf("status %d, retry %v; want 503 with Retry-After", he.status, he.retry)
			}
			if !strings.Contains(he.msg, "behind the log by 1234 entries") || !strings.Contains(he.msg, `"billing"`) {
				t.Errorf("message %q does not say how far behind the index is", he.msg)
			}
			if strings.Contains(he.msg, "disk full") {
				t.Errorf("message %q leaks internal detail", he.msg)
			}
		})
	}
	if he := toHTTP(store.ErrUnavailable); strings.Contains(he.msg, "index") {
		t.Errorf("plain unavailability answered %q", he.msg)
	}
}

// TestToHTTPWriteFailures: storage refusing a write is 503 with
// Retry-After; the message says nothing was recorded when that is certain
// (the write failed) and says the outcome is unknown after a failed fsync.
func TestToHTTPWriteFailures(t *testing.T) {
	full := fmt.Errorf("%w: %w: database or disk is full (13)", store.ErrUnavailable, store.ErrWriteFailed)
	fsync := fmt.Errorf("%w: %w: %w: disk I/O error (1034)", store.ErrUnavailable, store.ErrWriteFailed, store.ErrNotDurable)
	for name, tc := range map[string]struct {
		err           error
		want, wantNot string
	}{
		"full":  {full, "nothing was recorded", "may still"},
		"fsync": {fsync, "retry with the same event ids", "nothing was recorded"},
	} {
		he := toHTTP(fmt.Errorf("commit: %w", tc.err))
		if he.status != http.StatusServiceUnavailable || !he.retry || he.after <= 0 {
			t.Errorf("%s: status %d retry %v after %d; want 503 with Retry-After", name, he.status, he.retry, he.after)
		}
		if !strings.Contains(he.msg, "refused a write") || !strings.Contains(he.msg, tc.want) || strings.Contains(he.msg, tc.wantNot) {
			t.Errorf("%s: message %q, want one saying storage refused a write and %q (not %q)", name, he.msg, tc.want, tc.wantNot)
		}
	}
}
