package client

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/checkpoint"
	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/keys"
	"github.com/vellum-audit/vellum/internal/sigbatch"
)

// An export bundle is one file that proves, with nothing but the server's
// checkpoint verifier key, that a contiguous range of a log's entries is
// exactly what the log holds at those indexes. docs/bundle.md describes the
// format; in short it is gzip'd JSON Lines:
//
//	{"format":"vellum-bundle/v1",…}              header
//	{"checkpoint":"…","log":"_system"}           _system's signed checkpoint (size M)
//	M lines: _system entries 0..M-1              the key history, verbatim entry bytes
//	{"checkpoint":"…","left":[…],"log":L,"right":[…]}  L's signed checkpoint (size N) and range proof
//	B-A lines: entries A..B-1 of L               verbatim entry bytes
//	{"end":"vellum-bundle/v1","entries":B-A,"system_entries":M}  trailer

// BundleFormat is the format name in a bundle's header.
const BundleFormat = "vellum-bundle/v1"

// ErrBadBundle is wrapped by every error about a bundle's form: not a
// bundle, truncated, corrupt, or not what its header says. Failures of the
// proofs or of an entry's checks wrap ErrVerification instead.
var ErrBadBundle = errors.New("not a valid vellum bundle")

// RangeNode is the root hash of the aligned perfect subtree of the 2^Level
// leaves from Index·2^Level.
type RangeNode struct {
	Level int    `json:"level"`
	Index int64  `json:"index"`
	Hash  string `json:"hash"`
}

// RangeProof answers GET /v1/logs/{log}/proof/range: with the leaf hashes
// of entries [Start, End) these hashes recompute the root of the tree of
// Size. Left covers [0, Start) and Right covers [End, Size), each with
// maximal aligned perfect subtrees, in order.
type RangeProof struct {
	Start int64       `json:"start"`
	End   int64       `json:"end"`
	Size  int64       `json:"size"`
	Left  []RangeNode `json:"left"`
	Right []RangeNode `json:"right"`
}

// RangeProof fetches the range proof of entries [start, end) in the tree
// of size.
func (c *Client) RangeProof(ctx context.Context, log string, start, end, size int64) (RangeProof, error) {
	var p RangeProof
	q := url.Values{"start": {strconv.FormatInt(start, 10)}, "end": {strconv.FormatInt(end, 10)}, "size": {strconv.FormatInt(size, 10)}}
	err := c.do(ctx, http.MethodGet, api.LogPath(log)+"/proof/range", q, nil, &p)
	return p, err
}

// RangeRoot recomputes the root of the tree of size p.Size from the proof
// and the leaf hashes of entries [p.Start, p.End).
func RangeRoot(p RangeProof, leaves [][32]byte) ([32]byte, error) {
	rh, err := newRangeHasher(p.Start, p.End, p.Size, p.Left, p.Right)
	if err != nil {
		return [32]byte{}, err
	}
	for _, l := range leaves {
		if err := rh.addLeaf(l); err != nil {
			return [32]byte{}, err
		}
	}
	return rh.root()
}

// maxTreeSize bounds sizes read from a bundle, far beyond any real log.
const maxTreeSize = int64(1) << 56

type treeNode struct {
	level int
	start int64
	hash  tlog.Hash
}

// rangeHasher recomputes a tree root from a contiguous covering of
// [0, size) by aligned perfect subtrees: the left nodes, then one leaf at a
// time, then the right nodes. It keeps O(log n) state. The positions of the
// proof's nodes are fixed by start, end and size, so that only their
// hashes come from the proof.
type rangeHasher struct {
	start, end, size int64
	pos              int64 // next leaf index
	stack            []treeNode
	right            []treeNode
}

func parseNodes(what string, nodes []RangeNode, lo, hi int64) ([]treeNode, error) {
	levels, indexes := checkpoint.CoverNodes(lo, hi)
	if len(nodes) != len(levels) {
		return nil, fmt.Errorf("%s: %d hashes, but [%d, %d) is covered by %d subtrees", what, len(nodes), lo, hi, len(levels))
	}
	out := make([]treeNode, len(nodes))
	for i, n := range nodes {
		if n.Level != levels[i] || n.Index != indexes[i] {
			return nil, fmt.Errorf("%s: hash %d is for subtree (level %d, index %d), want (level %d, index %d)", what, i, n.Level, n.Index, levels[i], indexes[i])
		}
		h, err := tlog.ParseHash(n.Hash)
		if err != nil {
			return nil, fmt.Errorf("%s: hash %d: bad hash %q", what, i, n.Hash)
		}
		out[i] = treeNode{level: levels[i], start: indexes[i] << levels[i], hash: h}
	}
	return out, nil
}

