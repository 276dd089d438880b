package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/client"
	"github.com/vellum-audit/vellum/internal/node"
)

// filterFlags are the search filters, shared by query and tail.
type filterFlags struct {
	since, until, from, to, action, actor, target, targetType, key, outcome, source, text *string
}

func addFilterFlags(fs *flag.FlagSet) *filterFlags {
	return &filterFlags{
		since:      fs.String("since", "", "received at or after: RFC 3339 or a duration back from now (24h, 7d)"),
		until:      fs.String("until", "", "received before: RFC 3339 or a duration back from now"),
		from:       fs.String("from", "", "event time at or after (the producer's clock): RFC 3339 or a duration"),
		to:         fs.String("to", "", "event time before: RFC 3339 or a duration"),
		action:     fs.String("action", "", "action, exact (user.delete) or prefix (user.*)"),
		actor:      fs.String("actor", "", "actor id"),
		target:     fs.String("target", "", "target id"),
		targetType: fs.String("target-type", "", "target type (with --target)"),
		key:        fs.String("key", "", "id of the key that wrote the entry"),
		outcome:    fs.String("outcome", "", "success, failure or unknown"),
		source:     fs.String("source", "", "producing service or instance"),
		text:       fs.String("q", "", "words that must all appear among the metadata values"),
	}
}

func (f *filterFlags) values() url.Values {
	v := url.Values{}
	set := func(name string, p *string) {
		if *p != "" {
			v.Set(name, *p)
		}
	}
	set("since", f.since)
	set("until", f.until)
	set("event_from", f.from)
	set("event_to", f.to)
	set("action", f.action)
	set("actor", f.actor)
	set("target", f.target)
	set("target_type", f.targetType)
	set("key", f.key)
	set("outcome", f.outcome)
	set("source", f.source)
	set("q", f.text)
	return v
}

func (m *Main) query(ctx context.Context, args []string) error {
	fs := m.newFlagSet("query", "query --log NAME [filters] [--oldest] [--limit N] [--pages N] [--cursor C] [--proof] [--json]")
	cf := m.clientFlagsOn(fs)
	logName := fs.String("log", "", "log to search (required)")
	ff := addFilterFlags(fs)
	oldest := fs.Bool("oldest", false, "oldest first (default newest first)")
	limit := fs.Int("limit", 50, "entries per page, 1 to 1000")
	pages := fs.Int("pages", 1, "pages to fetch, following the cursor (0: all)")
	cursor := fs.String("cursor", "", "continue from a previous page's cursor")
	proof := fs.Bool("proof", false, "attach an inclusion proof for each result (against one checkpoint)")
	asJSON := fs.Bool("json", false, "print JSON Lines (one entry per line)")
	if err := parseFlags(fs, args); err != nil {
		return helpOK(err)
	}
	if *logName == "" {
		return usageError("vellum query --log NAME --actor alice --since 24h", "--log is required")
	}
	if *limit < 1 || *limit > 1000 {
		return usageError("use --limit 1 to 1000 and --pages to see more", "bad --limit %d", *limit)
	}
	c, err := m.newClient(cf)
	if err != nil {
		return err
	}
	q := ff.values()
	q.Set("limit", strconv.Itoa(*limit))
	if *oldest {
		q.Set("order", "oldest")
	}
	if *proof {
		q.Set("proof", "true")
	}
	if *cursor != "" {
		q.Set("cursor", *cursor)
	}
	var v *client.Verifier
	if *proof {
		if v, err = m.verifier(ctx, c, ""); err != nil {
			return err
		}
	}
	var tw *tabwriter.Writer
	if !*asJSON {
		tw = tabwriter.NewWriter(m.Stdout, 0, 2, 2, ' ', 0)
		fmt.Fprintln(tw, "INDEX\tRECEIVED\tACTION\tACTOR\tTARGETS\tOUTCOME\tKEY")
	}
	n := 0
	for page := 0; *pages == 0 || page < *pages; page++ {
		el, err := c.Search(ctx, *logName, q)
		if err != nil {
			return err
		}
		for _, e := range el.Entries {
			if v != nil {
				if _, err := v.VerifyEntry(e); err != nil {
					return err
				}
			}
			n++
			if *asJSON {
				b, err := compactJSON(e)
				if err != nil {
					return err
				}
				fmt.Fprintf(m.Stdout, "%s\n", b)
				continue
			}
			printRow(tw, e)
		}
		if el.NextCursor == "" {
			break
		}
		q.Set("cursor", el.NextCursor)
		if *pages != 0 && page+1 == *pages {
			if tw != nil {
				tw.Flush()
			}
			fmt.Fprintf(m.Stderr, "vellum: more results: --cursor %s\n", el.NextCursor)
		}
	}
	if tw != nil {
		tw.Flush()
		fmt.Fprintf(m.Stderr, "vellum: %d entries\n", n)
	}
	return nil
}

// printRow prints an entry as one table row.
func printRow(tw *tabwriter.Writer, e api.Entry) {
	var d struct {
		Received string `json:"received"`
		KeyID    string `json:"key_id"`
		Event    struct {
			Action  string `json:"action"`
			Outcome string `json:"outcome"`
			Actor   struct {
				ID string `json:"id"`
			} `json:"actor"`
			Targets []struct {
				ID   string `json:"id"`
				Type string `json:"type"`
			} `json:"targets"`
		} `json:"event"`
	}
	json.Unmarshal(e.Data, &d)
	var ts []string
	for _, t := range d.Event.Targets {
		if t.Type != "" {
			ts = append(ts, t.Type+":"+t.ID)
		} else {
			ts = append(ts, t.ID)
		}
	}
	fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Index, d.Received, d.Event.Action, d.Event.Actor.ID, dash(strings.Join(ts, ",")), dash(d.Event.Outcome), d.KeyID)
}

// index runs server-side index maintenance on a data directory.
func (m *Main) index(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "rebuild" {
		return usageError("vellum index rebuild --data DIR (with the server stopped)", "index needs the subcommand rebuild")
	}
	fs := m.newFlagSet("index rebuild", "index rebuild [--data DIR] [--postgres URL]")
	data := fs.String("data", "vellum-data", "data directory of a stopped server")
	pg := fs.String("postgres", m.Getenv("VELLUM_POSTGRES"), "PostgreSQL URL (env VELLUM_POSTGRES): rebuild that database's index; stop every node first")
	if err := parseFlags(fs, args[1:]); err != nil {
		return helpOK(err)
	}
	if _, err := os.Stat(*data); err != nil {
		return errorf("point --data at the server's data directory", "%v", err)
	}
	cfg := node.Config{Dir: *data, Logger: discardLogger()}
	if *pg != "" {
		cfg.OpenStore = m.openPostgres(*pg)
	}
	n, err := node.Open(ctx, cfg)
	if err != nil {
		return errorf("stop the server first: the index is rebuilt on the data directory directly", "opening %s: %v", *data, err)
	}
	defer n.Close()
	bar := m.newProgress("indexing")
	start := time.Now()
	err = n.RebuildIndex(ctx, func(log string, done, all int64) { bar.update(log)(done, all) })
	bar.done()
	if err != nil {
		return err
	}
	logs, _ := n.Store.Logs(ctx)
	var total int64
	for _, l := range logs {
		total += l.Size
	}
	fmt.Fprintf(m.Stdout, "rebuilt the search index of %d logs (%d entries) in %s\n", len(logs), total, time.Since(start).Round(time.Millisecond))
	return nil
}
