package keys

import (
	"encoding/json"
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestAllows(t *testing.T) {
	cases := []struct {
		name   string
		scopes []string
		op     string
		log    string
		want   bool
	}{
		{"exact append", []string{"append:billing"}, OpAppend, "billing", true},
		{"exact other log", []string{"append:billing"}, OpAppend, "billing2", false},
		{"append is not read", []string{"append:billing"}, OpRead, "billing", false},
		{"glob", []string{"read:tenant-*"}, OpRead, "tenant-42", true},
		{"glob miss", []string{"read:tenant-*"}, OpRead, "tenants", false},
		{"star does not reach _system", []string{"read:*"}, OpRead, "_system", false},
		{"explicit reserved", []string{"read:_system"}, OpRead, "_system", true},
		{"auditor underscore glob", []string{"read:_*"}, OpRead, "_access", true},
		{"admin reaches everything", []string{"admin:*"}, OpRead, "_access", true},
		{"admin append", []string{"admin:*"}, OpAppend, "x", true},
		{"scoped admin", []string{"admin:team-*"}, OpAppend, "team-a", true},
		{"scoped admin miss", []string{"admin:team-*"}, OpAppend, "other", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k := &Key{Spec: Spec{Scopes: c.scopes}}
			if got := k.Allows(c.op, c.log); got != c.want {
				t.Fatalf("Allows(%s, %s) = %v", c.op, c.log, got)
			}
		})
	}
	if (&Key{Spec: Spec{Scopes: []string{"admin:team-*"}}}).IsAdmin() {
		t.Fatal("a scoped admin must not manage keys")
	}
}