func newRangeHasher(start, end, size int64, left, right []RangeNode) (*rangeHasher, error) {
	if start < 0 || start >= end || end > size || size > maxTreeSize {
		return nil, fmt.Errorf("range [%d, %d) of a tree of size %d: want 0 ≤ start < end ≤ size", start, end, size)
	}
	l, err := parseNodes("left", left, 0, start)
	if err != nil {
		return nil, err
	}
	r, err := parseNodes("right", right, end, size)
	if err != nil {
		return nil, err
	}
	rh := &rangeHasher{start: start, end: end, size: size, pos: start, right: r}
	for _, n := range l {
		rh.push(n)
	}
	return rh, nil
}

func (rh *rangeHasher) push(n treeNode) {
	rh.stack = append(rh.stack, n)
	for k := len(rh.stack); k >= 2; k = len(rh.stack) {
		a, b := rh.stack[k-2], rh.stack[k-1]
		if a.level != b.level || uint64(a.start)&(uint64(2)<<a.level-1) != 0 {
			break
		}
		rh.stack[k-2] = treeNode{level: a.level + 1, start: a.start, hash: tlog.NodeHash(a.hash, b.hash)}
		rh.stack = rh.stack[:k-1]
	}
}

func (rh *rangeHasher) addLeaf(h tlog.Hash) error {
	if rh.pos >= rh.end {
		return fmt.Errorf("more than the %d leaves of [%d, %d)", rh.end-rh.start, rh.start, rh.end)
	}
	rh.push(treeNode{level: 0, start: rh.pos, hash: h})
	rh.pos++
	return nil
}

// root adds the right nodes and folds the complete subtrees into the root.
func (rh *rangeHasher) root() (tlog.Hash, error) {
	if rh.pos != rh.end {
		return tlog.Hash{}, fmt.Errorf("%d leaves of [%d, %d) given, want %d", rh.pos-rh.start, rh.start, rh.end, rh.end-rh.start)
	}
	for _, n := range rh.right {
		rh.push(n)
	}
	rh.right = nil
	if len(rh.stack) == 0 {
		return emptyRoot, nil
	}
	h := rh.stack[len(rh.stack)-1].hash
	for i := len(rh.stack) - 2; i >= 0; i-- {
		h = tlog.NodeHash(rh.stack[i].hash, h)
	}
	return h, nil
}

// Bundle lines other than entries.
type (
	bundleHeader struct {
		Format      string `json:"format"`
		Log         string `json:"log"`
		Origin      string `json:"origin"`
		Start       int64  `json:"start"`
		End         int64  `json:"end"`
		Size        int64  `json:"size"`
		SystemSize  int64  `json:"system_size"`
		VerifierKey string `json:"verifier_key"`
		Created     string `json:"created"`
	}
	bundleSystem struct {
		Checkpoint string `json:"checkpoint"`
		Log        string `json:"log"`
	}
	bundleRange struct {
		Checkpoint string      `json:"checkpoint"`
		Left       []RangeNode `json:"left"`
		Log        string      `json:"log"`
		Right      []RangeNode `json:"right"`
	}
	bundleTrailer struct {
		End           string `json:"end"`
		Entries       int64  `json:"entries"`
		SystemEntries int64  `json:"system_entries"`
	}
)

// BundleReport describes a bundle: what Export wrote, or what VerifyBundle
// verified.
type BundleReport struct {
	Log        string
	Start, End int64      // the entries [Start, End) of Log
	Checkpoint Checkpoint // Log's checkpoint the range is proved against
	System     Checkpoint // _system's checkpoint; its entries are the key history
	// Created is when the bundle was written, as its header says (not
	// covered by any signature).
	Created time.Time
	// FirstReceived and LastReceived are the received times of entries
	// Start and End-1.
	FirstReceived, LastReceived time.Time
}

// Entries is the number of entries in the range.
func (r BundleReport) Entries() int64 { return r.End - r.Start }

const exportPage = 1000

