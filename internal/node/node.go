// Package node wires a data directory into a running vellum: it creates or
// loads the server's checkpoint key and the first admin key, opens the
// store, rebuilds the key registry from _system and builds the ledger and
// the HTTP handler. cmd/vellum and the end-to-end tests share it.
//
// Data directory layout (all created 0700/0600):
//
//	config.json   origin prefix (fixed at init)
//	server.key    checkpoint signing key (golang.org/x/mod/sumdb/note format)
//	server.vkey   its verifier key, public
//	admin.key     the first admin provisioning key token, written once
//	vellum.db     the SQLite database of the logs (plus -wal and -shm files)
//	index.db      the search index, a projection of vellum.db that the
//	              store's indexer writes after each commit (plus -wal and
//	              -shm); deleting it while stopped only costs a rebuild
package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/alert"
	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/keys"
	"github.com/vellum-audit/vellum/internal/ledger"
	"github.com/vellum-audit/vellum/internal/metrics"
	"github.com/vellum-audit/vellum/internal/nodeauth"
	"github.com/vellum-audit/vellum/internal/server"
	"github.com/vellum-audit/vellum/internal/store"
	"github.com/vellum-audit/vellum/internal/store/sqlite"
)

// File names in the data directory.
const (
	ConfigFile      = "config.json"
	ServerKeyFile   = "server.key"
	VerifierKeyFile = "server.vkey"
	AdminKeyFile    = "admin.key"
)

// Config is the node configuration.
type Config struct {
	Dir          string
	OriginPrefix string // empty: keep the stored one, or a default at init
	Version      string
	Logger       *slog.Logger
	// OpenStore, if set, opens the store (PostgreSQL); by default the
	// SQLite database in Dir. The keys always stay in Dir, never in the
	// store.
	OpenStore func(ctx context.Context) (store.Store, error)
	// AuditRate, if positive, runs the background auditor (auditor.go):
	// it re-verifies at most AuditRate stored entries per second, over
	// every log, pass after pass, AuditPause apart (default 10 s).
	AuditRate  int
	AuditPause time.Duration
	// QueueLimit bounds the events waiting per log (ledger default
	// 65,536); BodyBudget the bytes of request bodies in memory (server
	// default 64 MiB). Past either, appends get 503 with Retry-After.
	QueueLimit int
	BodyBudget int64
	// Alerts configures the alert detectors and sinks (docs/alerts.md);
	// nil: the defaults, with no sinks (alerts go to _system, metrics and
	// the log only).
	Alerts *alert.Config
	// Advertise is the address (http://host:port) at which the other
	// nodes sharing the store reach this one, to forward it the rounds of
	// the logs whose sequencer lease it holds (see SetAdvertise).
	Advertise string
}

type diskConfig struct {
	OriginPrefix string `json:"origin_prefix"`
}

// InitResult says what Init did.
type InitResult struct {
	Created      bool   // a new data directory was set up
	AdminKeyPath string // where the admin token was written
	OriginPrefix string
	VerifierKey  string
}

// ValidOriginPrefix checks an origin prefix: it names the checkpoint key, so
// it must be a valid note key name (no spaces, no '+').
func ValidOriginPrefix(p string) error {
	if p == "" || len(p) > 200 || strings.ContainsAny(p, "+ \t\n\r") || !isPrintableASCII(p) || strings.HasSuffix(p, "/") {
		return fmt.Errorf("origin prefix %q: use printable ASCII without spaces or '+', not ending in '/' (for example \"audit.example.com/prod\")", p)
	}
	return nil
}

