// Package pgtest runs throwaway PostgreSQL clusters for tests: real
// servers, never mocks. A cluster is started on first use (initdb into a
// temporary directory, the server listening on a Unix socket in that
// directory only, no TCP), shared by the tests of one test binary, and
// stopped and removed by [Main] when they end. Each test gets a fresh
// database from [NewDB]: owned by a role that may change the schema, and
// reached by the application through a second role that has no privilege
// at all until the test grants it some (the grants of docs/postgres.md).
//
// Without PostgreSQL's server binaries the tests that need them are skipped
// with a hint to install them, except under CI=true, where they fail: CI
// must not pass by running nothing.
//
// When the tests run as root the cluster runs as the postgres user (the
// server refuses to run as root) and its directory belongs to that user.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Role names, the same in every cluster.
const (
	Owner = "vellum_owner" // owns each test database: runs migrations
	App   = "vellum_app"   // the application's role: only what it is granted
)

// ErrNoPostgres means the PostgreSQL server binaries were not found.
var ErrNoPostgres = errors.New("PostgreSQL server binaries (initdb, postgres) not found")

// Option chooses the settings of the cluster a database lives in.
type Option func(*settings)

type settings struct{ durable bool }

// Durable asks for a cluster with PostgreSQL's durable defaults (fsync,
// full_page_writes): what a benchmark of commits must measure. Without it
// the cluster runs with fsync=off, which is safe for tests because they
// never crash the database server itself, only vellum's side of it.
func Durable(s *settings) { s.durable = true }

// Cluster is a running server.
type Cluster struct {
	dir  string // temporary directory: data/, the socket, server.log
	cmd  *exec.Cmd
	done chan struct{} // closed when the server process has exited
	n    atomic.Int64  // databases created
}

var (
	mu       sync.Mutex
	clusters = map[settings]*clusterOnce{}
)

type clusterOnce struct {
	once sync.Once
	c    *Cluster
	err  error
}

// Main runs the tests and then stops the clusters they started. Call it
// from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	StopAll()
	os.Exit(code)
}

// StopAll stops every cluster started so far and removes its directory.
func StopAll() {
	mu.Lock()
	defer mu.Unlock()
	for k, co := range clusters {
		if co.c != nil {
			co.c.Stop()
		}
		delete(clusters, k)
	}
}

func get(opts []Option) (*Cluster, error) {
	var s settings
	for _, o := range opts {
		o(&s)
	}
	mu.Lock()
	co := clusters[s]
	if co == nil {
		co = &clusterOnce{}
		clusters[s] = co
	}
	mu.Unlock()
	co.once.Do(func() { co.c, co.err = Start(s.durable) })
	return co.c, co.err
}

// NewDB creates an empty database for t in the shared cluster (starting it
// if needed) and drops it when t ends. ownerURL connects as [Owner], who
// owns the database and its public schema; appURL connects as [App], who
// can connect and nothing more until granted.
func NewDB(t testing.TB, opts ...Option) (ownerURL, appURL string) {
	t.Helper()
	c, err := get(opts)
	if errors.Is(err, ErrNoPostgres) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v; CI=true, so this fails instead of skipping: install them (apt-get install postgresql)", err)
		}
		t.Skipf("%v; to run this test install them: apt-get install postgresql", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("vellum_test_%d", c.n.Add(1))
	ctx := context.Background()
	if err := c.Exec(ctx, `CREATE DATABASE `+name+` OWNER `+Owner); err != nil {
		t.Fatalf("creating database: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Exec(context.Background(), `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil {
			t.Logf("dropping database %s: %v", name, err)
		}
	})
	return c.URL(Owner, name), c.URL(App, name)
}

