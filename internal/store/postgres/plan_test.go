package postgres

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vellum-audit/vellum/internal/index"
	"github.com/vellum-audit/vellum/internal/store"
)

// TestSearchPlans checks PostgreSQL's plans for the search statements on a
// log of 20,000 entries with realistic value frequencies, once autovacuum
// has been by: each is driven by the index meant for it
// and none reads a table sequentially.
func TestSearchPlans(t *testing.T) {
	db := newTestDB(t)
	s := open(t, db.app)
	if err := s.CreateLog(ctx, "l", time.Now()); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	const n = 20000
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for start := 0; start < n; start += 5000 {
		b := &store.Batch{Log: "l", OldSize: int64(start), Checkpoint: []byte("cp")}
		for i := start; i < start+5000; i++ {
			b.Entries = append(b.Entries, []byte("e"))
			b.Docs = append(b.Docs, index.Doc{
				Index: int64(i), Received: base.Add(time.Duration(i) * time.Second),
				Action:  fmt.Sprintf("svc%d.action%d", r.IntN(20), r.IntN(30)),
				Actor:   fmt.Sprintf("user-%d", r.IntN(3000)),
				Key:     fmt.Sprintf("key-%d", r.IntN(20)),
				Outcome: []string{"success", "failure"}[r.IntN(2)],
				Source:  fmt.Sprintf("src-%d", r.IntN(5)),
				Targets: [][2]string{{fmt.Sprint(r.IntN(10000)), "user"}},
				Text:    fmt.Sprintf("common words here rare%d request req-%d", r.IntN(2000), i),
			})
		}
		if err := s.Append(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := pgx.Connect(ctx, db.owner)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// What autovacuum does in the background: statistics, the visibility
	// map, and the GIN index's pending list merged.
	if _, err := conn.Exec(ctx, "VACUUM ANALYZE"); err != nil {
		t.Fatal(err)
	}
	id, err := s.id(ctx, "l")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		f    index.Filter
		uses string // an index the plan must use
	}{
		{index.Filter{Actor: "user-7"}, "search_actor"},
		{index.Filter{Key: "key-3"}, "search_key"},
		{index.Filter{Action: "svc1.action2"}, "search_action"},
		{index.Filter{Source: "src-2", Outcome: "failure"}, "search_source"},
		{index.Filter{ActionPrefix: "svc1."}, "search_action"},
		{index.Filter{ActionPrefix: "svc1.", Outcome: "failure", Oldest: true}, "search_action"},
		{index.Filter{Target: "77"}, "search_targets_pkey"},
		{index.Filter{Target: "77", TargetType: "user", Text: "common"}, "search_targets_pkey"},
		{index.Filter{ActionPrefix: "svc1.", Target: "77"}, "search_targets_pkey"},
		{index.Filter{Actor: "user-7", Target: "77"}, "search_actor"},
		{index.Filter{Text: "rare5"}, "search_text_words"},     // rare: the GIN index
		{index.Filter{Text: "req 12345"}, "search_text_words"}, // rare together
		{index.Filter{Text: "common"}, "search_text_pkey"},     // everywhere: walk in order, stop at the limit
		{index.Filter{Text: "rare5", Outcome: "failure"}, "search_text_words"},
		{index.Filter{ActionPrefix: "svc1.", Text: "rare5"}, "search_text_words"},
		{index.Filter{Outcome: "failure", Since: base.Add(1000 * time.Second), Until: base.Add(2000 * time.Second)}, "search_pkey"},
		{index.Filter{}, "search_pkey"},
	} {
		f := tc.f
		f.Limit, f.After = 100, -1
		lo, hi, err := s.bounds(ctx, id, f, n)
		if err != nil {
			t.Fatal(err)
		}
		q, err := s.plan(ctx, id, f, lo, hi)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := conn.Query(ctx, "EXPLAIN (COSTS OFF) "+q.sql, q.args...)
		if err != nil {
			t.Fatal(err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		plan := strings.Join(lines, "\n")
		if strings.Contains(plan, "Seq Scan") || !regexp.MustCompile(`\b`+tc.uses+`\b`).MatchString(plan) {
			t.Errorf("filter %+v: want a plan using %s and no Seq Scan:\n%s\n%s", tc.f, tc.uses, q.sql, plan)
		}
	}
}