func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= 0x20 || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// Node is an open data directory with everything needed to serve it.
type Node struct {
	Config   Config
	Store    store.Store
	Ledger   *ledger.Ledger
	Registry *keys.Registry
	Handler  http.Handler
	Server   *server.Server
	Metrics  *metrics.Registry // served at GET /metrics
	Alerts   *alert.Engine
	Init     InitResult
	signer   note.Signer
	vkey     string
	priv     ed25519.PrivateKey

	genesis atomic.Bool // the genesis entry is being written
	shared  bool        // the store is shared with other nodes (store.Sequencing)
	router  *router     // sequencer leases and forwarding (a shared store with leases)

	regMu      sync.Mutex // serializes registry catch-up
	sysApplied int64      // _system entries folded into the registry
	closeOnce  sync.Once
	closeErr   error
	alertDisp  *alert.Dispatcher
	stopBG     context.CancelFunc
	bg         sync.WaitGroup
}

// expiryLoop records key expiries in _system as they happen (every
// second), until ctx ends. Enforcement does not wait for it: a key is
// refused from its expiry time on.
func (n *Node) expiryLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := n.Server.RecordExpiries(ctx); err != nil && ctx.Err() == nil {
				n.Config.Logger.Error("recording key expiries", "err", err)
			}
		}
	}
}

// Open initialises dir if needed and opens it.
func Open(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data directory: %w", err)
	}
	n := &Node{Config: cfg, Registry: keys.NewRegistry()}
	if err := n.loadOrCreateKeys(); err != nil {
		return nil, err
	}
	var st store.Store
	var err error
	if cfg.OpenStore != nil {
		st, err = cfg.OpenStore(ctx)
	} else {
		st, err = sqlite.Open(ctx, cfg.Dir)
	}
	if err != nil {
		return nil, err
	}
	n.Store = st
	_, n.shared = st.(store.Sequencing)
	n.Metrics = newMetrics(cfg.Version)
	n.Alerts, err = n.newAlerts(cfg.Alerts, n.Metrics)
	if err != nil {
		st.Close()
		return nil, err
	}
	lc := ledger.Config{
		Store: st, Signer: n.signer, Verifier: mustVerifier(n.vkey), OriginPrefix: n.Init.OriginPrefix,
		Keys: n.resolve, Admit: n.admit, Logger: cfg.Logger, Metrics: n.Metrics, QueueLimit: cfg.QueueLimit,
		Observe: n.Alerts.Observe,
	}
	if n.shared {
		// Every round catches up with _system under its log's lock, so a
		// key revoked or changed on another node is refused here too.
		lc.BeforeRound = func(ctx context.Context, _ string, lease store.Lease) error {
			n.regMu.Lock()
			current := lease.SystemSize >= 0 && n.sysApplied >= lease.SystemSize
			n.regMu.Unlock()
			if current {
				return nil // no query: the lease says _system has not moved
			}
			return n.syncRegistry(ctx)
		}
	}
	if ls, ok := st.(store.Leasing); ok && n.shared {
		if n.router, err = newRouter(n, ls); err != nil {
			st.Close()
			return nil, err
		}
		lc.Router = n.router
		if err := n.SetAdvertise(cfg.Advertise); err != nil {
			st.Close()
			return nil, err
		}
	}
	n.Ledger, err = ledger.New(lc)
	if err != nil {
		st.Close()
		return nil, err
	}
	if err := n.bootstrap(ctx); err != nil {
		n.Close()
		return nil, err
	}
	if _, ok := n.Store.(backgroundIndexer); !ok {
		if err := n.CatchUpIndex(ctx, nil); err != nil {
			n.Close()
			return nil, fmt.Errorf("catching up the search index: %w", err)
		}
	}
	var nodeAuth *nodeauth.Verifier
	if n.router != nil {
		nodeAuth = nodeauth.NewVerifier(n.router.key)
	}
	n.Server = server.New(server.Config{
		Ledger: n.Ledger, Registry: n.Registry, ServerKey: n.priv, VerifierKey: n.vkey,
		OriginPrefix: n.Init.OriginPrefix, Version: cfg.Version, Logger: cfg.Logger,
		Refold: n.fold, Sync: n.syncRegistry, Metrics: n.Metrics, BodyBudget: cfg.BodyBudget,
		Alerts:   n.Alerts,
		NodeAuth: nodeAuth,
	})
	if sq, ok := st.(*sqlite.Store); ok {
		n.Metrics.GaugeFunc("vellum_search_index_behind_entries", "Committed entries the SQLite search indexer has not yet written to index.db, by log (searches wait up to 2 s for them, then answer 503).", []string{"log"}, func(emit func(float64, ...string)) {
			for log, b := range sq.IndexStats().Behind {
				emit(float64(b), log)
			}
		})
		n.Metrics.GaugeFunc("vellum_search_index_queued_bytes", "Estimated memory of the index documents waiting for the SQLite search indexer (bounded at 24 MiB).", nil, func(emit func(float64, ...string)) {
			emit(float64(sq.IndexStats().QueuedBytes))
		})
		n.Metrics.CounterFunc("vellum_search_index_log_reads_total", "Times the SQLite search indexer dropped a log's waiting documents (memory bound reached, or a gap) and read the entries from the log instead, which costs a second parse of each.", nil, func(emit func(float64, ...string)) {
			emit(float64(sq.IndexStats().LogReads))
		})
	}
	if n.router != nil {
		n.Metrics.GaugeFunc("vellum_sequencer_lease", "1 for each log whose sticky sequencer lease this node holds (it sequences the log; other nodes forward to it).", []string{"log"}, func(emit func(float64, ...string)) {
			for _, li := range n.Ledger.OpenLogs() {
				if n.router.leases.HoldsLease(li) {
					emit(1, li)
				}
			}
		})
	}
	n.Handler = n.Server
	ctx, cancel := context.WithCancel(context.Background())
	n.stopBG = cancel
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		n.expiryLoop(ctx)
	}()
	n.bg.Add(2)
	go func() {
		defer n.bg.Done()
		n.Alerts.Run(ctx)
	}()
	go func() {
		defer n.bg.Done()
		// The alert configuration goes on the record at start (if it
		// changed); the search index may still be catching up: retry.
		acfg := n.Alerts.Config()
		for {
			err := n.recordAlertConfig(ctx, acfg)
			if err == nil || ctx.Err() != nil {
				return
			}
			n.Config.Logger.Warn("recording the alert configuration in _system; retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(2 * time.Second):
			}
		}
	}()
	if cfg.AuditRate > 0 {
		pause := cfg.AuditPause
		if pause <= 0 {
			pause = 10 * time.Second
		}
		n.bg.Add(1)
		go func() {
			defer n.bg.Done()
			n.auditLoop(ctx, cfg.AuditRate, pause)
		}()
	}
	if n.shared {
		n.bg.Add(1)
		go func() {
			defer n.bg.Done()
			n.followSystem(ctx)
		}()
	}
	return n, nil
}

