package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cliEnv is a running `vellum serve` driven through Main, and an
// environment for client commands.
type cliEnv struct {
	t    *testing.T
	dir  string
	env  map[string]string
	stop func()
	addr string
	logs *bytes.Buffer // serve's stderr
}

func startCLIServer(t *testing.T) *cliEnv {
	t.Helper()
	return startCLIServerWith(t, "http")
}

// startCLIServerWith starts serve with further flags; scheme is that of
// the URL the client commands use.
func startCLIServerWith(t *testing.T, scheme string, extra ...string) *cliEnv {
	t.Helper()
	dir := t.TempDir()
	args := append(extra, testStoreArgs(t)...)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	var serveErr bytes.Buffer
	m := &Main{Stdin: strings.NewReader(""), Stdout: &bytes.Buffer{}, Stderr: &serveErr, Getenv: func(string) string { return "" },
		Ready: func(addr string) { ready <- addr }}
	done := make(chan error, 1)
	go func() {
		done <- m.Run(ctx, append([]string{"serve", "--data", filepath.Join(dir, "data"), "--listen", "127.0.0.1:0", "--name", "test.example/cli", "--log-level", "error"}, args...))
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("serve exited: %v\n%s", err, serveErr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not start")
	}
	tok, err := os.ReadFile(filepath.Join(dir, "data", "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "data", "admin.key")); fi.Mode().Perm() != 0o600 {
		t.Errorf("admin.key mode %v, want 0600", fi.Mode().Perm())
	}
	if fi, _ := os.Stat(filepath.Join(dir, "data", "server.key")); fi.Mode().Perm() != 0o600 {
		t.Errorf("server.key mode %v, want 0600", fi.Mode().Perm())
	}
	e := &cliEnv{t: t, dir: dir, addr: addr, logs: &serveErr, env: map[string]string{
		"VELLUM_URL":   scheme + "://" + addr,
		"VELLUM_KEY":   strings.TrimSpace(string(tok)),
		"VELLUM_STATE": filepath.Join(dir, "state.json"),
	}}
	e.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}
	t.Cleanup(func() {
		select {
		case <-ctx.Done():
		default:
			e.stop()
		}
	})
	return e
}

// run runs one CLI command and returns stdout, stderr and the error.
func (e *cliEnv) run(stdin string, args ...string) (string, string, error) {
	var out, errb bytes.Buffer
	m := &Main{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return e.env[k] }}
	err := m.Run(context.Background(), args)
	if err != nil {
		m.printError(err)
	}
	return out.String(), errb.String(), err
}

func (e *cliEnv) ok(stdin string, args ...string) string {
	e.t.Helper()
	out, errs, err := e.run(stdin, args...)
	if err != nil {
		e.t.Fatalf("vellum %s: %v\n%s", strings.Join(args, " "), err, errs)
	}
	return out
}

func TestCLIReadmeFlow(t *testing.T) {
	e := startCLIServer(t)
	if out := e.ok("", "logs", "create", "billing"); !strings.Contains(out, "created log billing") {
		t.Fatalf("logs create: %q", out)
	}
	receipt := e.ok(`{"action":"user.delete","actor":{"id":"alice"},"targets":[{"id":"4411","type":"user"}],"outcome":"success"}`, "append", "--log", "billing")
	rfile := filepath.Join(e.dir, "receipt.json")
	os.WriteFile(rfile, []byte(receipt), 0o644)
	if out := e.ok("", "verify", "--log", "billing", "--full"); !strings.Contains(out, "full: 1 entries of billing") {
		t.Fatalf("verify --full: %q", out)
	}
	if out := e.ok("", "verify", "--receipt", rfile); !strings.Contains(out, "receipt OK") {
		t.Fatalf("verify --receipt: %q", out)
	}
	// JSON Lines, receipts to a directory.
	lines := `{"action":"a.b","actor":{"id":"x"},"seq":1,"source":"s"}
{"action":"a.b","actor":{"id":"x"},"seq":2,"source":"s"}
`
	rdir := filepath.Join(e.dir, "receipts")
	e.ok(lines, "append", "--log", "billing", "--receipts", rdir)
	if _, err := os.Stat(filepath.Join(rdir, "billing-2.json")); err != nil {
		t.Fatal(err)
	}
	if out := e.ok("", "verify", "--receipt", filepath.Join(rdir, "billing-2.json")); !strings.Contains(out, "receipt OK") {
		t.Fatal(out)
	}
	// get --proof writes a receipt that verifies offline.
	p := e.ok("", "get", "--log", "billing", "--proof", "1")
	pfile := filepath.Join(e.dir, "p1.json")
	os.WriteFile(pfile, []byte(p), 0o644)
	e.ok("", "verify", "--receipt", pfile)
	if out := e.ok("", "checkpoint", "--log", "billing"); !strings.HasPrefix(out, "test.example/cli/billing\n3\n") {
		t.Fatalf("checkpoint: %q", out)
	}
	if out := e.ok("", "info"); !strings.Contains(out, "test.example/cli+") {
		t.Fatalf("info: %q", out)
	}
	if out := e.ok("", "verify", "--log", "billing"); !strings.Contains(out, "consistent with the trusted size 1") {
		t.Fatalf("second verify: %q", out)
	}
	if out := e.ok("", "logs", "list"); !strings.Contains(out, "billing") || !strings.Contains(out, "_system") {
		t.Fatalf("logs list: %q", out)
	}
}

