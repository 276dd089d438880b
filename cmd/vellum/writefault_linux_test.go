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
		!strings.Contains(refusal.Message, "nothing was recorded") || !strings.Contains(refusal.Message, "refused a write") {
		t.Errorf("%s: %d %s %q, want 503 unavailable saying storage refused a write and nothing was recorded", f.name, refusal.Status, refusal.Code, refusal.Message)
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

// TestFsyncFailure makes every fsync and fdatasync of the running server
// fail with EIO: strace attaches to the process (every thread) and injects
// the error into those system calls (the kernel call is not made), so
// SQLite's commit sees a failing disk (SQLITE_IOERR_FSYNC). Detaching
// strace heals the disk.
func TestFsyncFailure(t *testing.T) {
	if os.Getenv("VELLUM_TEST_STORE") == "postgres" {
		t.Skip("the fsync that fails is the node's own (SQLite)")
	}
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("needs strace (fault injection into system calls)")
	}
	var tracer *exec.Cmd
	var tracerDone chan struct{}
	traceLog := filepath.Join(t.TempDir(), "strace.log")
	detach := func(t *testing.T) {
		if tracer == nil {
			return
		}
		tracer.Process.Signal(syscall.SIGTERM) // strace detaches and exits
		select {
		case <-tracerDone:
		case <-time.After(30 * time.Second):
			tracer.Process.Kill()
			<-tracerDone
		}
		tracer = nil
	}
	t.Cleanup(func() { detach(t) })
	checkWriteFault(t, filepath.Join(t.TempDir(), "data"), writeFault{
		name:      "fsync EIO",
		immediate: true,
		inject: func(t *testing.T, srv *child) {
			errs := &syncBuffer{}
			tracer = exec.Command(strace, "-f", "-p", strconv.Itoa(srv.cmd.Process.Pid),
				"-e", "trace=fsync,fdatasync", "-e", "inject=fsync,fdatasync:error=EIO", "-o", traceLog)
			tracer.Stderr = errs
			if err := tracer.Start(); err != nil {
				t.Skipf("strace: %v", err)
			}
			tracerDone = make(chan struct{})
			go func() { tracer.Wait(); close(tracerDone) }()
			deadline := time.Now().Add(30 * time.Second)
			for !strings.Contains(errs.String(), "attached") {
				select {
				case <-tracerDone:
					tracer = nil
					t.Skipf("strace cannot attach here (ptrace not permitted?): %s", errs.String())
				default:
				}
				if time.Now().After(deadline) {
					t.Fatalf("strace did not attach within 30 s: %s", errs.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
		},
		heal: func(t *testing.T) {
			detach(t)
			b, _ := os.ReadFile(traceLog)
			if !strings.Contains(string(b), "EIO (Input/output error) (INJECTED)") {
				t.Errorf("strace injected no fsync failure:\n%.2000s", b)
			}
		},
	})
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
		name: "tmpfs full",
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