// followSystem applies the key changes that other nodes record in _system
// as soon as they are seen (the store's notifications wake the ledger), and
// at least every 500 ms, so a revocation is enforced by every node's
// authentication within a second.
func (n *Node) followSystem(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		_, changed, err := n.Ledger.Size(ctx, api.SystemLog)
		if err != nil {
			changed = nil
		}
		if err := n.syncRegistry(ctx); err != nil && ctx.Err() == nil {
			n.Config.Logger.Error("following _system", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-t.C:
		}
	}
}

// syncRegistry folds the _system entries recorded since the last fold into
// the registry (a full fold if one does not apply: _system is the truth).
func (n *Node) syncRegistry(ctx context.Context) error {
	n.regMu.Lock()
	defer n.regMu.Unlock()
	li, err := n.Store.Log(ctx, api.SystemLog)
	if err != nil {
		return err
	}
	for n.sysApplied < li.Size {
		end := min(n.sysApplied+1000, li.Size)
		es, err := n.Store.ReadEntries(ctx, api.SystemLog, n.sysApplied, end)
		if err != nil {
			return err
		}
		if len(es) == 0 {
			return fmt.Errorf("_system: entries %d to %d missing", n.sysApplied, end)
		}
		for _, data := range es {
			ev, err := SystemEvent(data)
			if err == nil {
				err = n.Registry.Apply(ev)
			}
			if err != nil {
				n.Config.Logger.Error("registry diverged from _system; rebuilding it", "index", n.sysApplied, "err", err)
				return n.foldLocked(ctx)
			}
			n.sysApplied++
		}
	}
	return nil
}