func TestCLIErrors(t *testing.T) {
	e := startCLIServer(t)
	e.ok("", "logs", "create", "app")
	cases := []struct {
		name  string
		env   map[string]string
		stdin string
		args  []string
		want  []string
	}{
		{"no key", map[string]string{"VELLUM_KEY": ""}, "", []string{"logs", "list"}, []string{"vellum: error: no provisioning key", "hint: export VELLUM_KEY"}},
		{"bad token", map[string]string{"VELLUM_KEY": "vlm_nonsense"}, "", []string{"logs", "list"}, []string{"vellum: error: malformed provisioning key token", "hint:"}},
		{"unknown command", nil, "", []string{"frobnicate"}, []string{`vellum: error: unknown command "frobnicate"`, "hint:"}},
		{"missing log flag", nil, "{}", []string{"append"}, []string{"--log is required"}},
		{"invalid event", nil, `{"action":"x"}`, []string{"append", "--log", "app"}, []string{"vellum: error:", `"actor.id" is required`}},
		{"unknown log", nil, `{"action":"x","actor":{"id":"a"}}`, []string{"append", "--log", "nope"}, []string{"404", "hint:"}},
		{"bad json lines", nil, "{\"action\":\"x\",\"actor\":{\"id\":\"a\"}}\n{nope\n", []string{"append", "--log", "app"}, []string{"line 2 is not valid JSON"}},
		{"server down", map[string]string{"VELLUM_URL": "http://127.0.0.1:1"}, "", []string{"logs", "list"}, []string{"vellum: error:", "hint: is the server running?"}},
		{"bad receipt", nil, "", []string{"verify", "--receipt", "/nonexistent"}, []string{"vellum: error:", "hint:"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			saved := map[string]string{}
			for k, v := range e.env {
				saved[k] = v
			}
			for k, v := range c.env {
				e.env[k] = v
			}
			defer func() { e.env = saved }()
			_, errs, err := e.run(c.stdin, c.args...)
			if err == nil {
				t.Fatal("succeeded")
			}
			for _, w := range c.want {
				if !strings.Contains(errs, w) {
					t.Errorf("stderr %q lacks %q", errs, w)
				}
			}
		})
	}
	// Nothing was stored by the refused appends.
	if out := e.ok("", "verify", "--log", "app", "--full"); !strings.Contains(out, "full: 0 entries") {
		t.Fatalf("refused appends stored something: %q", out)
	}
}

func TestCLIInitThenServeReuses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	var errb bytes.Buffer
	m := &Main{Stdout: &bytes.Buffer{}, Stderr: &errb, Getenv: func(string) string { return "" }}
	if err := m.Run(context.Background(), []string{"init", "--data", dir, "--name", "x.example/a"}); err != nil {
		t.Fatal(err, errb.String())
	}
	tok1, _ := os.ReadFile(filepath.Join(dir, "admin.key"))
	errb.Reset()
	if err := m.Run(context.Background(), []string{"init", "--data", dir}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errb.String(), "already initialised") {
		t.Fatalf("second init: %q", errb.String())
	}
	tok2, _ := os.ReadFile(filepath.Join(dir, "admin.key"))
	if !bytes.Equal(tok1, tok2) {
		t.Fatal("admin key rewritten")
	}
	errb.Reset()
	err := m.Run(context.Background(), []string{"init", "--data", dir, "--name", "other.example"})
	if err == nil || !strings.Contains(err.Error(), "origin prefix") {
		t.Fatalf("changing the origin prefix was not refused: %v", err)
	}
}
