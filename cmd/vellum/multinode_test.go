package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/client"
	"github.com/vellum-audit/vellum/internal/checkpoint"
	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/pgtest"
	"github.com/vellum-audit/vellum/internal/store/postgres"
)

// childEnv, when set, makes the test binary run vellum with the JSON list
// of arguments it holds instead of the tests: the multi-node tests start
// real server processes (so they can kill them with SIGKILL) without
// building a second binary.
const childEnv = "VELLUM_TEST_CHILD_ARGS"

func TestMain(m *testing.M) {
	if a := os.Getenv(childEnv); a != "" {
		var args []string
		if err := json.Unmarshal([]byte(a), &args); err != nil {
			fmt.Fprintln(os.Stderr, "bad", childEnv, err)
			os.Exit(2)
		}
		applyTestFileLimit()
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		mm := &Main{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv,
			Ready: func(addr string) { fmt.Fprintf(os.Stdout, "READY %s\n", addr) }}
		err := mm.Run(ctx, args)
		stop()
		if err != nil {
			mm.printError(err)
			os.Exit(exitCode(err))
		}
		os.Exit(0)
	}
	pgtest.Main(m)
}

// testStoreArgs are the serve flags of the store the CLI tests use: none
// (SQLite in --data) by default; with VELLUM_TEST_STORE=postgres, a fresh
// database of a throwaway PostgreSQL cluster, as the restricted role.
func testStoreArgs(t *testing.T) []string {
	t.Helper()
	if os.Getenv("VELLUM_TEST_STORE") != "postgres" {
		return nil
	}
	return []string{"--postgres", newPostgresDB(t)}
}

// newPostgresDB makes a migrated database and returns the app role's URL.
func newPostgresDB(t *testing.T) string {
	t.Helper()
	ownerURL, appURL := pgtest.NewDB(t)
	ctx := context.Background()
	if err := postgres.Migrate(ctx, ownerURL); err != nil {
		t.Fatal(err)
	}
	if err := postgres.Grant(ctx, ownerURL, pgtest.App); err != nil {
		t.Fatal(err)
	}
	return appURL
}

// child is a vellum server process.
type child struct {
	t    *testing.T
	args []string
	env  []string // added to the test's environment
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	addr string
	logs *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.WriteString(string(p))
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startChild starts `vellum args...` and waits until it listens.
func startChild(t *testing.T, args ...string) *child {
	t.Helper()
	c := &child{t: t, args: args, logs: &syncBuffer{}}
	c.start()
	t.Cleanup(func() { c.kill() })
	return c
}

func (c *child) start() {
	t := c.t
	t.Helper()
	a, _ := json.Marshal(c.args)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), c.env...), childEnv+"="+string(a))
	cmd.Stderr = c.logs
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.cmd = cmd
	c.done = make(chan struct{})
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "READY "); ok {
				ready <- a
			}
		}
		io.Copy(io.Discard, out)
		cmd.Wait()
		close(c.done)
	}()
	select {
	case c.addr = <-ready:
	case <-c.done:
		t.Fatalf("vellum %v exited:\n%s", c.args, c.logs.String())
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("vellum %v did not start:\n%s", c.args, c.logs.String())
	}
}

func (c *child) url() string { return "http://" + c.addr }

// kill sends SIGKILL: no shutdown, no flush, the process is gone.
func (c *child) kill() {
	if c.cmd != nil {
		c.cmd.Process.Signal(syscall.SIGKILL)
		<-c.done
	}
}

