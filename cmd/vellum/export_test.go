package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCLIExportBundle(t *testing.T) {
	e := startCLIServer(t)
	e.ok("", "logs", "create", "billing")
	// Three commits, so that entries have distinct received times.
	for c := range 3 {
		var lines strings.Builder
		for i := range 5 {
			fmt.Fprintf(&lines, `{"action":"invoice.pay","actor":{"id":"u%d"},"metadata":{"n":%d}}`+"\n", i, c*5+i)
		}
		e.ok(lines.String(), "append", "--log", "billing")
	}
	file := filepath.Join(e.dir, "billing.vbundle")
	out := e.ok("", "export", "--log", "billing", "-o", file)
	if !strings.Contains(out, "exported entries [0, 15) of billing (15 entries") || !strings.Contains(out, "vellum verify --bundle") {
		t.Fatalf("export: %q", out)
	}
	out = e.ok("", "verify", "--bundle", file)
	if !strings.Contains(out, "bundle OK: entries [0, 15) of billing (15 entries") || !strings.Contains(out, "tree of size 15") {
		t.Fatalf("verify --bundle: %q", out)
	}

	// The key from the flag or the environment, with no state file: offline.
	info := e.ok("", "info")
	var vkey string
	for _, f := range strings.Fields(info) {
		if strings.HasPrefix(f, "test.example/cli+") {
			vkey = f
		}
	}
	if vkey == "" {
		t.Fatalf("no verifier key in %q", info)
	}
	offline := map[string]string{"VELLUM_STATE": filepath.Join(e.dir, "none.json"), "VELLUM_URL": "http://127.0.0.1:1"}
	withEnv(e, offline, func() {
		e.ok("", "verify", "--bundle", file, "--verifier-key", vkey)
		_, errs, err := e.run("", "verify", "--bundle", file)
		if err == nil || !strings.Contains(errs, "no trusted verifier key") {
			t.Errorf("no key: %v %q", err, errs)
		}
	})
	withEnv(e, map[string]string{"VELLUM_STATE": filepath.Join(e.dir, "none.json"), "VELLUM_VERIFIER_KEY": vkey}, func() {
		e.ok("", "verify", "--bundle", file)
	})

	// By index, to standard output.
	part := e.ok("", "export", "--log", "billing", "--from", "5", "--to", "10", "-o", "-")
	pfile := filepath.Join(e.dir, "part.vbundle")
	os.WriteFile(pfile, []byte(part), 0o644)
	if out := e.ok("", "verify", "--bundle", pfile); !strings.Contains(out, "entries [5, 10) of billing (5 entries") {
		t.Fatalf("verify part: %q", out)
	}

	// By received time: the second commit exactly.
	received := func(i int) string {
		var ent struct {
			Data struct {
				Received string `json:"received"`
			} `json:"data"`
		}
		if err := json.Unmarshal([]byte(e.ok("", "get", "--log", "billing", fmt.Sprint(i))), &ent); err != nil {
			t.Fatal(err)
		}
		return ent.Data.Received
	}
	tfile := filepath.Join(e.dir, "time.vbundle")
	out = e.ok("", "export", "--log", "billing", "--since", received(5), "--until", received(10), "-o", tfile)
	if !strings.Contains(out, "exported entries [5, 10)") {
		t.Fatalf("export by time: %q", out)
	}
	e.ok("", "verify", "--bundle", tfile)

	// Tampering: one changed entry is found and named.
	plain := gunzip(t, file)
	bad := bytes.Replace(plain, []byte(`"n":7}`), []byte(`"n":8}`), 1)
	if bytes.Equal(bad, plain) {
		t.Fatal("entry 7 not found")
	}
	badFile := filepath.Join(e.dir, "bad.vbundle")
	os.WriteFile(badFile, bad, 0o644)
	_, errs, err := e.run("", "verify", "--bundle", badFile)
	if err == nil || exitCode(err) != 1 || !strings.Contains(errs, `log "billing", entry 7: event signature does not verify`) || !strings.Contains(errs, "hint:") {
		t.Fatalf("tampered bundle: %v %q", err, errs)
	}
	// --strict: crypto/ed25519 one by one, the same answers.
	if out := e.ok("", "verify", "--bundle", file, "--strict"); !strings.Contains(out, "bundle OK") || !strings.Contains(out, "crypto/ed25519, one by one") {
		t.Fatalf("verify --bundle --strict: %q", out)
	}
	_, errs, err = e.run("", "verify", "--bundle", badFile, "--strict")
	if err == nil || exitCode(err) != 1 || !strings.Contains(errs, `log "billing", entry 7: event signature does not verify`) {
		t.Fatalf("tampered bundle, --strict: %v %q", err, errs)
	}
	if _, errs, err := e.run("", "verify", "--log", "billing", "--strict"); err == nil || !strings.Contains(errs, "--strict applies to --bundle and --full") {
		t.Fatalf("--strict without --bundle or --full: %v %q", err, errs)
	}
	// A cut-off file and garbage are named as such.
	raw, _ := os.ReadFile(file)
	cut := filepath.Join(e.dir, "cut.vbundle")
	os.WriteFile(cut, raw[:len(raw)/2], 0o644)
	_, errs, err = e.run("", "verify", "--bundle", cut)
	if err == nil || !strings.Contains(errs, "truncated") || !strings.Contains(errs, "hint: the file is damaged") {
		t.Fatalf("cut bundle: %v %q", err, errs)
	}
	os.WriteFile(cut, []byte("PK\x03\x04 not a bundle"), 0o644)
	if _, errs, err = e.run("", "verify", "--bundle", cut); err == nil || !strings.Contains(errs, "not a valid vellum bundle") {
		t.Fatalf("garbage: %v %q", err, errs)
	}

	// Usage errors and refusals.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"export", "--log", "billing"}, "-o FILE is required"},
		{[]string{"export", "-o", filepath.Join(e.dir, "x")}, "--log is required"},
		{[]string{"export", "--log", "billing", "--from", "1", "--since", "1h", "-o", filepath.Join(e.dir, "x")}, "not both"},
		{[]string{"export", "--log", "billing", "--from", "x", "-o", filepath.Join(e.dir, "x")}, "bad --from"},
		{[]string{"export", "--log", "billing", "--since", "yesterday", "-o", filepath.Join(e.dir, "x")}, "bad --since"},
		{[]string{"export", "--log", "billing", "--from", "9", "--to", "9", "-o", filepath.Join(e.dir, "x")}, "is empty"},
		{[]string{"export", "--log", "billing", "--to", "99", "-o", filepath.Join(e.dir, "x")}, "beyond the log's size"},
		{[]string{"export", "--log", "billing", "--since", "2000-01-01", "--until", "2000-01-02", "-o", filepath.Join(e.dir, "x")}, "no entries of billing were received"},
		{[]string{"export", "--log", "billing", "-o", file}, "exists; not overwriting"},
		{[]string{"export", "--log", "nope", "-o", filepath.Join(e.dir, "x")}, "404"},
		{[]string{"verify", "--bundle", filepath.Join(e.dir, "missing")}, "check the path given to --bundle"},
	} {
		_, errs, err := e.run("", tc.args...)
		if err == nil || !strings.Contains(errs, tc.want) {
			t.Errorf("vellum %s: %v %q, want %q", strings.Join(tc.args, " "), err, errs, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(e.dir, "x")); err == nil {
		t.Error("a refused export left a file")
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(e.dir)
	for _, d := range ents {
		if strings.Contains(d.Name(), ".tmp-") {
			t.Errorf("left %s", d.Name())
		}
	}
}

func withEnv(e *cliEnv, env map[string]string, f func()) {
	saved := map[string]string{}
	for k, v := range e.env {
		saved[k] = v
	}
	for k, v := range env {
		e.env[k] = v
	}
	defer func() { e.env = saved }()
	f()
}

func gunzip(t *testing.T, file string) []byte {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
