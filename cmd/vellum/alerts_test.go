package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCLIAlerts: serve with --alerts-config and --expect-every, an event
// stream with a seq gap, then vellum alerts list and ack, and the errors a
// user meets.
func TestCLIAlerts(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "alerts.toml")
	if err := os.WriteFile(conf, []byte("node = \"cli-node\"\n[thresholds]\nauth_failures = 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startCLIServerWith(t, "http", "--alerts-config", conf, "--expect-every", "1h")
	e.ok("", "logs", "create", "app")
	e.ok(`{"action":"a.b","actor":{"id":"x"},"outcome":"success","source":"s1","seq":1}`, "append", "--log", "app")
	e.ok(`{"action":"a.b","actor":{"id":"x"},"outcome":"success","source":"s1","seq":5}`, "append", "--log", "app")
	var id string
	deadline := time.Now().Add(30 * time.Second)
	for id == "" && time.Now().Before(deadline) {
		out := e.ok("", "alerts", "list", "--detector", "gap", "--json")
		var l struct {
			Alerts []struct {
				ID, Detector, Node, State string
			} `json:"alerts"`
		}
		if err := json.Unmarshal([]byte(out), &l); err != nil {
			t.Fatalf("alerts list --json: %v: %q", err, out)
		}
		for _, a := range l.Alerts {
			if a.Detector == "gap" && a.Node == "cli-node" && a.State == "open" {
				id = a.ID
			}
		}
		if id == "" {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if id == "" {
		t.Fatal("no gap alert listed")
	}
	if out := e.ok("", "alerts", "list"); !strings.Contains(out, id) || !strings.Contains(out, "SEVERITY") || !strings.Contains(out, "jumped from seq 1 to 5") {
		t.Errorf("alerts list table:\n%s", out)
	}
	if out := e.ok("", "alerts", "ack", id, "--note", "producer outbox replayed"); !strings.Contains(out, "acknowledged alert "+id) {
		t.Errorf("alerts ack: %q", out)
	}
	if out := e.ok("", "alerts", "list", "--state", "acked"); !strings.Contains(out, id) {
		t.Errorf("acked list lacks %s:\n%s", id, out)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"alerts"}, "needs a subcommand"},
		{[]string{"alerts", "mute"}, "unknown alerts subcommand"},
		{[]string{"alerts", "list", "--state", "closed"}, "state must be open, acked or all"},
		{[]string{"alerts", "list", "--detector", "nope"}, "unknown detector"},
		{[]string{"alerts", "list", "--limit", "0"}, "bad --limit"},
		{[]string{"alerts", "ack"}, "exactly one alert id"},
		{[]string{"alerts", "ack", "al_ffffffffffffffff"}, "no alert"},
	} {
		_, errs, err := e.run("", c.args...)
		if err == nil || !strings.Contains(errs, "vellum: error:") || !strings.Contains(errs, c.want) {
			t.Errorf("vellum %s: err %v, stderr %q, want %q", strings.Join(c.args, " "), err, errs, c.want)
		}
	}
}

// TestServeBadAlertsConfig: a config file with a mistake stops serve with
// an error naming it, before anything listens.
func TestServeBadAlertsConfig(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "alerts.toml")
	os.WriteFile(conf, []byte("[thresholds]\nburst_factr = 3\n"), 0o600)
	for _, args := range [][]string{
		{"--alerts-config", conf},
		{"--alerts-config", filepath.Join(dir, "missing.toml")},
		{"--expect-every", "soon"},
	} {
		var errb bytes.Buffer
		m := &Main{Stdin: strings.NewReader(""), Stdout: &bytes.Buffer{}, Stderr: &errb, Getenv: func(string) string { return "" },
			Ready: func(string) { t.Errorf("serve %v started", args) }}
		err := m.Run(context.Background(), append([]string{"serve", "--data", filepath.Join(dir, "data"), "--listen", "127.0.0.1:0"}, args...))
		if err == nil {
			t.Fatalf("serve %v: no error", args)
		}
		m.printError(err)
		if !strings.Contains(errb.String(), "vellum: error:") || !strings.Contains(errb.String(), "hint:") {
			t.Errorf("serve %v: %q", args, errb.String())
		}
		if strings.Contains(args[1], "alerts.toml") && !strings.Contains(errb.String(), "burst_factr") {
			t.Errorf("error does not name the unknown key: %q", errb.String())
		}
	}
}