// restart starts the same command again on the same address.
func (c *child) restart() {
	for i, a := range c.args {
		if a == "--listen" && i+1 < len(c.args) {
			c.args[i+1] = c.addr
		}
	}
	c.start()
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestMultiNodeKill runs three vellum nodes on one PostgreSQL database
// (as a role that may not update or delete), with producers and a tail on
// each, kills one node with SIGKILL under load and restarts it. Then every
// acknowledged receipt is stored byte for byte, the log is one tree that
// verifies entry by entry, every checkpoint any node signed is consistent
// with the final one, and every tail saw every entry.
func TestMultiNodeKill(t *testing.T) {
	multiNodeKill(t, func(*testing.T, string, []*child) int { return 1 })
}

// TestMultiNodeKillHolder is TestMultiNodeKill with the node that holds the
// log's sequencer lease (the one the other two forward to) as the victim:
// one of the others takes the lease over, and nothing acknowledged is lost.
func TestMultiNodeKillHolder(t *testing.T) {
	multiNodeKill(t, func(t *testing.T, appURL string, nodes []*child) int {
		conn, err := pgx.Connect(context.Background(), appURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var holder string
		if err := conn.QueryRow(context.Background(), `SELECT url FROM sequencer_leases WHERE log = 'app' ORDER BY id DESC LIMIT 1`).Scan(&holder); err != nil {
			t.Fatalf("finding the lease holder: %v", err)
		}
		for i, n := range nodes {
			if n.url() == holder {
				t.Logf("node %d (%s) holds the lease of the log: killing it", i, holder)
				return i
			}
		}
		t.Fatalf("the lease holder %s is none of the nodes", holder)
		return -1
	})
}

// multiNodeKill runs the kill test with the node victim picks.
func multiNodeKill(t *testing.T, victim func(t *testing.T, appURL string, nodes []*child) int) {
	appURL := newPostgresDB(t)
	ctx := context.Background()
	base := t.TempDir()
	dirs := make([]string, 3)
	for i := range dirs {
		dirs[i] = filepath.Join(base, fmt.Sprintf("node%d", i))
	}
	serveArgs := func(i int) []string {
		return []string{"serve", "--data", dirs[i], "--postgres", appURL, "--listen", "127.0.0.1:0", "--name", "test.example/multi", "--log-level", "warn"}
	}
	nodes := []*child{startChild(t, serveArgs(0)...)}
	// The other nodes get the first one's configuration and server key;
	// the database never holds a key.
	for i := 1; i < 3; i++ {
		os.MkdirAll(dirs[i], 0o700)
		for _, f := range []string{"config.json", "server.key", "server.vkey"} {
			copyFile(t, filepath.Join(dirs[0], f), filepath.Join(dirs[i], f))
		}
		nodes = append(nodes, startChild(t, serveArgs(i)...))
	}
	for i := 1; i < 3; i++ {
		if _, err := os.Stat(filepath.Join(dirs[i], "admin.key")); err == nil {
			t.Errorf("node %d made an admin key of its own on a database that another node initialised", i)
		}
	}
	tokB, err := os.ReadFile(filepath.Join(dirs[0], "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(tokB))
	vkeyB, _ := os.ReadFile(filepath.Join(dirs[0], "server.vkey"))
	verifier, err := note.NewVerifier(strings.TrimSpace(string(vkeyB)))
	if err != nil {
		t.Fatal(err)
	}
	clients := make([]*client.Client, 3)
	for i, n := range nodes {
		if clients[i], err = client.New(n.url(), tok, client.WithRetries(0)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := clients[0].CreateLog(ctx, "app"); err != nil {
		t.Fatal(err)
	}

	// A tail on every node, from index 0.
	tailCtx, stopTails := context.WithCancel(ctx)
	defer stopTails()
	seen := make([]map[int64][]byte, 3)
	var seenMu sync.Mutex
	var tails sync.WaitGroup
	for i := range nodes {
		seen[i] = map[int64][]byte{}
		tc, err := client.New(nodes[i].url(), tok)
		if err != nil {
			t.Fatal(err)
		}
		tails.Add(1)
		go func() {
			defer tails.Done()
			for tailCtx.Err() == nil { // the killed node's tail reconnects after the restart
				tc.Tail(tailCtx, "app", 0, nil, func(e api.Entry) error {
					seenMu.Lock()
					seen[i][e.Index] = e.Data
					seenMu.Unlock()
					return nil
				})
				time.Sleep(100 * time.Millisecond)
			}
		}()
	}

	var mu sync.Mutex
	var acked []api.Receipt
	var cps [][]byte // checkpoints handed out, from receipts
	var refusedWhileDown int
	quit := make(chan struct{})
	var wg sync.WaitGroup
	for i := range nodes {
		for p := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := 0; ; k++ {
					select {
					case <-quit:
						return
					default:
					}
					n := 1 + k%4
					evs := make([]json.RawMessage, n)
					for j := range evs {
						evs[j] = json.RawMessage(fmt.Sprintf(`{"action":"multi.write","actor":{"id":"n%d-p%d"},"metadata":{"k":%d,"j":%d}}`, i, p, k, j))
					}
					mu.Lock()
					c := clients[i]
					mu.Unlock()
					rs, err := c.Append(ctx, "app", evs...)
					mu.Lock()
					if err != nil {
						refusedWhileDown++
					} else {
						acked = append(acked, rs...)
						if pr, err := checkpoint.ParseProof([]byte(rs[0].Proof)); err == nil {
							cps = append(cps, pr.Checkpoint)
						}
					}
					mu.Unlock()
					if err != nil {
						time.Sleep(20 * time.Millisecond)
					}
				}
			}()
		}
	}
	time.Sleep(2 * time.Second)
	vi := victim(t, appURL, nodes)
	nodes[vi].kill()
	time.Sleep(500 * time.Millisecond)
	nodes[vi].restart()
	time.Sleep(2 * time.Second)
	close(quit)
	wg.Wait()
	if len(acked) < 100 {
		t.Fatalf("only %d events acknowledged; the load did not run", len(acked))
	}
	t.Logf("%d events acknowledged, %d appends refused (while node %d was down)", len(acked), refusedWhileDown, vi)

	// Every node converges on one checkpoint.
	var size int64
	var final []byte
	deadline := time.Now().Add(10 * time.Second)
	for {
		var sizes []int64
		for i := range nodes {
			cp, err := clients[i].Checkpoint(ctx, "app")
			if err != nil {
				t.Fatalf("node %d checkpoint: %v", i, err)
			}
			c, err := checkpoint.Open(cp, verifier, "test.example/multi/app")
			if err != nil {
				t.Fatalf("node %d checkpoint: %v", i, err)
			}
			sizes = append(sizes, c.Size)
			cps = append(cps, cp)
			final, size = cp, c.Size
		}
		if sizes[0] == sizes[1] && sizes[1] == sizes[2] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nodes disagree on the log's size: %v", sizes)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The whole log: entries, chain, signatures, tree, from node 2.
	var all [][]byte
	for start := int64(0); start < size; start += 1000 {
		es, err := clients[2].Entries(ctx, "app", start, min(start+1000, size))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			all = append(all, e.Data)
		}
	}
	if int64(len(all)) != size {
		t.Fatalf("read %d entries, checkpoint says %d", len(all), size)
	}
	v, err := client.NewVerifier(strings.TrimSpace(string(vkeyB)))
	if err != nil {
		t.Fatal(err)
	}
	reg, _, err := clients[0].AuditSystem(ctx, v, nil)
	if err != nil {
		t.Fatalf("auditing _system: %v", err)
	}
	fc, err := v.OpenCheckpoint("app", final)
	if err != nil {
		t.Fatal(err)
	}
	if err := clients[0].AuditLog(ctx, v, "app", fc, reg, nil); err != nil {
		t.Fatalf("auditing the log: %v", err)
	}

	// Every acknowledged receipt, byte for byte.
	for _, r := range acked {
		if r.Index >= size || string(all[r.Index]) != string(r.Entry) {
			t.Fatalf("acknowledged entry %d is not stored as acknowledged", r.Index)
		}
	}
	// One tree: every checkpoint any node handed out is a prefix of it.
	var hashes []tlog.Hash
	hr := tlog.HashReaderFunc(func(ids []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(ids))
		for i, id := range ids {
			out[i] = hashes[id]
		}
		return out, nil
	})
	for i, data := range all {
		hs, err := tlog.StoredHashes(int64(i), data, hr)
		if err != nil {
			t.Fatal(err)
		}
		if entry.LeafHash(data) != hs[0] {
			t.Fatalf("entry %d: leaf hash differs from tlog's record hash", i)
		}
		hashes = append(hashes, hs...)
	}
	for _, cp := range cps {
		c, err := checkpoint.Open(cp, verifier, "test.example/multi/app")
		if err != nil {
			t.Fatalf("a checkpoint handed out does not verify: %v", err)
		}
		root, err := tlog.TreeHash(c.Size, hr)
		if err != nil {
			t.Fatal(err)
		}
		if root != c.Hash {
			t.Fatalf("checkpoint of size %d is not a prefix of the final tree: the log forked", c.Size)
		}
	}
	// Every tail saw every entry.
	deadline = time.Now().Add(10 * time.Second)
	for i := range nodes {
		for {
			seenMu.Lock()
			n := len(seen[i])
			seenMu.Unlock()
			if int64(n) >= size || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		seenMu.Lock()
		for idx := int64(0); idx < size; idx++ {
			if d, ok := seen[i][idx]; !ok || string(d) != string(all[idx]) {
				seenMu.Unlock()
				t.Fatalf("the tail on node %d missed entry %d (saw %d of %d)", i, idx, len(seen[i]), size)
			}
		}
		seenMu.Unlock()
	}
	stopTails()
	tails.Wait()
}
