package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/client"
	"github.com/vellum-audit/vellum/internal/keys"
)

const defaultURL = "http://127.0.0.1:7070"

type clientFlags struct {
	keyFile string
	ca      string
}

func (m *Main) clientFlagsOn(fs *flag.FlagSet) *clientFlags {
	f := &clientFlags{}
	fs.StringVar(&f.keyFile, "key-file", "", "read the provisioning key token from FILE instead of VELLUM_KEY")
	fs.StringVar(&f.ca, "ca", m.Getenv("VELLUM_CA"), "PEM file of the CA certificates to trust for an https:// server (env VELLUM_CA; default: the system's)")
	return f
}

// tlsConfig is the client TLS configuration of --ca: nil (the system's
// roots) when it is not set.
func (f *clientFlags) tlsConfig() (*tls.Config, error) {
	if f == nil || f.ca == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(f.ca)
	if err != nil {
		return nil, errorf("check the path given to --ca (or VELLUM_CA)", "reading CA file: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errorf("--ca takes a PEM file with one or more CERTIFICATE blocks", "no certificate found in %s", f.ca)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// httpClient is the HTTP client of the client commands: HTTP/2 over TLS
// where the server offers it, the --ca roots.
func (f *clientFlags) httpClient() (*http.Client, error) {
	tc, err := f.tlsConfig()
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	tr.ForceAttemptHTTP2 = true
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}, nil
}

func (m *Main) serverURL() string {
	if u := m.Getenv("VELLUM_URL"); u != "" {
		return u
	}
	return defaultURL
}

func (m *Main) token(f *clientFlags) (string, error) {
	if f != nil && f.keyFile != "" {
		b, err := os.ReadFile(f.keyFile)
		if err != nil {
			return "", errorf("check the path given to --key-file", "reading key file: %v", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	if t := m.Getenv("VELLUM_KEY"); t != "" {
		return strings.TrimSpace(t), nil
	}
	return "", errorf("export VELLUM_KEY=$(cat vellum-data/admin.key), or pass --key-file FILE", "no provisioning key: VELLUM_KEY is not set")
}

func (m *Main) newClient(f *clientFlags) (*client.Client, error) {
	tok, err := m.token(f)
	if err != nil {
		return nil, err
	}
	hc, err := f.httpClient()
	if err != nil {
		return nil, err
	}
	c, err := client.New(m.serverURL(), tok, client.WithHTTPClient(hc))
	if err != nil {
		if errors.Is(err, keys.ErrMalformedToken) {
			return nil, errorf("a token looks like vlm_<16 hex digits>_<58 characters>; copy it again from where it was written", "%v", err)
		}
		return nil, errorf("set VELLUM_URL to the server's URL, for example "+defaultURL, "%v", err)
	}
	return c, nil
}

// hintFor suggests what to do about common errors.
func hintFor(err error) string {
	var ae *client.Error
	var ne net.Error
	var ue *url.Error
	switch {
	case errors.As(err, &ae):
		switch ae.Status {
		case 401:
			return "the key was refused: check VELLUM_KEY and that this server registered it (and that this machine's clock is right)"
		case 403:
			return "the key is valid but not allowed to do this"
		case 404:
			return "check the log name ('vellum logs list') and the index"
		case 503:
			return "the server is busy or its storage is unavailable; nothing was recorded; retry"
		}
	case errors.As(err, new(x509.UnknownAuthorityError)), errors.As(err, new(*tls.CertificateVerificationError)):
		return "the server's TLS certificate is not signed by a CA this client trusts: pass --ca FILE (or set VELLUM_CA) with the CA that issued it"
	case errors.As(err, new(x509.HostnameError)):
		return "the server's TLS certificate is for another name: use the name it was issued for in VELLUM_URL"
	case errors.As(err, &ue), errors.As(err, &ne):
		return "is the server running? start it with 'vellum serve', or set VELLUM_URL"
	case errors.Is(err, client.ErrVerification):
		return "do not trust this log's answers: keep the output as evidence and investigate"
	}
	return ""
}

func (m *Main) printJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(m.Stdout, "%s\n", b)
	return err
}

func (m *Main) logs(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError("vellum logs create NAME | vellum logs list", "logs needs a subcommand")
	}
	sub, rest := args[0], args[1:]
	fs := m.newFlagSet("logs "+sub, "logs create NAME | logs list [--json]")
	cf := m.clientFlagsOn(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, rest); err != nil {
		return helpOK(err)
	}
	c, err := m.newClient(cf)
	if err != nil {
		return err
	}
	switch sub {
	case "create":
		if fs.NArg() != 1 {
			return usageError("vellum logs create NAME", "logs create needs exactly one log name")
		}
		if !api.ValidLogName(fs.Arg(0)) {
			return usageError("log names are 1-63 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit", "invalid log name %q", fs.Arg(0))
		}
		l, err := c.CreateLog(ctx, fs.Arg(0))
		if err != nil {
			return err
		}
		if *asJSON {
			return m.printJSON(l)
		}
		fmt.Fprintf(m.Stdout, "created log %s (origin %s)\n", l.Name, l.Origin)
		return nil
	case "list":
		ls, err := c.Logs(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return m.printJSON(ls)
		}
		fmt.Fprintf(m.Stdout, "%-24s %10s  %s\n", "NAME", "SIZE", "ROOT")
		for _, l := range ls {
			fmt.Fprintf(m.Stdout, "%-24s %10d  %s\n", l.Name, l.Size, l.RootHash)
		}
		return nil
	}
	return usageError("vellum logs create NAME | vellum logs list", "unknown logs subcommand %q", sub)
}

// readEvents reads one JSON event or JSON Lines.
func readEvents(r io.Reader) ([]json.RawMessage, error) {
	data, err := io.ReadAll(io.LimitReader(r, 1<<30))
	if err != nil {
		return nil, err
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, errorf(`pipe in one JSON event, for example {"action":"user.create","actor":{"id":"alice"}}, or JSON Lines`, "no events on input")
	}
	if json.Valid(trimmed) {
		return []json.RawMessage{trimmed}, nil
	}
	var out []json.RawMessage
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), api.MaxEntrySize*2)
	line := 0
	for sc.Scan() {
		line++
		l := bytes.TrimSpace(sc.Bytes())
		if len(l) == 0 {
			continue
		}
		if !json.Valid(l) {
			return nil, errorf("each line must be one complete JSON object", "line %d is not valid JSON", line)
		}
		out = append(out, bytes.Clone(l))
	}
	if err := sc.Err(); err != nil {
		return nil, errorf("an event is at most 64 KiB", "reading line %d: %v", line+1, err)
	}
	return out, nil
}

func (m *Main) append(ctx context.Context, args []string) error {
	fs := m.newFlagSet("append", "append --log NAME [--file FILE] [--receipts DIR] < events.jsonl")
	cf := m.clientFlagsOn(fs)
	logName := fs.String("log", "", "log to append to (required)")
	file := fs.String("file", "", "read events from FILE instead of stdin")
	rdir := fs.String("receipts", "", "write each receipt to DIR/<log>-<index>.json instead of printing it")
	if err := parseFlags(fs, args); err != nil {
		return helpOK(err)
	}
	if *logName == "" {
		return usageError("vellum append --log NAME < event.json", "--log is required")
	}
	in := m.Stdin
	if *file != "" {
		f, err := os.Open(*file)
		if err != nil {
			return errorf("check the path given to --file", "%v", err)
		}
		defer f.Close()
		in = f
	}
	events, err := readEvents(in)
	if err != nil {
		return err
	}
	c, err := m.newClient(cf)
	if err != nil {
		return err
	}
	receipts, err := c.Append(ctx, *logName, events...)
	for _, r := range receipts {
		if werr := m.writeReceipt(*rdir, r); werr != nil {
			return werr
		}
	}
	if err != nil {
		var ae *client.Error
		if errors.As(err, &ae) && ae.Index != nil {
			return fmt.Errorf("%w (event %d of the input; %d events before it were recorded)", err, *ae.Index, len(receipts))
		}
		return err
	}
	if *rdir != "" {
		fmt.Fprintf(m.Stderr, "vellum: %d receipts written to %s\n", len(receipts), *rdir)
	}
	return nil
}

// compactJSON encodes v on one line without HTML escaping, so embedded
// canonical entries stay byte for byte what the server signed over.
func compactJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func (m *Main) writeReceipt(dir string, r api.Receipt) error {
	b, err := compactJSON(r)
	if err != nil {
		return err
	}
	if dir == "" {
		_, err = fmt.Fprintf(m.Stdout, "%s\n", b)
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-%d.json", r.Log, r.Index)), append(b, '\n'), 0o644)
}

func (m *Main) get(ctx context.Context, args []string) error {
	fs := m.newFlagSet("get", "get --log NAME [--proof] INDEX")
	cf := m.clientFlagsOn(fs)
	logName := fs.String("log", "", "log to read (required)")
	proof := fs.Bool("proof", false, "include a tlog-proof receipt, verified and printed as a receipt JSON that 'vellum verify --receipt' checks offline")
	if err := parseFlags(fs, reorder(args)); err != nil {
		return helpOK(err)
	}
	if *logName == "" || fs.NArg() != 1 {
		return usageError("vellum get --log NAME INDEX", "need --log and one index")
	}
	idx, err := strconv.ParseInt(fs.Arg(0), 10, 64)
	if err != nil || idx < 0 {
		return usageError("an index is a non-negative integer", "bad index %q", fs.Arg(0))
	}
	c, err := m.newClient(cf)
	if err != nil {
		return err
	}
	e, err := c.Entry(ctx, *logName, idx, *proof)
	if err != nil {
		return err
	}
	if *proof {
		v, err := m.verifier(ctx, c, "")
		if err != nil {
			return err
		}
		if _, err := v.VerifyEntry(e); err != nil {
			return err
		}
		return m.writeReceipt("", api.Receipt{Log: e.Log, Index: e.Index, LeafHash: e.LeafHash, Entry: e.Data, Proof: e.Proof})
	}
	return m.printJSON(e)
}

// reorder moves flags before positional arguments, so that
// "get 3 --log x" works like "get --log x 3".
func reorder(args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "-") && a != "-" {
			flags = append(flags, a)
			if !strings.Contains(a, "=") && i+1 < len(args) && !isBoolFlag(a) {
				flags = append(flags, args[i+1])
				i++
			}
			continue
		}
		pos = append(pos, a)
	}
	return append(flags, pos...)
}