func TestParseCIDRs(t *testing.T) {
	ps, err := ParseCIDRs([]string{"10.0.0.0/8", "192.168.1.7", "2001:db8::/32"})
	if err != nil || len(ps) != 3 {
		t.Fatal(ps, err)
	}
	k := &Key{Spec: Spec{CIDRs: []string{"10.0.0.0/8", "::1"}}}
	for addr, want := range map[string]bool{"10.1.2.3": true, "11.0.0.1": false, "::1": true, "::ffff:10.0.0.1": true, "127.0.0.1": false} {
		if got := k.AllowsAddr(netip.MustParseAddr(addr)); got != want {
			t.Errorf("%s: %v", addr, got)
		}
	}
	for _, bad := range []string{"10.0.0.1/8", "nonsense", "10.0.0.0/33", ""} {
		if _, err := ParseCIDRs([]string{bad}); !errors.Is(err, ErrInvalidRecord) {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]float64{"200/s": 200, "60/m": 1, "3600/h": 1, "": 0} {
		got, _, err := ParseRate(in)
		if err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	for _, bad := range []string{"0/s", "-1/s", "1/d", "abc", "1", "1/", "99999999999/s"} {
		if _, _, err := ParseRate(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func mustSpec(t *testing.T, role string, scopes []string) (Spec, *Token) {
	t.Helper()
	tok, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if scopes == nil {
		scopes = RoleScopes[role]
	}
	return Spec{ID: tok.ID(), Name: role, PublicKey: tok.PublicKey(), Role: role, Scopes: scopes}, tok
}

func md(t *testing.T, v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRegistryLifecycle(t *testing.T) {
	r := NewRegistry()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	admin, _ := mustSpec(t, RoleAdmin, nil)
	writer, _ := mustSpec(t, RoleWriter, []string{"append:app"})
	other, _ := mustSpec(t, RoleWriter, nil)
	step := func(i int, signer, action string, meta any) error {
		return r.Apply(Event{Index: int64(i), Received: t0.Add(time.Duration(i) * time.Minute), Signer: signer, Action: action, Metadata: md(t, meta)})
	}
	// Genesis must be a self-registered admin.
	if err := step(0, writer.ID, ActionKeyCreate, CreateRecord{Key: writer}); err == nil {
		t.Fatal("non-admin genesis accepted")
	}
	if err := step(0, admin.ID, ActionKeyCreate, CreateRecord{Key: admin}); err != nil {
		t.Fatal(err)
	}
	if err := step(1, writer.ID, ActionKeyCreate, CreateRecord{Key: other}); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("unknown signer: %v", err)
	}
	if err := step(1, admin.ID, ActionKeyCreate, CreateRecord{Key: writer}); err != nil {
		t.Fatal(err)
	}
	if err := step(2, writer.ID, ActionKeyCreate, CreateRecord{Key: other}); !errors.Is(err, ErrScope) {
		t.Fatalf("writer created a key: %v", err)
	}
	if err := step(2, admin.ID, ActionKeyCreate, CreateRecord{Key: writer}); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate id: %v", err)
	}
	rate := "10/s"
	if err := step(3, admin.ID, ActionKeyUpdate, UpdateRecord{KeyID: writer.ID, Rate: &rate, Expires: t0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := step(4, admin.ID, ActionKeyUpdate, UpdateRecord{KeyID: writer.ID, Expires: t0.Add(2 * time.Hour)}); !errors.Is(err, ErrInvalidRecord) {
		t.Fatalf("longer expiry accepted: %v", err)
	}
	// History: at minute 2 the writer had no rate; at minute 5 it has.
	k2, _ := r.At(writer.ID, t0.Add(2*time.Minute))
	k5, _ := r.At(writer.ID, t0.Add(5*time.Minute))
	if k2.Rate != "" || k5.Rate != "10/s" {
		t.Fatalf("history: %q %q", k2.Rate, k5.Rate)
	}
	succ, _ := mustSpec(t, RoleWriter, []string{"append:app"})
	succ.RotatedFrom = writer.ID
	if err := step(5, admin.ID, ActionKeyRotate, RotateRecord{Key: succ, OldExpires: t0.Add(30 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	old, _ := r.At(writer.ID, t0.Add(31*time.Minute))
	if old.ActiveAt(t0.Add(31*time.Minute)) == nil || old.RotatedTo != succ.ID {
		t.Fatal("old key still active after the overlap")
	}
	if err := step(40, ServerSigner, ActionKeyExpire, ExpireRecord{KeyID: writer.ID}); err != nil {
		t.Fatal(err)
	}
	if got := r.DueExpiry(t0.Add(2 * time.Hour)); len(got) != 0 {
		t.Fatalf("due after recording: %v", got)
	}
	// The server signs no lifecycle change but expiry and a policy
	// revocation (one that names its alert).
	if err := step(41, ServerSigner, ActionKeyRevoke, RevokeRecord{KeyID: other.ID, Reason: "no alert named"}); !errors.Is(err, ErrScope) {
		t.Fatalf("server revocation without an alert: %v", err)
	}
	if err := step(41, ServerSigner, ActionKeyRevoke, RevokeRecord{KeyID: other.ID, Reason: "policy", Alert: "al_1"}); !errors.Is(err, ErrNoSuchKey) {
		t.Fatalf("policy revocation should pass the signer check and fail on the unknown key: %v", err)
	}
	if err := step(41, ServerSigner, ActionKeyUpdate, UpdateRecord{KeyID: succ.ID, Rate: &rate}); !errors.Is(err, ErrScope) {
		t.Fatalf("server update: %v", err)
	}
	if err := step(41, admin.ID, ActionKeyRevoke, RevokeRecord{KeyID: succ.ID}); !errors.Is(err, ErrInvalidRecord) {
		t.Fatalf("revocation without a reason: %v", err)
	}
	if err := step(41, admin.ID, ActionKeyRevoke, RevokeRecord{KeyID: succ.ID, Reason: "laptop stolen"}); err != nil {
		t.Fatal(err)
	}
	k, _ := r.At(succ.ID, t0.Add(40*time.Minute))
	if k.ActiveAt(t0.Add(40*time.Minute)) != nil {
		t.Fatal("revocation reached back in time")
	}
	if k.ActiveAt(t0.Add(41*time.Minute)) == nil {
		t.Fatal("revoked key active")
	}
	if err := step(42, admin.ID, ActionKeyRevoke, RevokeRecord{KeyID: succ.ID, Reason: "again"}); !errors.Is(err, ErrConflict) {
		t.Fatalf("double revoke: %v", err)
	}
	if err := step(43, admin.ID, ActionKeyExpire, ExpireRecord{KeyID: succ.ID}); !errors.Is(err, ErrScope) {
		t.Fatalf("expiry signed by a key: %v", err)
	}
}

func FuzzParseScope(f *testing.F) {
	for _, s := range []string{"append:billing", "read:tenant-*", "admin:*", "read:[a-", "x:y", ":", "read:_*"} {
		f.Add(s, "billing")
	}
	f.Fuzz(func(t *testing.T, scope, log string) {
		sc, err := ParseScope(scope)
		if err != nil {
			return
		}
		if sc.Op+":"+sc.Pattern != scope {
			t.Fatalf("scope does not round-trip: %q", scope)
		}
		k := &Key{Spec: Spec{Scopes: []string{scope}}}
		_ = k.Allows(OpRead, log) // must not panic
	})
}

func FuzzParseCIDRs(f *testing.F) {
	f.Add("10.0.0.0/8,::1,192.168.0.0/16")
	f.Add("1.2.3.4/33")
	f.Fuzz(func(t *testing.T, list string) {
		var items []string
		start := 0
		for i := 0; i <= len(list); i++ {
			if i == len(list) || list[i] == ',' {
				items = append(items, list[start:i])
				start = i + 1
			}
		}
		ps, err := ParseCIDRs(items)
		if err != nil {
			return
		}
		for _, p := range ps {
			if !p.IsValid() || p != p.Masked() {
				t.Fatalf("bad prefix accepted: %v", p)
			}
		}
	})
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"200/s", "1/h", "0/s", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, b, err := ParseRate(s)
		if err == nil && s != "" && (r <= 0 || b < 1) {
			t.Fatalf("%q: rate %v burst %d", s, r, b)
		}
	})
}
