package sqlite

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/index"
	"github.com/vellum-audit/vellum/internal/store"
)

// BenchmarkAppendBatch measures one durable commit of 1,000 realistic
// entries with their tree hashes, with and without the search index docs:
// the index's share of the storage cost of an append. The docs are written
// to index.db by the indexer after the commit, so the timed part (ns/op,
// entries/s) is the commit path: building the docs and Append. The
// indexer's work is then waited for, untimed, but its CPU is counted in
// cpu-µs/entry (the process's CPU over commit and indexing) and its wall
// time reported as index-ms/op.
//
//	go test -run '^$' -bench AppendBatch -benchtime 200x ./internal/store/sqlite/
func BenchmarkAppendBatch(b *testing.B) {
	for _, withIndex := range []bool{false, true} {
		b.Run(fmt.Sprintf("index=%v", withIndex), func(b *testing.B) {
			ctx := context.Background()
			s, err := Open(ctx, b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			if err := s.CreateLog(ctx, "bench", time.Now()); err != nil {
				b.Fatal(err)
			}
			const n = 1000
			var size int64
			var cpu time.Duration // CPU time of the commit and the indexing: steadier than wall time on a shared machine
			var indexWall time.Duration
			rng := rand.New(rand.NewPCG(1, 2))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				batch := &store.Batch{Log: "bench", OldSize: size, Checkpoint: []byte("cp")}
				var evs []api.Event
				for k := 0; k < n; k++ {
					idx := size + int64(k)
					ev := api.Event{Action: fmt.Sprintf("user.action%d", k%40), Actor: api.Actor{ID: fmt.Sprintf("user-%d", idx%3000)},
						Targets: []api.Target{{ID: fmt.Sprint(idx % 100000), Type: "user"}}, Outcome: "success", Source: "svc",
						Metadata: benchMetadata(rng)}
					data, _ := json.Marshal(map[string]any{"event": ev, "index": idx, "pad": string(make([]byte, 300))})
					batch.Entries = append(batch.Entries, data)
					h := sha256.Sum256(data)
					batch.Hashes = append(batch.Hashes, store.HashRow{ID: 2 * idx, Hash: h}, store.HashRow{ID: 2*idx + 1, Hash: h})
					evs = append(evs, ev)
				}
				b.StartTimer()
				c0 := cpuTime()
				if withIndex { // the sequencer's share of the index cost is timed too
					for k := range evs {
						batch.Docs = append(batch.Docs, index.DocFromEvent(size+int64(k), time.Now(), "0123456789abcdef", &evs[k]))
					}
				}
				if err := s.Append(ctx, batch); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				w0 := time.Now()
				if got, err := s.Indexed(ctx, "bench"); err != nil || withIndex && got != size+n {
					b.Fatalf("Indexed = %d, %v", got, err)
				}
				indexWall += time.Since(w0)
				cpu += cpuTime() - c0
				b.StartTimer()
				size += n
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "entries/s")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*n), "cpu-µs/entry")
			b.ReportMetric(float64(indexWall.Microseconds())/1000/float64(b.N), "index-ms/op")
		})
	}
}

// benchWords are the words of benchMetadata.
var benchWords = strings.Fields(`alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima
	mike november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu
	admin billing console deploy export finance gateway invoice ledger member network payroll
	quota region report secret session storage support tenant ticket token vault webhook`)

// benchMetadata is metadata like the one `vellum bench` sends: a request
// id, then field changes of random words and numbers up to a log-uniform
// size between 100 B and 2 KiB.
func benchMetadata(r *rand.Rand) json.RawMessage {
	want := int(math.Exp(math.Log(100) + r.Float64()*(math.Log(2048)-math.Log(100))))
	type change struct{ Field, Old, New string }
	md := struct {
		RequestID string   `json:"request_id"`
		Changes   []change `json:"changes,omitempty"`
	}{RequestID: fmt.Sprintf("req_%016x", r.Uint64())}
	w := func() string { return benchWords[r.IntN(len(benchWords))] }
	for size := 40; size < want; {
		c := change{w(), w() + "-" + strconv.Itoa(r.IntN(1000)), w() + "-" + strconv.Itoa(r.IntN(1000))}
		md.Changes = append(md.Changes, c)
		size += len(c.Field) + len(c.Old) + len(c.New) + 30
	}
	data, _ := json.Marshal(md)
	return data
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
