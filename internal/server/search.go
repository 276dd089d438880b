package server

import (
	"errors"
	"net/http"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/index"
)

// search answers GET /v1/logs/{log}/entries with filters: the index finds
// the indexes, the entries come from the log itself (so what is returned
// is evidence, not the projection), optionally each with an inclusion proof
// against one checkpoint.
func (s *Server) search(w http.ResponseWriter, r *http.Request, c *call) error {
	q := r.URL.Query()
	proof := false
	if v, ok := q["proof"]; ok {
		if len(v) != 1 || (v[0] != "true" && v[0] != "false") {
			return errBadRequest("proof must be true or false")
		}
		proof = v[0] == "true"
	}
	f, err := index.ParseFilter(q, s.cfg.Now(), "proof")
	if err != nil {
		return errBadRequest("%s", err.Error())
	}
	cur, cp, err := s.current(r.Context(), c.log)
	if err != nil {
		return err
	}
	idxs, more, err := s.cfg.Ledger.Store().Search(r.Context(), c.log, f, cur.Size)
	if err != nil {
		if errors.Is(err, index.ErrBadFilter) {
			return errBadRequest("%s", err.Error())
		}
		return err
	}
	out := api.EntryList{Entries: []api.Entry{}}
	es, err := s.cfg.Ledger.Store().ReadEntriesAt(r.Context(), c.log, idxs)
	if err != nil {
		return err
	}
	ids := make([]int64, len(idxs))
	for i, idx := range idxs {
		ids[i] = tlog.StoredHashIndex(0, idx)
	}
	leaves, err := s.cfg.Ledger.Store().ReadHashes(r.Context(), c.log, ids)
	if err != nil {
		return err
	}
	for i, idx := range idxs {
		e := api.Entry{Log: c.log, Index: idx, LeafHash: leaves[i].String(), Data: es[i]}
		if proof {
			text, _, err := s.cfg.Ledger.ProofText(r.Context(), c.log, idx, cp, cur.Size)
			if err != nil {
				return err
			}
			e.Proof = string(text)
		}
		out.Entries = append(out.Entries, e)
	}
	if more && len(idxs) > 0 {
		out.NextCursor = f.Cursor(idxs[len(idxs)-1])
	}
	if proof {
		out.Checkpoint = string(cp)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
