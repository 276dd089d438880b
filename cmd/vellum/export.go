package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vellum-audit/vellum/client"
)

// export writes a bundle (docs/bundle.md) of a range of a log, chosen by
// index or by received time.
func (m *Main) export(ctx context.Context, args []string) error {
	fs := m.newFlagSet("export", "export --log NAME [--from INDEX] [--to INDEX] | [--since TIME] [--until TIME]  -o FILE")
	cf := m.clientFlagsOn(fs)
	logName := fs.String("log", "", "log to export (required)")
	from := fs.String("from", "", "first entry index to include (default 0)")
	to := fs.String("to", "", "end of the range: the first index NOT included (default: the log's size)")
	since := fs.String("since", "", "first entry received at or after TIME: RFC 3339, a date (UTC), or a duration back from now (24h, 7d)")
	until := fs.String("until", "", "stop before the first entry received at or after TIME")
	out := fs.String("o", "", "bundle file to write (required; '-' for standard output); an existing file is not overwritten")
	statePath := fs.String("state", "", "state file of trusted keys (default: the user config dir, or VELLUM_STATE)")
	vkey := fs.String("verifier-key", "", "trusted checkpoint verifier key (default: VELLUM_VERIFIER_KEY, or the state file)")
	if err := parseFlags(fs, args); err != nil {
		return helpOK(err)
	}
	const example = "vellum export --log billing --from 0 --to 1000 -o billing.vbundle, or --since 2026-01-01 --until 2026-02-01"
	switch {
	case *logName == "":
		return usageError(example, "--log is required")
	case *out == "":
		return usageError(example, "-o FILE is required")
	case fs.NArg() > 0:
		return usageError("run 'vellum export -h' for its flags", "unexpected argument %q", fs.Arg(0))
	case (*from != "" || *to != "") && (*since != "" || *until != ""):
		return usageError(example, "choose the range by index (--from/--to) or by time (--since/--until), not both")
	}
	now := time.Now()
	start, end := int64(0), int64(-1)
	var sinceT, untilT time.Time
	var err error
	if *from != "" {
		if start, err = strconv.ParseInt(*from, 10, 64); err != nil || start < 0 {
			return usageError("an index is a non-negative integer", "bad --from %q", *from)
		}
	}
	if *to != "" {
		if end, err = strconv.ParseInt(*to, 10, 64); err != nil || end < 0 {
			return usageError("an index is a non-negative integer", "bad --to %q", *to)
		}
	}
	for _, f := range []struct {
		name, v string
		t       *time.Time
	}{{"--since", *since, &sinceT}, {"--until", *until, &untilT}} {
		if f.v == "" {
			continue
		}
		if *f.t, err = exportTime(f.v, now); err != nil {
			return usageError("give RFC 3339 (2026-01-02T15:04:05Z), a date (2026-01-02, UTC) or a duration back from now (24h, 7d)", "bad %s %q", f.name, f.v)
		}
	}
	if !sinceT.IsZero() && !untilT.IsZero() && !sinceT.Before(untilT) {
		return usageError(example, "--since %s is not before --until %s", sinceT.Format(time.RFC3339Nano), untilT.Format(time.RFC3339Nano))
	}
	if *out != "-" {
		if _, err := os.Lstat(*out); err == nil {
			return errorf("choose another name, or remove the file first", "%s exists; not overwriting it", *out)
		}
	}

	c, err := m.newClient(cf)
	if err != nil {
		return err
	}
	var v *client.Verifier
	if *vkey != "" {
		v, err = client.NewVerifier(*vkey)
	} else {
		v, err = m.verifier(ctx, c, *statePath)
	}
	if err != nil {
		return err
	}
	cp, err := c.Latest(ctx, v, *logName, nil)
	if err != nil {
		return err
	}
	if end < 0 {
		end = cp.Size
	}
	if !sinceT.IsZero() {
		if start, err = c.IndexAt(ctx, *logName, sinceT, cp.Size); err != nil {
			return err
		}
	}
	if !untilT.IsZero() {
		if end, err = c.IndexAt(ctx, *logName, untilT, cp.Size); err != nil {
			return err
		}
	}
	switch {
	case cp.Size == 0:
		return errorf("append to the log first", "log %s is empty: nothing to export", *logName)
	case end > cp.Size:
		return errorf("the log has "+strconv.FormatInt(cp.Size, 10)+" entries", "--to %d is beyond the log's size %d", end, cp.Size)
	case start >= end && (*since != "" || *until != ""):
		return errorf("widen --since/--until ('vellum tail' and 'vellum get' show received times)", "no entries of %s were received in that time range", *logName)
	case start >= end:
		return errorf("--from must be below --to, and below the log's size "+strconv.FormatInt(cp.Size, 10), "the range [%d, %d) of %s is empty", start, end, *logName)
	}

	var w io.Writer = m.Stdout
	var f *os.File
	if *out != "-" {
		dir := filepath.Dir(*out)
		if f, err = os.CreateTemp(dir, "."+filepath.Base(*out)+".tmp-*"); err != nil {
			return errorf("check that the directory exists and is writable", "%v", err)
		}
		defer func() {
			if f != nil {
				f.Close()
				os.Remove(f.Name())
			}
		}()
		w = f
	}
	bar := m.newProgress("exporting")
	rep, err := c.Export(ctx, v, *logName, start, end, w, bar.update(*logName))
	bar.done()
	if err != nil {
		return err
	}
	size := int64(-1)
	if f != nil {
		if err := f.Sync(); err != nil {
			return err
		}
		if fi, err := f.Stat(); err == nil {
			size = fi.Size()
		}
		if err := f.Close(); err != nil {
			return err
		}
		// Link, not rename: never replace a file that appeared meanwhile.
		if err := os.Link(f.Name(), *out); err != nil {
			if errors.Is(err, os.ErrExist) {
				return errorf("choose another name, or remove the file first", "%s exists; not overwriting it", *out)
			}
			if err := os.Rename(f.Name(), *out); err != nil {
				return err
			}
		}
		os.Remove(f.Name())
		f = nil
	}
	msg := fmt.Sprintf("exported entries [%d, %d) of %s (%d entries", rep.Start, rep.End, rep.Log, rep.Entries())
	if !rep.FirstReceived.IsZero() {
		msg += fmt.Sprintf(", received %s to %s", rep.FirstReceived.Format(time.RFC3339), rep.LastReceived.Format(time.RFC3339))
	}
	msg += fmt.Sprintf(") with the checkpoint of size %d and %d _system entries", rep.Checkpoint.Size, rep.System.Size)
	if *out != "-" {
		msg += fmt.Sprintf(" to %s (%d bytes)", *out, size)
		fmt.Fprintln(m.Stdout, msg)
		fmt.Fprintf(m.Stdout, "check it offline with: vellum verify --bundle %s --verifier-key %s\n", *out, shellQuote(v.Key()))
	} else {
		fmt.Fprintln(m.Stderr, "vellum: "+msg)
	}
	return nil
}

// exportTime reads RFC 3339, a date (midnight UTC) or a duration back from
// now ("24h", "7d").
func exportTime(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse("2006-01-02", v); err == nil {
		return t, nil
	}
	if d, ok := strings.CutSuffix(v, "d"); ok {
		if n, err := strconv.Atoi(d); err == nil && n > 0 && n <= 36500 {
			return now.Add(-time.Duration(n) * 24 * time.Hour).UTC(), nil
		}
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return now.Add(-d).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("bad time %q", v)
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("+/=._-:@", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