// Export writes a bundle of entries [start, end) of log to w (end < 0: up
// to the log's latest checkpoint). Checkpoints are verified with v; the
// entries and the range proof are checked against them as they are
// written (tree hashes only; VerifyBundle checks the rest), so a bundle
// that Export finishes proves what it says. The key needs read access to
// log and to _system, whose entries the bundle carries as the key history.
// progress, if not nil, is called as entries are written.
func (c *Client) Export(ctx context.Context, v *Verifier, log string, start, end int64, w io.Writer, progress func(done, total int64)) (BundleReport, error) {
	if v == nil {
		return BundleReport{}, errors.New("export: a verifier is required")
	}
	cp, err := c.Latest(ctx, v, log, nil)
	if err != nil {
		return BundleReport{}, err
	}
	if end < 0 {
		end = cp.Size
	}
	if start < 0 || start >= end || end > cp.Size {
		return BundleReport{}, fmt.Errorf("export: the range [%d, %d) is empty or not within log %q, which has %d entries", start, end, log, cp.Size)
	}
	// _system is read after log, so that every key that signed an entry
	// of log's checkpoint is registered by _system's.
	sys := cp
	if log != api.SystemLog {
		if sys, err = c.Latest(ctx, v, api.SystemLog, nil); err != nil {
			var ae *Error
			if errors.As(err, &ae) && ae.Status == http.StatusForbidden {
				return BundleReport{}, fmt.Errorf("export: a bundle carries the %s log (the key history) so that it verifies offline, and this key may not read it; export with an auditor or admin key (read:_*): %w", api.SystemLog, err)
			}
			return BundleReport{}, err
		}
	}
	rp, err := c.RangeProof(ctx, log, start, end, cp.Size)
	if err != nil {
		return BundleReport{}, err
	}
	if rp.Start != start || rp.End != end || rp.Size != cp.Size {
		return BundleReport{}, fmt.Errorf("%w: export: asked for the range proof of [%d, %d) at size %d, got [%d, %d) at size %d", ErrVerification, start, end, cp.Size, rp.Start, rp.End, rp.Size)
	}
	rh, err := newRangeHasher(start, end, cp.Size, rp.Left, rp.Right)
	if err != nil {
		return BundleReport{}, fmt.Errorf("%w: export: the server's range proof: %v", ErrVerification, err)
	}
	now := time.Now().UTC()
	rep := BundleReport{Log: log, Start: start, End: end, Checkpoint: cp, System: sys, Created: now.Truncate(time.Second)}

	// Members of 1 MiB of text compressed on every CPU (docs/bundle.md:
	// one gzip file of several members).
	zw := newParallelGzip(w, gzip.BestSpeed, 1<<20, runtime.GOMAXPROCS(0))
	defer zw.Close()
	bw := bufio.NewWriterSize(zw, 256<<10)
	writeLine := func(v any) error {
		b, err := marshal(v)
		if err != nil {
			return err
		}
		bw.Write(b)
		return bw.WriteByte('\n')
	}
	hdr := bundleHeader{Format: BundleFormat, Log: log, Origin: cp.Origin, Start: start, End: end, Size: cp.Size,
		SystemSize: sys.Size, VerifierKey: v.Key(), Created: rep.Created.Format(time.RFC3339)}
	if err := writeLine(hdr); err != nil {
		return rep, err
	}
	if err := writeLine(bundleSystem{Checkpoint: string(sys.Text), Log: api.SystemLog}); err != nil {
		return rep, err
	}
	total := sys.Size + end - start
	var done int64
	report := func() {
		if progress != nil {
			progress(done, total)
		}
	}
	sysTree, err := newRangeHasher(0, sys.Size, sys.Size, nil, nil)
	if err != nil {
		return rep, fmt.Errorf("%w: %s checkpoint of size %d", ErrVerification, api.SystemLog, sys.Size)
	}
	err = c.exportEntries(ctx, api.SystemLog, 0, sys.Size, nil, func(line []byte) error {
		sysTree.addLeaf(entry.LeafHash(line))
		bw.Write(line)
		if done++; done%4096 == 0 {
			report()
		}
		return bw.WriteByte('\n')
	})
	if err != nil {
		return rep, err
	}
	report()
	if root, err := sysTree.root(); err != nil || root != sys.Hash {
		return rep, fmt.Errorf("%w: export: the server's %s entries do not hash to its checkpoint of size %d", ErrVerification, api.SystemLog, sys.Size)
	}
	if err := writeLine(bundleRange{Checkpoint: string(cp.Text), Left: rp.Left, Log: log, Right: rp.Right}); err != nil {
		return rep, err
	}
	var first, last []byte
	err = c.exportEntries(ctx, log, start, end, func(line []byte) { last = bytes.Clone(line) }, func(line []byte) error {
		rh.addLeaf(entry.LeafHash(line))
		bw.Write(line)
		if first == nil {
			first = bytes.Clone(line)
		}
		if done++; done%4096 == 0 {
			report()
		}
		return bw.WriteByte('\n')
	})
	if err != nil {
		return rep, err
	}
	report()
	if root, err := rh.root(); err != nil || root != cp.Hash {
		return rep, fmt.Errorf("%w: export: the server's entries [%d, %d) of %q and its range proof do not hash to its checkpoint of size %d", ErrVerification, start, end, log, cp.Size)
	}
	if err := writeLine(bundleTrailer{End: BundleFormat, Entries: end - start, SystemEntries: sys.Size}); err != nil {
		return rep, err
	}
	if err := bw.Flush(); err != nil {
		return rep, err
	}
	if err := zw.Close(); err != nil {
		return rep, err
	}
	rep.FirstReceived, rep.LastReceived = receivedOf(first), receivedOf(last)
	return rep, nil
}

func receivedOf(data []byte) time.Time {
	e, err := entry.Parse(data)
	if err != nil {
		return time.Time{}
	}
	return e.ReceivedTime()
}

