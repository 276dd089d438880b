package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/vellum-audit/vellum/api"
)

// Search queries log with filters (see docs/api.md: since, until,
// event_from, event_to, action (exact or "user.*"), actor, target,
// target_type, key, outcome, source, q, order, limit, cursor, proof).
// Follow NextCursor for the next page.
func (c *Client) Search(ctx context.Context, log string, filter url.Values) (api.EntryList, error) {
	var el api.EntryList
	if len(filter) == 0 {
		filter = url.Values{"limit": {"100"}}
	}
	err := c.do(ctx, http.MethodGet, api.LogPath(log)+"/entries", filter, nil, &el)
	return el, err
}
