package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"

	"github.com/vellum-audit/vellum/api"
)

// AlertFilter selects alerts: State "open" (default), "acked" or "all";
// Detector one detector name; Limit at most 1000 (default 100).
type AlertFilter struct {
	State    string
	Detector string
	Limit    int
}

// Alerts lists the alerts recorded in _system (keys that may read _system).
func (c *Client) Alerts(ctx context.Context, f AlertFilter) (api.AlertList, error) {
	q := url.Values{}
	if f.State != "" {
		q.Set("state", f.State)
	}
	if f.Detector != "" {
		q.Set("detector", f.Detector)
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var out api.AlertList
	err := c.do(ctx, http.MethodGet, api.PathAlerts, q, nil, &out)
	return out, err
}

// AckAlert acknowledges an alert (admin keys): an alert.ack entry in
// _system with the note.
func (c *Client) AckAlert(ctx context.Context, id, note string) (api.AlertState, error) {
	body, err := json.Marshal(api.AlertAck{Note: note})
	if err != nil {
		return api.AlertState{}, err
	}
	var out api.AlertState
	err = c.do(ctx, http.MethodPost, api.PathAlerts+"/"+url.PathEscape(id)+"/ack", nil, body, &out)
	return out, err
}

// ReportCheckpoint sends a checkpoint of log that this client holds; the
// server answers whether its stored tree agrees with it, and records a
// tamper alert (and stops signing for the log) if not.
func (c *Client) ReportCheckpoint(ctx context.Context, log string, checkpoint []byte) (api.CheckpointReport, error) {
	var out api.CheckpointReport
	err := c.do(ctx, http.MethodPost, api.LogPath(log)+"/checkpoint/report", nil, checkpoint, &out)
	return out, err
}
