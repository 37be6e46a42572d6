package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
)

const traceHelp = `
Prints a campaign's timeline from CAMPAIGN_EVENTS, one line per event: time,
sequence, event, step, run (of a step run more than once: a retry), duration
and error. With --follow it keeps printing new events until interrupted.`

// trace prints a campaign's timeline from CAMPAIGN_EVENTS, one aligned line
// per event; with --follow it keeps printing new events until ctx ends.
func trace(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c, conn := opsCommand("trace", "<tenant>/<campaign> [--follow] [flags]", traceHelp, getenv, stdout, stderr)
	follow := c.fs.Bool("follow", false, "after the history, keep printing new events until interrupted")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return c.usageErr("want one <tenant>/<campaign>")
	}
	tenant, campaign, ok := strings.Cut(pos[0], "/")
	if !ok || !events.ValidToken(tenant) || !events.ValidToken(campaign) {
		return c.usageErr("%q is not <tenant>/<campaign> (each %s)", pos[0], events.TokenRE)
	}
	nc, js, err := connectOps(conn, "orchestrator-trace")
	if err != nil {
		return err
	}
	defer nc.Close()

	if !*follow {
		evs, err := events.History(ctx, js, tenant, campaign)
		if err != nil {
			return fmt.Errorf("trace: %w", err)
		}
		if len(evs) == 0 {
			return fmt.Errorf("trace: no events for %s/%s in %s", tenant, campaign, events.StreamEvents)
		}
		writeTimelineHeader(stdout)
		for _, ev := range evs {
			writeTimelineLine(stdout, ev)
		}
		return nil
	}
	return followTimeline(ctx, js, tenant, campaign, stdout, stderr)
}

// followTimeline prints the campaign's events, history first, through an
// ordered consumer on its subjects, until ctx ends (then it returns nil).
func followTimeline(ctx context.Context, js jetstream.JetStream, tenant, campaign string, stdout, stderr io.Writer) error {
	cons, err := js.OrderedConsumer(ctx, events.StreamEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.CampaignEvents(tenant, campaign)},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("trace: ordered consumer on %s: %w", events.StreamEvents, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("trace: follow %s/%s: %w", tenant, campaign, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	writeTimelineHeader(stdout)
	for {
		m, err := it.Next()
		if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("trace: follow %s/%s: %w", tenant, campaign, err)
		}
		ev, err := events.ParseEvent(m.Data())
		if err != nil {
			fmt.Fprintf(stderr, "trace: skipping an unreadable event on %s: %v\n", m.Subject(), err)
			continue
		}
		writeTimelineLine(stdout, ev)
	}
}

// Timeline columns: fixed widths, so that --follow lines align with the
// history's without knowing what comes.
const timelineFormat = "%-24s  %5s  %-16s  %-12s  %3s  %9s  %s"

func writeTimelineHeader(w io.Writer) {
	fmt.Fprintln(w, strings.TrimRight(fmt.Sprintf(timelineFormat, "TIME", "SEQ", "EVENT", "STEP", "RUN", "DURATION", "ERROR"), " "))
}

// writeTimelineLine prints one event: time (UTC, ms), sequence, type without
// "campaign.", and from its data the step, the duration and the error (or a
// rejection's reason).
func writeTimelineLine(w io.Writer, ev events.CloudEvent) {
	var d struct {
		Step       string `json:"step"`
		Run        int    `json:"run"`
		DurationMS *int64 `json:"duration_ms"`
		Error      string `json:"error"`
		Command    string `json:"command"`
		Reason     string `json:"reason"`
	}
	_ = json.Unmarshal(ev.Data, &d) // data is optional; what cannot be read stays empty
	dur := ""
	if d.DurationMS != nil {
		dur = (time.Duration(*d.DurationMS) * time.Millisecond).String()
	}
	msg := d.Error
	if msg == "" && d.Reason != "" {
		msg = d.Reason
		if d.Command != "" {
			msg = d.Command + ": " + msg
		}
	}
	run := ""
	if d.Run > 0 {
		run = fmt.Sprint(d.Run)
	}
	line := fmt.Sprintf(timelineFormat, ev.Time.UTC().Format("2006-01-02T15:04:05.000Z"), fmt.Sprint(ev.Seq()),
		strings.TrimPrefix(ev.Type, "campaign."), d.Step, run, dur, oneLine(msg))
	fmt.Fprintln(w, strings.TrimRight(line, " "))
}

// oneLine keeps a free-text column on its line.
func oneLine(s string) string {
	return strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)
}
