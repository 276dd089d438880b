package server

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/vellum-audit/vellum/internal/checkpoint"
)

// exportRoutes registers what export bundles need.
func (s *Server) exportRoutes() {
	s.handle("GET /v1/logs/{log}/proof/range", "read", s.rangeProof)
	s.handleStream("GET /v1/logs/{log}/export", "read", s.exportEntries)
}

// rangeParams reads the required start and end of a range request that
// accepts only the parameters allowed; verb says what the range is for,
// in the error.
func rangeParams(r *http.Request, verb string, allowed ...string) (start, end int64, err error) {
	if err := onlyParams(r, allowed...); err != nil {
		return 0, 0, err
	}
	q := r.URL.Query()
	if q.Get("start") == "" || q.Get("end") == "" {
		return 0, 0, errBadRequest("start and end are required (the range [start, end) of entries to %s)", verb)
	}
	if start, err = parseIndex("start", q.Get("start")); err != nil {
		return 0, 0, err
	}
	if end, err = parseIndex("end", q.Get("end")); err != nil {
		return 0, 0, err
	}
	return start, end, nil
}

// exportChunk is how many entries exportEntries reads from storage at a
// time; one chunk is read ahead while the previous one is written.
const exportChunk = 4096

// exportEntries answers GET /v1/logs/{log}/export?start=A&end=B: the
// entries [A, B) of the log, each one's canonical bytes followed by '\n',
// in index order, as one streamed response (Content-Type
// application/jsonl). It is authorised like any read and recorded in
// _access once, when the stream starts. Entries are read from storage in
// chunks, so memory does not grow with the range. A storage error after
// the first byte aborts the response (the client sees a short body); the
// client checks the count and recomputes the tree anyway.
func (s *Server) exportEntries(w http.ResponseWriter, r *http.Request, c *call) error {
	start, end, err := rangeParams(r, "export", "start", "end")
	if err != nil {
		return err
	}
	ctx := r.Context()
	size, _, err := s.cfg.Ledger.Size(ctx, c.log)
	if err != nil {
		return err
	}
	if start >= end || end > size {
		return errBadRequest("the range [%d, %d) is empty or not within log %q, which has %d entries", start, end, c.log, size)
	}
	type chunk struct {
		es  [][]byte
		err error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	chunks := make(chan chunk, 1) // one chunk read ahead
	go func() {
		defer close(chunks)
		for p := start; p < end; p += exportChunk {
			es, err := s.cfg.Ledger.Store().ReadEntries(ctx, c.log, p, min(p+exportChunk, end))
			if err == nil && int64(len(es)) != min(exportChunk, end-p) {
				err = fmt.Errorf("log %q: %d entries read at %d, want %d", c.log, len(es), p, min(exportChunk, end-p))
			}
			select {
			case chunks <- chunk{es, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	first := <-chunks
	if first.err != nil {
		return first.err
	}
	// From here on the answer is the stream: record it, then send it.
	s.recordAccess(r, c.key.ID, http.StatusOK, "")
	w.Header().Set("Content-Type", "application/jsonl")
	w.Header().Set("X-Vellum-Entries", strconv.FormatInt(end-start, 10))
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 256<<10)
	write := func(es [][]byte) error {
		for _, e := range es {
			bw.Write(e)
			if err := bw.WriteByte('\n'); err != nil {
				return err
			}
		}
		return nil
	}
	if err := write(first.es); err != nil {
		return nil // the client went away
	}
	for ch := range chunks {
		if ch.err != nil {
			s.cfg.Logger.Error("export: reading entries", "log", c.log, "err", ch.err)
			bw.Flush()
			panic(http.ErrAbortHandler)
		}
		if err := write(ch.es); err != nil {
			return nil
		}
	}
	bw.Flush()
	return nil
}

// rangeNode is the root hash of one aligned perfect subtree: the 2^level
// leaves from index·2^level.
type rangeNode struct {
	Level int    `json:"level"`
	Index int64  `json:"index"`
	Hash  string `json:"hash"`
}

// rangeProofAnswer answers GET /v1/logs/{log}/proof/range.
type rangeProofAnswer struct {
	Start int64       `json:"start"`
	End   int64       `json:"end"`
	Size  int64       `json:"size"`
	Left  []rangeNode `json:"left"`
	Right []rangeNode `json:"right"`
}

// rangeProof serves the hashes that, with the leaf hashes of entries
// [start, end), recompute the root of the tree of size: the roots of the
// maximal aligned perfect subtrees covering [0, start) (left) and
// [end, size) (right).
func (s *Server) rangeProof(w http.ResponseWriter, r *http.Request, c *call) error {
	start, end, err := rangeParams(r, "prove", "start", "end", "size")
	if err != nil {
		return err
	}
	cur, _, err := s.current(r.Context(), c.log)
	if err != nil {
		return err
	}
	size, err := s.sizeParam(r, "size", cur.Size, cur.Size)
	if err != nil {
		return err
	}
	if start >= end {
		return errBadRequest("start %d must be below end %d", start, end)
	}
	if end > size {
		return errBadRequest("end %d is beyond the tree size %d", end, size)
	}
	ll, li := checkpoint.CoverNodes(0, start)
	rl, ri := checkpoint.CoverNodes(end, size)
	ids := make([]int64, 0, len(ll)+len(rl))
	for i := range ll {
		ids = append(ids, tlog.StoredHashIndex(ll[i], li[i]))
	}
	for i := range rl {
		ids = append(ids, tlog.StoredHashIndex(rl[i], ri[i]))
	}
	reader := tlog.HashReaderFunc(func(ids []int64) ([]tlog.Hash, error) {
		return s.cfg.Ledger.Store().ReadHashes(r.Context(), c.log, ids)
	})
	var hs []tlog.Hash
	if len(ids) > 0 {
		if hs, err = reader.ReadHashes(ids); err != nil {
			return err
		}
		if len(hs) != len(ids) {
			return fmt.Errorf("log %q: read %d stored hashes, want %d", c.log, len(hs), len(ids))
		}
	}
	out := rangeProofAnswer{Start: start, End: end, Size: size, Left: []rangeNode{}, Right: []rangeNode{}}
	for i := range ll {
		out.Left = append(out.Left, rangeNode{Level: ll[i], Index: li[i], Hash: hs[i].String()})
	}
	for i := range rl {
		out.Right = append(out.Right, rangeNode{Level: rl[i], Index: ri[i], Hash: hs[len(ll)+i].String()})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
