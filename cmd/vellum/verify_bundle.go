package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/vellum-audit/vellum/client"
)

// verifyBundle checks an export bundle offline (docs/bundle.md) with the
// trusted checkpoint verifier key: --verifier-key, VELLUM_VERIFIER_KEY or
// the state file. It never contacts a server. strict checks every event
// signature with crypto/ed25519 instead of in batches.
func (m *Main) verifyBundle(ctx context.Context, file, vkey, statePath string, strict bool) error {
	var r io.Reader
	if file == "-" {
		r = m.Stdin
	} else {
		f, err := os.Open(file)
		if err != nil {
			return errorf("check the path given to --bundle", "%v", err)
		}
		defer f.Close()
		r = f
	}
	var v *client.Verifier
	var err error
	if vkey != "" {
		v, err = client.NewVerifier(vkey)
	} else {
		v, err = m.verifier(ctx, nil, statePath)
	}
	if err != nil {
		return err
	}
	// Verification allocates a few KiB an entry and keeps little: with the
	// default GOGC the collector costs about a fifth of the CPU. Four
	// times the live heap (about 50 MB in all) halves that, unless the
	// user chose GOGC.
	if m.Getenv("GOGC") == "" {
		defer debug.SetGCPercent(debug.SetGCPercent(400))
	}
	bar := m.newProgress("verifying bundle")
	start := time.Now()
	rep, err := client.VerifyBundleWith(bufio.NewReaderSize(r, 1<<20), v, client.BundleOptions{Strict: strict, Progress: bar.update(bundleLabel(file))})
	bar.done()
	if errors.Is(err, client.ErrBadBundle) {
		return errorf("the file is damaged, cut short, or not a bundle written by 'vellum export'", "%s: %v", file, err)
	}
	if err != nil {
		return err
	}
	took := time.Since(start)
	fmt.Fprintf(m.Stdout, "bundle OK: entries [%d, %d) of %s (%d entries", rep.Start, rep.End, rep.Log, rep.Entries())
	if !rep.FirstReceived.IsZero() {
		fmt.Fprintf(m.Stdout, ", received %s to %s", rep.FirstReceived.Format(time.RFC3339Nano), rep.LastReceived.Format(time.RFC3339Nano))
	}
	fmt.Fprintf(m.Stdout, ") are exactly those entries of the tree of size %d, root %s, signed by %s\n", rep.Checkpoint.Size, hashString(rep.Checkpoint.Hash), rep.Checkpoint.Origin)
	rule := "batch verification, ZIP-215 rules with canonical encodings"
	if strict {
		rule = "crypto/ed25519, one by one"
	}
	fmt.Fprintf(m.Stdout, "checked: checkpoint signatures; key history from %d _system entries (signatures, prev chain, root); every entry's canonical form, index, prev chain, key (registered, active and in scope when received) and event signature (%s); the range proof to the root (%s)\n",
		rep.System.Size, rule, took.Round(time.Millisecond))
	return nil
}

func bundleLabel(file string) string {
	if file == "-" {
		return "stdin"
	}
	return filepath.Base(file)
}
