package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/ledger"
	"github.com/vellum-audit/vellum/internal/nodeauth"
	"github.com/vellum-audit/vellum/internal/server"
	"github.com/vellum-audit/vellum/internal/store"
)

// router is the node's ledger.Router on a store that several nodes share:
// it takes a log's sticky sequencer lease when it is free, and otherwise
// forwards the log's rounds to the node that holds it, at the address that
// node advertised (docs/postgres.md, "Forwarding").
type router struct {
	n      *Node
	leases store.Leasing
	key    *nodeauth.Key
	client *http.Client

	mu        sync.Mutex
	advertise string              // this node's address for other nodes ("": takes no lease)
	holders   map[string]holderAt // where each log was last forwarded
	retryAt   time.Time           // after a failure to take a lease: not before then
}

type holderAt struct {
	url   string
	until time.Time
}

// holderTTL is how long a known holder is forwarded to before the lease is
// tried again (a failed forward forgets it at once).
const holderTTL = time.Second

// leaseRetry is how long a node that failed to take a lease (the database
// refused) sequences its rounds itself before it tries again.
const leaseRetry = 5 * time.Second

// SetAdvertise sets the address (http://host:port or https://…) at which
// other nodes reach this one. Until it is set the node takes no sequencer
// lease: it forwards to a holder if there is one, and otherwise sequences
// its rounds under the per-round lock, as every node did before leases.
func (n *Node) SetAdvertise(u string) error {
	if n.router == nil {
		return nil
	}
	if u != "" {
		pu, err := url.Parse(u)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" || (pu.Path != "" && pu.Path != "/") || pu.RawQuery != "" {
			return fmt.Errorf("advertised address %q: want http://host:port or https://host:port", u)
		}
		u = pu.Scheme + "://" + pu.Host
	}
	n.router.mu.Lock()
	n.router.advertise = u
	n.router.mu.Unlock()
	return nil
}

// NodeAuthKey is the key that authenticates this deployment's nodes to
// each other (derived from the server key; nil without a shared store).
func (n *Node) NodeAuthKey() *nodeauth.Key {
	if n.router == nil {
		return nil
	}
	return n.router.key
}

// HoldsLease reports whether this node holds log's sequencer lease.
func (n *Node) HoldsLease(log string) bool {
	return n.router != nil && n.router.leases.HoldsLease(log)
}

func newRouter(n *Node, l store.Leasing) (*router, error) {
	key, err := nodeauth.DeriveKey(n.priv.Seed())
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 16
	return &router{
		n: n, leases: l, key: key, holders: map[string]holderAt{},
		client: &http.Client{Transport: tr, Timeout: 60 * time.Second},
	}, nil
}

// Route implements ledger.Router.
func (rt *router) Route(ctx context.Context, log string) (string, bool) {
	if rt.leases.HoldsLease(log) {
		return "", true
	}
	rt.mu.Lock()
	self := rt.advertise
	h, ok := rt.holders[log]
	rt.mu.Unlock()
	if ok && time.Now().Before(h.until) {
		return h.url, false
	}
	var held bool
	var holder string
	if self != "" {
		rt.mu.Lock()
		wait := time.Now().Before(rt.retryAt)
		rt.mu.Unlock()
		if wait {
			return "", true
		}
		var err error
		held, holder, err = rt.leases.TryLease(ctx, log, self)
		if err != nil {
			// Not retried for a few seconds (a missing grant would fail
			// every round): meanwhile rounds are sequenced here.
			rt.mu.Lock()
			rt.retryAt = time.Now().Add(leaseRetry)
			rt.mu.Unlock()
			rt.n.Config.Logger.Warn("taking the sequencer lease failed; sequencing under the per-round lock", "log", log, "retry_in", leaseRetry, "err", err)
			return "", true
		}
		if held {
			rt.n.Config.Logger.Info("took the sequencer lease", "log", log, "advertise", self)
			return "", true
		}
	} else {
		return "", true
	}
	if holder == "" || holder == self {
		// The holder has not recorded its address yet (or the record is
		// this node's own, from a lease it lost): sequence here, under
		// the per-round lock.
		return "", true
	}
	rt.mu.Lock()
	rt.holders[log] = holderAt{url: holder, until: time.Now().Add(holderTTL)}
	rt.mu.Unlock()
	return holder, false
}

// Remote implements ledger.Router.
func (rt *router) Remote(log string) bool {
	if rt.leases.HoldsLease(log) {
		return false
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	h, ok := rt.holders[log]
	return ok && time.Now().Before(h.until)
}

func (rt *router) forget(log string) {
	rt.mu.Lock()
	delete(rt.holders, log)
	rt.mu.Unlock()
}

// Forward implements ledger.Router: one POST of the whole round.
func (rt *router) Forward(ctx context.Context, holder, log string, reqs []ledger.ForwardRequest) (ledger.ForwardResponse, error) {
	fb := server.ForwardBody{Log: log, Requests: make([]server.ForwardedRequest, len(reqs))}
	for i, r := range reqs {
		evs := make([]server.ForwardedEvent, len(r.Events))
		for j, ev := range r.Events {
			evs[j] = server.ForwardedEvent{Event: ev.Event.Canonical, KeyID: ev.KeyID, Auth: ev.Auth, Sig: ev.Sig, ServerSigned: ev.ServerSigned}
		}
		fb.Requests[i].Events = evs
	}
	body, err := server.EncodeJSON(fb)
	if err != nil {
		return ledger.ForwardResponse{}, fmt.Errorf("%w: %v", ledger.ErrNotForwarded, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(holder, "/")+server.ForwardPath, bytes.NewReader(body))
	if err != nil {
		rt.forget(log)
		return ledger.ForwardResponse{}, fmt.Errorf("%w: %v", ledger.ErrNotForwarded, err)
	}
	req.Header.Set("Content-Type", "application/json")
	rt.key.Sign(req, body, time.Now())
	resp, err := rt.client.Do(req)
	if err != nil {
		rt.forget(log)
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return ledger.ForwardResponse{}, fmt.Errorf("%w: %v", ledger.ErrNotForwarded, err)
		}
		return ledger.ForwardResponse{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// The holder answers anything but 200 before it queues anything.
		rt.forget(log)
		var e api.Error
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		json.Unmarshal(b, &e)
		return ledger.ForwardResponse{}, fmt.Errorf("%w: the holder answered %d %s", ledger.ErrNotForwarded, resp.StatusCode, e.Error.Message)
	}
	var ans server.ForwardAnswer
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<30)).Decode(&ans); err != nil {
		rt.forget(log)
		return ledger.ForwardResponse{}, fmt.Errorf("reading the holder's answer: %w", err)
	}
	out := ledger.ForwardResponse{Results: make([]ledger.ForwardResult, len(ans.Results)), Checkpoint: ans.Checkpoint}
	for i, res := range ans.Results {
		if res.Error != nil {
			out.Results[i].Err = &ledger.RemoteError{Status: res.Status, Code: res.Error.Code, Message: res.Error.Message, Index: res.Error.Index, RetryAfter: res.RetryAfter}
			continue
		}
		out.Results[i].Receipts = res.Receipts
	}
	return out, nil
}
