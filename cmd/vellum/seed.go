package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/client"
)

var seedActions = []string{
	"user.create", "user.delete", "user.update", "user.login", "user.logout", "user.password.reset", "user.mfa.enable", "user.mfa.disable",
	"role.grant", "role.revoke", "role.create", "role.delete", "group.add", "group.remove",
	"config.update", "config.read", "secret.read", "secret.rotate", "secret.create",
	"key.use", "token.issue", "token.revoke", "session.start", "session.end",
	"invoice.create", "invoice.pay", "invoice.refund", "payment.fail", "plan.change",
	"repo.push", "repo.clone", "deploy.start", "deploy.finish", "deploy.rollback",
	"db.export", "db.query", "file.download", "file.upload", "file.delete", "policy.change",
}

var seedWords = strings.Fields("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu ticket change request approved denied emergency maintenance nightly migration incident review quarterly compliance")

// seedEvent makes a realistic audit event: a few thousand users and
// services, dozens of actions, metadata of varied size.
func seedEvent(r *rand.Rand, i int64, now time.Time) json.RawMessage {
	user := fmt.Sprintf("user-%04d", r.IntN(3000))
	svc := fmt.Sprintf("svc-%02d", r.IntN(40))
	action := seedActions[r.IntN(len(seedActions))]
	outcome := "success"
	if r.IntN(10) == 0 {
		outcome = "failure"
	}
	md := map[string]any{"request_id": fmt.Sprintf("req-%d-%d", i, r.IntN(1e6)), "region": []string{"eu-west-1", "us-east-1", "ap-south-1"}[r.IntN(3)]}
	words := r.IntN(60)
	var sb strings.Builder
	for w := 0; w < words; w++ {
		if w > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(seedWords[r.IntN(len(seedWords))])
	}
	if words > 0 {
		md["note"] = sb.String()
	}
	if r.IntN(4) == 0 {
		md["changes"] = map[string]any{"field": "plan", "from": "basic", "to": "pro", "seats": r.IntN(500)}
	}
	ev := api.Event{
		Time:    now.Add(-time.Duration(r.IntN(30*24*3600)) * time.Second).UTC().Format(time.RFC3339),
		Action:  action,
		Actor:   api.Actor{ID: user, Type: "user", IP: fmt.Sprintf("10.%d.%d.%d", r.IntN(256), r.IntN(256), r.IntN(256))},
		Targets: []api.Target{{ID: fmt.Sprintf("%d", r.IntN(100000)), Type: []string{"user", "role", "repo", "invoice", "secret"}[r.IntN(5)]}},
		Outcome: outcome,
		Source:  svc,
	}
	ev.Metadata, _ = json.Marshal(md)
	b, _ := json.Marshal(ev)
	return b
}

func (m *Main) seed(ctx context.Context, args []string) error {
	fs := m.newFlagSet("bench seed", "bench seed --log NAME --count N [--batch 1000] [--producers 4]")
	cf := m.clientFlagsOn(fs)
	logName := fs.String("log", "seed", "log to fill (created if missing)")
	count := fs.Int64("count", 100000, "events to write")
	batch := fs.Int("batch", 1000, "events per request")
	producers := fs.Int("producers", 4, "concurrent producers")
	seedVal := fs.Uint64("seed", 1, "random seed (same seed, same events)")
	if err := parseFlags(fs, args); err != nil {
		return helpOK(err)
	}
	if *count < 1 || *batch < 1 || *batch > api.MaxBatch || *producers < 1 || *producers > 256 {
		return usageError("--count ≥ 1, --batch 1 to 1000, --producers 1 to 256", "bad flags")
	}
	c, err := m.newClient(cf)
	if err != nil {
		return err
	}
	if _, err := c.CreateLog(ctx, *logName); err != nil {
		var ae *client.Error
		if !errors.As(err, &ae) || ae.Status != 409 {
			return err
		}
	}
	var next, done, rawBytes atomic.Int64
	start := time.Now()
	bar := m.newProgress("seeding")
	var wg sync.WaitGroup
	errc := make(chan error, *producers)
	for p := range *producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(*seedVal, uint64(p)))
			for {
				first := next.Add(int64(*batch)) - int64(*batch)
				if first >= *count || ctx.Err() != nil {
					return
				}
				n := min(int64(*batch), *count-first)
				evs := make([]json.RawMessage, n)
				for i := range evs {
					evs[i] = seedEvent(r, first+int64(i), start)
					rawBytes.Add(int64(len(evs[i])))
				}
				if _, err := c.Append(ctx, *logName, evs...); err != nil {
					errc <- err
					return
				}
				bar.update(*logName)(done.Add(n), *count)
			}
		}()
	}
	wg.Wait()
	bar.done()
	close(errc)
	if err := <-errc; err != nil {
		return err
	}
	el := time.Since(start)
	fmt.Fprintf(m.Stdout, "seeded %d events (%d bytes of raw event JSON, before ids) into %s in %s (%.0f events/s, client signing included)\n", done.Load(), rawBytes.Load(), *logName, el.Round(time.Millisecond), float64(done.Load())/el.Seconds())
	return nil
}
