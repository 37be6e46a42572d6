package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"github.com/campaign-orchestrator/orchestrator/internal/deadletter"
	"github.com/campaign-orchestrator/orchestrator/internal/events"
)

const (
	dlqListUsage   = "orchestrator dlq list [--json] [--nats-url URL]"
	dlqReplayUsage = "orchestrator dlq replay <seq>|--all [--purge] [--nats-url URL]"
)

// dlq runs `dlq list` and `dlq replay`.
func dlq(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "list":
			return dlqList(ctx, args[1:], getenv, stdout, stderr)
		case "replay":
			return dlqReplay(ctx, args[1:], getenv, stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "usage:\n  %s\n  %s\n", dlqListUsage, dlqReplayUsage)
	return errors.New("dlq: want `dlq list` or `dlq replay`")
}

// dlqEntryJSON is one entry of `dlq list --json`: the entry and the
// command's body (JSON when it is, else a string).
type dlqEntryJSON struct {
	deadletter.Entry
	Body any `json:"body"`
}

// dlqList prints the dead letters of CAMPAIGN_DLQ: an aligned table, or a
// JSON array with --json.
func dlqList(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs, url := opsFlags("dlq list", dlqListUsage, getenv, stderr)
	asJSON := fs.Bool("json", false, "print a JSON array (with each command's body)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageError(fs, "dlq list: unexpected %q", pos[0])
	}
	nc, js, err := connectOps(url, "orchestrator-dlq")
	if err != nil {
		return err
	}
	defer nc.Close()
	entries, err := deadletter.List(ctx, js)
	if err != nil {
		return fmt.Errorf("dlq list: %w", err)
	}
	if *asJSON {
		out := make([]dlqEntryJSON, len(entries))
		for i, e := range entries {
			out[i] = dlqEntryJSON{Entry: e, Body: string(e.Data)}
			if json.Valid(e.Data) {
				out[i].Body = json.RawMessage(e.Data)
			}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	if len(entries) == 0 {
		fmt.Fprintf(stdout, "no dead letters in %s\n", events.StreamDLQ)
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tORIGINAL SUBJECT\tCOMMAND ID\tREASON")
	for _, e := range entries {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", e.Seq, e.Time.UTC().Format("2006-01-02T15:04:05.000Z"),
			orDash(e.OriginalSubject), orDash(e.CommandID), oneLine(e.Reason))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d dead letter(s) in %s; `orchestrator dlq replay <seq>` sends one back with its command id\n", len(entries), events.StreamDLQ)
	return nil
}

// dlqReplay replays one dead letter, or all of them in stream order, and
// says what happened to each.
func dlqReplay(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs, url := opsFlags("dlq replay", dlqReplayUsage, getenv, stderr)
	all := fs.Bool("all", false, "replay every dead letter, in CAMPAIGN_DLQ order")
	purge := fs.Bool("purge", false, "delete each dead letter from CAMPAIGN_DLQ once its command is stored again")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	var seq uint64
	switch {
	case *all && len(pos) == 0:
	case !*all && len(pos) == 1:
		if seq, err = strconv.ParseUint(pos[0], 10, 64); err != nil || seq == 0 {
			return usageError(fs, "dlq replay: %q is not a CAMPAIGN_DLQ sequence", pos[0])
		}
	default:
		return usageError(fs, "dlq replay: want one <seq> or --all")
	}
	nc, js, err := connectOps(url, "orchestrator-dlq")
	if err != nil {
		return err
	}
	defer nc.Close()
	r, err := deadletter.NewReplayer(ctx, js)
	if err != nil {
		return fmt.Errorf("dlq replay: %w", err)
	}
	opt := deadletter.ReplayOptions{Purge: *purge}
	kept := func() {
		if !*purge {
			fmt.Fprintf(stdout, "dead letters are kept in %s (replaying one again applies it at most once); --purge deletes the replayed ones\n", events.StreamDLQ)
		}
	}
	if !*all {
		res, err := r.Replay(ctx, seq, opt)
		if err != nil {
			return fmt.Errorf("dlq replay: %w", err)
		}
		printReplay(stdout, res)
		kept()
		return nil
	}
	entries, err := deadletter.List(ctx, js)
	if err != nil {
		return fmt.Errorf("dlq replay: %w", err)
	}
	if len(entries) == 0 {
		fmt.Fprintf(stdout, "no dead letters in %s\n", events.StreamDLQ)
		return nil
	}
	failed := 0
	for _, e := range entries {
		res, err := r.ReplayEntry(ctx, e, opt)
		if err != nil {
			failed++
			fmt.Fprintf(stderr, "%s/%d: %v\n", events.StreamDLQ, e.Seq, err)
			continue
		}
		printReplay(stdout, res)
	}
	kept()
	if failed > 0 {
		return fmt.Errorf("dlq replay: %d of %d dead letters not replayed", failed, len(entries))
	}
	return nil
}

// printReplay says what one replay did.
func printReplay(w io.Writer, res deadletter.ReplayResult) {
	e := res.Entry
	fmt.Fprintf(w, "%s/%d: command %s replayed to %s: ", events.StreamDLQ, e.Seq, e.CommandID, e.OriginalSubject)
	switch {
	case res.Duplicate:
		fmt.Fprintf(w, "not stored: %s saw command id %s less than %s ago (its duplicate window): an earlier replay, or the original itself; replay again after the window if it did not take effect\n",
			events.StreamCommands, e.CommandID, res.DuplicateWindow)
	case res.Purged:
		fmt.Fprintf(w, "stored as %s/%d; dead letter deleted (--purge)\n", events.StreamCommands, res.StreamSeq)
	default:
		fmt.Fprintf(w, "stored as %s/%d\n", events.StreamCommands, res.StreamSeq)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