// servedEntry checks an entry as served: one line of bytes that hash to
// the leaf the server's tree holds.
func servedEntry(e api.Entry) (tlog.Hash, error) {
	leaf := entry.LeafHash(e.Data)
	if e.LeafHash != leaf.String() {
		return leaf, &EntryError{Log: e.Log, Index: e.Index, Reason: fmt.Sprintf("the entry's bytes hash to %s, but the server's Merkle tree holds leaf %s: the stored entry was changed", leaf, e.LeafHash)}
	}
	if bytes.ContainsAny(e.Data, "\r\n") {
		return leaf, &EntryError{Log: e.Log, Index: e.Index, Reason: "the entry's bytes contain a line break, which no canonical entry does"}
	}
	return leaf, nil
}

// exportEntries calls fn with the bytes of each entry of [start, end) of
// log, in order (the slice is valid during the call only), from the
// server's export stream (GET /v1/logs/{log}/export: one request, one
// _access record); last, if not nil, is called with the last entry. A
// server without that endpoint is read page by page instead.
func (c *Client) exportEntries(ctx context.Context, log string, start, end int64, last func([]byte), fn func([]byte) error) error {
	q := url.Values{"start": {strconv.FormatInt(start, 10)}, "end": {strconv.FormatInt(end, 10)}}
	resp, err := c.openStream(ctx, api.LogPath(log)+"/export", q)
	if err != nil {
		var ae *Error
		if errors.As(err, &ae) && (ae.Status == http.StatusNotFound || ae.Status == http.StatusMethodNotAllowed) {
			return c.streamEntries(ctx, log, start, end, func(es []api.Entry) error {
				for _, e := range es {
					if _, err := servedEntry(e); err != nil {
						return err
					}
					if err := fn(e.Data); err != nil {
						return err
					}
				}
				if last != nil && es[len(es)-1].Index == end-1 {
					last(es[len(es)-1].Data)
				}
				return nil
			})
		}
		return err
	}
	defer resp.Body.Close()
	br := bufio.NewReaderSize(resp.Body, maxBundleLine)
	for i := start; i < end; i++ {
		line, err := br.ReadSlice('\n')
		switch {
		case err == io.EOF:
			return fmt.Errorf("export of %q: the server's answer ends before entry %d of [%d, %d)", log, i, start, end)
		case errors.Is(err, bufio.ErrBufferFull):
			return fmt.Errorf("%w: export of %q: entry %d is longer than %d bytes", ErrVerification, log, i, maxBundleLine)
		case err != nil:
			return fmt.Errorf("export of %q, at entry %d: %w", log, i, err)
		}
		line = line[:len(line)-1]
		if err := fn(line); err != nil {
			return err
		}
		if last != nil && i == end-1 {
			last(line)
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return fmt.Errorf("%w: export of %q: the server sent more than the %d entries of [%d, %d)", ErrVerification, log, end-start, start, end)
	}
	return ctx.Err()
}

// streamEntries calls fn with entries [start, end) of log, in order, in
// pages of up to 1,000, fetching a few pages ahead.
func (c *Client) streamEntries(ctx context.Context, log string, start, end int64, fn func([]api.Entry) error) error {
	const ahead = 4
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type page struct {
		es  []api.Entry
		err error
	}
	pages := make(chan chan page, ahead)
	go func() {
		defer close(pages)
		for s := start; s < end; s += exportPage {
			ch := make(chan page, 1)
			select {
			case pages <- ch:
			case <-ctx.Done():
				return
			}
			go func(s, e int64) {
				es, err := c.entriesExactly(ctx, log, s, e)
				ch <- page{es, err}
			}(s, min(s+exportPage, end))
		}
	}()
	next := start
	for ch := range pages {
		p := <-ch
		if p.err != nil {
			return p.err
		}
		for _, e := range p.es {
			if e.Index != next || e.Log != log {
				return fmt.Errorf("%w: log %q: the server returned entry %d of %q where %d was expected", ErrVerification, log, e.Index, e.Log, next)
			}
			next++
		}
		if err := fn(p.es); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if next != end {
		return fmt.Errorf("%w: log %q: the server returned entries up to %d, want %d", ErrVerification, log, next, end)
	}
	return nil
}

// entriesExactly returns entries [start, end), asking again when the
// server returns fewer.
func (c *Client) entriesExactly(ctx context.Context, log string, start, end int64) ([]api.Entry, error) {
	var out []api.Entry
	for s := start; s < end; {
		es, err := c.Entries(ctx, log, s, end)
		if err != nil {
			return nil, err
		}
		if len(es) == 0 {
			return nil, fmt.Errorf("%w: log %q: the server returned no entries at %d of [%d, %d)", ErrVerification, log, s, start, end)
		}
		if out == nil {
			out = es
		} else {
			out = append(out, es...)
		}
		s += int64(len(es))
	}
	return out, nil
}

// IndexAt returns the index of the first entry among the first size
// entries of log that was received at or after t (size if none), by a
// binary search over entries' received times, which the server assigns in
// order. It reads about log2(size) entries.
func (c *Client) IndexAt(ctx context.Context, log string, t time.Time, size int64) (int64, error) {
	lo, hi := int64(0), size
	for lo < hi {
		mid := lo + (hi-lo)/2
		e, err := c.Entry(ctx, log, mid, false)
		if err != nil {
			return 0, err
		}
		pe, err := entry.Parse(e.Data)
		if err != nil {
			return 0, &EntryError{Log: log, Index: mid, Reason: err.Error()}
		}
		if pe.ReceivedTime().Before(t) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo, nil
}

// Reading bundles.

// maxBundleLine bounds one line of a bundle: an entry is at most 64 KiB;
// a checkpoint with its range proof is a few KiB.
const maxBundleLine = 256 << 10

func badBundle(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadBundle}, args...)...)
}

