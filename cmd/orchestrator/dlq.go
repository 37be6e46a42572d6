package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/deadletter"
	"github.com/campaign-orchestrator/orchestrator/internal/events"
)

const dlqListHelp = `
Prints the dead letters of CAMPAIGN_DLQ: sequence, time, original subject,
command id and reason, or with --json an array with each command's body.`

const dlqReplayHelp = `
Publishes a dead letter's command (or, with --all, every one in CAMPAIGN_DLQ
order) back to its original subject, with its command id as Nats-Msg-Id, and
says what CAMPAIGN_COMMANDS did with it.

Within the duplicate window (DUPLICATE_WINDOW, 2m by default) after the id
was last stored, by the original command or an earlier replay, JetStream
drops the replay as a duplicate: nothing is stored, and the command exits 1.
Wait for the window to pass (the campaign's ledger then still applies the
command at most once), or replay it with --new-id as a new command under a
fresh id, when you mean it to be applied even if the original was.
Replayed entries stay in CAMPAIGN_DLQ unless --purge.`

// dlqEntryJSON is one entry of `dlq list --json`: the entry and the
// command's body (JSON when it is, else a string).
type dlqEntryJSON struct {
	deadletter.Entry
	Body any `json:"body"`
}

// dlqList prints the dead letters of CAMPAIGN_DLQ: an aligned table, or a
// JSON array with --json.
func dlqList(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c, conn := opsCommand("dlq list", "[--json] [flags]", dlqListHelp, getenv, stdout, stderr)
	asJSON := c.fs.Bool("json", false, "print a JSON array (with each command's body)")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return c.usageErr("unexpected %q", pos[0])
	}
	nc, js, err := connectOps(conn, "orchestrator-dlq")
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
	c, conn := opsCommand("dlq replay", "<seq>|--all [--purge] [--new-id] [flags]", dlqReplayHelp, getenv, stdout, stderr)
	all := c.fs.Bool("all", false, "replay every dead letter, in CAMPAIGN_DLQ order")
	purge := c.fs.Bool("purge", false, "delete each dead letter from CAMPAIGN_DLQ once its command is stored again")
	newID := c.fs.Bool("new-id", false, "replay under a fresh command id (dlq-replay.<seq>.<random>): a new command, applied even if the original was")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	var seq uint64
	switch {
	case *all && len(pos) == 0:
	case !*all && len(pos) == 1:
		if seq, err = strconv.ParseUint(pos[0], 10, 64); err != nil || seq == 0 {
			return c.usageErr("%q is not a CAMPAIGN_DLQ sequence", pos[0])
		}
	default:
		return c.usageErr("want one <seq> or --all")
	}
	nc, js, err := connectOps(conn, "orchestrator-dlq")
	if err != nil {
		return err
	}
	defer nc.Close()
	r, err := deadletter.NewReplayer(ctx, js)
	if err != nil {
		return fmt.Errorf("dlq replay: %w", err)
	}
	opt := func(seq uint64) deadletter.ReplayOptions {
		o := deadletter.ReplayOptions{Purge: *purge}
		if *newID {
			o.NewID = freshID(seq)
		}
		return o
	}
	kept := func() {
		if !*purge {
			fmt.Fprintf(stdout, "dead letters are kept in %s (replaying one again applies it at most once); --purge deletes the replayed ones\n", events.StreamDLQ)
		}
	}
	if !*all {
		res, err := r.Replay(ctx, seq, opt(seq))
		if err != nil {
			return fmt.Errorf("dlq replay: %w", err)
		}
		printReplay(stdout, res)
		kept()
		if res.Duplicate {
			return notStored(1, 1, res.DuplicateWindow)
		}
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
	failed, dups := 0, 0
	var window time.Duration
	for _, e := range entries {
		res, err := r.ReplayEntry(ctx, e, opt(e.Seq))
		if err != nil {
			failed++
			fmt.Fprintf(stderr, "%s/%d: %v\n", events.StreamDLQ, e.Seq, err)
			continue
		}
		printReplay(stdout, res)
		if res.Duplicate {
			dups, window = dups+1, res.DuplicateWindow
		}
	}
	kept()
	if failed > 0 {
		return fmt.Errorf("dlq replay: %d of %d dead letters not replayed", failed, len(entries))
	}
	if dups > 0 {
		return notStored(dups, len(entries), window)
	}
	return nil
}

// notStored is the error of a replay that JetStream deduplicated.
func notStored(n, of int, window time.Duration) error {
	return fmt.Errorf("dlq replay: %d of %d replayed command(s) not stored (a duplicate within the %s duplicate window): "+
		"replay again once it has passed, or with --new-id as a new command", n, of, window)
}

// freshID is the command id of a replay under a new id.
func freshID(seq uint64) string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return fmt.Sprintf("dlq-replay.%d.%s", seq, hex.EncodeToString(b[:]))
}

// printReplay says what one replay did.
func printReplay(w io.Writer, res deadletter.ReplayResult) {
	e := res.Entry
	if res.CommandID != "" && res.CommandID != e.CommandID {
		fmt.Fprintf(w, "%s/%d: command %s replayed to %s as new command %s: ", events.StreamDLQ, e.Seq, e.CommandID, e.OriginalSubject, res.CommandID)
	} else {
		fmt.Fprintf(w, "%s/%d: command %s replayed to %s: ", events.StreamDLQ, e.Seq, e.CommandID, e.OriginalSubject)
	}
	switch {
	case res.Duplicate:
		fmt.Fprintf(w, "not stored: %s saw command id %s less than %s ago (its duplicate window): an earlier replay, or the original itself\n",
			events.StreamCommands, res.CommandID, res.DuplicateWindow)
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
