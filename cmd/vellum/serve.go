package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/vellum-audit/vellum/internal/alert"
	"github.com/vellum-audit/vellum/internal/node"
)

type serveFlags struct {
	data, listen, name, logLevel, logFormat string
	postgres, advertise                     string
	tlsCert, tlsKey                         string
	auditRate                               int
	alertsConfig, expectEvery               string
}

func (m *Main) serverFlags(fs *flag.FlagSet, withListen bool) *serveFlags {
	f := &serveFlags{}
	fs.StringVar(&f.data, "data", "vellum-data", "data directory (created on first start)")
	fs.StringVar(&f.name, "name", "", "origin prefix of this server's checkpoints, fixed at first start (default vellum.local/<random>)")
	fs.StringVar(&f.postgres, "postgres", m.Getenv("VELLUM_POSTGRES"), "PostgreSQL URL (env VELLUM_POSTGRES): store the logs there instead of in --data's SQLite file;\nthe keys stay in --data (copy config.json and server.key to every node); see docs/postgres.md")
	if withListen {
		fs.StringVar(&f.listen, "listen", "127.0.0.1:7070", "address to listen on")
		fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
		fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
		fs.StringVar(&f.tlsCert, "tls-cert", "", "serve HTTPS (HTTP/2 and HTTP/1.1, TLS 1.2 or newer) with this PEM certificate chain; needs --tls-key")
		fs.StringVar(&f.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
		fs.StringVar(&f.alertsConfig, "alerts-config", m.Getenv("VELLUM_ALERTS_CONFIG"), "alert configuration file, TOML (env VELLUM_ALERTS_CONFIG): webhook and syslog sinks, silence windows,\nthresholds, auto-revoke policy; see docs/alerts.md (default: built-in thresholds, no sinks)")
		fs.StringVar(&f.expectEvery, "expect-every", "", "silence window for every key and source that has written to a log: alert when one writes nothing\nfor this long (for example 10m; overrides the config file's [silence] default; 0: off)")
		fs.StringVar(&f.advertise, "advertise", "", "with --postgres: the URL at which the other nodes reach this one (http://host:port or https://host:port),\nto forward it the appends of the logs whose sequencer lease it holds; node-to-node requests are\nauthenticated with a key derived from server.key (default: the --listen address when it names a host,\nsuch as 127.0.0.1:7070 or 10.0.0.5:7070; with 0.0.0.0 or [::] give it, or the node neither takes\nleases nor forwards: it sequences under the per-round lock)")
		fs.IntVar(&f.auditRate, "audit-rate", 2000, "entries per second the background auditor re-verifies against the tree and the chain (0: off);\na mismatch stops checkpoint signing for that log and records alert.tamper in _system")
	}
	return f
}

func (m *Main) newFlagSet(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(m.Stderr, "Usage: vellum %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return usageError("run 'vellum "+fs.Name()+" -h' for its flags", "%v", err)
	}
	return nil
}

var errHelp = errors.New("help requested")

func (m *Main) logger(f *serveFlags) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, usageError("use debug, info, warn or error", "bad --log-level %q", f.logLevel)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch f.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(m.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(m.Stderr, opts)), nil
	}
	return nil, usageError("use text or json", "bad --log-format %q", f.logFormat)
}

func (m *Main) openNode(ctx context.Context, f *serveFlags, log *slog.Logger) (*node.Node, error) {
	if f.name != "" {
		if err := node.ValidOriginPrefix(f.name); err != nil {
			return nil, usageError("", "%v", err)
		}
	}
	cfg := node.Config{Dir: f.data, OriginPrefix: f.name, Version: version, Logger: log, AuditRate: f.auditRate}
	if f.alertsConfig != "" || f.expectEvery != "" {
		ac := alert.DefaultConfig()
		if f.alertsConfig != "" {
			var err error
			if ac, err = alert.LoadConfig(f.alertsConfig); err != nil {
				return nil, errorf("fix the file (docs/alerts.md lists every setting; docs/alerts.example.toml is a working example)", "%v", err)
			}
		}
		if f.expectEvery != "" {
			d, err := alert.ParseDuration(f.expectEvery)
			if err != nil || d < 0 {
				return nil, usageError("use a duration such as 10m, 1h or 1d", "bad --expect-every %q", f.expectEvery)
			}
			ac.Silence.Default = alert.Duration(d)
		}
		cfg.Alerts = ac
	}
	where := f.data
	if f.postgres != "" {
		cfg.OpenStore = m.openPostgres(f.postgres)
		where = f.data + " with " + redactURL(f.postgres)
	}
	n, err := node.Open(ctx, cfg)
	if err != nil {
		return nil, errorf("check --data (and --postgres); the server refuses to start on data it cannot vouch for", "opening %s: %v", where, err)
	}
	if n.Init.Created {
		fmt.Fprintf(m.Stderr, "vellum: created %s: server key %s, admin key written once to %s (mode 0600)\n",
			f.data, filepath.Join(f.data, node.ServerKeyFile), n.Init.AdminKeyPath)
		fmt.Fprintf(m.Stderr, "vellum: use it with: export VELLUM_KEY=$(cat %s)\n", n.Init.AdminKeyPath)
	}
	fmt.Fprintf(m.Stderr, "vellum: origin prefix %s\nvellum: verifier key %s\n", n.Init.OriginPrefix, n.VerifierKey())
	return n, nil
}