// lineReader reads a bundle's lines, naming the line in every error.
type lineReader struct {
	r    *bufio.Reader
	line int64 // lines read so far
}

// next returns the next line without its '\n'; the slice is valid until the
// following call. what (formatted with idx when idx ≥ 0) names the line
// expected, for errors.
func (lr *lineReader) next(what string, idx int64) ([]byte, error) {
	b, err := lr.r.ReadSlice('\n')
	lr.line++
	if err == nil {
		return b[:len(b)-1], nil
	}
	name := what
	if idx >= 0 {
		name = fmt.Sprintf(what, idx)
	}
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return nil, badBundle("line %d (%s) is longer than %d bytes", lr.line, name, maxBundleLine)
	case err == io.EOF && len(b) == 0:
		return nil, badBundle("truncated: the file ends at line %d, where %s was expected", lr.line, name)
	case err == io.EOF:
		return nil, badBundle("truncated: line %d (%s) is cut off", lr.line, name)
	}
	return nil, lr.readErr(err, name)
}

// nextEntry is next for an entry line; a bundle line other than an entry
// there means entries are missing.
func (lr *lineReader) nextEntry(what string, idx int64) ([]byte, error) {
	b, err := lr.next(what, idx)
	if err != nil {
		return nil, err
	}
	for _, other := range []struct{ prefix, name string }{{`{"end":`, "trailer"}, {`{"checkpoint":`, "checkpoint line"}} {
		if bytes.HasPrefix(b, []byte(other.prefix)) {
			return nil, badBundle("line %d is the %s, where %s was expected: the bundle has fewer entries than its header announces (a removed entry?)", lr.line, other.name, fmt.Sprintf(what, idx))
		}
	}
	return b, nil
}

// readErr explains an error of the underlying reader.
func (lr *lineReader) readErr(err error, name string) error {
	var ce flate.CorruptInputError
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badBundle("truncated: the compressed data ends in line %d (%s)", lr.line, name)
	case errors.Is(err, gzip.ErrChecksum):
		return badBundle("corrupt: the gzip checksum does not match (at line %d)", lr.line)
	case errors.Is(err, gzip.ErrHeader):
		return badBundle("corrupt: data after the compressed stream (at line %d) is not gzip", lr.line)
	case errors.As(err, &ce):
		return badBundle("corrupt compressed data in line %d (%s): %v", lr.line, name, err)
	}
	return badBundle("reading line %d (%s): %v", lr.line, name, err)
}

// end checks that nothing follows the last line (which, for gzip, also
// checks the stream's checksum).
func (lr *lineReader) end() error {
	_, err := lr.r.Peek(1)
	switch {
	case err == io.EOF:
		return nil
	case err == nil:
		return badBundle("data after the trailer (line %d)", lr.line+1)
	}
	return lr.readErr(err, "after the trailer")
}

// decodeLine decodes one JSON object strictly: no unknown fields, nothing
// after it.
func (lr *lineReader) decode(line []byte, what string, v any) error {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badBundle("line %d is not the %s: %v", lr.line, what, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return badBundle("line %d (the %s) has data after the JSON object", lr.line, what)
	}
	return nil
}

// VerifyBundle checks a bundle (gzip'd or plain) offline with the trusted
// verifier v:
//
//   - both checkpoints (_system's and the log's) are signed by v's key, with
//     the right origins and the sizes the header gives;
//   - _system is replayed from entry 0 with an Auditor: canonical bytes,
//     indexes, prev chain, every lifecycle record signed by a key allowed to
//     make it, every signature, and its root recomputed equal to its
//     checkpoint's; this yields the key history;
//   - every entry of the range: canonical bytes, log and index, the prev
//     chain from the first entry of the range on, its key registered,
//     active at the entry's received time and allowed to append to the log,
//     and its event signature (spread over GOMAXPROCS workers);
//   - the root recomputed from the range proof's left hashes, the range's
//     leaf hashes and the right hashes equals the log's checkpoint root, so
//     the range is exactly entries [start, end) of that tree: any changed,
//     removed, reordered or added entry fails.
//
// The first failure is returned: an *EntryError naming the entry when one
// is to blame, an error wrapping ErrVerification for a failed proof, or
// one wrapping ErrBadBundle for a file that is not a complete bundle.
// progress, if not nil, is called as entries are checked. Memory stays
// bounded: entries are streamed.
func VerifyBundle(r io.Reader, v *Verifier, progress func(done, total int64)) (BundleReport, error) {
	return VerifyBundleWith(r, v, BundleOptions{Progress: progress})
}

