package postgres

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/index"
	"github.com/vellum-audit/vellum/internal/pgtest"
	"github.com/vellum-audit/vellum/internal/store"
)

// BenchmarkAppendBatch measures one durable commit of 1,000 realistic
// entries with their tree hashes, with and without the search index rows,
// as internal/store/sqlite's benchmark of the same name does. It runs on
// a cluster with PostgreSQL's durable settings (fsync on), over the Unix
// socket, as the restricted application role.
//
//	go test -run '^$' -bench AppendBatch -benchtime 200x ./internal/store/postgres/
func BenchmarkAppendBatch(b *testing.B) {
	for _, withIndex := range []bool{false, true} {
		b.Run(fmt.Sprintf("index=%v", withIndex), func(b *testing.B) {
			db := newTestDB(b, pgtest.Durable)
			s := open(b, db.app)
			if err := s.CreateLog(ctx, "bench", time.Now()); err != nil {
				b.Fatal(err)
			}
			const n = 1000
			var size int64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				batch := &store.Batch{Log: "bench", OldSize: size, Checkpoint: []byte("cp")}
				var evs []api.Event
				for k := 0; k < n; k++ {
					idx := size + int64(k)
					ev := api.Event{Action: fmt.Sprintf("user.action%d", k%40), Actor: api.Actor{ID: fmt.Sprintf("user-%d", idx%3000)},
						Targets: []api.Target{{ID: fmt.Sprint(idx % 100000), Type: "user"}}, Outcome: "success", Source: "svc",
						Metadata: json.RawMessage(fmt.Sprintf(`{"note":"alpha bravo charlie %d delta echo foxtrot golf hotel","request_id":"req-%d"}`, idx, idx))}
					data, _ := json.Marshal(map[string]any{"event": ev, "index": idx, "pad": string(make([]byte, 300))})
					batch.Entries = append(batch.Entries, data)
					h := sha256.Sum256(data)
					batch.Hashes = append(batch.Hashes, store.HashRow{ID: 2 * idx, Hash: h}, store.HashRow{ID: 2*idx + 1, Hash: h})
					evs = append(evs, ev)
				}
				b.StartTimer()
				if withIndex { // the sequencer's share of the index cost is timed too
					for k := range evs {
						batch.Docs = append(batch.Docs, index.DocFromEvent(size+int64(k), time.Now(), "0123456789abcdef", &evs[k]))
					}
				}
				if err := s.Append(ctx, batch); err != nil {
					b.Fatal(err)
				}
				size += n
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}
