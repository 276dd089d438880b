package main

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/entry"
)

// tailBuffer is a bytes.Buffer safe for a writer and a reader in
// different goroutines.
type tailBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *tailBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *tailBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startTail runs `vellum tail args...` until the returned stop is called;
// stop returns stdout, stderr and Run's error.
func (e *cliEnv) startTail(args ...string) (out *tailBuffer, stop func() (string, string, error)) {
	out = &tailBuffer{}
	errb := &tailBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Main{Stdin: strings.NewReader(""), Stdout: out, Stderr: errb, Getenv: func(k string) string { return e.env[k] }}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, append([]string{"tail"}, args...)) }()
	return out, func() (string, string, error) {
		cancel()
		select {
		case err := <-done:
			return out.String(), errb.String(), err
		case <-time.After(30 * time.Second):
			e.t.Fatal("tail did not stop after its context was cancelled")
		}
		return "", "", nil
	}
}

// waitTailLines waits until out holds n lines.
func waitTailLines(t *testing.T, out *tailBuffer, n int) []string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		s := out.String()
		if lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n"); s != "" && len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %d lines, have %q", n, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCLITail(t *testing.T) {
	e := startCLIServer(t)
	e.ok("", "logs", "create", "app")
	e.ok(`{"action":"user.create","actor":{"id":"alice"},"targets":[{"id":"4411","type":"user"}],"outcome":"success"}
{"action":"doc.read","actor":{"id":"bob"}}
`, "append", "--log", "app")

	out, stop := e.startTail("--log", "app", "--from", "0")
	lines := waitTailLines(t, out, 2)
	// Appended while tailing.
	e.ok(`{"action":"user.delete","actor":{"id":"carol"},"targets":[{"id":"a"},{"id":"b","type":"doc"}],"outcome":"failure"}`, "append", "--log", "app")
	lines = waitTailLines(t, out, 3)
	stdout, stderr, err := stop()
	if err != nil {
		t.Fatalf("tail: %v\n%s", err, stderr)
	}
	if len(lines) != 3 || strings.Count(stdout, "\n") != 3 {
		t.Fatalf("output %q", stdout)
	}
	for i, want := range []string{
		`^0  \d{4}-\d\d-\d\dT[0-9:.]+Z  user.create  actor=alice  targets=user:4411  outcome=success  key=[0-9a-f]{16}$`,
		`^1  .*  doc.read  actor=bob  targets=-  outcome=-  key=`,
		`^2  .*  user.delete  actor=carol  targets=a,doc:b  outcome=failure  key=`,
	} {
		if !regexp.MustCompile(want).MatchString(lines[i]) {
			t.Errorf("line %d %q does not match %s", i, lines[i], want)
		}
	}
	if !strings.Contains(stderr, "resume with --from 3") {
		t.Errorf("stderr %q lacks the resume hint", stderr)
	}

	// Resuming where it stopped, with a filter and JSON Lines: only new,
	// matching entries.
	out, stop = e.startTail("--log", "app", "--from", "3", "--json", "--actor", "alice", "--action", "user.*", "--since", "1h")
	e.ok(`{"action":"user.update","actor":{"id":"bob"}}
{"action":"doc.read","actor":{"id":"alice"}}
{"action":"user.update","actor":{"id":"alice"},"metadata":{"why":"<&>"}}
`, "append", "--log", "app")
	lines = waitTailLines(t, out, 1)
	stdout, stderr, err = stop()
	if err != nil {
		t.Fatalf("tail --json: %v\n%s", err, stderr)
	}
	if strings.Count(stdout, "\n") != 1 {
		t.Fatalf("tail --json printed %q", stdout)
	}
	var got api.Entry
	if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
		t.Fatal(err)
	}
	if got.Log != "app" || got.Index != 5 || got.LeafHash != entry.LeafHash(got.Data).String() {
		t.Fatalf("JSON line %q", lines[0])
	}
	if !strings.Contains(lines[0], `"why":"<&>"`) {
		t.Errorf("entry bytes were escaped: %q", lines[0])
	}
}

func TestCLITailErrors(t *testing.T) {
	e := startCLIServer(t)
	e.ok("", "logs", "create", "app")
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"tail"}, 2, "--log is required"},
		{[]string{"tail", "--log", "app", "--from", "-3"}, 2, "bad --from"},
		{[]string{"tail", "--log", "app", "--since", "yesterday"}, 2, "bad --since"},
		{[]string{"tail", "--log", "app", "--outcome", "maybe"}, 1, "400"},
		{[]string{"tail", "--log", "nope", "--from", "0"}, 1, "404"},
	}
	for _, c := range cases {
		_, stderr, err := e.run("", c.args...)
		if err == nil || exitCode(err) != c.code || !strings.Contains(stderr, c.want) {
			t.Errorf("vellum %s: %v (exit %d), stderr %q; want exit %d and %q", strings.Join(c.args, " "), err, exitCode(err), stderr, c.code, c.want)
		}
	}
}