func mustVerifier(vkey string) note.Verifier {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		panic(err)
	}
	return v
}

// Close stops the sequencers (after they finish what is queued) and closes
// the store.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		if n.Alerts != nil && n.stopBG != nil {
			n.Alerts.Close() // records what the detectors raised
		}
		if n.stopBG != nil {
			n.stopBG()
			n.bg.Wait()
		}
		if n.alertDisp != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			n.alertDisp.Close(ctx)
			cancel()
		}
		if n.Ledger != nil {
			n.Ledger.Close()
		}
		if n.Store != nil {
			n.closeErr = n.Store.Close()
		}
	})
	return n.closeErr
}

// VerifierKey is the checkpoint verifier key.
func (n *Node) VerifierKey() string { return n.vkey }

func (n *Node) resolve(keyID, log string, t time.Time) (ed25519.PublicKey, error) {
	if keyID == entry.ServerKeyID {
		return n.priv.Public().(ed25519.PublicKey), nil
	}
	k, err := n.Registry.At(keyID, t)
	if err != nil {
		return nil, err
	}
	if err := k.ActiveAt(t); err != nil {
		return nil, err
	}
	if !k.Allows("append", log) && log != api.SystemLog {
		return nil, fmt.Errorf("%w: key %s may not append to %q", keys.ErrScope, keyID, log)
	}
	return k.PublicKey, nil
}

// admit decides, at a sequencer round's received time, whether a new event
// may be recorded: its key must be valid and in scope then, and a key
// lifecycle record must be a valid transition then (so the registry, the
// fold of _system, never refuses what _system holds).
func (n *Node) admit(log string, ev *ledger.Submitted, t time.Time) error {
	if _, err := n.resolve(ev.KeyID, log, t); err != nil {
		return err
	}
	if log == api.SystemLog && keys.IsLifecycle(ev.Event.Action) && !n.genesis.Load() {
		return n.Registry.Check(keys.Event{Received: t, Signer: ev.KeyID, Action: ev.Event.Action, Metadata: ev.Event.Metadata})
	}
	return nil
}

func (n *Node) path(name string) string { return filepath.Join(n.Config.Dir, name) }

