package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/alert"
	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/index"
	"github.com/vellum-audit/vellum/internal/metrics"
)

// configAction is the _system entry that records the alert configuration
// a node started with, when it differs from the last one recorded.
const configAction = "config.alerts"

// newAlerts builds the alert engine of cfg (defaults if nil), its sinks
// and its metrics. The server and the engine's record and revoke hooks are
// wired by the caller once the server exists.
func (n *Node) newAlerts(cfg *alert.Config, m *metrics.Registry) (*alert.Engine, error) {
	if cfg == nil {
		cfg = alert.DefaultConfig()
	}
	raised := m.Counter("vellum_alerts_total",
		"Alerts raised, by detector and severity (repeats inside the dedupe window included).", "detector", "severity")
	recorded := m.Counter("vellum_alert_entries_total",
		"Alert entries written to _system, by detector.", "detector")
	dropped := m.Counter("vellum_alerts_dropped_total",
		"Alerts dropped because the alert engine's queue was full, by detector.", "detector")
	deliveries := m.Counter("vellum_alert_deliveries_total",
		"Alert deliveries to sinks, by sink and outcome (delivered, retry, failed, dropped).", "sink", "outcome")
	var disp *alert.Dispatcher
	sinks, err := cfg.Sinks(n.Config.Version)
	if err != nil {
		return nil, err
	}
	if len(sinks) > 0 {
		disp = alert.NewDispatcher(sinks, alert.DispatchOptions{
			OnResult: func(sink, outcome string) { deliveries.Inc(sink, outcome) },
			OnError: func(sink string, a alert.Alert, attempt int, err error, final bool) {
				if final {
					n.Config.Logger.Error("alert delivery failed", "sink", sink, "alert", a.ID, "attempts", attempt, "err", err)
				}
			},
		})
	}
	n.alertDisp = disp
	e := alert.NewEngine(cfg, alert.Deps{
		Record: func(ctx context.Context, a alert.Alert) (int64, error) { return n.Server.RecordAlert(ctx, a) },
		Revoke: func(ctx context.Context, keyID, alertID, reason string) error {
			return n.Server.RevokeByPolicy(ctx, keyID, alertID, reason)
		},
		Keys:       n.keyInfos,
		LastWrite:  n.lastWrite,
		Dispatcher: disp,
		OnAlert: func(a alert.Alert, rec bool) {
			raised.Inc(a.Detector, a.Severity)
			if rec {
				recorded.Inc(a.Detector)
			}
		},
		OnDrop: func(d string) { dropped.Inc(d) },
		Logger: n.Config.Logger,
	})
	return e, nil
}

// keyInfos lists the registered keys for the hygiene detectors.
func (n *Node) keyInfos() []alert.KeyInfo {
	now := time.Now()
	var out []alert.KeyInfo
	for _, k := range n.Registry.List() {
		cur, err := n.Registry.At(k.ID, now)
		if err != nil {
			continue
		}
		out = append(out, alert.KeyInfo{ID: k.ID, Role: cur.Role, Scopes: cur.Scopes, CIDRs: cur.CIDRs,
			Expires: cur.Expires, Created: cur.Created, LastUsed: n.Server.LastUsed(k.ID), Active: cur.ActiveAt(now) == nil})
	}
	return out
}

// lastWrite is the received time of the newest entry of log written with
// key and source (either empty: any), from the search index.
func (n *Node) lastWrite(ctx context.Context, log, key, source string) (time.Time, bool, error) {
	li, err := n.Store.Log(ctx, log)
	if err != nil || li.Size == 0 {
		return time.Time{}, false, nil // no such log yet, or empty
	}
	idxs, _, err := n.Store.Search(ctx, log, index.Filter{Key: key, Source: source, Limit: 1, After: -1}, li.Size)
	if err != nil || len(idxs) == 0 {
		return time.Time{}, false, err
	}
	es, err := n.Store.ReadEntriesAt(ctx, log, idxs)
	if err != nil || len(es) == 0 {
		return time.Time{}, false, err
	}
	e, err := entry.Parse(es[0])
	if err != nil {
		return time.Time{}, false, err
	}
	return e.ReceivedTime(), true, nil
}

// recordAlertConfig writes a config.alerts entry to _system when the
// alert configuration differs from the last one recorded (or none was):
// its digest and its content without secrets.
func (n *Node) recordAlertConfig(ctx context.Context, cfg *alert.Config) error {
	digest := cfg.Digest()
	prev := ""
	li, err := n.Store.Log(ctx, api.SystemLog)
	if err != nil {
		return err
	}
	idxs, _, err := n.Store.Search(ctx, api.SystemLog, index.Filter{Action: configAction, Limit: 1, After: -1}, li.Size)
	if err != nil {
		return err
	}
	if len(idxs) == 1 {
		es, err := n.Store.ReadEntriesAt(ctx, api.SystemLog, idxs)
		if err != nil {
			return err
		}
		e, err := entry.Parse(es[0])
		if err != nil {
			return err
		}
		var ev struct {
			Metadata struct {
				Digest string `json:"digest"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(e.Event, &ev); err != nil {
			return err
		}
		prev = ev.Metadata.Digest
	}
	if prev == digest {
		return nil
	}
	var content json.RawMessage
	if red := cfg.Redacted(); json.Valid(red) {
		content = bytes.Clone(red)
	} else {
		return fmt.Errorf("alert config: redacted form is not JSON")
	}
	md := map[string]any{"digest": digest, "config": content}
	if prev != "" {
		md["previous_digest"] = prev
	}
	n.Config.Logger.Info("alert configuration changed: recorded in _system", "digest", digest, "previous", prev)
	return n.Server.RecordServerEvent(ctx, api.SystemLog, configAction, api.Target{ID: "alerts", Type: "config"}, md)
}
