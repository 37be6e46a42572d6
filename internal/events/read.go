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
// Any replica may answer (the readers of a history: the API, trace): one
// that lags may end it a little early. A rebuild reads LeaderHistory. A
// message that does not decode fails the read (ErrInvalidEvent).
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
	return history(key, func(seq uint64) (*jetstream.RawStreamMsg, error) {
		return stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
	})
}

// LeaderHistory is History answered by the stream's leader
// (STREAM.MSG.GET), never by a replica that may not have stored yet what
// the leader acknowledged: a history read short would rebuild a campaign
// that misses its last events. Its gets share the JetStream API's queue
// with every other request: only the rebuild path reads it.
func LeaderHistory(ctx context.Context, js jetstream.JetStream, tenant, campaign string) ([]CloudEvent, error) {
	key := tenant + "/" + campaign
	if !ValidToken(tenant) || !ValidToken(campaign) {
		return nil, fmt.Errorf("history of %s: bad tenant or campaign token: %w", key, ErrInvalidEvent)
	}
	filter := CampaignEvents(tenant, campaign)
	return history(key, func(seq uint64) (*jetstream.RawStreamMsg, error) {
		return leaderMsgGet(ctx, js, StreamEvents, msgGet{Seq: seq, NextFor: filter})
	})
}

// LeaderHistory is the package's LeaderHistory through p's connection.
func (p *Publisher) LeaderHistory(ctx context.Context, tenant, campaign string) ([]CloudEvent, error) {
	return LeaderHistory(ctx, p.js, tenant, campaign)
}

// history walks CAMPAIGN_EVENTS for the campaign key's events with get
// (the first of them at or after a stream sequence).
func history(key string, get func(seq uint64) (*jetstream.RawStreamMsg, error)) ([]CloudEvent, error) {
	var out []CloudEvent
	for seq := uint64(1); ; {
		raw, err := get(seq)
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

// LastEvent returns the campaign's last stored event as the stream's
// leader has it (ok=false when there is none): the check a rebuild makes
// just before it installs what it read (a holder that outlived the loss of
// the campaign's state may have published since). A message that does not
// decode fails it (ErrInvalidEvent).
func LastEvent(ctx context.Context, js jetstream.JetStream, tenant, campaign string) (ev CloudEvent, ok bool, err error) {
	key := tenant + "/" + campaign
	if !ValidToken(tenant) || !ValidToken(campaign) {
		return CloudEvent{}, false, fmt.Errorf("last event of %s: bad tenant or campaign token: %w", key, ErrInvalidEvent)
	}
	raw, err := leaderMsgGet(ctx, js, StreamEvents, msgGet{LastFor: CampaignEvents(tenant, campaign)})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return CloudEvent{}, false, nil
	}
	if err != nil {
		return CloudEvent{}, false, fmt.Errorf("last event of %s: %w", key, err)
	}
	if ev, err = ParseEvent(raw.Data); err != nil {
		return CloudEvent{}, false, fmt.Errorf("last event of %s at stream sequence %d: %w", key, raw.Sequence, err)
	}
	return ev, true, nil
}

// LastEvent is the package's LastEvent through p's connection.
func (p *Publisher) LastEvent(ctx context.Context, tenant, campaign string) (CloudEvent, bool, error) {
	return LastEvent(ctx, p.js, tenant, campaign)
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
	msg, err := leaderMsgGet(ctx, js, info.Config.Name, msgGet{Seq: from, NextFor: CampaignCommands(tenant, campaign)})
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

// msgGet is a STREAM.MSG.GET request: the first message on NextFor with
// sequence ≥ Seq, or the last message on LastFor.
type msgGet struct {
	Seq     uint64 `json:"seq,omitempty"`
	NextFor string `json:"next_by_subj,omitempty"`
	LastFor string `json:"last_by_subj,omitempty"`
}

// leaderMsgGet asks the stream's leader for the message r names (the
// JetStream API's STREAM.MSG.GET, which only the leader answers, unlike
// DIRECT.GET).
func leaderMsgGet(ctx context.Context, js jetstream.JetStream, stream string, r msgGet) (*jetstream.RawStreamMsg, error) {
	req, err := json.Marshal(r)
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