// BundleOptions tunes VerifyBundleWith.
type BundleOptions struct {
	// Strict checks every event signature on its own with crypto/ed25519
	// (RFC 8032, cofactorless), the rule the server applies when it
	// accepts an event. Otherwise signatures are checked in batches with
	// internal/sigbatch's rule (ZIP-215's cofactored equation with
	// canonical encodings), several times faster; the two differ only on
	// signatures crafted with small-order components and on keys encoded
	// non-canonically (docs/bundle.md).
	Strict bool
	// Progress, if not nil, is called as entries are checked.
	Progress func(done, total int64)
}

// VerifyBundleWith is VerifyBundle with options.
func VerifyBundleWith(r io.Reader, v *Verifier, opts BundleOptions) (BundleReport, error) {
	if v == nil {
		return BundleReport{}, errors.New("verify bundle: a verifier is required")
	}
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(2)
	if len(magic) == 0 {
		if err == nil || err == io.EOF {
			return BundleReport{}, badBundle("the file is empty")
		}
		return BundleReport{}, badBundle("reading: %v", err)
	}
	var src io.Reader = br
	switch {
	case len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return BundleReport{}, badBundle("corrupt gzip header: %v", err)
		}
		defer zr.Close()
		src = zr
	case magic[0] == '{':
	default:
		return BundleReport{}, badBundle("the file is neither gzip nor JSON Lines (it starts with %q)", magic)
	}
	lr := &lineReader{r: bufio.NewReaderSize(src, maxBundleLine)}
	return verifyBundle(lr, v, opts)
}

