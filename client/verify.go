package client

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/checkpoint"
	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/keys"
	"github.com/vellum-audit/vellum/internal/sigbatch"
)

// ErrVerification is wrapped by every verification failure.
var ErrVerification = checkpoint.ErrVerify

// Checkpoint is a verified checkpoint.
type Checkpoint struct {
	Origin string
	Size   int64
	Hash   [32]byte
	Text   []byte // the signed note
}

func fromInternal(c checkpoint.Checkpoint, text []byte) Checkpoint {
	return Checkpoint{Origin: c.Origin, Size: c.Size, Hash: c.Hash, Text: text}
}

// Verifier checks checkpoints signed by one vellum server's key.
type Verifier struct {
	nv     note.Verifier
	vkey   string
	pub    ed25519.PublicKey
	prefix string // origin prefix: the key's name
}

// NewVerifier parses a note verifier key (as printed by `vellum info`).
func NewVerifier(vkey string) (*Verifier, error) {
	vkey = strings.TrimSpace(vkey)
	nv, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("bad verifier key %q: %v", vkey, err)
	}
	parts := strings.SplitN(vkey, "+", 3)
	raw, err := base64.StdEncoding.DecodeString(parts[len(parts)-1])
	if err != nil || len(raw) != 1+ed25519.PublicKeySize || raw[0] != 1 {
		return nil, fmt.Errorf("bad verifier key %q: not an Ed25519 key", vkey)
	}
	return &Verifier{nv: nv, vkey: vkey, pub: ed25519.PublicKey(raw[1:]), prefix: nv.Name()}, nil
}

// Key returns the verifier key string.
func (v *Verifier) Key() string { return v.vkey }

// Origin is the checkpoint origin of log.
func (v *Verifier) Origin(log string) string { return v.prefix + "/" + log }

// OpenCheckpoint verifies a signed checkpoint of log.
func (v *Verifier) OpenCheckpoint(log string, signed []byte) (Checkpoint, error) {
	c, err := checkpoint.Open(signed, v.nv, v.Origin(log))
	if err != nil {
		return Checkpoint{}, err
	}
	return fromInternal(c, signed), nil
}

// VerifyReceipt checks a receipt offline: the checkpoint signature and
// origin, that the entry bytes are canonical and hash to the leaf the
// inclusion proof leads from, and that entry and proof agree on log and
// index. If pub is not nil, the entry's event signature is checked with it.
func (v *Verifier) VerifyReceipt(r api.Receipt, pub ed25519.PublicKey) (Checkpoint, error) {
	fail := func(format string, args ...any) (Checkpoint, error) {
		return Checkpoint{}, fmt.Errorf("%w: receipt: "+format, append([]any{ErrVerification}, args...)...)
	}
	p, err := checkpoint.ParseProof([]byte(r.Proof))
	if err != nil {
		return Checkpoint{}, err
	}
	e, err := entry.Parse(r.Entry)
	if err != nil {
		return fail("%v", err)
	}
	if e.Log != r.Log || e.Index != r.Index || p.Index != r.Index {
		return fail("entry (log %q, index %d), proof (index %d) and receipt (log %q, index %d) disagree", e.Log, e.Index, p.Index, r.Log, r.Index)
	}
	leaf := entry.LeafHash(r.Entry)
	if r.LeafHash != "" && r.LeafHash != leaf.String() {
		return fail("leaf hash %s does not match the entry (%s)", r.LeafHash, leaf)
	}
	c, err := p.Verify(v.nv, v.Origin(r.Log), leaf)
	if err != nil {
		return Checkpoint{}, err
	}
	if pub != nil && !ed25519.Verify(pub, e.Message(), e.Sig) {
		return fail("event signature does not verify with the given key")
	}
	return fromInternal(c, p.Checkpoint), nil
}

// VerifyConsistency checks that newer extends older with the given proof.
func VerifyConsistency(older, newer Checkpoint, proof []string) error {
	tp, err := parseHashes(proof)
	if err != nil {
		return err
	}
	o := checkpoint.Checkpoint{Origin: older.Origin, Size: older.Size, Hash: older.Hash}
	n := checkpoint.Checkpoint{Origin: newer.Origin, Size: newer.Size, Hash: newer.Hash}
	return checkpoint.CheckConsistency(o, n, tp)
}

