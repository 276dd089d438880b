package alert

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/vellum-audit/vellum/internal/ledger"
)

// KeyInfo is what the hygiene detectors need to know of a key.
type KeyInfo struct {
	ID       string
	Role     string
	Scopes   []string
	CIDRs    []string
	Expires  time.Time // zero: never
	Created  time.Time
	LastUsed time.Time // zero: not since this node started
	Active   bool
}

// Deps are what the engine needs from the node it runs in.
type Deps struct {
	// Record appends the alert's entry ("alert.<detector>") to _system
	// and returns its index. Required.
	Record func(ctx context.Context, a Alert) (int64, error)
	// Revoke revokes a key by policy (a key.revoke entry in _system that
	// names the alert). Required when the config has auto-revoke detectors.
	Revoke func(ctx context.Context, keyID, alertID, reason string) error
	// Keys lists the registered keys, for the hygiene detectors.
	Keys func() []KeyInfo
	// LastWrite returns the received time of the newest entry of log
	// written with key and source (either may be empty: any); ok is false
	// if there is none. The silence detector asks it before it raises, so
	// that writes other nodes sequenced count too.
	LastWrite func(ctx context.Context, log, key, source string) (t time.Time, ok bool, err error)
	// Dispatcher delivers recorded alerts to the sinks (nil: none).
	Dispatcher *Dispatcher
	// OnAlert is told of every alert raised (recorded or deduplicated),
	// and OnDrop of every alert dropped because the engine's queue was
	// full (for metrics).
	OnAlert func(a Alert, recorded bool)
	OnDrop  func(detector string)
	Logger  *slog.Logger
	Now     func() time.Time
}

// Engine runs the detectors. Its observers (Observe, Refused, Used) are
// called on the request and commit paths: they take a mutex, update a few
// counters and return; recording, revoking and delivering happen on the
// engine's own goroutine, fed by a bounded queue.
type Engine struct {
	cfg   *Config
	deps  Deps
	start time.Time
	q     chan Alert
	stop  chan struct{}
	done  chan struct{}

	mu       sync.Mutex
	open     map[string]*state            // alert ID → its dedupe state
	failures map[string][]time.Time       // key → recent failed signatures and scope refusals
	nets     map[string]netUse            // key → the network it was last used from
	rates    map[string]*rate             // key → events per minute
	writes   map[silenceKey]*silenceState // (log, key, source) → last write, for the default window
	rules    []*ruleState
}

type state struct {
	alert    Alert
	recorded time.Time // when its last entry was written
	revoked  bool
}

type netUse struct {
	prefix netip.Prefix
	addr   netip.Addr
	at     time.Time
}

// rate counts a key's events in one-minute buckets over the last hour.
type rate struct {
	minute  int64 // the current bucket's minute (Unix time / 60)
	buckets [60]int64
	history int // minutes with a bucket filled, up to 60
	alerted int64
}

type silenceKey struct{ log, key, source string }

type silenceState struct {
	last    time.Time
	alerted bool
}

type ruleState struct {
	SilenceRule
	silenceState
}

