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
