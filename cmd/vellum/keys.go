package main

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/client"
)

// multiFlag collects a repeatable flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// parseWhen parses a duration from now ("90d", "12h", "30m") or an RFC 3339 time.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err == nil && n > 0 && n < 100000 {
			return now.Add(time.Duration(n) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(d), nil
	}
	return time.Time{}, usageError("use a duration such as 90d, 12h or 30m, or an RFC 3339 time such as 2027-01-01T00:00:00Z", "bad time %q", s)
}

const keysUsage = `keys create --name NAME [--role writer|reader|auditor|admin] [--scope OP:LOG]... [--expires 90d] [--not-before TIME] [--cidr CIDR]... [--rate 200/s] [--bearer] [--description TEXT] [--out FILE] [--json] [--public-key FILE]
       vellum keys list [--json]
       vellum keys show ID [--json]
       vellum keys rotate ID [--overlap 24h] [--out FILE] [--json]
       vellum keys revoke ID --reason TEXT
       vellum keys update ID [--description TEXT] [--expires TIME] [--cidr CIDR]... [--no-cidrs] [--rate 200/s] [--scope OP:LOG]...`

func (m *Main) keys(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError("vellum "+keysUsage, "keys needs a subcommand")
	}
	sub, rest := args[0], args[1:]
	fs := m.newFlagSet("keys "+sub, keysUsage)
	cf := m.clientFlagsOn(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	var scopes, cidrs multiFlag
	var name, role, expires, notBefore, rate, desc, out, pubFile, overlap, reason *string
	var bearer, noCIDRs *bool
	switch sub {
	case "create":
		name = fs.String("name", "", "name of the key (required)")
		role = fs.String("role", "", "role: writer, reader, auditor or admin")
		fs.Var(&scopes, "scope", "scope OP:LOG-OR-GLOB (append, read or admin); repeatable; default: the role's")
		expires = fs.String("expires", "", "expiry: a duration (90d, 12h) or an RFC 3339 time")
		notBefore = fs.String("not-before", "", "not valid before this RFC 3339 time (or duration from now)")
		fs.Var(&cidrs, "cidr", "allowed source network; repeatable")
		rate = fs.String("rate", "", "rate limit, N/s, N/m or N/h")
		bearer = fs.Bool("bearer", false, "allow Authorization: Bearer (for tools that can only send a header; weaker)")
		desc = fs.String("description", "", "purpose of the key")
		out = fs.String("out", "", "write the token to FILE (mode 0600) instead of stdout")
		pubFile = fs.String("public-key", "", "register an Ed25519 public key held elsewhere (PEM or base64); no token is made")
	case "rotate":
		overlap = fs.String("overlap", "24h", "how long the old key stays valid")
		out = fs.String("out", "", "write the new token to FILE (mode 0600) instead of stdout")
	case "revoke":
		reason = fs.String("reason", "", "why (required, recorded in _system)")
	case "update":
		desc = fs.String("description", "", "new description")
		expires = fs.String("expires", "", "new, shorter expiry")
		fs.Var(&cidrs, "cidr", "allowed source network (replaces the list); repeatable")
		noCIDRs = fs.Bool("no-cidrs", false, "remove every CIDR restriction")
		rate = fs.String("rate", "", "new rate limit (\"none\" removes it)")
		fs.Var(&scopes, "scope", "new scopes (replace the list); repeatable")
	case "list", "show":
	default:
		return usageError("vellum "+keysUsage, "unknown keys subcommand %q", sub)
	}
	if err := parseFlags(fs, reorder(rest)); err != nil {
		return helpOK(err)
	}
	c, err := m.newClient(cf)
	if err != nil {
		return err
	}
	needID := func() (string, error) {
		if fs.NArg() != 1 {
			return "", usageError("vellum keys "+sub+" ID", "keys %s needs exactly one key id", sub)
		}
		return fs.Arg(0), nil
	}
	now := time.Now()
	switch sub {
	case "create":
		if *name == "" {
			return usageError("vellum keys create --name NAME --role writer", "--name is required")
		}
		if *role == "" && len(scopes) == 0 {
			return usageError("give --role writer|reader|auditor|admin, or --scope OP:LOG", "a key needs a role or scopes")
		}
		o := client.KeyOptions{Name: *name, Description: *desc, Role: *role, Scopes: scopes, CIDRs: cidrs, Rate: *rate, Bearer: *bearer}
		if o.Expires, err = parseWhen(*expires, now); err != nil {
			return err
		}
		if o.NotBefore, err = parseWhen(*notBefore, now); err != nil {
			return err
		}
		if *pubFile != "" {
			if o.PublicKey, err = readPublicKey(*pubFile); err != nil {
				return err
			}
		}
		if *out != "" && *pubFile != "" {
			return usageError("", "--out and --public-key do not go together: there is no token")
		}
		nk, err := c.CreateKey(ctx, o)
		if err != nil {
			return err
		}
		return m.showNewKey(nk, *out, *asJSON)
	case "rotate":
		id, err := needID()
		if err != nil {
			return err
		}
		d, err := time.ParseDuration(*overlap)
		if err != nil || d < 0 {
			return usageError("use a duration such as 24h or 30m", "bad --overlap %q", *overlap)
		}
		nk, err := c.RotateKey(ctx, id, d)
		if err != nil {
			return err
		}
		if !*asJSON {
			fmt.Fprintf(m.Stderr, "vellum: key %s rotated to %s; the old key expires at %s\n", id, nk.Key.ID, now.Add(d).UTC().Format(time.RFC3339))
		}
		return m.showNewKey(nk, *out, *asJSON)
	case "revoke":
		id, err := needID()
		if err != nil {
			return err
		}
		if strings.TrimSpace(*reason) == "" {
			return usageError("vellum keys revoke ID --reason \"laptop stolen\"", "--reason is required")
		}
		kc, err := c.RevokeKey(ctx, id, *reason)
		if err != nil {
			return err
		}
		if *asJSON {
			return m.printJSON(kc)
		}
		fmt.Fprintf(m.Stdout, "revoked key %s at %s (_system entry %d)\n", id, kc.Key.Revoked, kc.Receipt.Index)
		return nil
	case "update":
		id, err := needID()
		if err != nil {
			return err
		}
		var u client.KeyUpdate
		changed := false
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "description":
				u.Description, changed = desc, true
			case "rate":
				r := *rate
				if r == "none" {
					r = ""
				}
				u.Rate, changed = &r, true
			}
		})
		if len(cidrs) > 0 || *noCIDRs {
			l := []string(cidrs)
			if l == nil {
				l = []string{}
			}
			u.CIDRs, changed = &l, true
		}
		if len(scopes) > 0 {
			l := []string(scopes)
			u.Scopes, changed = &l, true
		}
		if *expires != "" {
			if u.Expires, err = parseWhen(*expires, now); err != nil {
				return err
			}
			changed = true
		}
		if !changed {
			return usageError("vellum keys update ID --rate 100/s", "nothing to change")
		}
		kc, err := c.UpdateKey(ctx, id, u)
		if err != nil {
			return err
		}
		if *asJSON {
			return m.printJSON(kc)
		}
		fmt.Fprintf(m.Stdout, "updated key %s (_system entry %d)\n", id, kc.Receipt.Index)
		return m.printKey(kc.Key)
	case "show":
		id, err := needID()
		if err != nil {
			return err
		}
		k, err := c.Key(ctx, id)
		if err != nil {
			return err
		}
		if *asJSON {
			return m.printJSON(k)
		}
		return m.printKey(k)
	case "list":
		ks, err := c.Keys(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return m.printJSON(ks)
		}
		tw := tabwriter.NewWriter(m.Stdout, 0, 2, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tROLE\tSCOPES\tSTATUS\tCREATED\tEXPIRES\tLAST USED")
		for _, k := range ks {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, dash(k.Role), strings.Join(k.Scopes, ","), k.Status, k.Created, expiresIn(k.Expires, now), dash(k.LastUsed))
		}
		return tw.Flush()
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func expiresIn(exp string, now time.Time) string {
	if exp == "" {
		return "never"
	}
	t, err := time.Parse(time.RFC3339, exp)
	if err != nil {
		return exp
	}
	d := t.Sub(now)
	switch {
	case d <= 0:
		return exp + " (past)"
	case d > 48*time.Hour:
		return fmt.Sprintf("in %dd", int(d.Hours()/24))
	default:
		return "in " + d.Round(time.Minute).String()
	}
}

