package jcs

import "testing"

// benchEvent is a realistic audit event of about 1 KB, deliberately not in
// canonical order and with some whitespace and escapes.
const benchEvent = `{
  "version": 1,
  "id": "01J9ZK3Q7X8V4M2N6P0R5T1W3Y",
  "time": "2025-11-22T03:14:15.926535Z",
  "action": "document.permission.update",
  "outcome": "success",
  "actor": {
    "type": "user",
    "id": "usr_8f14e45fceea167a5a36dedd4bea2543",
    "email": "jane.doe@example.com",
    "display_name": "Jane Doe",
    "ip": "203.0.113.42",
    "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "session": {"id": "ses_c9f0f895fb98ab9159f51fd0297e236d", "mfa": true, "auth_time": 1763780055}
  },
  "targets": [
    {"type": "document", "id": "doc_45c48cce2e2d7fbdea1afc51c7c6ad26", "name": "Q3 board deck \u2014 final.pdf"},
    {"type": "group", "id": "grp_d3d9446802a44259755d38e6d163e820", "name": "Finance \/ Reporting"}
  ],
  "tenant": "acme-corp",
  "request_id": "req_6512bd43d9caa6e02c990b0a82652dca",
  "metadata": {
    "permission": {"before": "viewer", "after": "editor"},
    "reason": "Quarterly review: grant \"edit\" to finance leads",
    "ticket": "FIN-2291",
    "tags": ["finance", "q3", "board", "sensitive"],
    "geo": {"country": "FR", "city": "Montpellier", "lat": 43.6108, "lon": 3.8767},
    "risk_score": 0.125,
    "approvals": [
      {"by": "usr_c20ad4d76fe97759aa27a0c99bff6710", "at": "2025-11-21T18:02:00Z", "level": 2},
      {"by": "usr_c51ce410c124a10e0db5e4b97fc2af39", "at": "2025-11-21T19:45:30Z", "level": 3}
    ],
    "dry_run": false,
    "previous_event": null
  }
}`

func BenchmarkCanonicalize(b *testing.B) {
	in := []byte(benchEvent)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Canonicalize(in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCanonicalizeCanonical measures the common re-verification case:
// input already canonical, so no member needs reordering.
func BenchmarkCanonicalizeCanonical(b *testing.B) {
	in, err := Canonicalize([]byte(benchEvent))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Canonicalize(in); err != nil {
			b.Fatal(err)
		}
	}
}
