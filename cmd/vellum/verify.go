package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/client"
)

// state is what this client trusts, kept between runs: per server URL, the
// checkpoint verifier key (trusted on first use) and the last verified
// checkpoint of each log.
type state struct {
	Servers map[string]*serverState `json:"servers"`
}

type serverState struct {
	VerifierKey string            `json:"verifier_key"`
	Checkpoints map[string]string `json:"checkpoints"` // log → signed checkpoint text
}

func (m *Main) statePath(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if p := m.Getenv("VELLUM_STATE"); p != "" {
		return p, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", errorf("pass --state FILE", "no user config directory: %v", err)
	}
	return filepath.Join(dir, "vellum", "state.json"), nil
}

func loadState(path string) (*state, error) {
	st := &state{Servers: map[string]*serverState{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, errorf("move the file away to start trusting afresh (only if you know why it broke)", "state file %s is corrupt: %v", path, err)
	}
	if st.Servers == nil {
		st.Servers = map[string]*serverState{}
	}
	return st, nil
}

func saveState(path string, st *state) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// verifier returns the trusted verifier for the server: --verifier-key or
// VELLUM_VERIFIER_KEY, else the state file's key for VELLUM_URL; with
// neither, the server's own answer, trusted on first use and remembered.
func (m *Main) verifier(ctx context.Context, c *client.Client, statePath string) (*client.Verifier, error) {
	if k := m.Getenv("VELLUM_VERIFIER_KEY"); k != "" {
		return client.NewVerifier(k)
	}
	path, err := m.statePath(statePath)
	if err != nil {
		return nil, err
	}
	st, err := loadState(path)
	if err != nil {
		return nil, err
	}
	if ss := st.Servers[m.serverURL()]; ss != nil && ss.VerifierKey != "" {
		v, err := client.NewVerifier(ss.VerifierKey)
		if err != nil {
			return nil, err
		}
		if c != nil {
			if si, err := c.ServerInfo(ctx); err == nil && si.VerifierKey != ss.VerifierKey {
				return nil, errorf("if the server's key was changed on purpose, verify the new key out of band and set VELLUM_VERIFIER_KEY", "the server now presents verifier key %q, but this client trusts %q", si.VerifierKey, ss.VerifierKey)
			}
		}
		return v, nil
	}
	if c == nil {
		return nil, errorf("pass --verifier-key KEY (from 'vellum info' or the server's data directory server.vkey)", "no trusted verifier key for %s", m.serverURL())
	}
	si, err := c.ServerInfo(ctx)
	if err != nil {
		return nil, err
	}
	v, err := client.NewVerifier(si.VerifierKey)
	if err != nil {
		return nil, err
	}
	st.Servers[m.serverURL()] = &serverState{VerifierKey: si.VerifierKey, Checkpoints: map[string]string{}}
	if err := saveState(path, st); err != nil {
		return nil, err
	}
	fmt.Fprintf(m.Stderr, "vellum: trusting verifier key %s on first use (compare it with the server's data directory server.vkey); saved in %s\n", si.VerifierKey, path)
	return v, nil
}

func (m *Main) verify(ctx context.Context, args []string) error {
	fs := m.newFlagSet("verify", "verify --log NAME [--full [--strict]] [--state FILE] | verify --receipt FILE [--verifier-key KEY] | verify --bundle FILE [--strict] [--verifier-key KEY]")
	cf := m.clientFlagsOn(fs)
	logName := fs.String("log", "", "log to verify")
	full := fs.Bool("full", false, "fetch and check every entry: leaf hashes, prev chain, tree root and every event signature")
	statePath := fs.String("state", "", "state file of trusted checkpoints (default: the user config dir, or VELLUM_STATE)")
	receipt := fs.String("receipt", "", "check a receipt file offline")
	bundle := fs.String("bundle", "", "check an export bundle offline")
	vkey := fs.String("verifier-key", "", "trusted checkpoint verifier key (default: VELLUM_VERIFIER_KEY, or the state file)")
	strict := fs.Bool("strict", false, "check every event signature on its own with crypto/ed25519 (RFC 8032), not in batches (ZIP-215 rules); slower. --full always checks this way")
	if err := parseFlags(fs, args); err != nil {
		return helpOK(err)
	}
	if *strict && *bundle == "" && !*full {
		return usageError("vellum verify --bundle FILE --strict, or vellum verify --log NAME --full --strict", "--strict applies to --bundle and --full")
	}
	if *receipt != "" {
		return m.verifyReceipt(ctx, *receipt, *vkey, *statePath)
	}
	if *bundle != "" {
		return m.verifyBundle(ctx, *bundle, *vkey, *statePath, *strict)
	}
	if *logName == "" {
		return usageError("vellum verify --log NAME [--full], or vellum verify --receipt FILE", "--log or --receipt is required")
	}
	c, err := m.newClient(cf)
	if err != nil {
		return err
	}
	var v *client.Verifier
	if *vkey != "" {
		if v, err = client.NewVerifier(*vkey); err != nil {
			return err
		}
	} else if v, err = m.verifier(ctx, c, *statePath); err != nil {
		return err
	}
	path, err := m.statePath(*statePath)
	if err != nil {
		return err
	}
	st, err := loadState(path)
	if err != nil {
		return err
	}
	ss := st.Servers[m.serverURL()]
	if ss == nil {
		ss = &serverState{VerifierKey: v.Key(), Checkpoints: map[string]string{}}
		st.Servers[m.serverURL()] = ss
	}
	if ss.Checkpoints == nil {
		ss.Checkpoints = map[string]string{}
	}
	var trusted *client.Checkpoint
	if text, ok := ss.Checkpoints[*logName]; ok {
		t, err := v.OpenCheckpoint(*logName, []byte(text))
		if err != nil {
			return errorf("the state file holds a checkpoint this verifier key does not accept", "trusted checkpoint of %q: %v", *logName, err)
		}
		trusted = &t
	}
	cur, err := c.Latest(ctx, v, *logName, trusted)
	if err != nil {
		if trusted != nil && errors.Is(err, client.ErrVerification) {
			// The server's tree no longer extends a checkpoint it signed:
			// tell it, so that it records a tamper alert and fails closed.
			if rep, rerr := c.ReportCheckpoint(ctx, *logName, []byte(trusted.Text)); rerr == nil && !rep.Consistent {
				fmt.Fprintf(m.Stderr, "vellum: reported the inconsistency to the server: %s\n", rep.Reason)
			}
		}
		return err
	}
	if trusted != nil {
		fmt.Fprintf(m.Stdout, "checkpoint: %s size %d root %s: signature OK, consistent with the trusted size %d\n", cur.Origin, cur.Size, hashString(cur.Hash), trusted.Size)
	} else {
		fmt.Fprintf(m.Stdout, "checkpoint: %s size %d root %s: signature OK (first checkpoint trusted for this log)\n", cur.Origin, cur.Size, hashString(cur.Hash))
	}
	if *full {
		bar := m.newProgress("verifying")
		reg, sysCP, err := c.AuditSystem(ctx, v, bar.update("_system"))
		bar.done()
		if err != nil {
			return err
		}
		if *logName != api.SystemLog {
			err = c.AuditLog(ctx, v, *logName, cur, reg, bar.update(*logName))
			bar.done()
			if err != nil {
				return err
			}
		} else {
			cur = sysCP
		}
		fmt.Fprintf(m.Stdout, "full: %d entries of %s: leaf hashes, prev chain, event signatures and root OK\n", cur.Size, *logName)
	}
	if trusted == nil || cur.Size >= trusted.Size {
		ss.Checkpoints[*logName] = string(cur.Text)
	}
	return saveState(path, st)
}

func hashString(h [32]byte) string {
	b, _ := json.Marshal(h[:])
	return string(b[1 : len(b)-1])
}

func (m *Main) verifyReceipt(ctx context.Context, file, vkey, statePath string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return errorf("check the path given to --receipt", "%v", err)
	}
	var r api.Receipt
	dec := json.NewDecoder(bytesReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return errorf("a receipt is the JSON that 'vellum append' prints (one per line) or 'vellum get --proof' writes", "%s is not a receipt: %v", file, err)
	}
	var v *client.Verifier
	if vkey != "" {
		v, err = client.NewVerifier(vkey)
	} else {
		v, err = m.verifier(ctx, nil, statePath)
	}
	if err != nil {
		return err
	}
	cp, err := v.VerifyReceipt(r, nil)
	if err != nil {
		return err
	}
	fmt.Fprintf(m.Stdout, "receipt OK: log %s entry %d (leaf %s) is in the tree of size %d signed by %s\n", r.Log, r.Index, r.LeafHash, cp.Size, cp.Origin)
	return nil
}

// progress is a one-line progress bar on stderr when it is a terminal.
type progressBar struct {
	w     io.Writer
	on    bool
	label string
	last  time.Time
	drawn bool
}

func (m *Main) newProgress(label string) *progressBar {
	on := false
	w := m.Stderr
	if sw, ok := w.(*syncWriter); ok {
		w = sw.w
	}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			on = true
		}
	}
	return &progressBar{w: m.Stderr, on: on, label: label}
}

func (p *progressBar) update(what string) func(done, total int64) {
	return func(done, total int64) {
		if !p.on || (time.Since(p.last) < 100*time.Millisecond && done < total) {
			return
		}
		p.last = time.Now()
		pct := 100.0
		if total > 0 {
			pct = float64(done) * 100 / float64(total)
		}
		const width = 30
		fill := int(pct / 100 * width)
		bar := make([]byte, width)
		for i := range bar {
			bar[i] = ' '
			if i < fill {
				bar[i] = '#'
			}
		}
		fmt.Fprintf(p.w, "\r%s %s [%s] %d/%d (%.0f%%)", p.label, what, bar, done, total, pct)
		p.drawn = true
	}
}

func (p *progressBar) done() {
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}