// NewEngine returns an engine for cfg (DefaultConfig if nil). Start it with Run.
func NewEngine(cfg *Config, deps Deps) *Engine {
	if cfg == nil {
		cfg = DefaultConfig()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	e := &Engine{cfg: cfg, deps: deps, start: deps.Now(),
		q: make(chan Alert, 4096), stop: make(chan struct{}), done: make(chan struct{}),
		open: map[string]*state{}, failures: map[string][]time.Time{}, nets: map[string]netUse{},
		rates: map[string]*rate{}, writes: map[silenceKey]*silenceState{}}
	for _, r := range cfg.Silence.Expect {
		e.rules = append(e.rules, &ruleState{SilenceRule: r, silenceState: silenceState{last: e.start}})
	}
	return e
}

// Config is the engine's configuration.
func (e *Engine) Config() *Config { return e.cfg }

// Run records and delivers raised alerts and runs the periodic detectors
// (silence, key hygiene) until ctx ends or Close.
func (e *Engine) Run(ctx context.Context) {
	defer close(e.done)
	e.initRules(ctx)
	tick := time.NewTicker(e.silenceTick())
	defer tick.Stop()
	hygiene := time.NewTicker(max(e.cfg.Thresholds.HygieneInterval.D(), time.Second))
	defer hygiene.Stop()
	e.hygiene(ctx)
	for {
		select {
		case a := <-e.q:
			e.handle(ctx, a)
		case <-tick.C:
			e.silence(ctx)
		case <-hygiene.C:
			e.hygiene(ctx)
		case <-ctx.Done():
			return
		case <-e.stop:
			for {
				select {
				case a := <-e.q:
					e.handle(ctx, a)
				default:
					return
				}
			}
		}
	}
}

// Close stops Run after it has handled what is queued.
func (e *Engine) Close() {
	select {
	case <-e.stop:
	default:
		close(e.stop)
	}
	<-e.done
}

// silenceTick is how often silence is checked: a tenth of the shortest
// window, between 1 s and 1 min.
func (e *Engine) silenceTick() time.Duration {
	w := e.cfg.Silence.Default.D()
	for _, r := range e.cfg.Silence.Expect {
		if w == 0 || (r.Every.D() > 0 && r.Every.D() < w) {
			w = r.Every.D()
		}
	}
	if w <= 0 {
		return time.Minute
	}
	return min(max(w/10, time.Second), time.Minute)
}

// Raise queues an alert: it is deduplicated by ID, recorded in _system,
// counted and delivered on the engine's goroutine. It never blocks: if the
// queue is full the alert is dropped and counted (and logged).
func (e *Engine) Raise(a Alert) {
	now := e.deps.Now()
	if a.ID == "" {
		a.ID = MakeID(a.Detector, a.Log, a.KeyID, a.Source)
	}
	if a.Since.IsZero() {
		a.Since = now
	}
	if a.Last.IsZero() {
		a.Last = now
	}
	if a.Count == 0 {
		a.Count = 1
	}
	if a.Severity == "" {
		a.Severity = Warning
	}
	a.Node = e.cfg.Node
	a.Entry = -1
	select {
	case e.q <- a:
	default:
		e.deps.Logger.Error("alert queue full: alert dropped (the detectors raise faster than _system records)", "detector", a.Detector, "log", a.Log, "key", a.KeyID)
		if e.deps.OnDrop != nil {
			e.deps.OnDrop(a.Detector)
		}
	}
}

// handle deduplicates, records, revokes and delivers one raised alert.
func (e *Engine) handle(ctx context.Context, a Alert) {
	window := e.cfg.DedupeWindow.D()
	switch a.Detector {
	case KeyExpiring, KeyUnused, BroadScope:
		// Hygiene is a standing condition: on the record once a day.
		window = max(window, 24*time.Hour)
	}
	e.mu.Lock()
	st := e.open[a.ID]
	if st != nil && a.Last.Sub(st.recorded) < window {
		// A repeat inside the window: counted, not recorded again.
		st.alert.Count += a.Count
		st.alert.Last = a.Last
		st.alert.Details = a.Details
		cp := st.alert
		revoked := st.revoked
		e.mu.Unlock()
		if e.deps.OnAlert != nil {
			e.deps.OnAlert(cp, false)
		}
		if !revoked && e.autoRevoke(a) {
			e.revoke(ctx, &cp)
		}
		return
	}
	if st != nil {
		// The window has passed: record it again, with the running count.
		a.Since = st.alert.Since
		a.Count += st.alert.Count
		a.Revoked = st.revoked
	} else {
		st = &state{}
		if len(e.open) > 10000 {
			e.pruneLocked(window)
		}
		e.open[a.ID] = st
	}
	st.alert, st.recorded = a, a.Last
	e.mu.Unlock()

	if !a.Revoked && e.autoRevoke(a) {
		e.revoke(ctx, &a)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	idx, err := e.deps.Record(rctx, a)
	cancel()
	if err != nil {
		e.deps.Logger.Error("recording an alert in _system", "detector", a.Detector, "id", a.ID, "err", err)
	} else {
		a.Entry = idx
	}
	e.mu.Lock()
	st.alert.Entry = a.Entry
	e.mu.Unlock()
	e.deps.Logger.Warn("alert", "detector", a.Detector, "severity", a.Severity, "id", a.ID, "log", a.Log, "key", a.KeyID, "source", a.Source, "summary", a.Summary, "entry", a.Entry)
	if e.deps.OnAlert != nil {
		e.deps.OnAlert(a, true)
	}
	if e.deps.Dispatcher != nil {
		e.deps.Dispatcher.Send(a)
	}
}

func (e *Engine) autoRevoke(a Alert) bool {
	return a.KeyID != "" && e.deps.Revoke != nil && slices.Contains(e.cfg.AutoRevoke.Detectors, a.Detector)
}

// revoke revokes a.KeyID by policy and marks a (and its dedupe state).
func (e *Engine) revoke(ctx context.Context, a *Alert) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	reason := fmt.Sprintf("revoked by the auto-revoke policy: %s alert %s: %s", a.Detector, a.ID, a.Summary)
	if len(reason) > 1000 {
		reason = reason[:1000]
	}
	if err := e.deps.Revoke(rctx, a.KeyID, a.ID, reason); err != nil {
		e.deps.Logger.Error("auto-revoke failed", "key", a.KeyID, "alert", a.ID, "err", err)
		return
	}
	e.deps.Logger.Warn("key revoked by the auto-revoke policy", "key", a.KeyID, "alert", a.ID, "detector", a.Detector)
	a.Revoked = true
	a.Action = "The key was revoked automatically (see the key.revoke entry in _system). " + a.Action
	e.mu.Lock()
	// Every open alert about this key: no second revocation.
	for _, st := range e.open {
		if st.alert.KeyID == a.KeyID {
			st.revoked = true
		}
	}
	e.mu.Unlock()
}

func (e *Engine) pruneLocked(window time.Duration) {
	now := e.deps.Now()
	for id, st := range e.open {
		if now.Sub(st.alert.Last) > window {
			delete(e.open, id)
		}
	}
}

// Open returns the alerts this engine raised that are inside their dedupe
// window, newest first.
func (e *Engine) Open() []Alert {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Alert, 0, len(e.open))
	for _, st := range e.open {
		out = append(out, st.alert)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Last.After(out[j].Last) })
	return out
}