// writeSecret writes data to path with mode 0600, refusing to overwrite.
func writeSecret(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (n *Node) loadOrCreateKeys() error {
	var dc diskConfig
	b, err := os.ReadFile(n.path(ConfigFile))
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &dc); err != nil {
			return fmt.Errorf("%s: %v", n.path(ConfigFile), err)
		}
		if n.Config.OriginPrefix != "" && n.Config.OriginPrefix != dc.OriginPrefix {
			return fmt.Errorf("this data directory's origin prefix is %q, not %q: the prefix is fixed when the directory is created (it names every checkpoint)", dc.OriginPrefix, n.Config.OriginPrefix)
		}
	case errors.Is(err, os.ErrNotExist):
		dc.OriginPrefix = n.Config.OriginPrefix
		if dc.OriginPrefix == "" {
			var r [4]byte
			rand.Read(r[:])
			dc.OriginPrefix = fmt.Sprintf("vellum.local/%x", r)
		}
		if err := ValidOriginPrefix(dc.OriginPrefix); err != nil {
			return err
		}
		b, _ := json.MarshalIndent(dc, "", "  ")
		if err := os.WriteFile(n.path(ConfigFile), append(b, '\n'), 0o600); err != nil {
			return err
		}
	default:
		return err
	}
	n.Init.OriginPrefix = dc.OriginPrefix
	skey, err := os.ReadFile(n.path(ServerKeyFile))
	if errors.Is(err, os.ErrNotExist) {
		s, v, err := note.GenerateKey(rand.Reader, dc.OriginPrefix)
		if err != nil {
			return err
		}
		if err := writeSecret(n.path(ServerKeyFile), []byte(s+"\n")); err != nil {
			return fmt.Errorf("writing server key: %w", err)
		}
		if err := os.WriteFile(n.path(VerifierKeyFile), []byte(v+"\n"), 0o644); err != nil {
			return err
		}
		skey = []byte(s)
	} else if err != nil {
		return fmt.Errorf("reading server key: %w", err)
	}
	sk := strings.TrimSpace(string(skey))
	if n.signer, err = note.NewSigner(sk); err != nil {
		return fmt.Errorf("%s: %v", n.path(ServerKeyFile), err)
	}
	if n.signer.Name() != dc.OriginPrefix {
		return fmt.Errorf("%s is named %q but the origin prefix is %q", n.path(ServerKeyFile), n.signer.Name(), dc.OriginPrefix)
	}
	parts := strings.SplitN(sk, "+", 5)
	raw, err := base64.StdEncoding.DecodeString(parts[len(parts)-1])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return fmt.Errorf("%s: not an Ed25519 note key", n.path(ServerKeyFile))
	}
	n.priv = ed25519.NewKeyFromSeed(raw[1:])
	if n.vkey, err = note.NewEd25519VerifierKey(dc.OriginPrefix, n.priv.Public().(ed25519.PublicKey)); err != nil {
		return err
	}
	n.Init.VerifierKey = n.vkey
	return nil
}

// bootstrap creates _system (with the genesis entry registering the first
// admin key) and _access on first start, and on every start rebuilds the
// key registry from _system.
func (n *Node) bootstrap(ctx context.Context) error {
	if li, err := n.Store.Log(ctx, api.SystemLog); err == nil && li.Size > 0 {
		return n.fold(ctx)
	}
	// Another node sharing the store may be writing the genesis entry
	// now: it is written only into an empty _system (AppendAt), and the
	// node that loses joins.
	// First start. The admin token is written before the genesis entry, so
	// that a crash in between leaves a token that a restart reuses.
	tokPath := n.path(AdminKeyFile)
	var tok *keys.Token
	if b, err := os.ReadFile(tokPath); err == nil {
		if tok, err = keys.ParseToken(string(b)); err != nil {
			return fmt.Errorf("%s: %v", tokPath, err)
		}
	} else {
		if tok, err = keys.NewToken(); err != nil {
			return err
		}
		if err := writeSecret(tokPath, []byte(tok.Encode()+"\n")); err != nil {
			return fmt.Errorf("writing admin key: %w", err)
		}
	}
	now := time.Now().UTC()
	spec := keys.Spec{ID: tok.ID(), Name: "admin", Description: "first admin key, made at init", PublicKey: tok.PublicKey(), Role: keys.RoleAdmin, Scopes: keys.RoleScopes[keys.RoleAdmin]}
	md, _ := json.Marshal(keys.CreateRecord{Key: spec})
	// The genesis key is registered provisionally so that its own entry
	// can be checked; the registry is then rebuilt from _system.
	if err := n.Registry.Apply(keys.Event{Received: now.Add(-time.Second), Signer: spec.ID, Action: keys.ActionKeyCreate, Metadata: md}); err != nil {
		return err
	}
	for _, name := range []string{api.SystemLog, api.AccessLog} {
		if err := n.Ledger.CreateLog(ctx, name); err != nil && !errors.Is(err, ledger.ErrExists) {
			return err
		}
	}
	ev, _ := json.Marshal(api.Event{
		Time: now.Format(time.RFC3339Nano), Action: keys.ActionKeyCreate,
		Actor:   api.Actor{ID: spec.ID, Type: "key", Name: "admin"},
		Targets: []api.Target{{ID: spec.ID, Type: "key", Name: "admin"}},
		Outcome: "success", Source: "vellum-init", Metadata: md,
	})
	pe, err := entry.ParseEvent(ev)
	if err != nil {
		return err
	}
	sig := ed25519.Sign(tok.SigningKey(), entry.Message(api.SystemLog, pe.Canonical))
	// The genesis key is already registered provisionally; its entry is
	// checked by the fold that follows.
	n.genesis.Store(true)
	defer n.genesis.Store(false)
	if _, err := n.Ledger.AppendAt(ctx, api.SystemLog, 0, []ledger.Submitted{{Event: pe, KeyID: spec.ID, Auth: entry.AuthSignature, Sig: sig}}); err != nil {
		if errors.Is(err, ledger.ErrConflict) {
			// Another node wrote the genesis entry first: this node's admin
			// token was never registered and is removed.
			n.genesis.Store(false)
			os.Remove(tokPath)
			n.Config.Logger.Info("joined a store that another node initialised")
			return n.fold(ctx)
		}
		return fmt.Errorf("writing the genesis entry: %w", err)
	}
	if err := n.fold(ctx); err != nil {
		return err
	}
	n.Init.Created = true
	n.Init.AdminKeyPath = tokPath
	return nil
}

