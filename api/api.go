// Package api holds vellum's public wire types and URL paths for HTTP API v1.
// It does no I/O. Hashes are standard base64 (as in C2SP checkpoints and
// golang.org/x/mod/sumdb/tlog); signatures are standard base64.
package api

import (
	"encoding/json"
	"regexp"
)

// Reserved log names, written by the server itself.
const (
	SystemLog = "_system"
	AccessLog = "_access"
)

// Limits of the write path.
const (
	MaxEntrySize  = 65535   // bytes of one canonical entry (fits a C2SP entry bundle's uint16 length)
	MaxBatch      = 1000    // events in one append request
	MaxBodySize   = 4 << 20 // bytes of one append request body
	EntryFormatV1 = 1       // the "v" field of every entry
)

var logNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidLogName reports whether name may be created by a user. The reserved
// names (starting with "_") are not valid user names.
func ValidLogName(name string) bool { return logNameRE.MatchString(name) }

// Reserved reports whether name is one of the server's own logs.
func Reserved(name string) bool { return name == SystemLog || name == AccessLog }

// Actor is who did the audited thing.
type Actor struct {
	ID   string `json:"id"`
	Type string `json:"type,omitempty"`
	Name string `json:"name,omitempty"`
	IP   string `json:"ip,omitempty"`
}

// Target is what the audited thing was done to.
type Target struct {
	ID   string `json:"id"`
	Type string `json:"type,omitempty"`
	Name string `json:"name,omitempty"`
}