// Start initialises and starts a cluster in a new temporary directory.
func Start(durable bool) (*Cluster, error) {
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "vellum-pg-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, done: make(chan struct{})}
	cred, err := serverUser(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.Dir = dir
	initdb.Env = serverEnv()
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	log, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	defer log.Close()
	args := []string{"-D", data,
		"-c", "listen_addresses=", // the socket only: nothing else on the machine can reach it
		"-c", "unix_socket_directories=" + dir,
		"-c", "unix_socket_permissions=0700",
		"-c", "port=5432", // names the socket file; no TCP port is opened
		"-c", "max_connections=200",
		"-c", "shared_buffers=32MB",
		"-c", "log_min_messages=warning",
	}
	if !durable {
		// The tests crash vellum's side, never the database server, so the
		// server's own crash safety is not under test: skip its fsyncs.
		args = append(args, "-c", "fsync=off", "-c", "full_page_writes=off")
	}
	c.cmd = exec.Command(filepath.Join(bin, "postgres"), args...)
	c.cmd.Dir = dir
	c.cmd.Env = serverEnv()
	c.cmd.Stdout, c.cmd.Stderr = log, log
	// If the test binary dies without stopping it, the server gets SIGQUIT
	// (immediate shutdown) instead of living on.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("starting postgres: %w", err)
	}
	go func() { c.cmd.Wait(); close(c.done) }()
	if err := c.waitReady(60 * time.Second); err != nil {
		c.Stop()
		return nil, err
	}
	ctx := context.Background()
	for _, q := range []string{
		`CREATE ROLE ` + Owner + ` LOGIN`,
		`CREATE ROLE ` + App + ` LOGIN`,
	} {
		if err := c.Exec(ctx, q); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

func (c *Cluster) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, c.URL("postgres", "postgres"))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-c.done:
			return fmt.Errorf("postgres exited while starting:\n%s", c.logTail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres not ready after %v: %v\n%s", timeout, err, c.logTail())
		}
	}
}

func (c *Cluster) logTail() string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "server.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// URL is a connection URL for role to database db over the socket.
func (c *Cluster) URL(role, db string) string {
	q := url.Values{"host": {c.dir}, "port": {"5432"}, "sslmode": {"disable"}}
	return (&url.URL{Scheme: "postgres", User: url.User(role), Path: "/" + db, RawQuery: q.Encode()}).String()
}

// Exec runs one statement as the superuser in the postgres database.
func (c *Cluster) Exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, c.URL("postgres", "postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

// Stop shuts the server down (fast shutdown, then immediate) and removes
// its directory.
func (c *Cluster) Stop() {
	if c.cmd != nil && c.cmd.Process != nil {
		c.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			c.cmd.Process.Signal(syscall.SIGQUIT)
			select {
			case <-c.done:
			case <-time.After(5 * time.Second):
				c.cmd.Process.Kill()
				<-c.done
			}
		}
	}
	os.RemoveAll(c.dir)
}

// serverUser returns the credentials to run initdb and postgres with: nil
// (this process's) unless it runs as root, in which case the postgres user
// (who then gets dir).
func serverUser(dir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, and PostgreSQL refuses to: need a postgres user to run it as (the postgresql package creates one): %w", err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("postgres user: uid %q gid %q", u.Uid, u.Gid)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// serverEnv is this process's environment without libpq's PG* variables,
// which could point initdb or the server elsewhere.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}

// BinEnv names an environment variable that, when set, is the only
// directory searched for initdb and postgres.
const BinEnv = "VELLUM_PG_BIN"

// findBin finds the directory holding initdb and postgres: $VELLUM_PG_BIN
// if set, else Debian's /usr/lib/postgresql/<version>/bin (the newest),
// then pg_config --bindir, then PATH.
func findBin() (string, error) {
	ok := func(dir string) bool {
		for _, b := range []string{"initdb", "postgres"} {
			if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.IsDir() {
				return false
			}
		}
		return true
	}
	if d := os.Getenv(BinEnv); d != "" {
		if ok(d) {
			return d, nil
		}
		return "", fmt.Errorf("%w in %s=%s", ErrNoPostgres, BinEnv, d)
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if ok(d) {
			return d, nil
		}
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if d := strings.TrimSpace(string(out)); ok(d) {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if p, err := filepath.EvalSymlinks(p); err == nil && ok(filepath.Dir(p)) {
			return filepath.Dir(p), nil
		}
	}
	return "", fmt.Errorf("%w (looked in /usr/lib/postgresql/*/bin, pg_config --bindir and PATH)", ErrNoPostgres)
}

func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}
