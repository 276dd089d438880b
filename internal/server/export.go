package server

import (
	"fmt"
	"net/http"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/vellum-audit/vellum/internal/checkpoint"
)

// exportRoutes registers what export bundles need.
func (s *Server) exportRoutes() {
	s.handle("GET /v1/logs/{log}/proof/range", "read", s.rangeProof)
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
	if err := onlyParams(r, "start", "end", "size"); err != nil {
		return err
	}
	q := r.URL.Query()
	if q.Get("start") == "" || q.Get("end") == "" {
		return errBadRequest("start and end are required (the range [start, end) of entries to prove)")
	}
	start, err := parseIndex("start", q.Get("start"))
	if err != nil {
		return err
	}
	end, err := parseIndex("end", q.Get("end"))
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
