package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/client"
	"github.com/vellum-audit/vellum/internal/checkpoint"
	"github.com/vellum-audit/vellum/internal/entry"
)

// crashLog is what the harness knows of one log: what it checked so far
// and what was promised.
type crashLog struct {
	name    string
	entries [][]byte    // checked entries, 0 … len-1
	hashes  []tlog.Hash // their stored tlog hashes
	batches map[string]int
	sizes   map[string]int // batch tag → events in the request
}

// TestCrashHarness runs the server as a child process under concurrent
// load (single events and batches, on three logs) and kills it with
// SIGKILL at random moments, VELLUM_CRASH_KILLS times (50 by default),
// restarting it each time. After every restart: every acknowledged receipt
// is stored byte for byte, no batch is partly stored (all of a request's
// events or none), the entries chain and form the tree of the new signed
// checkpoint, every checkpoint handed out before is a prefix of it, and the
// server serves appends again. At the end the logs and _system are audited
// in full (chain, signatures against the key history, tree).
func TestCrashHarness(t *testing.T) {
	kills := 50
	if s := os.Getenv("VELLUM_CRASH_KILLS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("VELLUM_CRASH_KILLS=%q: want a positive number", s)
		}
		kills = n
	} else if testing.Short() {
		kills = 5
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("VELLUM_CRASH_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("VELLUM_CRASH_SEED=%d VELLUM_CRASH_KILLS=%d", seed, kills)
	rng := rand.New(rand.NewPCG(seed, 1))
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	srv := startChild(t, append([]string{"serve", "--data", dir, "--listen", "127.0.0.1:0", "--name", "test.example/crash", "--log-level", "error"}, testStoreArgs(t)...)...)
	tokB, err := os.ReadFile(filepath.Join(dir, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(tokB))
	vkeyB, _ := os.ReadFile(filepath.Join(dir, "server.vkey"))
	vkey := strings.TrimSpace(string(vkeyB))
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(srv.url(), tok, client.WithRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	logs := []*crashLog{}
	for _, name := range []string{"orders", "billing", "auth"} {
		if _, err := c.CreateLog(ctx, name); err != nil {
			t.Fatal(err)
		}
		logs = append(logs, &crashLog{name: name, batches: map[string]int{}, sizes: map[string]int{}})
	}

	var mu sync.Mutex
	acked := map[string][]api.Receipt{} // by log
	handed := map[string][][]byte{}     // checkpoints in receipts, by log
	var sent, failed int
	var restartTimes []time.Duration

	load := func(stop <-chan struct{}, cl *client.Client, round int) *sync.WaitGroup {
		var wg sync.WaitGroup
		for li, lg := range logs {
			for p := range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for k := 0; ; k++ {
						select {
						case <-stop:
							return
						default:
						}
						n := 1
						if p == 2 {
							n = 1 + (k*7+li)%40 // batches of 1 to 40
						}
						tag := fmt.Sprintf("r%d-l%d-p%d-k%d", round, li, p, k)
						evs := make([]json.RawMessage, n)
						for j := range evs {
							evs[j] = json.RawMessage(fmt.Sprintf(`{"action":"crash.write","actor":{"id":"p%d"},"metadata":{"b":%q,"n":%d,"j":%d}}`, p, tag, n, j))
						}
						mu.Lock()
						lg.sizes[tag] = n
						sent++
						mu.Unlock()
						rs, err := cl.Append(ctx, lg.name, evs...)
						mu.Lock()
						if err != nil {
							failed++
						} else {
							acked[lg.name] = append(acked[lg.name], rs...)
							if pr, err := checkpoint.ParseProof([]byte(rs[len(rs)-1].Proof)); err == nil {
								handed[lg.name] = append(handed[lg.name], pr.Checkpoint)
							}
						}
						mu.Unlock()
						if err != nil {
							time.Sleep(10 * time.Millisecond)
						}
					}
				}()
			}
		}
		return &wg
	}

	// check reads what the restarted server holds and checks it against
	// everything acknowledged and handed out so far.
	check := func(cl *client.Client, round int) {
		t.Helper()
		for _, lg := range logs {
			cp, err := cl.Checkpoint(ctx, lg.name)
			if err != nil {
				t.Fatalf("round %d: %s: checkpoint: %v", round, lg.name, err)
			}
			cc, err := checkpoint.Open(cp, verifier, "test.example/crash/"+lg.name)
			if err != nil {
				t.Fatalf("round %d: %s: checkpoint does not verify: %v", round, lg.name, err)
			}
			if cc.Size < int64(len(lg.entries)) {
				t.Fatalf("round %d: %s: the log shrank from %d to %d entries", round, lg.name, len(lg.entries), cc.Size)
			}
			for start := int64(len(lg.entries)); start < cc.Size; start += 1000 {
				es, err := cl.Entries(ctx, lg.name, start, min(start+1000, cc.Size))
				if err != nil {
					t.Fatalf("round %d: %s: entries: %v", round, lg.name, err)
				}
				for _, e := range es {
					lg.add(t, e.Data)
				}
			}
			hr := lg.hashReader()
			root, err := tlog.TreeHash(cc.Size, hr)
			if err != nil {
				t.Fatal(err)
			}
			if root != cc.Hash {
				t.Fatalf("round %d: %s: the entries do not form the tree of the signed checkpoint (size %d)", round, lg.name, cc.Size)
			}
			mu.Lock()
			rs, cps := slices.Clone(acked[lg.name]), slices.Clone(handed[lg.name])
			mu.Unlock()
			for _, r := range rs {
				if r.Index >= cc.Size || string(lg.entries[r.Index]) != string(r.Entry) {
					t.Fatalf("round %d: %s: acknowledged entry %d is not stored as acknowledged", round, lg.name, r.Index)
				}
			}
			for _, h := range cps {
				hc, err := checkpoint.Open(h, verifier, "test.example/crash/"+lg.name)
				if err != nil {
					t.Fatalf("round %d: %s: a checkpoint handed out does not verify: %v", round, lg.name, err)
				}
				if hc.Size > cc.Size {
					t.Fatalf("round %d: %s: a checkpoint of size %d was handed out, the log now has %d", round, lg.name, hc.Size, cc.Size)
				}
				r, err := tlog.TreeHash(hc.Size, hr)
				if err != nil || r != hc.Hash {
					t.Fatalf("round %d: %s: checkpoint of size %d handed out is not a prefix of the current tree", round, lg.name, hc.Size)
				}
			}
			mu.Lock()
			handed[lg.name] = nil // checked against this tree, and so against every later one
			mu.Unlock()
			// No batch partly stored: the entries of a request are all
			// present or none. (A request in flight at the kill may
			// be either; it must not be half.)
			for tag, got := range lg.batches {
				mu.Lock()
				want := lg.sizes[tag]
				mu.Unlock()
				if got != want {
					t.Fatalf("round %d: %s: request %s stored %d of its %d events", round, lg.name, tag, got, want)
				}
			}
		}
	}

	for round := range kills {
		stop := make(chan struct{})
		wg := load(stop, c, round)
		time.Sleep(time.Duration(50+rng.IntN(450)) * time.Millisecond)
		srv.kill() // SIGKILL, mid-load
		close(stop)
		wg.Wait()
		t0 := time.Now()
		srv.restart()
		if c, err = client.New(srv.url(), tok, client.WithRetries(0)); err != nil {
			t.Fatal(err)
		}
		// Serving again: an append is acknowledged.
		for {
			_, err := c.Append(ctx, "orders", json.RawMessage(`{"action":"crash.probe","actor":{"id":"harness"}}`))
			if err == nil {
				break
			}
			if time.Since(t0) > time.Minute {
				t.Fatalf("round %d: not serving a minute after the restart: %v\n%s", round, err, srv.logs.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
		restartTimes = append(restartTimes, time.Since(t0))
		check(c, round)
	}

	// The whole record, audited as an outside auditor would: chain,
	// every signature against the key history in _system, the tree.
	v, err := client.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	reg, _, err := c.AuditSystem(ctx, v, nil)
	if err != nil {
		t.Fatalf("auditing _system: %v", err)
	}
	total := 0
	for _, lg := range logs {
		cp, err := c.Checkpoint(ctx, lg.name)
		if err != nil {
			t.Fatal(err)
		}
		fc, err := v.OpenCheckpoint(lg.name, cp)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.AuditLog(ctx, v, lg.name, fc, reg, nil); err != nil {
			t.Fatalf("auditing %s: %v", lg.name, err)
		}
		total += len(acked[lg.name])
	}
	slices.Sort(restartTimes)
	t.Logf("%d kills; %d append requests, %d failed around kills; %d events acknowledged and found; restart to first acknowledged append: median %v, max %v",
		kills, sent, failed, total, restartTimes[len(restartTimes)/2].Round(time.Millisecond), restartTimes[len(restartTimes)-1].Round(time.Millisecond))
	if total < kills*10 {
		t.Errorf("only %d events acknowledged over %d rounds: the load hardly ran", total, kills)
	}
}

// add checks one new entry (its index, its link to the previous entry) and
// adds it with its tree hashes.
func (lg *crashLog) add(t *testing.T, data []byte) {
	t.Helper()
	i := int64(len(lg.entries))
	e, err := entry.Parse(data)
	if err != nil {
		t.Fatalf("%s: entry %d does not parse: %v", lg.name, i, err)
	}
	if e.Index != i || e.Log != lg.name {
		t.Fatalf("%s: entry %d says it is entry %d of %q", lg.name, i, e.Index, e.Log)
	}
	if i > 0 && e.Prev != entry.LeafHash(lg.entries[i-1]) {
		t.Fatalf("%s: entry %d does not link to entry %d", lg.name, i, i-1)
	}
	hs, err := tlog.StoredHashes(i, data, lg.hashReader())
	if err != nil {
		t.Fatal(err)
	}
	lg.hashes = append(lg.hashes, hs...)
	lg.entries = append(lg.entries, data)
	var ev struct {
		Metadata struct {
			B string `json:"b"`
		} `json:"metadata"`
	}
	if json.Unmarshal(e.Event, &ev) == nil && ev.Metadata.B != "" {
		lg.batches[ev.Metadata.B]++
	}
}

func (lg *crashLog) hashReader() tlog.HashReader {
	return tlog.HashReaderFunc(func(ids []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(ids))
		for i, id := range ids {
			if id >= int64(len(lg.hashes)) {
				return nil, fmt.Errorf("hash %d not known", id)
			}
			out[i] = lg.hashes[id]
		}
		return out, nil
	})
}
