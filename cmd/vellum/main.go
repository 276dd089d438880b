// Command vellum is the vellum server, its CLI and its offline verifier.
//
// Run `vellum help` for the commands. Client commands read the server URL
// from VELLUM_URL (default http://127.0.0.1:7070) and the provisioning key
// token from VELLUM_KEY or --key-file; secrets are never taken from flags.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m := &Main{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
	if err := m.Run(ctx, os.Args[1:]); err != nil {
		m.printError(err)
		os.Exit(exitCode(err))
	}
}

// Main is one invocation of the vellum command; tests drive it directly.
type Main struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// Ready, if set, is called by serve once it listens, with its address.
	Ready func(addr string)
}

// syncWriter serialises the writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// userError is an error with a hint for the person at the terminal.
type userError struct {
	msg, hint string
	code      int
}

func (e *userError) Error() string { return e.msg }

func errorf(hint, format string, args ...any) error {
	return &userError{msg: fmt.Sprintf(format, args...), hint: hint, code: 1}
}

func usageError(hint, format string, args ...any) error {
	return &userError{msg: fmt.Sprintf(format, args...), hint: hint, code: 2}
}

func exitCode(err error) int {
	var ue *userError
	if errors.As(err, &ue) {
		return ue.code
	}
	return 1
}

func (m *Main) printError(err error) {
	fmt.Fprintf(m.Stderr, "vellum: error: %v\n", err)
	var ue *userError
	if errors.As(err, &ue) && ue.hint != "" {
		fmt.Fprintf(m.Stderr, "hint: %s\n", ue.hint)
	} else if h := hintFor(err); h != "" {
		fmt.Fprintf(m.Stderr, "hint: %s\n", h)
	}
}

const usage = `vellum: immutable, verifiable audit logs with provisioning keys

Usage: vellum <command> [flags]

Server:
  serve       run the server (first start creates the data directory and keys)
  init        create the data directory, server key and admin key, then exit
  migrate     apply the PostgreSQL schema migrations (--postgres URL), then exit

Logs and entries:
  logs create NAME | logs list
  append      sign and append events (one JSON event or JSON Lines)
  get         fetch one entry, with --proof a receipt to verify offline
  checkpoint  print a log's latest signed checkpoint
  info        print the server's origin prefix and checkpoint verifier key

Keys:
  keys create|list|show|rotate|revoke|update   provisioning keys (see 'vellum keys')

Alerts:
  alerts list|ack   alerts recorded in _system (tamper, gaps, silence, suspicious key use)

Search and audit:
  query       search a log (time, action, actor, target, key, outcome, source, text)
  tail        follow a log live (Server-Sent Events), resumable
  export      write a bundle of a range that verifies offline
  index       rebuild the search index (server side, on its data directory)

Verification:
  verify      check a log (--full: every entry), a receipt (--receipt FILE) or a bundle (--bundle FILE)

Load:
  bench       load generator against a running server; 'bench seed' writes realistic test data

Environment:
  VELLUM_URL   server URL (default http://127.0.0.1:7070)
  VELLUM_KEY   provisioning key token (or --key-file FILE)
  VELLUM_VERIFIER_KEY  trusted checkpoint verifier key (default: the state file)
  VELLUM_POSTGRES      PostgreSQL URL for serve and migrate (default: SQLite in --data)

Run 'vellum <command> -h' for a command's flags.
`

// Run runs the command line args (without the program name).
func (m *Main) Run(ctx context.Context, args []string) error {
	// The server's loggers write to Stderr from background goroutines
	// (the alert engine, the indexer) while the command prints its own
	// lines: one writer, one write at a time.
	if _, ok := m.Stderr.(*syncWriter); !ok && m.Stderr != nil {
		m.Stderr = &syncWriter{w: m.Stderr}
	}
	if len(args) == 0 {
		fmt.Fprint(m.Stderr, usage)
		return usageError("run 'vellum help'", "no command given")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "help", "-h", "--help":
		fmt.Fprint(m.Stdout, usage)
		return nil
	case "version", "--version":
		fmt.Fprintln(m.Stdout, "vellum", version)
		return nil
	case "serve":
		return m.serve(ctx, rest)
	case "init":
		return m.init(ctx, rest)
	case "migrate":
		return m.migrate(ctx, rest)
	case "logs":
		return m.logs(ctx, rest)
	case "append":
		return m.append(ctx, rest)
	case "get":
		return m.get(ctx, rest)
	case "checkpoint":
		return m.checkpoint(ctx, rest)
	case "info":
		return m.info(ctx, rest)
	case "verify":
		return m.verify(ctx, rest)
	case "keys":
		return m.keys(ctx, rest)
	case "alerts":
		return m.alerts(ctx, rest)
	case "query":
		return m.query(ctx, rest)
	case "tail":
		return m.tail(ctx, rest)
	case "export":
		return m.export(ctx, rest)
	case "index":
		return m.index(ctx, rest)
	case "bench":
		if len(rest) > 0 && rest[0] == "seed" {
			return m.seed(ctx, rest[1:])
		}
		if len(rest) > 0 && rest[0] == "search" {
			return m.benchSearch(ctx, rest[1:])
		}
		return m.bench(ctx, rest)
	}
	return usageError("run 'vellum help' for the list of commands", "unknown command %q", cmd)
}