func verifyBundle(lr *lineReader, v *Verifier, opts BundleOptions) (BundleReport, error) {
	progress := opts.Progress
	line, err := lr.next("the header", -1)
	if err != nil {
		return BundleReport{}, err
	}
	var hdr bundleHeader
	if err := lr.decode(line, "bundle header", &hdr); err != nil {
		return BundleReport{}, err
	}
	if hdr.Format != BundleFormat {
		return BundleReport{}, badBundle("unknown format %q (this verifier reads %s)", hdr.Format, BundleFormat)
	}
	if !api.ValidLogName(hdr.Log) && !api.Reserved(hdr.Log) {
		return BundleReport{}, badBundle("header: invalid log name %q", hdr.Log)
	}
	if hdr.Start < 0 || hdr.Start >= hdr.End || hdr.End > hdr.Size || hdr.Size > maxTreeSize {
		return BundleReport{}, badBundle("header: range [%d, %d) of a tree of size %d: want 0 ≤ start < end ≤ size", hdr.Start, hdr.End, hdr.Size)
	}
	if hdr.SystemSize < 1 || hdr.SystemSize > maxTreeSize {
		return BundleReport{}, badBundle("header: %s size %d: it has at least its genesis entry", api.SystemLog, hdr.SystemSize)
	}
	if hdr.Log == api.SystemLog && hdr.Size != hdr.SystemSize {
		return BundleReport{}, badBundle("header: a bundle of %s proves its range against the %s checkpoint it carries (size %d, not %d)", api.SystemLog, api.SystemLog, hdr.SystemSize, hdr.Size)
	}
	if hdr.VerifierKey != v.Key() {
		return BundleReport{}, fmt.Errorf("%w: the bundle was made with checkpoint verifier key %q, but the trusted key is %q", ErrVerification, hdr.VerifierKey, v.Key())
	}
	if hdr.Origin != v.Origin(hdr.Log) {
		return BundleReport{}, fmt.Errorf("%w: the bundle's origin is %q, but log %q of the trusted server has origin %q", ErrVerification, hdr.Origin, hdr.Log, v.Origin(hdr.Log))
	}
	rep := BundleReport{Log: hdr.Log, Start: hdr.Start, End: hdr.End}
	if rep.Created, err = time.Parse(time.RFC3339, hdr.Created); err != nil {
		return rep, badBundle("header: bad created time %q", hdr.Created)
	}
	total := hdr.SystemSize + hdr.End - hdr.Start
	var done int64
	report := func() {
		if progress != nil {
			progress(done, total)
		}
	}

	// _system: the key history.
	if line, err = lr.next("the "+api.SystemLog+" checkpoint", -1); err != nil {
		return rep, err
	}
	var sl bundleSystem
	if err := lr.decode(line, api.SystemLog+" checkpoint line", &sl); err != nil {
		return rep, err
	}
	if sl.Log != api.SystemLog {
		return rep, badBundle("line %d: the key history must be log %s, not %q", lr.line, api.SystemLog, sl.Log)
	}
	if rep.System, err = v.OpenCheckpoint(api.SystemLog, []byte(sl.Checkpoint)); err != nil {
		return rep, fmt.Errorf("bundle line %d: %s checkpoint: %w", lr.line, api.SystemLog, err)
	}
	if rep.System.Size != hdr.SystemSize {
		return rep, badBundle("line %d: the %s checkpoint has size %d, the header says %d", lr.line, api.SystemLog, rep.System.Size, hdr.SystemSize)
	}
	reg := keys.NewRegistry()
	sysAudit := v.NewAuditor(api.SystemLog, reg)
	if !opts.Strict {
		sysAudit.sigOK = sigbatch.Verify
	}
	var sysLeaves []tlog.Hash // of [Start, End) when the bundle is of _system itself
	sysWhat := "entry %d of " + api.SystemLog
	for i := int64(0); i < hdr.SystemSize; i++ {
		if line, err = lr.nextEntry(sysWhat, i); err != nil {
			return rep, err
		}
		if err := sysAudit.Add(line); err != nil {
			return rep, err
		}
		if hdr.Log == api.SystemLog && i >= hdr.Start && i < hdr.End {
			sysLeaves = append(sysLeaves, sysAudit.prev)
		}
		if done++; done%1024 == 0 {
			report()
		}
	}
	if err := sysAudit.Check(rep.System); err != nil {
		return rep, err
	}
	report()

	// The log's checkpoint and range proof.
	if line, err = lr.next("the checkpoint and range proof of "+strconv.Quote(hdr.Log), -1); err != nil {
		return rep, err
	}
	var rl bundleRange
	if err := lr.decode(line, "checkpoint and range proof line", &rl); err != nil {
		return rep, err
	}
	if rl.Log != hdr.Log {
		return rep, badBundle("line %d: the range proof is for log %q, the header says %q", lr.line, rl.Log, hdr.Log)
	}
	if rep.Checkpoint, err = v.OpenCheckpoint(hdr.Log, []byte(rl.Checkpoint)); err != nil {
		return rep, fmt.Errorf("bundle line %d: checkpoint of %q: %w", lr.line, hdr.Log, err)
	}
	if rep.Checkpoint.Size != hdr.Size {
		return rep, badBundle("line %d: the checkpoint of %q has size %d, the header says %d", lr.line, hdr.Log, rep.Checkpoint.Size, hdr.Size)
	}
	if hdr.Log == api.SystemLog && rep.Checkpoint.Hash != rep.System.Hash {
		return rep, fmt.Errorf("%w: two checkpoints of %s of size %d with different roots", ErrVerification, api.SystemLog, hdr.Size)
	}
	rh, err := newRangeHasher(hdr.Start, hdr.End, hdr.Size, rl.Left, rl.Right)
	if err != nil {
		return rep, fmt.Errorf("%w: bundle line %d: range proof: %v", ErrVerification, lr.line, err)
	}

	// The range.
	var first, last []byte
	if hdr.Log == api.SystemLog {
		what := "entry %d of the range of " + api.SystemLog
		for i := hdr.Start; i < hdr.End; i++ {
			if line, err = lr.nextEntry(what, i); err != nil {
				return rep, err
			}
			leaf := entry.LeafHash(line)
			if leaf != sysLeaves[i-hdr.Start] {
				return rep, &EntryError{Log: hdr.Log, Index: i, Reason: fmt.Sprintf("differs from %s entry %d replayed above", api.SystemLog, i)}
			}
			rh.addLeaf(leaf)
			if i == hdr.Start {
				first = bytes.Clone(line)
			}
			if i == hdr.End-1 {
				last = bytes.Clone(line)
			}
			done++
		}
		report()
	} else {
		err := verifyRange(lr, v, reg, hdr.Log, hdr.Start, hdr.End, opts.Strict, func(c *entryChunk) {
			for _, l := range c.leaves {
				rh.addLeaf(l)
			}
			if c.start == hdr.Start {
				first = bytes.Clone(c.lines[0])
			}
			if c.start+int64(len(c.lines)) == hdr.End {
				last = bytes.Clone(c.lines[len(c.lines)-1])
			}
			done += int64(len(c.lines))
			report()
		})
		if err != nil {
			return rep, err
		}
	}
	root, err := rh.root()
	if err != nil {
		return rep, fmt.Errorf("%w: %v", ErrVerification, err)
	}
	if root != rep.Checkpoint.Hash {
		return rep, fmt.Errorf("%w: log %q: entries [%d, %d) with the range proof give root %s, but the checkpoint of size %d has root %s: the range is not exactly those entries of the log (changed, removed, added or reordered entries, or a forged proof)",
			ErrVerification, hdr.Log, hdr.Start, hdr.End, root, hdr.Size, tlog.Hash(rep.Checkpoint.Hash))
	}
	rep.FirstReceived, rep.LastReceived = receivedOf(first), receivedOf(last)

	// Trailer, then nothing.
	if line, err = lr.next("the trailer", -1); err != nil {
		return rep, err
	}
	if len(line) > 0 && line[0] == '{' && bytes.HasPrefix(line, []byte(`{"auth":`)) {
		return rep, badBundle("line %d: an entry after the %d entries of [%d, %d) the header announces (an added entry?); the trailer was expected", lr.line, hdr.End-hdr.Start, hdr.Start, hdr.End)
	}
	var tr bundleTrailer
	if err := lr.decode(line, "trailer", &tr); err != nil {
		return rep, err
	}
	if tr.End != BundleFormat || tr.Entries != hdr.End-hdr.Start || tr.SystemEntries != hdr.SystemSize {
		return rep, badBundle("line %d: the trailer (%q, %d entries, %d %s entries) does not match the header (%d entries, %d %s entries)", lr.line, tr.End, tr.Entries, tr.SystemEntries, api.SystemLog, hdr.End-hdr.Start, hdr.SystemSize, api.SystemLog)
	}
	if err := lr.end(); err != nil {
		return rep, err
	}
	return rep, nil
}

