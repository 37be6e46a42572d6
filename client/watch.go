package client

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
)

// Watch yields the campaign's events in sequence order, from the event
// numbered fromSeq (0 or 1: from the first), history first and then live as
// the service stores them, until ctx ends or the loop stops. To resume after
// the last event handled, watch again from its Seq+1: nothing is lost or
// repeated. A campaign that has no event yet is waited for.
//
// It reads CAMPAIGN_EVENTS through an ordered consumer filtered on the
// campaign's subjects (campaign.evt.<tenant>.<campaign>.>), which JetStream
// recreates by itself after a disconnection. The history before fromSeq is
// read and skipped.
//
// An error ends the sequence: a bad token (*InvalidError), ctx's error when
// it ends, JetStream's, or an event that does not decode.
func (c *Client) Watch(ctx context.Context, tenant, campaign string, fromSeq uint64) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		err := c.watch(ctx, tenant, campaign, fromSeq, func(ev Event, _ uint64) bool { return yield(ev, nil) })
		if err != nil {
			yield(Event{}, err)
		}
	}
}

// watch calls f with each event from fromSeq and how many of the campaign's
// stored events follow it (0: caught up with the history), until f returns
// false (nil), ctx ends or an error.
func (c *Client) watch(ctx context.Context, tenant, campaign string, fromSeq uint64, f func(ev Event, pending uint64) bool) error {
	filter, err := CampaignEvents(tenant, campaign)
	if err != nil {
		return err
	}
	cons, err := c.js.OrderedConsumer(ctx, StreamEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("client: watch %s/%s: %w", tenant, campaign, err)
	}
	msgs, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("client: watch %s/%s: %w", tenant, campaign, err)
	}
	defer msgs.Stop()
	defer context.AfterFunc(ctx, msgs.Stop)()
	for {
		msg, err := msgs.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("client: watch %s/%s: %w", tenant, campaign, err)
		}
		ev, err := ParseEvent(msg.Data())
		if err != nil {
			return fmt.Errorf("client: watch %s/%s: %s: %w", tenant, campaign, msg.Subject(), err)
		}
		var pending uint64
		if meta, err := msg.Metadata(); err == nil {
			pending = meta.NumPending
		}
		if ev.Seq < fromSeq {
			continue
		}
		if !f(ev, pending) {
			return nil
		}
	}
}

// ErrNoState: Wait was given no state to wait for.
var ErrNoState = errors.New("client: Wait needs at least one state")

// Wait returns once the campaign is in one of states: it watches the
// campaign's events from the first and returns the event that brought it
// there, as soon as that event is the campaign's last stored one (a
// campaign that passed through a state earlier is not taken to be in it
// now). It waits for a campaign that has no event yet. Errors: as Watch's;
// ctx's when it ends first.
func (c *Client) Wait(ctx context.Context, tenant, campaign string, states ...State) (Event, error) {
	if len(states) == 0 {
		return Event{}, ErrNoState
	}
	var (
		last  Event
		have  bool
		found Event
		done  bool
	)
	err := c.watch(ctx, tenant, campaign, 0, func(ev Event, pending uint64) bool {
		if _, changes := ev.State(); changes {
			last, have = ev, true
		}
		if pending > 0 || !have {
			return true
		}
		if s, _ := last.State(); slices.Contains(states, s) {
			found, done = last, true
			return false
		}
		return true
	})
	if done {
		return found, nil
	}
	if err == nil {
		err = ctx.Err()
	}
	return Event{}, err
}