func parseHashes(ss []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(ss))
	for i, s := range ss {
		h, err := tlog.ParseHash(s)
		if err != nil {
			return nil, fmt.Errorf("bad hash %q in proof", s)
		}
		out[i] = h
	}
	return out, nil
}

// Latest fetches log's current checkpoint, verifies its signature and, when
// trusted is not nil, its consistency with trusted.
func (c *Client) Latest(ctx context.Context, v *Verifier, log string, trusted *Checkpoint) (Checkpoint, error) {
	text, err := c.Checkpoint(ctx, log)
	if err != nil {
		return Checkpoint{}, err
	}
	cur, err := v.OpenCheckpoint(log, text)
	if err != nil {
		return Checkpoint{}, err
	}
	if trusted != nil {
		var proof []string
		if trusted.Size > 0 && trusted.Size < cur.Size {
			cp, err := c.ConsistencyProof(ctx, log, trusted.Size, cur.Size)
			if err != nil {
				return Checkpoint{}, err
			}
			proof = cp.Hashes
		}
		if err := VerifyConsistency(*trusted, cur, proof); err != nil {
			return Checkpoint{}, err
		}
	}
	return cur, nil
}

// VerifyEntry checks an entry with its proof (as returned by Entry with
// proof) against the verifier.
func (v *Verifier) VerifyEntry(e api.Entry) (Checkpoint, error) {
	return v.VerifyReceipt(api.Receipt{Log: e.Log, Index: e.Index, LeafHash: e.LeafHash, Entry: e.Data, Proof: e.Proof}, nil)
}

// EntryError names the first entry that failed verification.
type EntryError struct {
	Log    string
	Index  int64
	Reason string
}

func (e *EntryError) Error() string {
	return fmt.Sprintf("%v: log %q, entry %d: %s", ErrVerification, e.Log, e.Index, e.Reason)
}

func (e *EntryError) Unwrap() error { return ErrVerification }

// Auditor recomputes a log from its entries, in order: each entry's
// canonical form and leaf hash, the prev chain, every event signature
// against the keys registered in _system, and the tree root. It keeps
// O(log n) state, so it audits logs of any length.
type Auditor struct {
	log    string
	server ed25519.PublicKey
	reg    *keys.Registry // keys known so far
	n      int64
	prev   tlog.Hash
	stack  []tlog.Hash // roots of complete subtrees, largest first
	sizes  []int64

	// sigOK checks one event signature; nil means crypto/ed25519.
	sigOK func(pub ed25519.PublicKey, msg, sig []byte) bool
	// batch, when not nil, collects the signatures that have one possible
	// key instead of checking them at once; flushSigs checks them.
	batch    *sigbatch.Batch
	batchIdx []int64
	batchKey []string
}

// NewAuditor starts auditing log. reg holds the keys registered in _system
// (see AuditSystem); for _system itself pass an empty registry, which the
// auditor fills as it goes.
func (v *Verifier) NewAuditor(log string, reg *keys.Registry) *Auditor {
	return &Auditor{log: log, server: v.pub, reg: reg}
}

// Size is the number of entries added so far.
func (a *Auditor) Size() int64 { return a.n }

// Add checks the next entry.
func (a *Auditor) Add(data []byte) error { return a.add(data, nil) }

// AddWithLeaf checks the next entry and that its bytes hash to treeLeaf,
// the leaf hash the log's Merkle tree holds for it (served beside the
// entry), so that a changed entry is named exactly.
func (a *Auditor) AddWithLeaf(data []byte, treeLeaf [32]byte) error {
	h := tlog.Hash(treeLeaf)
	return a.add(data, &h)
}