// fold rebuilds the registry from _system's lifecycle entries.
func (n *Node) fold(ctx context.Context) error {
	n.regMu.Lock()
	defer n.regMu.Unlock()
	return n.foldLocked(ctx)
}

func (n *Node) foldLocked(ctx context.Context) error {
	reg, size, err := fold(ctx, n.Store)
	if err != nil {
		return err
	}
	n.Registry.Replace(reg)
	n.sysApplied = size
	return nil
}

// Fold computes the key registry from the _system log in st: the fold of
// its lifecycle entries, each checked as the auditor checks it.
func Fold(ctx context.Context, st interface {
	Log(ctx context.Context, name string) (store.LogInfo, error)
	ReadEntries(ctx context.Context, log string, start, end int64) ([][]byte, error)
}) (*keys.Registry, error) {
	reg, _, err := fold(ctx, st)
	return reg, err
}

func fold(ctx context.Context, st interface {
	Log(ctx context.Context, name string) (store.LogInfo, error)
	ReadEntries(ctx context.Context, log string, start, end int64) ([][]byte, error)
}) (*keys.Registry, int64, error) {
	reg := keys.NewRegistry()
	li, err := st.Log(ctx, api.SystemLog)
	if err != nil {
		return nil, 0, err
	}
	for start := int64(0); start < li.Size; start += 1000 {
		es, err := st.ReadEntries(ctx, api.SystemLog, start, min(start+1000, li.Size))
		if err != nil {
			return nil, 0, err
		}
		for i, data := range es {
			idx := start + int64(i)
			ev, err := SystemEvent(data)
			if err != nil {
				return nil, 0, fmt.Errorf("_system entry %d: %w", idx, err)
			}
			if err := reg.Apply(ev); err != nil {
				return nil, 0, fmt.Errorf("_system entry %d: %w", idx, err)
			}
		}
	}
	return reg, li.Size, nil
}

// SystemEvent decodes a _system entry into what the registry folds.
func SystemEvent(data []byte) (keys.Event, error) {
	e, err := entry.Parse(data)
	if err != nil {
		return keys.Event{}, err
	}
	var ev struct {
		Action   string          `json:"action"`
		Metadata json.RawMessage `json:"metadata"`
	}
	if err := json.Unmarshal(e.Event, &ev); err != nil {
		return keys.Event{}, err
	}
	return keys.Event{Index: e.Index, Received: e.ReceivedTime(), Signer: e.KeyID, Action: ev.Action, Metadata: ev.Metadata}, nil
}