func (m *Main) init(ctx context.Context, args []string) error {
	fs := m.newFlagSet("init", "init [--data DIR] [--postgres URL] [--name ORIGIN-PREFIX]")
	f := m.serverFlags(fs, false)
	if err := parseFlags(fs, args); err != nil {
		return helpOK(err)
	}
	n, err := m.openNode(ctx, f, slog.New(slog.NewTextHandler(m.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return err
	}
	if !n.Init.Created {
		fmt.Fprintf(m.Stderr, "vellum: %s was already initialised; nothing changed\n", f.data)
	}
	return n.Close()
}

func helpOK(err error) error {
	if errors.Is(err, errHelp) {
		return nil
	}
	return err
}

func (m *Main) serve(ctx context.Context, args []string) error {
	fs := m.newFlagSet("serve", "serve [--data DIR] [--postgres URL [--advertise URL]] [--listen ADDR] [--name ORIGIN-PREFIX] [--tls-cert FILE --tls-key FILE]")
	f := m.serverFlags(fs, true)
	if err := parseFlags(fs, args); err != nil {
		return helpOK(err)
	}
	if f.advertise != "" {
		if u, err := url.Parse(f.advertise); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return usageError("give --advertise as http://host:port or https://host:port", "bad --advertise %q", f.advertise)
		}
	}
	if f.auditRate < 0 {
		return usageError("give entries per second, or 0 to turn the auditor off", "--audit-rate must not be negative")
	}
	var tlsCfg *tls.Config
	switch {
	case (f.tlsCert == "") != (f.tlsKey == ""):
		return usageError("give both --tls-cert FILE and --tls-key FILE, or neither", "--tls-cert and --tls-key go together")
	case f.tlsCert != "":
		cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
		if err != nil {
			return errorf("--tls-cert takes a PEM certificate chain and --tls-key its PEM private key", "loading the TLS certificate: %v", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	log, err := m.logger(f)
	if err != nil {
		return err
	}
	n, err := m.openNode(ctx, f, log)
	if err != nil {
		return err
	}
	defer n.Close()
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return errorf("is another vellum (or something else) listening there? choose another with --listen", "listening on %s: %v", f.listen, err)
	}
	if host, _, _ := net.SplitHostPort(ln.Addr().String()); tlsCfg == nil && !net.ParseIP(host).IsLoopback() {
		log.Warn("serving plain HTTP on a non-loopback address: request signatures still protect appends, but answers and bearer credentials travel in the clear; use --tls-cert and --tls-key, or put TLS in front of it", "addr", ln.Addr().String())
	}
	srv := &http.Server{
		Handler:           n.Handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      120 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		TLSConfig:         tlsCfg,
	}
	// A diagnostic: VELLUM_CPUPROFILE=FILE writes a Go CPU profile of the
	// server's whole run, closed at shutdown (for `go tool pprof`).
	if p := m.Getenv("VELLUM_CPUPROFILE"); p != "" {
		pf, err := os.Create(p)
		if err != nil {
			return errorf("", "VELLUM_CPUPROFILE: %v", err)
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			return errorf("", "VELLUM_CPUPROFILE: %v", err)
		}
		defer func() {
			pprof.StopCPUProfile()
			pf.Close()
		}()
	}
	addr := ln.Addr().String()
	scheme := "http"
	if tlsCfg != nil {
		scheme = "https"
	}
	if f.postgres != "" {
		adv := f.advertise
		if host, _, _ := net.SplitHostPort(addr); adv == "" && !net.ParseIP(host).IsUnspecified() {
			adv = scheme + "://" + addr
		}
		if err := n.SetAdvertise(adv); err != nil {
			return usageError("give --advertise as http://host:port or https://host:port", "%v", err)
		}
		if adv == "" {
			log.Warn("no --advertise address (listening on all interfaces): this node takes no sequencer lease and does not forward; give --advertise for the best throughput with several nodes")
		}
	}
	fmt.Fprintf(m.Stderr, "vellum: serving on %s://%s (data in %s)\n", scheme, addr, f.data)
	if m.Ready != nil {
		m.Ready(addr)
	}
	errc := make(chan error, 1)
	go func() {
		if tlsCfg != nil {
			// ServeTLS offers HTTP/2 (ALPN h2) and HTTP/1.1.
			errc <- srv.ServeTLS(ln, "", "")
			return
		}
		errc <- srv.Serve(ln)
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// A diagnostic: VELLUM_HEAPPROFILE=FILE writes a Go heap profile when
	// the shutdown begins (for `go tool pprof`: what the run left in memory).
	if p := m.Getenv("VELLUM_HEAPPROFILE"); p != "" {
		if pf, err := os.Create(p); err != nil {
			log.Error("VELLUM_HEAPPROFILE", "err", err)
		} else {
			if err := pprof.WriteHeapProfile(pf); err != nil {
				log.Error("VELLUM_HEAPPROFILE", "err", err)
			}
			pf.Close()
		}
	}
	log.Info("shutting down: finishing in-flight requests")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Error("shutdown", "err", err)
	}
	if err := n.Close(); err != nil && !strings.Contains(err.Error(), "closed") {
		return err
	}
	log.Info("stopped")
	return nil
}