func (a *Auditor) add(data []byte, treeLeaf *tlog.Hash) error {
	fail := func(format string, args ...any) error {
		return &EntryError{Log: a.log, Index: a.n, Reason: fmt.Sprintf(format, args...)}
	}
	leaf := entry.LeafHash(data)
	if treeLeaf != nil && *treeLeaf != leaf {
		return fail("the entry's bytes hash to %s, but the Merkle tree holds leaf %s: the stored entry was changed", leaf, *treeLeaf)
	}
	e, err := entry.ParseFast(data)
	if err != nil {
		return fail("%v", err)
	}
	if e.Log != a.log {
		return fail("entry says log %q", e.Log)
	}
	if e.Index != a.n {
		return fail("entry says index %d", e.Index)
	}
	if e.Prev != a.prev {
		return fail("prev is %s, but the previous entry's leaf hash is %s", e.Prev, a.prev)
	}
	var md struct {
		Action   string          `json:"action"`
		Metadata json.RawMessage `json:"metadata"`
	}
	if a.log == api.SystemLog {
		if err := json.Unmarshal(e.Event, &md); err != nil {
			return fail("bad event: %v", err)
		}
	}
	t := e.ReceivedTime()
	sysEv := keys.Event{Index: e.Index, Received: t, Signer: e.KeyID, Action: md.Action, Metadata: md.Metadata}
	lifecycle := a.log == api.SystemLog && keys.IsLifecycle(md.Action)
	genesis := lifecycle && a.reg.Len() == 0 && e.Index == 0
	var pubs []ed25519.PublicKey
	switch {
	case e.KeyID == entry.ServerKeyID:
		if e.Auth != entry.AuthServer {
			return fail("server key with auth %q", e.Auth)
		}
		if a.log != api.SystemLog && a.log != api.AccessLog {
			return fail("the server does not write entries of its own into user logs")
		}
		pubs = []ed25519.PublicKey{a.server}
	default:
		if a.log == api.SystemLog && !lifecycle {
			return fail("key %s signed a %q entry in %s, where keys write only lifecycle records", e.KeyID, md.Action, api.SystemLog)
		}
		if a.log == api.AccessLog {
			return fail("key %s signed an entry in %s, which only the server writes", e.KeyID, api.AccessLog)
		}
		if genesis {
			// The first key registers itself; its own signature is checked below.
			if err := a.reg.Apply(sysEv); err != nil {
				return fail("genesis: %v", err)
			}
		} else if a.log == api.SystemLog && e.Index == 0 {
			return fail("the first entry of %s must register the first admin key", api.SystemLog)
		}
		k, err := a.reg.At(e.KeyID, t)
		if err != nil {
			return fail("signed by key %s, which is not registered in %s", e.KeyID, api.SystemLog)
		}
		if err := k.ActiveAt(t); err != nil {
			return fail("signed by key %s at %s: %v", e.KeyID, e.Received, err)
		}
		if a.log != api.SystemLog && !k.Allows(keys.OpAppend, a.log) {
			return fail("signed by key %s, whose scopes at %s did not allow appending to %q", e.KeyID, e.Received, a.log)
		}
		switch e.Auth {
		case entry.AuthSignature:
			pubs = []ed25519.PublicKey{k.PublicKey}
		case entry.AuthBearer:
			if !k.Bearer {
				return fail("entry says auth bearer, but key %s was not created for bearer use", e.KeyID)
			}
			// A bearer client may sign its events; if it did not, the server attested them.
			pubs = []ed25519.PublicKey{k.PublicKey, a.server}
		default:
			return fail("key %s with auth %q", e.KeyID, e.Auth)
		}
	}
	if a.batch != nil && len(pubs) == 1 {
		a.batch.Add(pubs[0], e.Message(), e.Sig)
		a.batchIdx = append(a.batchIdx, a.n)
		a.batchKey = append(a.batchKey, e.KeyID)
	} else {
		verify := a.sigOK
		if verify == nil {
			verify = ed25519.Verify
		}
		verified := false
		for _, pub := range pubs {
			if verify(pub, e.Message(), e.Sig) {
				verified = true
				break
			}
		}
		if !verified {
			return fail("event signature does not verify with key %s", e.KeyID)
		}
	}
	if a.log == api.SystemLog && !genesis {
		if err := a.reg.Apply(sysEv); err != nil {
			return fail("%v", err)
		}
	}
	a.push(leaf)
	a.prev = leaf
	a.n++
	return nil
}

