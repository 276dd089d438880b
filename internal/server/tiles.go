package server

import (
	"encoding/binary"
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/tlog"
)

// tileHeight is the C2SP tlog-tiles tile height: 2^8 = 256 hashes a tile.
const tileHeight = 8

// parseTilePath parses the part of a C2SP tlog-tiles path after "tile/":
// "<L>/<N>[.p/<W>]" or "entries/<N>[.p/<W>]", where N is written in groups
// of three digits, all but the last prefixed with "x" (x001/x234/067).
// W is 0 for a full tile.
func parseTilePath(p string) (level int, entries bool, n int64, w int, ok bool) {
	parts := strings.Split(p, "/")
	if len(parts) < 2 {
		return 0, false, 0, 0, false
	}
	if parts[0] == "entries" {
		entries = true
	} else {
		l, err := strconv.Atoi(parts[0])
		if err != nil || l < 0 || l > 63 || strconv.Itoa(l) != parts[0] {
			return 0, false, 0, 0, false
		}
		level = l
	}
	parts = parts[1:]
	// Partial: the second-to-last part ends in ".p" and the last is W.
	if len(parts) >= 2 && strings.HasSuffix(parts[len(parts)-2], ".p") {
		wv, err := strconv.Atoi(parts[len(parts)-1])
		if err != nil || wv < 1 || wv > 255 || strconv.Itoa(wv) != parts[len(parts)-1] {
			return 0, false, 0, 0, false
		}
		w = wv
		parts = parts[:len(parts)-1]
		parts[len(parts)-1] = strings.TrimSuffix(parts[len(parts)-1], ".p")
	}
	if len(parts) > 7 || (len(parts) > 1 && parts[0] == "x000") {
		// At most 7 groups; no leading zero group (one index, one path).
		return 0, false, 0, 0, false
	}
	for i, g := range parts {
		if i < len(parts)-1 {
			var cut bool
			if g, cut = strings.CutPrefix(g, "x"); !cut {
				return 0, false, 0, 0, false
			}
		}
		if len(g) != 3 || g[0] < '0' || g[0] > '9' || g[1] < '0' || g[1] > '9' || g[2] < '0' || g[2] > '9' {
			return 0, false, 0, 0, false
		}
		d, _ := strconv.Atoi(g)
		if n > (1<<62)/1000 {
			return 0, false, 0, 0, false
		}
		n = n*1000 + int64(d)
	}
	return level, entries, n, w, true
}

func (s *Server) getTile(w http.ResponseWriter, r *http.Request, c *call) error {
	level, isEntries, n, width, ok := parseTilePath(r.PathValue("path"))
	if !ok {
		return errBadRequest("bad tile path %q: want tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>] (C2SP tlog-tiles)", r.PathValue("path"))
	}
	cur, _, err := s.current(r.Context(), c.log)
	if err != nil {
		return err
	}
	// Nodes available at this tile's bottom level.
	avail := cur.Size >> (tileHeight * level) // 0 for levels above 7
	want := int64(width)
	if width == 0 {
		want = 1 << tileHeight
	}
	if n > (1<<62)>>tileHeight || n<<tileHeight+want > avail {
		return errNotFound("tile not available at the log's current size %d", cur.Size)
	}
	var body []byte
	if isEntries {
		start := n << tileHeight
		es, err := s.cfg.Ledger.Store().ReadEntries(r.Context(), c.log, start, start+want)
		if err != nil {
			return err
		}
		if int64(len(es)) != want {
			return errNotFound("entries not available")
		}
		for _, e := range es {
			body = binary.BigEndian.AppendUint16(body, uint16(len(e)))
			body = append(body, e...)
		}
	} else {
		t := tlog.Tile{H: tileHeight, L: level, N: n, W: int(want)}
		body, err = s.cfg.Ledger.ReadTile(r.Context(), c.log, t)
		if err != nil {
			return err
		}
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if width == 0 {
		w.Header().Set("Cache-Control", "private, max-age=31536000, immutable")
	}
	w.Write(body)
	return nil
}
