package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCLIKeys(t *testing.T) {
	e := startCLIServer(t)
	e.ok("", "logs", "create", "billing")
	// create --json prints the token once, in JSON, for scripts.
	out := e.ok("", "keys", "create", "--name", "billing-api", "--role", "writer", "--scope", "append:billing", "--expires", "90d", "--rate", "500/s", "--json")
	var created struct {
		Token string `json:"token"`
		Key   struct {
			ID, Status, Expires string
			Scopes              []string
		} `json:"key"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil || !strings.HasPrefix(created.Token, "vlm_"+created.Key.ID+"_") {
		t.Fatalf("keys create --json: %v %q", err, out)
	}
	if created.Key.Status != "active" || created.Key.Expires == "" || len(created.Key.Scopes) != 1 {
		t.Fatalf("created key: %+v", created.Key)
	}
	// The writer appends to billing, not elsewhere, and cannot manage keys.
	writer := map[string]string{"VELLUM_KEY": created.Token}
	e.withEnv(writer, func() {
		e.ok(`{"action":"invoice.pay","actor":{"id":"c1"}}`, "append", "--log", "billing")
		if _, errs, err := e.run("", "keys", "list"); err == nil || !strings.Contains(errs, "403") {
			t.Fatalf("writer listed keys: %v %s", err, errs)
		}
	})
	// --out writes 0600 and refuses to overwrite.
	outFile := filepath.Join(e.dir, "next.key")
	e.ok("", "keys", "rotate", created.Key.ID, "--overlap", "1h", "--out", outFile)
	if fi, err := os.Stat(outFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi, err)
	}
	if _, errs, err := e.run("", "keys", "rotate", created.Key.ID, "--out", outFile); err == nil || !strings.Contains(errs, "vellum: error:") {
		t.Fatalf("second rotation of the same key or overwrite: %v %s", err, errs)
	}
	next, _ := os.ReadFile(outFile)
	nextID := strings.TrimSpace(string(next))[4:20]
	if out := e.ok("", "keys", "show", nextID); !strings.Contains(out, "rotated from:") || !strings.Contains(out, "append:billing") {
		t.Fatalf("keys show: %q", out)
	}
	e.ok("", "keys", "update", nextID, "--rate", "10/s", "--description", "billing API, rotated")
	e.ok("", "keys", "revoke", nextID, "--reason", "drill")
	if out := e.ok("", "keys", "list"); !strings.Contains(out, "revoked") || !strings.Contains(out, "billing-api") {
		t.Fatalf("keys list: %q", out)
	}
	e.withEnv(map[string]string{"VELLUM_KEY": strings.TrimSpace(string(next))}, func() {
		if _, errs, err := e.run(`{"action":"x","actor":{"id":"a"}}`, "append", "--log", "billing"); err == nil || !strings.Contains(errs, "401") {
			t.Fatalf("revoked key appended: %s", errs)
		}
	})
	// Refusals are usage errors with hints, and nothing is recorded.
	for _, args := range [][]string{
		{"keys", "create", "--role", "writer"},
		{"keys", "create", "--name", "x"},
		{"keys", "revoke", created.Key.ID},
		{"keys", "create", "--name", "x", "--role", "writer", "--expires", "soon"},
		{"keys", "create", "--name", "x", "--role", "writer", "--scope", "delete:billing"},
		{"keys", "create", "--name", "x", "--role", "reader", "--scope", "append:billing"},
		{"keys", "create", "--name", "x", "--role", "writer", "--cidr", "10.0.0.1/8"},
	} {
		if _, errs, err := e.run("", args...); err == nil || !strings.Contains(errs, "vellum: error:") {
			t.Errorf("%v: %v %s", args, err, errs)
		}
	}
	// The whole history verifies.
	if out := e.ok("", "verify", "--log", "billing", "--full"); !strings.Contains(out, "full: 1 entries") {
		t.Fatal(out)
	}
	e.ok("", "verify", "--log", "_system", "--full")
	e.ok("", "verify", "--log", "_access", "--full")
}

func (e *cliEnv) withEnv(env map[string]string, fn func()) {
	saved := map[string]string{}
	for k, v := range e.env {
		saved[k] = v
	}
	for k, v := range env {
		e.env[k] = v
	}
	defer func() { e.env = saved }()
	fn()
}