// Observe takes what the sequencer recorded (ledger.Config.Observe): seq
// gaps and regressions, bursts, and writes for the silence detector.
func (e *Engine) Observe(obs []ledger.Observation) {
	var raise []Alert
	e.mu.Lock()
	for _, o := range obs {
		if o.KeyID == "" || o.KeyID == "server" || o.Log == "_access" || o.Log == "_system" {
			continue
		}
		switch o.Kind {
		case ledger.ObsAppend:
			e.wroteLocked(o)
			if a, ok := e.countLocked(o); ok {
				raise = append(raise, a)
			}
		case ledger.ObsGap:
			raise = append(raise, Alert{Detector: Gap, Severity: Warning, Log: o.Log, KeyID: o.KeyID, Source: o.Source, Since: o.Received, Last: o.Received,
				Summary: fmt.Sprintf("events are missing: key %s, source %q jumped from seq %d to %d on log %s (%d events sent and never recorded)",
					o.KeyID, o.Source, o.LastSeq, o.Seq, o.Log, o.Seq-o.LastSeq-1),
				Action:  "Check the producer's outbox and its retries for the missing seq numbers; events that were sent and lost never reached the log.",
				Details: map[string]any{"last_seq": o.LastSeq, "seq": o.Seq, "missing": o.Seq - o.LastSeq - 1, "index": o.Index}})
		case ledger.ObsRegress:
			d := map[string]any{"seq": o.Seq}
			what := fmt.Sprintf("seq %d was already recorded with different content", o.Seq)
			if o.LastSeq >= 0 {
				d["last_seq"] = o.LastSeq
				what = fmt.Sprintf("seq %d is not above the last recorded seq %d, with new content", o.Seq, o.LastSeq)
			}
			if o.Index >= 0 {
				d["recorded_at"] = o.Index
			}
			raise = append(raise, Alert{Detector: SeqRegress, Severity: Critical, Log: o.Log, KeyID: o.KeyID, Source: o.Source, Since: o.Received, Last: o.Received,
				Summary: fmt.Sprintf("seq went backwards: key %s, source %q on log %s: %s (refused)", o.KeyID, o.Source, o.Log, what),
				Action:  "A producer replays or rewrites history: find who holds this key; if it is not the producer's own restart bug, revoke the key.",
				Details: d})
		}
	}
	e.mu.Unlock()
	for _, a := range raise {
		e.Raise(a)
	}
}