func isBoolFlag(a string) bool {
	a = strings.TrimLeft(a, "-")
	switch a {
	case "proof", "json", "full", "h", "help", "bearer", "no-cidrs":
		return true
	}
	return false
}

func (m *Main) checkpoint(ctx context.Context, args []string) error {
	fs := m.newFlagSet("checkpoint", "checkpoint --log NAME")
	cf := m.clientFlagsOn(fs)
	logName := fs.String("log", "", "log (required)")
	if err := parseFlags(fs, args); err != nil {
		return helpOK(err)
	}
	if *logName == "" {
		return usageError("vellum checkpoint --log NAME", "--log is required")
	}
	c, err := m.newClient(cf)
	if err != nil {
		return err
	}
	v, err := m.verifier(ctx, c, "")
	if err != nil {
		return err
	}
	cp, err := c.Latest(ctx, v, *logName, nil)
	if err != nil {
		return err
	}
	_, err = m.Stdout.Write(cp.Text)
	return err
}

func (m *Main) info(ctx context.Context, args []string) error {
	fs := m.newFlagSet("info", "info [--json]")
	cf := m.clientFlagsOn(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return helpOK(err)
	}
	c, err := m.newClient(cf)
	if err != nil {
		return err
	}
	si, err := c.ServerInfo(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return m.printJSON(si)
	}
	fmt.Fprintf(m.Stdout, "server:        %s\norigin prefix: %s\nverifier key:  %s\nversion:       %s\n", m.serverURL(), si.OriginPrefix, si.VerifierKey, si.Version)
	return nil
}
