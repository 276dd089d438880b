// Package alert is vellum's alerting: the Alert record, the detectors that
// raise alerts, and the sinks (webhook, syslog) that deliver them.
//
// Every alert is first an entry in _system (action "alert.<detector>"),
// so alerts are as tamper-evident as the events they are about; the sinks
// are a delivery of that entry, never its only record. Delivery never
// blocks the write path: each sink has a bounded queue and its own
// goroutine, and an alert that does not fit is counted and dropped from
// that sink (it stays in _system).
package alert

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"
)

// Severities.
const (
	Critical = "critical"
	Warning  = "warning"
	Info     = "info"
)

// Detectors: the names used in alert entries ("alert.<detector>"), in the
// configuration (thresholds, auto-revoke policy) and in metrics.
const (
	Tamper       = "tamper"        // a verification failure: auditor, verify, a client's inconsistent checkpoint
	Gap          = "gap"           // a key and source's seq jumped: events sent and never recorded
	SeqRegress   = "seq_regress"   // a key and source's seq went back with different content
	Silence      = "silence"       // a source or key that usually writes has written nothing for its window
	Burst        = "burst"         // a key writes far above its own recent rate
	CIDR         = "cidr"          // a key used from outside its allowed networks
	AuthFailures = "auth_failures" // a run of failed signatures or scope refusals for one key
	Replay       = "replay"        // a replayed nonce
	RevokedUse   = "revoked_use"   // use of a revoked key
	ExpiredUse   = "expired_use"   // use of an expired or not yet valid key
	TwoNetworks  = "two_networks"  // one key used from two different networks at once
	KeyExpiring  = "key_expiring"  // a key near its expiry
	KeyUnused    = "key_unused"    // a key unused for a long time
	BroadScope   = "broad_scope"   // a key with broad scopes (append or admin on every log)
)

// Detectors lists every detector name.
var Detectors = []string{Tamper, Gap, SeqRegress, Silence, Burst, CIDR, AuthFailures,
	Replay, RevokedUse, ExpiredUse, TwoNetworks, KeyExpiring, KeyUnused, BroadScope}

// Known reports whether name is a detector.
func Known(name string) bool {
	for _, d := range Detectors {
		if d == name {
			return true
		}
	}
	return false
}

// Alert is one alert as recorded in _system and delivered to the sinks.
// Its JSON form is the webhook body and the entry's metadata.
type Alert struct {
	// ID identifies the alert across repeats: the same detector firing
	// about the same subject (log, key, source) gets the same ID, and
	// repeats within the dedupe window only raise Count and Last.
	ID       string `json:"id"`
	Detector string `json:"detector"`
	Severity string `json:"severity"`
	// Where: the subject of the alert. Empty fields do not apply.
	Log    string `json:"log,omitempty"`
	KeyID  string `json:"key_id,omitempty"`
	Source string `json:"source,omitempty"`
	// What, and what to do about it, in plain words.
	Summary string `json:"summary"`
	Action  string `json:"action"`
	// Since when: the first and the latest occurrence, and how many.
	Since time.Time `json:"since"`
	Last  time.Time `json:"last"`
	Count int64     `json:"count"`
	// Details holds detector-specific facts (addresses, seq numbers, rates).
	Details map[string]any `json:"details,omitempty"`
	// Revoked is set when the auto-revoke policy revoked KeyID for it.
	Revoked bool `json:"revoked,omitempty"`
	// Entry is the index of the alert's entry in _system, once recorded
	// (-1 before).
	Entry int64 `json:"entry"`
	// Node names the vellum node that raised it.
	Node string `json:"node,omitempty"`
}

// MakeID returns the deduplication ID for a detector and its subject.
func MakeID(detector, log, keyID, source string) string {
	h := sha256.Sum256([]byte(strings.Join([]string{detector, log, keyID, source}, "\x00")))
	return "al_" + hex.EncodeToString(h[:8])
}
