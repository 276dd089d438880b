package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/vellum-audit/vellum/client"
)

const alertsUsage = `alerts list [--state open|acked|all] [--detector NAME] [--limit N] [--json]
       vellum alerts ack ID [--note TEXT] [--json]`

// alerts lists and acknowledges the alerts recorded in _system.
func (m *Main) alerts(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError("vellum "+alertsUsage, "alerts needs a subcommand: list or ack")
	}
	sub, rest := args[0], args[1:]
	fs := m.newFlagSet("alerts "+sub, alertsUsage)
	cf := m.clientFlagsOn(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	var state, detector, note *string
	var limit *int
	switch sub {
	case "list":
		state = fs.String("state", "open", "open (not acknowledged since it last fired), acked or all")
		detector = fs.String("detector", "", "only this detector (tamper, gap, seq_regress, silence, burst, cidr, auth_failures, replay, revoked_use, expired_use, two_networks, key_expiring, key_unused, broad_scope)")
		limit = fs.Int("limit", 100, "at most this many alerts (1-1000)")
	case "ack":
		note = fs.String("note", "", "what was done about it (recorded in _system)")
	default:
		return usageError("vellum "+alertsUsage, "unknown alerts subcommand %q", sub)
	}
	if err := parseFlags(fs, reorder(rest)); err != nil {
		return helpOK(err)
	}
	c, err := m.newClient(cf)
	if err != nil {
		return err
	}
	switch sub {
	case "list":
		if fs.NArg() != 0 {
			return usageError("vellum "+alertsUsage, "alerts list takes no arguments")
		}
		if *limit < 1 || *limit > 1000 {
			return usageError("use --limit 1 to 1000", "bad --limit %d", *limit)
		}
		l, err := c.Alerts(ctx, client.AlertFilter{State: *state, Detector: *detector, Limit: *limit})
		if err != nil {
			return err
		}
		if *asJSON {
			return m.printJSON(l)
		}
		if len(l.Alerts) == 0 {
			fmt.Fprintf(m.Stderr, "vellum: no %s alerts\n", *state)
			return nil
		}
		tw := tabwriter.NewWriter(m.Stdout, 0, 2, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSTATE\tSEVERITY\tDETECTOR\tWHERE\tSINCE\tLAST\tCOUNT\tSUMMARY")
		for _, a := range l.Alerts {
			var where []string
			if a.Log != "" {
				where = append(where, "log="+a.Log)
			}
			if a.KeyID != "" {
				where = append(where, "key="+a.KeyID)
			}
			if a.Source != "" {
				where = append(where, "source="+a.Source)
			}
			state := a.State
			if a.Revoked {
				state += ",revoked"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", a.ID, state, a.Severity, a.Detector, dash(strings.Join(where, " ")),
				dash(a.Since), dash(a.Last), a.Count, a.Summary)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if l.More {
			fmt.Fprintf(m.Stderr, "vellum: more alerts match; raise --limit\n")
		}
		return nil
	case "ack":
		if fs.NArg() != 1 {
			return usageError("vellum alerts ack ID --note \"rotated the key\"", "alerts ack needs exactly one alert id")
		}
		a, err := c.AckAlert(ctx, fs.Arg(0), *note)
		if err != nil {
			return err
		}
		if *asJSON {
			return m.printJSON(a)
		}
		fmt.Fprintf(m.Stdout, "acknowledged alert %s (%s) by %s (_system entry %d)\n", a.ID, a.Detector, a.AckedBy, a.AckEntry)
		return nil
	}
	return nil
}