// wroteLocked notes a write for the silence detector.
func (e *Engine) wroteLocked(o ledger.Observation) {
	for _, r := range e.rules {
		if r.Log == o.Log && (r.Key == "" || r.Key == o.KeyID) && (r.Source == "" || r.Source == o.Source) {
			r.last, r.alerted = o.Received, false
		}
	}
	if e.cfg.Silence.Default.D() <= 0 {
		return
	}
	k := silenceKey{o.Log, o.KeyID, o.Source}
	if st := e.writes[k]; st != nil {
		st.last, st.alerted = o.Received, false
		return
	}
	if len(e.writes) >= 100000 {
		return // bounded: new pairs are not tracked past this
	}
	e.writes[k] = &silenceState{last: o.Received}
}

// countLocked counts an event for the burst detector: it fires when the
// key's events in the current minute pass BurstMinEvents and BurstFactor
// times its average over the previous minutes (at least 5 of them).
func (e *Engine) countLocked(o ledger.Observation) (Alert, bool) {
	t := e.cfg.Thresholds
	if t.BurstFactor <= 0 {
		return Alert{}, false
	}
	r := e.rates[o.KeyID]
	if r == nil {
		if len(e.rates) >= 100000 {
			return Alert{}, false
		}
		r = &rate{minute: o.Received.Unix() / 60}
		e.rates[o.KeyID] = r
	}
	m := o.Received.Unix() / 60
	for r.minute < m {
		r.minute++
		r.history = min(r.history+1, 60)
		r.buckets[r.minute%60] = 0
		if m-r.minute > 60 {
			r.minute = m - 60
		}
	}
	r.buckets[m%60]++
	cur := r.buckets[m%60]
	if r.history < 5 || cur < int64(t.BurstMinEvents) || r.alerted == m {
		return Alert{}, false
	}
	var sum int64
	for i := int64(1); i <= int64(r.history); i++ {
		sum += r.buckets[(m-i+60)%60]
	}
	avg := float64(sum) / float64(r.history)
	if float64(cur) < t.BurstFactor*max(avg, 1) {
		return Alert{}, false
	}
	r.alerted = m
	return Alert{Detector: Burst, Severity: Warning, Log: o.Log, KeyID: o.KeyID, Since: o.Received, Last: o.Received,
		Summary: fmt.Sprintf("key %s wrote %d events this minute, %.0f times its average of %.1f per minute over the last %d minutes", o.KeyID, cur, float64(cur)/max(avg, 1), avg, r.history),
		Action:  "Check that the key's owner expects this volume; a stolen key flooding the log looks like this. Revoke it if not.",
		Details: map[string]any{"events_this_minute": cur, "average_per_minute": avg, "minutes": r.history}}, true
}

// Refusal classes (Refused's class): the server's refusal reasons.
const (
	RefusedCIDR      = "cidr"
	RefusedReplay    = "replay"
	RefusedSignature = "bad_signature"
	RefusedScope     = "scope"
	RefusedRevoked   = "revoked"
	RefusedExpired   = "expired"
)

