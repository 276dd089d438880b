// Package checkpoint formats, signs, parses and verifies vellum's
// checkpoints (C2SP tlog-checkpoint signed notes) and receipts (C2SP
// tlog-proof@v1), and checks inclusion and consistency proofs.
//
// A checkpoint body is
//
//	<origin>\n<tree size>\n<base64 root hash>\n
//
// signed with golang.org/x/mod/sumdb/note by the server's Ed25519 key, so
// standard transparency-log tooling verifies it. Every verification function
// returns nil only on an exact match.
package checkpoint

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// ErrMalformed is wrapped by every parse error.
var ErrMalformed = errors.New("malformed checkpoint")

// ErrVerify is wrapped by every verification failure.
var ErrVerify = errors.New("verification failed")

// Checkpoint is a parsed checkpoint body.
type Checkpoint struct {
	Origin string
	Size   int64
	Hash   tlog.Hash
	Extra  []string // extension lines, verbatim
}

// Body returns the checkpoint body text.
func (c Checkpoint) Body() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\n%d\n%s\n", c.Origin, c.Size, base64.StdEncoding.EncodeToString(c.Hash[:]))
	for _, e := range c.Extra {
		b.WriteString(e)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// ParseBody parses a checkpoint body (the note text, without signatures).
func ParseBody(text []byte) (Checkpoint, error) {
	s := string(text)
	if !strings.HasSuffix(s, "\n") {
		return Checkpoint{}, fmt.Errorf("%w: body must end with a newline", ErrMalformed)
	}
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	if len(lines) < 3 {
		return Checkpoint{}, fmt.Errorf("%w: need origin, size and root hash lines", ErrMalformed)
	}
	var c Checkpoint
	c.Origin = lines[0]
	if c.Origin == "" {
		return Checkpoint{}, fmt.Errorf("%w: empty origin", ErrMalformed)
	}
	n, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != lines[1] {
		return Checkpoint{}, fmt.Errorf("%w: bad tree size %q", ErrMalformed, lines[1])
	}
	c.Size = n
	h, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil || len(h) != tlog.HashSize {
		return Checkpoint{}, fmt.Errorf("%w: bad root hash %q", ErrMalformed, lines[2])
	}
	copy(c.Hash[:], h)
	for _, l := range lines[3:] {
		if l == "" {
			return Checkpoint{}, fmt.Errorf("%w: empty extension line", ErrMalformed)
		}
		c.Extra = append(c.Extra, l)
	}
	return c, nil
}

// Sign returns the signed note for c.
func Sign(c Checkpoint, s note.Signer) ([]byte, error) {
	return note.Sign(&note.Note{Text: string(c.Body())}, s)
}

// Open verifies a signed checkpoint with v and checks that its origin is
// origin (unless origin is empty). Signatures by other keys are ignored.
func Open(signed []byte, v note.Verifier, origin string) (Checkpoint, error) {
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		var ue *note.UnverifiedNoteError
		if errors.As(err, &ue) {
			return Checkpoint{}, fmt.Errorf("%w: checkpoint is not signed by %s", ErrVerify, v.Name())
		}
		return Checkpoint{}, fmt.Errorf("%w: %v", ErrVerify, err)
	}
	c, err := ParseBody([]byte(n.Text))
	if err != nil {
		return Checkpoint{}, err
	}
	if origin != "" && c.Origin != origin {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint origin is %q, want %q", ErrVerify, c.Origin, origin)
	}
	return c, nil
}

// Proof is a C2SP tlog-proof@v1: an inclusion proof of the entry at Index
// in the tree of the signed checkpoint it carries.
type Proof struct {
	Index      int64
	Extra      []byte
	Hashes     tlog.RecordProof
	Checkpoint []byte // the signed note, verbatim
}

const proofHeader = "c2sp.org/tlog-proof@v1"