func (m *Main) printKey(k api.Key) error {
	tw := tabwriter.NewWriter(m.Stdout, 0, 2, 2, ' ', 0)
	row := func(name, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", name, v)
		}
	}
	row("id", k.ID)
	row("name", k.Name)
	row("description", k.Description)
	row("role", k.Role)
	row("scopes", strings.Join(k.Scopes, " "))
	row("status", k.Status)
	row("created", k.Created+" by "+k.CreatedBy)
	row("not before", k.NotBefore)
	row("expires", k.Expires)
	row("cidrs", strings.Join(k.CIDRs, " "))
	row("rate", k.Rate)
	if k.Bearer {
		row("bearer", "allowed")
	}
	if k.External {
		row("external", "yes (public key registered, secret held elsewhere)")
	}
	row("rotated from", k.RotatedFrom)
	row("rotated to", k.RotatedTo)
	row("revoked", k.Revoked)
	row("revoke reason", k.RevokeReason)
	row("last used", k.LastUsed)
	row("public key", k.PublicKey)
	return tw.Flush()
}

// showNewKey prints (or writes, 0600) a new token once.
func (m *Main) showNewKey(nk client.NewKey, out string, asJSON bool) error {
	if out != "" && nk.Token != "" {
		if err := writeTokenFile(out, nk.Token); err != nil {
			return err
		}
		if nk.BearerCredential != "" {
			if err := writeTokenFile(out+".bearer", nk.BearerCredential); err != nil {
				return err
			}
		}
	}
	if asJSON {
		v := map[string]any{"key": nk.Key, "system_index": nk.Receipt.Index}
		if out == "" && nk.Token != "" {
			v["token"] = nk.Token
			if nk.BearerCredential != "" {
				v["bearer_credential"] = nk.BearerCredential
			}
		} else if out != "" {
			v["token_file"] = out
			if nk.BearerCredential != "" {
				v["bearer_credential_file"] = out + ".bearer"
			}
		}
		return m.printJSON(v)
	}
	switch {
	case nk.Token == "":
		fmt.Fprintf(m.Stdout, "registered key %s (%s)\n", nk.Key.ID, nk.Key.Name)
	case out != "":
		fmt.Fprintf(m.Stdout, "key %s (%s): token written to %s (mode 0600)\n", nk.Key.ID, nk.Key.Name, out)
		if nk.BearerCredential != "" {
			fmt.Fprintf(m.Stdout, "bearer credential (for Authorization: Bearer) written to %s.bearer (mode 0600)\n", out)
		}
	default:
		fmt.Fprintf(m.Stderr, "vellum: key %s (%s) created; its token is shown once, below; the server keeps only the public key\n", nk.Key.ID, nk.Key.Name)
		fmt.Fprintln(m.Stdout, nk.Token)
		if nk.BearerCredential != "" {
			fmt.Fprintf(m.Stderr, "vellum: bearer credential, for tools that can only send \"Authorization: Bearer\" (no signing secret in it):\n")
			fmt.Fprintln(m.Stdout, nk.BearerCredential)
		}
	}
	return nil
}

func writeTokenFile(path, token string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return errorf("choose a new file: tokens are never overwritten", "writing token: %v", err)
	}
	if _, err := f.WriteString(token + "\n"); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// readPublicKey reads an Ed25519 public key: PEM (PKIX) or base64 of the 32 bytes.
func readPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, errorf("check the path given to --public-key", "%v", err)
	}
	if blk, _ := pem.Decode(b); blk != nil {
		pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, errorf("the PEM block must be an Ed25519 PUBLIC KEY", "%s: %v", path, err)
		}
		if k, ok := pub.(ed25519.PublicKey); ok {
			return k, nil
		}
		return nil, errorf("only Ed25519 keys are supported", "%s holds a %T, not an Ed25519 key", path, pub)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, errorf("give a PEM PUBLIC KEY or the 32 key bytes in base64", "%s is not an Ed25519 public key", path)
	}
	return ed25519.PublicKey(raw), nil
}