// Refused takes a refused request made with a registered key (class is
// one of the Refused* constants; others are ignored).
func (e *Engine) Refused(keyID string, remote netip.Addr, class, reason string) {
	if keyID == "" {
		return
	}
	now := e.deps.Now()
	d := map[string]any{"address": remote.String(), "reason": reason}
	switch class {
	case RefusedCIDR:
		e.Raise(Alert{Detector: CIDR, Severity: Critical, KeyID: keyID, Details: d,
			Summary: fmt.Sprintf("key %s was used from %s, outside its allowed networks (a valid signature: whoever sent it holds the key)", keyID, remote),
			Action:  "Treat the key as stolen: revoke it (vellum keys revoke), issue a new one to its owner and find where the secret leaked."})
	case RefusedReplay:
		e.Raise(Alert{Detector: Replay, Severity: Critical, KeyID: keyID, Details: d,
			Summary: fmt.Sprintf("a signed request of key %s was replayed from %s (a nonce seen before)", keyID, remote),
			Action:  "Someone captured and resent a request: revoke the key if it was not a client's own retry bug, and check the network path for interception."})
	case RefusedRevoked:
		e.Raise(Alert{Detector: RevokedUse, Severity: Critical, KeyID: keyID, Details: d,
			Summary: fmt.Sprintf("revoked key %s is still being used, from %s", keyID, remote),
			Action:  "Find the client still holding the revoked key and stop it; if the key was revoked because it was stolen, this is the thief."})
	case RefusedExpired:
		e.Raise(Alert{Detector: ExpiredUse, Severity: Warning, KeyID: keyID, Details: d,
			Summary: fmt.Sprintf("expired or not yet valid key %s was used, from %s", keyID, remote),
			Action:  "Give the client its successor key (vellum keys rotate) or find why it still holds this one."})
	case RefusedSignature, RefusedScope:
		t := e.cfg.Thresholds
		if t.AuthFailures <= 0 {
			return
		}
		window := t.AuthFailuresWindow.D()
		e.mu.Lock()
		fs := e.failures[keyID]
		i := 0
		for i < len(fs) && now.Sub(fs[i]) > window {
			i++
		}
		fs = append(fs[i:], now)
		if len(fs) > t.AuthFailures {
			fs = fs[len(fs)-t.AuthFailures:]
		}
		fire := len(fs) >= t.AuthFailures
		if fire {
			fs = nil
		}
		if len(e.failures) < 100000 || e.failures[keyID] != nil {
			e.failures[keyID] = fs
		}
		e.mu.Unlock()
		if fire {
			d["failures"] = t.AuthFailures
			d["window"] = window.String()
			e.Raise(Alert{Detector: AuthFailures, Severity: Warning, KeyID: keyID, Details: d,
				Summary: fmt.Sprintf("%d failed signatures or scope refusals for key %s within %s, the last from %s", t.AuthFailures, keyID, window, remote),
				Action:  "Someone is probing with this key id, or a client is misconfigured: check the refusals in _access (vellum query --log _access --key ...)."})
		}
	}
}

// Used takes an authenticated request: the two-networks detector.
func (e *Engine) Used(keyID string, remote netip.Addr) {
	t := e.cfg.Thresholds
	window := t.TwoNetworksWindow.D()
	if window <= 0 || !remote.IsValid() {
		return
	}
	bits := t.TwoNetworksPrefixV4
	if !remote.Is4() {
		bits = t.TwoNetworksPrefixV6
	}
	p, err := remote.Prefix(bits)
	if err != nil {
		return
	}
	now := e.deps.Now()
	e.mu.Lock()
	prev, ok := e.nets[keyID]
	if ok || len(e.nets) < 100000 {
		e.nets[keyID] = netUse{prefix: p, addr: remote, at: now}
	}
	e.mu.Unlock()
	if ok && prev.prefix != p && now.Sub(prev.at) <= window {
		e.Raise(Alert{Detector: TwoNetworks, Severity: Critical, KeyID: keyID,
			Details: map[string]any{"networks": []string{prev.prefix.String(), p.String()}, "addresses": []string{prev.addr.String(), remote.String()}, "within": now.Sub(prev.at).Round(time.Millisecond).String()},
			Summary: fmt.Sprintf("key %s was used from two networks within %s: %s and %s", keyID, now.Sub(prev.at).Round(time.Millisecond), prev.addr, remote),
			Action:  "One key, two places at once: unless the client moved, a copy of the key is in someone else's hands. Revoke it and reissue."})
	}
}

// initRules starts each explicit silence rule from the newest write
// storage holds for it, so a restart does not reset the clock.
func (e *Engine) initRules(ctx context.Context) {
	if e.deps.LastWrite == nil {
		return
	}
	for _, r := range e.rules {
		t, ok, err := e.deps.LastWrite(ctx, r.Log, r.Key, r.Source)
		if err != nil || !ok {
			continue
		}
		e.mu.Lock()
		if t.After(r.last) || r.last.Equal(e.start) {
			r.last = t
		}
		e.mu.Unlock()
	}
}

