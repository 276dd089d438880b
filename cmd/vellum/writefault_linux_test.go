package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/client"
)

// writeFault is a storage failure a test injects into a running server
// process and then heals.
type writeFault struct {
	name   string
	inject func(t *testing.T, srv *child)
	heal   func(t *testing.T)
	// immediate: the first append after inject must be refused (else
	// the test appends until storage refuses).
	immediate bool
	// message: what the refusal must say besides that storage refused a
	// write.
	message string
}

// checkWriteFault runs the server (SQLite in dataDir), appends, injects
// f, and checks what issue 6 asks of a storage write failure: appends get
// 503 with Retry-After and a message saying nothing was recorded, nothing
// of a refused batch is stored, reads keep working, and once f is healed
// appends succeed again without a restart, with every acknowledged entry
// stored byte for byte in a log that verifies in full.
func checkWriteFault(t *testing.T, dataDir string, f writeFault) {
	ctx := context.Background()
	srv := startChild(t, "serve", "--data", dataDir, "--listen", "127.0.0.1:0", "--name", "test.example/fault", "--log-level", "error", "--audit-rate", "0")
	tokB, err := os.ReadFile(filepath.Join(dataDir, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	vkeyB, _ := os.ReadFile(filepath.Join(dataDir, "server.vkey"))
	c, err := client.New(srv.url(), strings.TrimSpace(string(tokB)), client.WithRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateLog(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	batch := func(k int) []json.RawMessage {
		evs := make([]json.RawMessage, 100)
		for j := range evs {
			evs[j] = json.RawMessage(fmt.Sprintf(`{"action":"disk.fault","actor":{"id":"p"},"metadata":{"b":"k%d","j":%d,"pad":%q}}`, k, j, strings.Repeat("x", 200)))
		}
		return evs
	}
	var acked []api.Receipt
	k := 0
	for ; k < 5; k++ {
		rs, err := c.Append(ctx, "app", batch(k)...)
		if err != nil {
			t.Fatalf("batch %d before the fault: %v", k, err)
		}
		acked = append(acked, rs...)
	}

	f.inject(t, srv)
	var refusal *client.Error
	for tries := 0; refusal == nil; tries++ {
		if tries == 5000 || (f.immediate && tries == 1) {
			t.Fatalf("%s: %d batches were accepted after the fault was injected", f.name, tries)
		}
		rs, err := c.Append(ctx, "app", batch(k)...)
		k++
		if err != nil {
			if !errors.As(err, &refusal) {
				t.Fatalf("%s: batch %d: %v\n%s", f.name, k, err, srv.logs.String())
			}
			break
		}
		acked = append(acked, rs...)
	}
	t.Logf("%s: refused after %d acknowledged events: %d %s (Retry-After %v)", f.name, len(acked), refusal.Status, refusal.Message, refusal.RetryAfter)
	if refusal.Status != http.StatusServiceUnavailable || refusal.Code != api.CodeUnavailable ||
		!strings.Contains(refusal.Message, f.message) || !strings.Contains(refusal.Message, "refused a write") {
		t.Errorf("%s: %d %s %q, want 503 unavailable saying storage refused a write and %q", f.name, refusal.Status, refusal.Code, refusal.Message, f.message)
	}
	if refusal.RetryAfter <= 0 {
		t.Errorf("%s: no Retry-After", f.name)
	}
	for _, line := range strings.Split(srv.logs.String(), "\n") {
		if strings.Contains(line, "commit failed") {
			t.Logf("%s: server log: %s", f.name, line) // the storage error as SQLite reported it
			break
		}
	}
	// Reads keep working, and the refused batch is not there.
	if _, err := c.Checkpoint(ctx, "app"); err != nil {
		t.Fatalf("%s: reading the checkpoint: %v", f.name, err)
	}
	if _, err := c.Entries(ctx, "app", 0, 10); err != nil {
		t.Fatalf("%s: reading entries: %v", f.name, err)
	}
	if l, err := c.Log(ctx, "app"); err != nil || l.Size != int64(len(acked)) {
		t.Fatalf("%s: log size %d (%v) after the refusal, want the %d acknowledged", f.name, l.Size, err, len(acked))
	}

	// Healed: appends succeed again, without a restart.
	f.heal(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		rs, err := c.Append(ctx, "app", batch(k)...)
		k++
		if err == nil {
			acked = append(acked, rs...)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still refusing 30 s after healing: %v\n%s", f.name, err, srv.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	rs, err := c.Append(ctx, "app", batch(k)...)
	if err != nil {
		t.Fatalf("%s: after recovery: %v", f.name, err)
	}
	acked = append(acked, rs...)

	v, err := client.NewVerifier(strings.TrimSpace(string(vkeyB)))
	if err != nil {
		t.Fatal(err)
	}
	reg, _, err := c.AuditSystem(ctx, v, nil)
	if err != nil {
		t.Fatalf("%s: auditing _system: %v", f.name, err)
	}
	cpb, err := c.Checkpoint(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	fc, err := v.OpenCheckpoint("app", cpb)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AuditLog(ctx, v, "app", fc, reg, nil); err != nil {
		t.Fatalf("%s: auditing the log: %v", f.name, err)
	}
	if fc.Size != int64(len(acked)) {
		t.Errorf("%s: the log has %d entries, %d were acknowledged: a refused batch was stored", f.name, fc.Size, len(acked))
	}
	lg := &crashLog{name: "app", batches: map[string]int{}}
	for start := int64(0); start < fc.Size; start += 1000 {
		es, err := c.Entries(ctx, "app", start, min(start+1000, fc.Size))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			lg.add(t, e.Data)
		}
	}
	for _, r := range acked {
		if r.Index >= fc.Size || string(lg.entries[r.Index]) != string(r.Entry) {
			t.Fatalf("%s: acknowledged entry %d is not stored as acknowledged", f.name, r.Index)
		}
	}
	for tag, n := range lg.batches {
		if n != 100 {
			t.Errorf("%s: batch %s stored %d of its 100 events", f.name, tag, n)
		}
	}
}

// failFsyncs attaches strace to the process pid (every thread, and those
// it starts) and makes every fsync and fdatasync fail with EIO: strace
// injects the error in place of the system call (the kernel call is not
// made), so SQLite sees a failing disk (SQLITE_IOERR_FSYNC). The returned
// function detaches strace (the disk heals) and returns the trace of the
// failed calls. It skips the test where strace cannot attach.
func failFsyncs(t *testing.T, pid int) (heal func() string) {
	t.Helper()
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("needs strace (fault injection into system calls)")
	}
	traceLog := filepath.Join(t.TempDir(), "strace.log")
	errs := &syncBuffer{}
	tracer := exec.Command(strace, "-f", "-p", strconv.Itoa(pid),
		"-e", "trace=fsync,fdatasync", "-e", "inject=fsync,fdatasync:error=EIO", "-o", traceLog)
	tracer.Stderr = errs
	if err := tracer.Start(); err != nil {
		t.Skipf("strace: %v", err)
	}
	done := make(chan struct{})
	go func() { tracer.Wait(); close(done) }()
	var once sync.Once
	detach := func() {
		once.Do(func() {
			tracer.Process.Signal(syscall.SIGTERM) // strace detaches and exits
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				tracer.Process.Kill()
				<-done
			}
		})
	}
	t.Cleanup(detach)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(errs.String(), "attached") {
		select {
		case <-done:
			t.Skipf("strace cannot attach here (ptrace not permitted?): %s", errs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("strace did not attach within 30 s: %s", errs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return func() string {
		detach()
		b, _ := os.ReadFile(traceLog)
		return string(b)
	}
}

// TestFsyncFailure makes every fsync and fdatasync of the running server
// fail with EIO (failFsyncs); detaching strace heals the disk.
func TestFsyncFailure(t *testing.T) {
	if os.Getenv("VELLUM_TEST_STORE") == "postgres" {
		t.Skip("the fsync that fails is the node's own (SQLite)")
	}
	var heal func() string
	checkWriteFault(t, filepath.Join(t.TempDir(), "data"), writeFault{
		name:      "fsync EIO",
		immediate: true,
		// The frames were written: a crash before the next commit may
		// replay them (TestFsyncFailureThenCrash), so the answer cannot
		// say nothing was recorded.
		message: "retry with the same event ids",
		inject: func(t *testing.T, srv *child) {
			heal = failFsyncs(t, srv.cmd.Process.Pid)
		},
		heal: func(t *testing.T) {
			if trace := heal(); !strings.Contains(trace, "EIO (Input/output error) (INJECTED)") {
				t.Errorf("strace injected no fsync failure:\n%.2000s", trace)
			}
		},
	})
}

// TestFsyncFailureThenCrash: an append refused because its fsync failed,
// then the server is killed (SIGKILL) before any later commit, and
// restarted on a healthy disk. SQLite's WAL recovery may replay the
// refused round (its frames were written) or not; either way the batch is
// stored whole or not at all, the log verifies, and the producer's retry
// with the same event ids gets one receipt per event, each event stored
// once.
func TestFsyncFailureThenCrash(t *testing.T) {
	if os.Getenv("VELLUM_TEST_STORE") == "postgres" {
		t.Skip("the fsync that fails is the node's own (SQLite)")
	}
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	srv := startChild(t, "serve", "--data", dir, "--listen", "127.0.0.1:0", "--name", "test.example/fault", "--log-level", "error", "--audit-rate", "0")
	tokB, err := os.ReadFile(filepath.Join(dir, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	vkeyB, _ := os.ReadFile(filepath.Join(dir, "server.vkey"))
	c, err := client.New(srv.url(), strings.TrimSpace(string(tokB)), client.WithRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateLog(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	first, err := c.Append(ctx, "app", json.RawMessage(`{"action":"before","actor":{"id":"p"},"id":"before"}`))
	if err != nil {
		t.Fatal(err)
	}
	evs := make([]json.RawMessage, 50)
	for j := range evs {
		evs[j] = json.RawMessage(fmt.Sprintf(`{"action":"fsync.refused","actor":{"id":"p"},"id":"refused-%d"}`, j))
	}
	// Sign once: the retry sends the very same events.
	var signed []api.SignedEvent
	for _, ev := range evs {
		se, err := c.Sign("app", ev)
		if err != nil {
			t.Fatal(err)
		}
		signed = append(signed, se)
	}
	heal := failFsyncs(t, srv.cmd.Process.Pid)
	_, err = c.AppendSigned(ctx, "app", signed)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusServiceUnavailable || !strings.Contains(ce.Message, "same event ids") {
		t.Fatalf("append with failing fsyncs: %v, want 503 asking for a retry with the same ids", err)
	}
	srv.kill() // before any later commit
	heal()
	srv.restart()
	c, err = client.New(srv.url(), strings.TrimSpace(string(tokB)), client.WithRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.Log(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	replayed := l.Size == 1+int64(len(evs))
	if l.Size != 1 && !replayed {
		t.Fatalf("after the crash the log has %d entries: the refused batch of %d is partly stored", l.Size, len(evs))
	}
	t.Logf("after the crash, the refused batch is stored: %v (log size %d)", replayed, l.Size)
	rs, err := c.AppendSigned(ctx, "app", signed)
	if err != nil {
		t.Fatalf("the producer's retry: %v", err)
	}
	for j, r := range rs {
		if r.Duplicate != replayed || r.Index != int64(1+j) {
			t.Errorf("retry of event %d: index %d duplicate %v, want index %d duplicate %v", j, r.Index, r.Duplicate, 1+j, replayed)
		}
	}
	v, err := client.NewVerifier(strings.TrimSpace(string(vkeyB)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifyReceipt(first[0], c.PublicKey()); err != nil {
		t.Fatal(err)
	}
	reg, _, err := c.AuditSystem(ctx, v, nil)
	if err != nil {
		t.Fatalf("auditing _system: %v", err)
	}
	cp, err := c.Latest(ctx, v, "app", nil)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Size != 1+int64(len(evs)) {
		t.Errorf("log size %d after the retry, want %d: every event once", cp.Size, 1+len(evs))
	}
	if err := c.AuditLog(ctx, v, "app", cp, reg, nil); err != nil {
		t.Fatalf("auditing the log: %v", err)
	}
}

// TestDiskFullTmpfs puts the data directory on a small tmpfs of its own
// (mounted for the test; needs root), fills the file system with a ballast
// file until little room is left, appends until the disk is really full
// (ENOSPC: SQLITE_FULL, for vellum.db, its WAL and index.db alike), then
// removes the ballast.
func TestDiskFullTmpfs(t *testing.T) {
	if os.Getenv("VELLUM_TEST_STORE") == "postgres" {
		t.Skip("the disk that fills is the node's own (SQLite)")
	}
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=24m,mode=0700"); err != nil {
		t.Skipf("mounting a tmpfs: %v (needs root or CAP_SYS_ADMIN)", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			t.Errorf("unmounting %s: %v", mnt, err)
		}
	}) // runs after the server is killed (cleanups run last first)
	ballast := filepath.Join(mnt, "ballast")
	checkWriteFault(t, filepath.Join(mnt, "data"), writeFault{
		name:    "tmpfs full",
		message: "nothing was recorded",
		inject: func(t *testing.T, srv *child) {
			// Leave about 1 MiB: a few batches fit, then the disk is full.
			var st syscall.Statfs_t
			if err := syscall.Statfs(mnt, &st); err != nil {
				t.Fatal(err)
			}
			free := int64(st.Bavail) * st.Bsize
			if free < 2<<20 {
				t.Fatalf("only %d bytes free on the test tmpfs before the ballast", free)
			}
			fh, err := os.Create(ballast)
			if err != nil {
				t.Fatal(err)
			}
			chunk := make([]byte, 1<<20)
			for left := free - 1<<20; left > 0; left -= int64(len(chunk)) {
				if _, err := fh.Write(chunk[:min(int64(len(chunk)), left)]); err != nil {
					t.Fatalf("writing the ballast: %v", err)
				}
			}
			fh.Close()
		},
		heal: func(t *testing.T) {
			if err := os.Remove(ballast); err != nil {
				t.Fatal(err)
			}
		},
	})
}
