package alert

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/vellum-audit/vellum/internal/ledger"
)

// recorded collects what an engine records and revokes.
type recorded struct {
	mu      sync.Mutex
	alerts  []Alert
	revoked []string
	ch      chan Alert
}

func newEngineForTest(t *testing.T, cfg *Config, now func() time.Time) (*Engine, *recorded) {
	t.Helper()
	rec := &recorded{ch: make(chan Alert, 100)}
	e := NewEngine(cfg, Deps{
		Record: func(_ context.Context, a Alert) (int64, error) {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			rec.alerts = append(rec.alerts, a)
			rec.ch <- a
			return int64(len(rec.alerts)), nil
		},
		Revoke: func(_ context.Context, keyID, alertID, reason string) error {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			rec.revoked = append(rec.revoked, keyID)
			return nil
		},
		Now: now,
	})
	ctx, cancel := context.WithCancel(context.Background())
	go e.Run(ctx)
	t.Cleanup(func() { e.Close(); cancel() })
	return e, rec
}

func (r *recorded) next(t *testing.T) Alert {
	t.Helper()
	select {
	case a := <-r.ch:
		return a
	case <-time.After(10 * time.Second):
		t.Fatal("no alert recorded")
	}
	return Alert{}
}

func TestBurst(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Thresholds.BurstFactor = 10
	cfg.Thresholds.BurstMinEvents = 50
	e, rec := newEngineForTest(t, cfg, time.Now)
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	obs := func(minute, n int) []ledger.Observation {
		out := make([]ledger.Observation, n)
		for i := range out {
			out[i] = ledger.Observation{Kind: ledger.ObsAppend, Log: "app", KeyID: "k1", Received: t0.Add(time.Duration(minute)*time.Minute + time.Duration(i)*time.Millisecond)}
		}
		return out
	}
	// Ten quiet minutes at 5 events a minute: the key's normal rate.
	for m := 0; m < 10; m++ {
		e.Observe(obs(m, 5))
	}
	// 20 in a minute: 4x, under the factor and the minimum: nothing.
	e.Observe(obs(10, 20))
	// 100 in the next: the average of the 11 minutes before is 70/11, so
	// the 64th event is past 10x it (and past the minimum of 50).
	e.Observe(obs(11, 100))
	a := rec.next(t)
	if a.Detector != Burst || a.KeyID != "k1" || a.Details["events_this_minute"] != int64(64) {
		t.Fatalf("burst alert: %+v", a)
	}
	rec.mu.Lock()
	n := len(rec.alerts)
	rec.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d alerts, want 1 (one per minute, and 20 was no burst)", n)
	}
}

func TestDedupeAndAutoRevoke(t *testing.T) {
	cfg := DefaultConfig()
	cfg.AutoRevoke.Detectors = []string{CIDR}
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e, rec := newEngineForTest(t, cfg, clock)
	addr := netip.MustParseAddr("10.0.0.1")
	e.Refused("k1", addr, RefusedCIDR, "outside")
	a := rec.next(t)
	if a.Detector != CIDR || !a.Revoked || a.Count != 1 {
		t.Fatalf("first alert: %+v", a)
	}
	// Repeats inside the window are counted, not recorded, and the key is
	// not revoked twice.
	for i := 0; i < 5; i++ {
		e.Refused("k1", addr, RefusedCIDR, "outside")
	}
	waitOpen := func(count int64) {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			for _, o := range e.Open() {
				if o.ID == a.ID && o.Count == count {
					return
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("open alert never reached count %d: %+v", count, e.Open())
	}
	waitOpen(6)
	// Past the window, it is recorded again with the running count.
	mu.Lock()
	now = now.Add(cfg.DedupeWindow.D() + time.Second)
	mu.Unlock()
	e.Refused("k1", addr, RefusedCIDR, "outside")
	b := rec.next(t)
	if b.ID != a.ID || b.Count != 7 || !b.Since.Equal(a.Since) {
		t.Fatalf("second record: %+v (first %+v)", b, a)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.revoked) != 1 || rec.revoked[0] != "k1" {
		t.Fatalf("revocations: %v, want [k1]", rec.revoked)
	}
}

func TestHygiene(t *testing.T) {
	cfg := DefaultConfig()
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	rec := &recorded{ch: make(chan Alert, 100)}
	e := NewEngine(cfg, Deps{
		Record: func(_ context.Context, a Alert) (int64, error) { rec.ch <- a; return 1, nil },
		Keys: func() []KeyInfo {
			return []KeyInfo{
				{ID: "expiring", Scopes: []string{"append:app"}, Expires: now.Add(48 * time.Hour), Created: now.Add(-time.Hour), LastUsed: now, Active: true},
				{ID: "stale", Scopes: []string{"read:app"}, Expires: now.Add(365 * 24 * time.Hour), Created: now.Add(-90 * 24 * time.Hour), LastUsed: now.Add(-60 * 24 * time.Hour), Active: true},
				{ID: "broad", Scopes: []string{"append:*"}, Created: now, LastUsed: now, Active: true},
				{ID: "fine", Scopes: []string{"append:app"}, CIDRs: []string{"10.0.0.0/8"}, Created: now, LastUsed: now, Active: true},
				{ID: "gone", Scopes: []string{"admin:*"}, Created: now.Add(-400 * 24 * time.Hour), Active: false},
			}
		},
		Now: func() time.Time { return now },
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.Run(ctx)
	defer e.Close()
	got := map[string]string{}
	for len(got) < 3 {
		select {
		case a := <-rec.ch:
			got[a.KeyID] = a.Detector
		case <-time.After(10 * time.Second):
			t.Fatalf("hygiene alerts: %v", got)
		}
	}
	want := map[string]string{"expiring": KeyExpiring, "stale": KeyUnused, "broad": BroadScope}
	for k, d := range want {
		if got[k] != d {
			t.Errorf("key %s: %q, want %q (all: %v)", k, got[k], d, got)
		}
	}
}

func TestRaiseNeverBlocks(t *testing.T) {
	// No Run: nothing drains the queue. Raise must still return.
	var drops int
	e := NewEngine(nil, Deps{Record: func(context.Context, Alert) (int64, error) { return 0, errors.New("unused") },
		OnDrop: func(string) { drops++ }})
	for i := 0; i < cap(e.q)+10; i++ {
		e.Raise(Alert{Detector: Gap, Log: "l", KeyID: "k"})
	}
	if drops != 10 {
		t.Fatalf("%d drops, want 10", drops)
	}
}