// silence raises an alert for every source or key silent past its window.
func (e *Engine) silence(ctx context.Context) {
	now := e.deps.Now()
	type due struct {
		log, key, source string
		last             time.Time
		every            time.Duration
		st               *silenceState
	}
	var ds []due
	e.mu.Lock()
	for _, r := range e.rules {
		if !r.alerted && r.Every.D() > 0 && now.Sub(r.last) > r.Every.D() {
			ds = append(ds, due{r.Log, r.Key, r.Source, r.last, r.Every.D(), &r.silenceState})
		}
	}
	if w := e.cfg.Silence.Default.D(); w > 0 {
		for k, st := range e.writes {
			if !st.alerted && now.Sub(st.last) > w {
				ds = append(ds, due{k.log, k.key, k.source, st.last, w, st})
			}
		}
	}
	e.mu.Unlock()
	for _, d := range ds {
		last := d.last
		if e.deps.LastWrite != nil {
			// Other nodes may have sequenced writes this one did not see.
			t, ok, err := e.deps.LastWrite(ctx, d.log, d.key, d.source)
			if err != nil {
				e.deps.Logger.Warn("silence detector: reading the last write", "log", d.log, "err", err)
				continue
			}
			if ok && t.After(last) {
				last = t
			}
		}
		e.mu.Lock()
		if last.After(d.st.last) {
			d.st.last = last
		}
		fire := !d.st.alerted && now.Sub(d.st.last) > d.every
		if fire {
			d.st.alerted = true
		}
		e.mu.Unlock()
		if !fire {
			continue
		}
		who := "log " + d.log
		if d.key != "" {
			who += ", key " + d.key
		}
		if d.source != "" {
			who += fmt.Sprintf(", source %q", d.source)
		}
		lastS := "never since this node started"
		if !d.st.last.Equal(e.start) {
			lastS = d.st.last.UTC().Format(time.RFC3339)
		}
		e.Raise(Alert{Detector: Silence, Severity: Warning, Log: d.log, KeyID: d.key, Source: d.source, Since: d.st.last.Add(d.every), Last: now,
			Summary: fmt.Sprintf("%s has written nothing for %s (expected at least every %s; last write: %s)", who, now.Sub(d.st.last).Round(time.Second), d.every, lastS),
			Action:  "Check that the producer is running and can reach vellum (its own logs, its outbox, network, key validity); events it produces meanwhile are not on the record.",
			Details: map[string]any{"expected_every": d.every.String(), "last_write": d.st.last.UTC().Format(time.RFC3339Nano)}})
	}
}

// hygiene raises alerts for keys near expiry, unused for long, or with
// broad scopes and no expiry.
func (e *Engine) hygiene(ctx context.Context) {
	if e.deps.Keys == nil {
		return
	}
	t := e.cfg.Thresholds
	now := e.deps.Now()
	for _, k := range e.deps.Keys() {
		if !k.Active || ctx.Err() != nil {
			continue
		}
		if t.KeyExpiring.D() > 0 && !k.Expires.IsZero() && k.Expires.Sub(now) < t.KeyExpiring.D() {
			e.Raise(Alert{Detector: KeyExpiring, Severity: Info, KeyID: k.ID,
				Summary: fmt.Sprintf("key %s expires at %s, in %s", k.ID, k.Expires.UTC().Format(time.RFC3339), k.Expires.Sub(now).Round(time.Minute)),
				Action:  "Rotate it before it expires (vellum keys rotate): its successor works at once and the old key keeps working for the overlap.",
				Details: map[string]any{"expires": k.Expires.UTC().Format(time.RFC3339)}})
		}
		if t.KeyUnused.D() > 0 {
			// Last use as this node knows it: its own requests since it
			// started, else the key's creation or the node's start.
			last := k.LastUsed
			if last.IsZero() {
				last = k.Created
				if e.start.After(last) {
					last = e.start
				}
			}
			if now.Sub(last) > t.KeyUnused.D() {
				e.Raise(Alert{Detector: KeyUnused, Severity: Info, KeyID: k.ID,
					Summary: fmt.Sprintf("key %s has not been used for %s", k.ID, now.Sub(last).Round(time.Hour)),
					Action:  "An unused credential is risk without benefit: revoke it unless something still needs it.",
					Details: map[string]any{"last_used": last.UTC().Format(time.RFC3339)}})
			}
		}
		if broad(k) {
			e.Raise(Alert{Detector: BroadScope, Severity: Info, KeyID: k.ID,
				Summary: fmt.Sprintf("key %s has broad scopes %v with no expiry and no network restriction", k.ID, k.Scopes),
				Action:  "Narrow it: scopes to the logs it writes, an expiry, and the networks it is used from (vellum keys update).",
				Details: map[string]any{"scopes": k.Scopes}})
		}
	}
}

// broad reports a key that may write or administer every log, with no
// expiry and no CIDR restriction.
func broad(k KeyInfo) bool {
	if !k.Expires.IsZero() || len(k.CIDRs) > 0 {
		return false
	}
	for _, s := range k.Scopes {
		if s == "admin:*" || s == "append:*" {
			return true
		}
	}
	return false
}
