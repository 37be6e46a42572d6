package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
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
	return history(ctx, stream, tenant, campaign)
}

// History is the package's History through p's stream handle (no
// STREAM.INFO request).
func (p *Publisher) History(ctx context.Context, tenant, campaign string) ([]CloudEvent, error) {
	key := tenant + "/" + campaign
	if !ValidToken(tenant) || !ValidToken(campaign) {
		return nil, fmt.Errorf("history of %s: bad tenant or campaign token: %w", key, ErrInvalidEvent)
	}
	stream, err := p.streamHandle(ctx)
	if err != nil {
		return nil, fmt.Errorf("history of %s: stream %s: %w", key, StreamEvents, err)
	}
	return history(ctx, stream, tenant, campaign)
}

// history walks stream (CAMPAIGN_EVENTS) for the campaign's events.
func history(ctx context.Context, stream jetstream.Stream, tenant, campaign string) ([]CloudEvent, error) {
	key := tenant + "/" + campaign
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
	return nextResult(msg, err, tenant, campaign, from)
}

// NextCommandLinearizable is NextCommand for a read that must see every
// message the stream acknowledged before it: on a replicated stream it asks
// the stream's leader (STREAM.MSG.GET), because a direct get (allow_direct)
// may be answered by a follower that has not stored yet what the leader
// acknowledged. On a stream of one replica it is NextCommand's direct get.
// The worker's read-ahead needs it: a pause it missed would wait behind the
// campaign's next step (CONTRACT section 5).
func NextCommandLinearizable(ctx context.Context, js jetstream.JetStream, stream jetstream.Stream, tenant, campaign string, from uint64) (*jetstream.RawStreamMsg, bool, error) {
	info := stream.CachedInfo()
	if info == nil || info.Config.Replicas <= 1 {
		return NextCommand(ctx, stream, tenant, campaign, from)
	}
	if !ValidToken(tenant) || !ValidToken(campaign) {
		return nil, false, fmt.Errorf("next command of %s/%s: bad tenant or campaign token", tenant, campaign)
	}
	if from == 0 {
		from = 1
	}
	msg, err := leaderMsgGet(ctx, js, info.Config.Name, from, CampaignCommands(tenant, campaign))
	return nextResult(msg, err, tenant, campaign, from)
}

func nextResult(msg *jetstream.RawStreamMsg, err error, tenant, campaign string, from uint64) (*jetstream.RawStreamMsg, bool, error) {
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("next command of %s/%s from stream sequence %d: %w", tenant, campaign, from, err)
	}
	return msg, true, nil
}

// leaderMsgGet asks the stream's leader for the first message on subject
// with sequence ≥ seq (the JetStream API's STREAM.MSG.GET, which only the
// leader answers, unlike DIRECT.GET).
func leaderMsgGet(ctx context.Context, js jetstream.JetStream, stream string, seq uint64, subject string) (*jetstream.RawStreamMsg, error) {
	req, err := json.Marshal(struct {
		Seq     uint64 `json:"seq"`
		NextFor string `json:"next_by_subj"`
	}{seq, subject})
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		// As the jetstream package does: a request whose responder died
		// (a leader killed) is never answered.
		timeout := js.Options().DefaultTimeout
		if timeout <= 0 {
			timeout = 5 * time.Second // the jetstream package's default
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	reply, err := js.Conn().RequestWithContext(ctx, apiPrefix(js)+"STREAM.MSG.GET."+stream, req)
	if err != nil {
		return nil, err
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error,omitempty"`
		Message *struct {
			Subject  string    `json:"subject"`
			Sequence uint64    `json:"seq"`
			Header   []byte    `json:"hdrs,omitempty"`
			Data     []byte    `json:"data,omitempty"`
			Time     time.Time `json:"time"`
		} `json:"message,omitempty"`
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return nil, fmt.Errorf("STREAM.MSG.GET %s: %w", stream, err)
	}
	if resp.Error != nil {
		if resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound {
			return nil, jetstream.ErrMsgNotFound
		}
		return nil, resp.Error
	}
	if resp.Message == nil {
		return nil, fmt.Errorf("STREAM.MSG.GET %s: %w", stream, jetstream.ErrInvalidJetStreamResponse)
	}
	m := resp.Message
	var hdr nats.Header
	if len(m.Header) > 0 {
		if hdr, err = nats.DecodeHeadersMsg(m.Header); err != nil {
			return nil, fmt.Errorf("STREAM.MSG.GET %s: headers: %w", stream, err)
		}
	}
	return &jetstream.RawStreamMsg{Subject: m.Subject, Sequence: m.Sequence, Header: hdr, Data: m.Data, Time: m.Time}, nil
}

// apiPrefix is the JetStream API prefix js sends its requests under.
func apiPrefix(js jetstream.JetStream) string {
	o := js.Options()
	switch {
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "."
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	}
	return jetstream.DefaultAPIPrefix
}
