package events

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// History returns a campaign's events from CAMPAIGN_EVENTS in stream order
// (which is sequence order), and only that campaign's: it walks the stream
// with direct gets filtered on CampaignEvents(tenant, campaign)
// (next_by_subj), one request per event, until none is left or ctx ends.
func History(ctx context.Context, js jetstream.JetStream, tenant, campaign string) ([]CloudEvent, error) {
	key := tenant + "/" + campaign
	if !ValidToken(tenant) || !ValidToken(campaign) {
		return nil, fmt.Errorf("history of %s: bad tenant or campaign token: %w", key, ErrInvalidEvent)
	}
	stream, err := js.Stream(ctx, StreamEvents)
	if err != nil {
		return nil, fmt.Errorf("history of %s: stream %s: %w", key, StreamEvents, err)
	}
	filter := CampaignEvents(tenant, campaign)
	var out []CloudEvent
	for seq := uint64(1); ; {
		raw, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("history of %s from stream sequence %d: %w", key, seq, err)
		}
		ev, err := ParseEvent(raw.Data)
		if err != nil {
			return nil, fmt.Errorf("history of %s at stream sequence %d: %w", key, raw.Sequence, err)
		}
		out = append(out, ev)
		seq = raw.Sequence + 1
	}
}

// LastEvent returns the campaign's last stored event and its stream sequence
// (ok=false when the campaign has none).
func LastEvent(ctx context.Context, js jetstream.JetStream, tenant, campaign string) (ev CloudEvent, streamSeq uint64, ok bool, err error) {
	key := tenant + "/" + campaign
	if !ValidToken(tenant) || !ValidToken(campaign) {
		return CloudEvent{}, 0, false, fmt.Errorf("last event of %s: bad tenant or campaign token: %w", key, ErrInvalidEvent)
	}
	stream, err := js.Stream(ctx, StreamEvents)
	if err != nil {
		return CloudEvent{}, 0, false, fmt.Errorf("last event of %s: stream %s: %w", key, StreamEvents, err)
	}
	raw, err := stream.GetLastMsgForSubject(ctx, CampaignEvents(tenant, campaign))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return CloudEvent{}, 0, false, nil
	}
	if err != nil {
		return CloudEvent{}, 0, false, fmt.Errorf("last event of %s: %w", key, err)
	}
	if ev, err = ParseEvent(raw.Data); err != nil {
		return CloudEvent{}, 0, false, fmt.Errorf("last event of %s at stream sequence %d: %w", key, raw.Sequence, err)
	}
	return ev, raw.Sequence, true, nil
}

// NextCommand returns the first message still in CAMPAIGN_COMMANDS for the
// campaign (subject CampaignCommands(tenant, campaign)) with stream sequence
// ≥ from (ok=false when there is none). stream must be CAMPAIGN_COMMANDS;
// from 0 is taken as 1. It reads ahead in stream order without consuming:
// acknowledged (removed) messages are not returned.
func NextCommand(ctx context.Context, stream jetstream.Stream, tenant, campaign string, from uint64) (msg *jetstream.RawStreamMsg, ok bool, err error) {
	if !ValidToken(tenant) || !ValidToken(campaign) {
		return nil, false, fmt.Errorf("next command of %s/%s: bad tenant or campaign token", tenant, campaign)
	}
	if from == 0 {
		from = 1
	}
	msg, err = stream.GetMsg(ctx, from, jetstream.WithGetMsgSubject(CampaignCommands(tenant, campaign)))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("next command of %s/%s from stream sequence %d: %w", tenant, campaign, from, err)
	}
	return msg, true, nil
}