// entryChunk is a run of consecutive entries verified by one worker.
type entryChunk struct {
	start   int64
	lines   [][]byte
	prev    tlog.Hash // leaf hash of entry start-1
	ownPrev bool      // entry start-1 is not in the bundle: take the first entry's prev as given (the tree binds it)
	leaves  []tlog.Hash
	err     error
	done    chan struct{}
}

const bundleChunk = 256

// verify runs the Auditor's checks over the chunk, from its start index
// and prev. The registry is complete (all of _system was replayed) and is
// only read, so chunks are verified concurrently. Unless strict, the
// chunk's signatures are checked as one batch (internal/sigbatch); the
// first failure in index order is kept either way.
func (c *entryChunk) verify(v *Verifier, reg *keys.Registry, log string, strict bool) {
	a := &Auditor{log: log, server: v.pub, reg: reg, n: c.start, prev: c.prev}
	if !strict {
		a.sigOK = sigbatch.Verify
		a.batch = new(sigbatch.Batch)
	}
	if c.ownPrev {
		e, err := entry.Parse(c.lines[0])
		if err != nil {
			c.err = &EntryError{Log: log, Index: c.start, Reason: err.Error()}
			return
		}
		a.prev = e.Prev
	}
	c.leaves = make([]tlog.Hash, 0, len(c.lines))
	for _, l := range c.lines {
		if err := a.Add(l); err != nil {
			// A signature of an earlier entry that fails comes first.
			if serr := a.flushSigs(); serr != nil {
				err = serr
			}
			c.err = err
			return
		}
		c.leaves = append(c.leaves, a.prev)
	}
	c.err = a.flushSigs()
}

// verifyRange reads entries [start, end) of log and verifies them on
// GOMAXPROCS workers; done is called for each verified chunk in order.
// The first failure in index order is returned.
func verifyRange(lr *lineReader, v *Verifier, reg *keys.Registry, log string, start, end int64, strict bool, done func(*entryChunk)) error {
	workers := runtime.GOMAXPROCS(0)
	order := make(chan *entryChunk, 2*workers)
	work := make(chan *entryChunk, 2*workers)
	stop := make(chan struct{})
	var readErr error
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				select {
				case <-stop:
				default:
					c.verify(v, reg, log, strict)
				}
				close(c.done)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(work)
		defer close(order)
		what := "entry %d of " + strconv.Quote(log)
		var prev tlog.Hash // zero: the prev of entry 0
		ownPrev := start > 0
		for i := start; i < end; {
			n := min(bundleChunk, end-i)
			c := &entryChunk{start: i, prev: prev, ownPrev: ownPrev, lines: make([][]byte, 0, n), done: make(chan struct{})}
			var arena []byte
			for j := int64(0); j < n; j++ {
				line, err := lr.nextEntry(what, i+j)
				if err != nil {
					readErr = err
					break
				}
				if len(arena)+len(line) > cap(arena) {
					arena = make([]byte, 0, max(64<<10, len(line)))
				}
				off := len(arena)
				arena = append(arena, line...)
				c.lines = append(c.lines, arena[off:len(arena):len(arena)])
			}
			if len(c.lines) > 0 {
				prev, ownPrev = entry.LeafHash(c.lines[len(c.lines)-1]), false
				select {
				case order <- c:
				case <-stop:
					return
				}
				select {
				case work <- c:
				case <-stop:
					return
				}
			}
			if readErr != nil {
				return
			}
			i += n
		}
	}()
	var first error
	for c := range order {
		if first != nil {
			continue
		}
		<-c.done
		if c.err != nil {
			first = c.err
			close(stop)
			continue
		}
		done(c)
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return readErr
}