// flushSigs checks the signatures collected in a.batch and names the
// first entry whose signature fails.
func (a *Auditor) flushSigs() error {
	if a.batch == nil || a.batch.Len() == 0 {
		return nil
	}
	bad := a.batch.Verify()
	idx, key := a.batchIdx, a.batchKey
	a.batch.Reset()
	a.batchIdx, a.batchKey = a.batchIdx[:0], a.batchKey[:0]
	if bad >= 0 {
		return &EntryError{Log: a.log, Index: idx[bad], Reason: fmt.Sprintf("event signature does not verify with key %s", key[bad])}
	}
	return nil
}

func (a *Auditor) push(h tlog.Hash) {
	a.stack = append(a.stack, h)
	a.sizes = append(a.sizes, 1)
	for k := len(a.stack); k >= 2 && a.sizes[k-1] == a.sizes[k-2]; k = len(a.stack) {
		a.stack[k-2] = tlog.NodeHash(a.stack[k-2], a.stack[k-1])
		a.sizes[k-2] *= 2
		a.stack, a.sizes = a.stack[:k-1], a.sizes[:k-1]
	}
}

// Root is the RFC 6962 root hash of the entries added so far.
func (a *Auditor) Root() tlog.Hash {
	if len(a.stack) == 0 {
		return emptyRoot
	}
	h := a.stack[len(a.stack)-1]
	for i := len(a.stack) - 2; i >= 0; i-- {
		h = tlog.NodeHash(a.stack[i], h)
	}
	return h
}

// Check compares the recomputed tree with a verified checkpoint.
func (a *Auditor) Check(c Checkpoint) error {
	if a.n != c.Size {
		return fmt.Errorf("%w: log %q: recomputed %d entries, checkpoint has %d", ErrVerification, a.log, a.n, c.Size)
	}
	root := a.Root()
	if root != c.Hash {
		return fmt.Errorf("%w: log %q: recomputed root %s does not match the checkpoint root %s", ErrVerification, a.log, root, tlog.Hash(c.Hash))
	}
	return nil
}

var emptyRoot = func() tlog.Hash {
	h, _ := tlog.TreeHash(0, nil)
	return h
}()

// AuditLog fetches every entry of log up to checkpoint c and audits it with
// reg (see AuditSystem); progress, if not nil, is called as entries arrive.
func (c *Client) AuditLog(ctx context.Context, v *Verifier, log string, cp Checkpoint, reg *keys.Registry, progress func(done, total int64)) error {
	a := v.NewAuditor(log, reg)
	for a.Size() < cp.Size {
		es, err := c.Entries(ctx, log, a.Size(), cp.Size)
		if err != nil {
			return err
		}
		if len(es) == 0 {
			return fmt.Errorf("%w: log %q: server returned no entries at %d of %d", ErrVerification, log, a.Size(), cp.Size)
		}
		for _, e := range es {
			if e.Index != a.Size() {
				return fmt.Errorf("%w: log %q: server returned entry %d where %d was expected", ErrVerification, log, e.Index, a.Size())
			}
			leaf, err := tlog.ParseHash(e.LeafHash)
			if err != nil {
				return fmt.Errorf("%w: log %q: entry %d: bad leaf hash %q", ErrVerification, log, e.Index, e.LeafHash)
			}
			if err := a.AddWithLeaf(e.Data, leaf); err != nil {
				return err
			}
		}
		if progress != nil {
			progress(a.Size(), cp.Size)
		}
	}
	return a.Check(cp)
}

// AuditSystem audits the _system log up to its latest checkpoint and returns
// the key registry it defines.
func (c *Client) AuditSystem(ctx context.Context, v *Verifier, progress func(done, total int64)) (*keys.Registry, Checkpoint, error) {
	cp, err := c.Latest(ctx, v, api.SystemLog, nil)
	if err != nil {
		return nil, Checkpoint{}, err
	}
	reg := keys.NewRegistry()
	if err := c.AuditLog(ctx, v, api.SystemLog, cp, reg, progress); err != nil {
		return nil, cp, err
	}
	return reg, cp, nil
}