// Event is what a producer submits. Unknown top-level fields are refused.
type Event struct {
	Time     string          `json:"time,omitempty"`
	Action   string          `json:"action"`
	Actor    Actor           `json:"actor"`
	Targets  []Target        `json:"targets,omitempty"`
	Outcome  string          `json:"outcome,omitempty"`
	Source   string          `json:"source,omitempty"`
	ID       string          `json:"id,omitempty"`
	Seq      *int64          `json:"seq,omitempty"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

// SignedEvent is one event in an append request: the event as the producer
// canonicalised it, the key that signed it and the signature.
type SignedEvent struct {
	Event json.RawMessage `json:"event"`
	KeyID string          `json:"key_id"`
	Sig   string          `json:"sig"` // base64 Ed25519 signature over the event message
}

// AppendRequest is the body of POST /v1/logs/{log}/entries.
type AppendRequest struct {
	Events []SignedEvent `json:"events"`
}

// Receipt is what an append returns for each event.
type Receipt struct {
	Log       string          `json:"log"`
	Index     int64           `json:"index"`
	LeafHash  string          `json:"leaf_hash"`
	Duplicate bool            `json:"duplicate,omitempty"` // an idempotent retry: the original event's entry
	Entry     json.RawMessage `json:"entry"`               // the canonical entry bytes (the Merkle leaf)
	Proof     string          `json:"proof"`               // c2sp.org/tlog-proof@v1 text
}

// AppendResponse is the answer to an append.
type AppendResponse struct {
	Receipts []Receipt `json:"receipts"`
}

// Entry is a stored entry as served by the API: its exact bytes (the Merkle
// leaf) plus convenience fields.
type Entry struct {
	Log      string          `json:"log"`
	Index    int64           `json:"index"`
	LeafHash string          `json:"leaf_hash"`
	Data     json.RawMessage `json:"data"` // the canonical entry bytes, verbatim
	Proof    string          `json:"proof,omitempty"`
}

// EntryList is the answer to a range read or a search.
type EntryList struct {
	Entries    []Entry `json:"entries"`
	NextCursor string  `json:"next_cursor,omitempty"` // search: the next page, if there may be one
	Checkpoint string  `json:"checkpoint,omitempty"`  // search with proof: the checkpoint every proof leads to
}

// Log describes one log.
type Log struct {
	Name       string `json:"name"`
	Origin     string `json:"origin"`
	Size       int64  `json:"size"`
	RootHash   string `json:"root_hash"`
	Created    string `json:"created,omitempty"`
	Checkpoint string `json:"checkpoint,omitempty"`
}

// LogList is the answer to GET /v1/logs.
type LogList struct {
	Logs []Log `json:"logs"`
}

// CreateLogRequest is the body of POST /v1/logs.
type CreateLogRequest struct {
	Name string `json:"name"`
}

// InclusionProof answers GET /v1/logs/{log}/proof/inclusion?index=&size=.
type InclusionProof struct {
	Index    int64    `json:"index"`
	Size     int64    `json:"size"`
	LeafHash string   `json:"leaf_hash"`
	Hashes   []string `json:"hashes"`
}

// ConsistencyProof answers GET /v1/logs/{log}/proof/consistency?old=&new=.
type ConsistencyProof struct {
	Old    int64    `json:"old"`
	New    int64    `json:"new"`
	Hashes []string `json:"hashes"`
}

// ServerInfo answers GET /v1/server.
type ServerInfo struct {
	OriginPrefix string `json:"origin_prefix"`
	VerifierKey  string `json:"verifier_key"`
	Version      string `json:"version,omitempty"`
}

// Error is the body of every error response.
type Error struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail says what went wrong, for a person and for a program.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Index   *int   `json:"index,omitempty"` // which event of a batch, when one is to blame
}

// Error codes.
const (
	CodeBadRequest   = "bad_request"
	CodeInvalidEvent = "invalid_event"
	CodeUnauthorized = "unauthorized"
	CodeForbidden    = "forbidden"
	CodeNotFound     = "not_found"
	CodeConflict     = "conflict"
	CodeTooLarge     = "too_large"
	CodeUnavailable  = "unavailable"
	CodeInternal     = "internal"
	CodeMethod       = "method_not_allowed"
	CodeUnsupported  = "unsupported_media_type"
	CodeRateLimited  = "rate_limited"
)

// Key is a provisioning key as the server describes it: public material,
// policy and lifecycle; never a secret.
type Key struct {
	ID           string   `json:"id"`
	Name         string   `json:"name,omitempty"`
	Description  string   `json:"description,omitempty"`
	PublicKey    string   `json:"public_key"` // base64 Ed25519
	Role         string   `json:"role,omitempty"`
	Scopes       []string `json:"scopes"`
	Status       string   `json:"status"` // active, revoked, expired, pending
	Created      string   `json:"created"`
	CreatedBy    string   `json:"created_by,omitempty"`
	NotBefore    string   `json:"not_before,omitempty"`
	Expires      string   `json:"expires,omitempty"`
	CIDRs        []string `json:"cidrs,omitempty"`
	Rate         string   `json:"rate,omitempty"`
	Bearer       bool     `json:"bearer,omitempty"`
	External     bool     `json:"external,omitempty"`
	RotatedFrom  string   `json:"rotated_from,omitempty"`
	RotatedTo    string   `json:"rotated_to,omitempty"`
	Revoked      string   `json:"revoked,omitempty"`
	RevokeReason string   `json:"revoke_reason,omitempty"`
	LastUsed     string   `json:"last_used,omitempty"` // since this server started
}

// KeyList answers GET /v1/keys.
type KeyList struct {
	Keys []Key `json:"keys"`
}

// KeyChange answers POST /v1/keys: the _system receipt of the lifecycle
// entry and the key as it now stands.
type KeyChange struct {
	Receipt Receipt `json:"receipt"`
	Key     Key     `json:"key"`
}

// Paths. {log} is a log name.
const (
	PathServer  = "/v1/server"
	PathLogs    = "/v1/logs"
	PathHealthz = "/healthz"
	PathKeys    = "/v1/keys"
	PathAlerts  = "/v1/alerts"
)

// AlertState is one alert as GET /v1/alerts lists it: the alert's latest
// entry in _system (the alert fields), where it is, and whether an
// operator acknowledged it after that entry.
type AlertState struct {
	ID       string          `json:"id"`
	Detector string          `json:"detector"`
	Severity string          `json:"severity"`
	Log      string          `json:"log,omitempty"`
	KeyID    string          `json:"key_id,omitempty"`
	Source   string          `json:"source,omitempty"`
	Summary  string          `json:"summary"`
	Action   string          `json:"action"`
	Since    string          `json:"since,omitempty"`
	Last     string          `json:"last,omitempty"`
	Count    int64           `json:"count"`
	Details  json.RawMessage `json:"details,omitempty"`
	Revoked  bool            `json:"revoked,omitempty"`
	Node     string          `json:"node,omitempty"`

	State    string `json:"state"`    // "open" or "acked"
	Entry    int64  `json:"entry"`    // index of its latest entry in _system
	Entries  int    `json:"entries"`  // how many entries it has in _system (among those read)
	Recorded string `json:"recorded"` // received time of its latest entry
	AckedBy  string `json:"acked_by,omitempty"`
	AckedAt  string `json:"acked_at,omitempty"`
	AckNote  string `json:"ack_note,omitempty"`
	AckEntry int64  `json:"ack_entry,omitempty"`
}

// AlertList answers GET /v1/alerts.
type AlertList struct {
	Alerts []AlertState `json:"alerts"`
	More   bool         `json:"more,omitempty"` // more matched than the limit
}

// AlertAck is the (optional) body of POST /v1/alerts/{id}/ack.
type AlertAck struct {
	Note string `json:"note"`
}

// CheckpointReport answers POST /v1/logs/{log}/checkpoint/report.
type CheckpointReport struct {
	Log        string `json:"log"`
	Size       int64  `json:"size"`    // the reported checkpoint's
	Current    int64  `json:"current"` // the log's
	Consistent bool   `json:"consistent"`
	Reason     string `json:"reason,omitempty"`
}

// LogPath is /v1/logs/{log}.
func LogPath(log string) string { return PathLogs + "/" + log }