// Format returns the proof text.
func (p *Proof) Format() []byte {
	var b bytes.Buffer
	b.WriteString(proofHeader + "\n")
	if p.Extra != nil {
		b.WriteString("extra " + base64.StdEncoding.EncodeToString(p.Extra) + "\n")
	}
	fmt.Fprintf(&b, "index %d\n", p.Index)
	for _, h := range p.Hashes {
		b.WriteString(base64.StdEncoding.EncodeToString(h[:]))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.Write(p.Checkpoint)
	return b.Bytes()
}

// MaxProofHashes bounds the inclusion proof length (a tree of 2^63 leaves).
const MaxProofHashes = 63

// ParseProof parses a tlog-proof@v1 text. It does not verify it.
func ParseProof(text []byte) (*Proof, error) {
	s := string(text)
	head, rest, ok := strings.Cut(s, "\n")
	if !ok || head != proofHeader {
		return nil, fmt.Errorf("%w: proof must start with %q", ErrMalformed, proofHeader)
	}
	p := &Proof{}
	line, rest, ok := strings.Cut(rest, "\n")
	if !ok {
		return nil, fmt.Errorf("%w: truncated proof", ErrMalformed)
	}
	if v, isExtra := strings.CutPrefix(line, "extra "); isExtra {
		x, err := base64.StdEncoding.Strict().DecodeString(v)
		if err != nil {
			return nil, fmt.Errorf("%w: bad extra data", ErrMalformed)
		}
		p.Extra = x
		if line, rest, ok = strings.Cut(rest, "\n"); !ok {
			return nil, fmt.Errorf("%w: truncated proof", ErrMalformed)
		}
	}
	idx, isIndex := strings.CutPrefix(line, "index ")
	n, err := strconv.ParseInt(idx, 10, 64)
	if !isIndex || err != nil || n < 0 || strconv.FormatInt(n, 10) != idx {
		return nil, fmt.Errorf("%w: bad index line %q", ErrMalformed, line)
	}
	p.Index = n
	for {
		if line, rest, ok = strings.Cut(rest, "\n"); !ok {
			return nil, fmt.Errorf("%w: missing blank line before the checkpoint", ErrMalformed)
		}
		if line == "" {
			break
		}
		if len(p.Hashes) == MaxProofHashes {
			return nil, fmt.Errorf("%w: more than %d proof hashes", ErrMalformed, MaxProofHashes)
		}
		h, err := base64.StdEncoding.Strict().DecodeString(line)
		if err != nil || len(h) != tlog.HashSize {
			return nil, fmt.Errorf("%w: bad proof hash %q", ErrMalformed, line)
		}
		p.Hashes = append(p.Hashes, tlog.Hash(h))
	}
	if rest == "" {
		return nil, fmt.Errorf("%w: missing checkpoint", ErrMalformed)
	}
	p.Checkpoint = []byte(rest)
	return p, nil
}

// Verify checks the proof's checkpoint signature with v (and its origin,
// unless empty) and that leaf is the leaf hash at p.Index in that tree.
// It returns the verified checkpoint.
func (p *Proof) Verify(v note.Verifier, origin string, leaf tlog.Hash) (Checkpoint, error) {
	c, err := Open(p.Checkpoint, v, origin)
	if err != nil {
		return Checkpoint{}, err
	}
	if p.Index >= c.Size {
		return Checkpoint{}, fmt.Errorf("%w: index %d is not below tree size %d", ErrVerify, p.Index, c.Size)
	}
	if err := tlog.CheckRecord(p.Hashes, c.Size, c.Hash, p.Index, leaf); err != nil {
		return Checkpoint{}, fmt.Errorf("%w: inclusion proof for index %d does not lead to the checkpoint root", ErrVerify, p.Index)
	}
	return c, nil
}

// ConsistencyError is the evidence of two checkpoints that do not belong to
// one append-only log.
type ConsistencyError struct {
	Old, New Checkpoint
	Proof    tlog.TreeProof
	Reason   string
}

func (e *ConsistencyError) Error() string {
	return fmt.Sprintf("%v: checkpoint of size %d (root %s) is not consistent with checkpoint of size %d (root %s): %s",
		ErrVerify, e.Old.Size, e.Old.Hash, e.New.Size, e.New.Hash, e.Reason)
}

func (e *ConsistencyError) Unwrap() error { return ErrVerify }

// CheckConsistency checks that newer extends older, given the consistency
// proof between them. On failure it returns a *ConsistencyError holding the
// evidence.
func CheckConsistency(older, newer Checkpoint, proof tlog.TreeProof) error {
	fail := func(reason string) error {
		return &ConsistencyError{Old: older, New: newer, Proof: proof, Reason: reason}
	}
	if older.Origin != newer.Origin {
		return fail("different origins")
	}
	if newer.Size < older.Size {
		return fail("the tree shrank")
	}
	if newer.Size == older.Size {
		if older.Hash != newer.Hash {
			return fail("same size, different roots (a fork)")
		}
		return nil
	}
	if older.Size == 0 {
		return nil
	}
	if err := tlog.CheckTree(proof, newer.Size, newer.Hash, older.Size, older.Hash); err != nil {
		return fail("the consistency proof does not verify")
	}
	return nil
}
