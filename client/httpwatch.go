package client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// maxEventLine bounds one line of the event stream: an event is at most
// 1 MiB (CAMPAIGN_EVENTS' message size).
const maxEventLine = 2 << 20

// Watch yields the campaign's events over the ingress's event stream (GET
// /api/v1/campaigns/{id}/events with Accept: text/event-stream), from the
// event numbered fromSeq (0 or 1: from the first), history first and then
// live, as Client.Watch does over NATS, until ctx ends or the loop stops.
// To resume after the last event handled, watch again from its Seq+1.
//
// The ingress ends a stream now and then (it drops a client that falls
// behind, and closes every stream when it shuts down): Watch then connects
// again with Last-Event-ID, the sequence of the last event yielded, so that
// nothing is lost or repeated; it waits up to 2 s between attempts that
// yield nothing, and keeps trying through transport errors and 429/503
// answers until ctx ends. The stream is bounded by ctx, not by the
// *http.Client's Timeout.
//
// An error ends the sequence: *InvalidError for a bad token, *APIError
// (CodeNotFound for a campaign the tenant does not have, whose create was
// not accepted either), a transport error on the first request, an event
// that does not decode, or ctx's error when it ends.
func (c *HTTPClient) Watch(ctx context.Context, tenant, campaign string, fromSeq uint64) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		if err := c.watch(ctx, tenant, campaign, fromSeq, func(ev Event) bool { return yield(ev, nil) }); err != nil {
			yield(Event{}, err)
		}
	}
}

// watch calls f with each event from fromSeq until f returns false (nil),
// ctx ends or an error that does not pass.
func (c *HTTPClient) watch(ctx context.Context, tenant, campaign string, fromSeq uint64, f func(Event) bool) error {
	if tenant != "" && !ValidToken(tenant) {
		return invalidf("tenant %q must match %s", tenant, TokenPattern)
	}
	if !ValidToken(campaign) {
		return invalidf("campaign %q must match %s", campaign, TokenPattern)
	}
	// The stream lasts as long as ctx: not bounded by the client's Timeout.
	hc := *c.hc
	hc.Timeout = 0
	var last uint64 // the sequence of the last event handed to f
	if fromSeq > 1 {
		last = fromSeq - 1
	}
	const minPause, maxPause = 100 * time.Millisecond, 2 * time.Second
	pause := minPause
	connected := false // a stream was opened once
	for {
		opened, got, stop, err := c.stream(ctx, &hc, tenant, campaign, &last, f)
		connected = connected || opened
		if stop {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var apiErr *APIError
		var inv *InvalidError
		switch {
		case err == nil: // the ingress ended the stream
		case errors.As(err, &inv):
			return err
		case errors.As(err, &apiErr):
			if !apiErr.Temporary() {
				return err
			}
			pause = max(pause, apiErr.RetryAfter)
		case errors.As(err, new(*decodeError)):
			return err
		case !connected:
			return err // never connected: the caller's URL, network or ingress is wrong
		}
		if got {
			pause = minPause
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		pause = min(2*pause, maxPause)
	}
}

// decodeError is an event of the stream that does not decode: not passed
// over by reconnecting.
type decodeError struct{ err error }

func (e *decodeError) Error() string { return e.err.Error() }
func (e *decodeError) Unwrap() error { return e.err }

// stream reads one event stream, after *last, calling f with each event and
// moving *last on. It reports whether the ingress answered with a stream
// (opened), whether it yielded an event, and stop when f returned false.
func (c *HTTPClient) stream(ctx context.Context, hc *http.Client, tenant, campaign string, last *uint64, f func(Event) bool) (opened, got, stop bool, err error) {
	path := "/api/v1/campaigns/" + campaign + "/events"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base.String()+path, nil)
	if err != nil {
		return false, false, false, fmt.Errorf("client: GET %s: %w", path, err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	if *last > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(*last, 10))
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if tenant != "" {
		req.Header.Set("X-Tenant-ID", tenant)
	}
	res, err := hc.Do(req)
	if err != nil {
		return false, false, false, fmt.Errorf("client: GET %s: %w", path, err)
	}
	defer res.Body.Close()
	if res.StatusCode/100 != 2 {
		data, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
		return false, false, false, apiError(res, data)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return false, false, false, fmt.Errorf("client: GET %s: answered %q, not text/event-stream", path, ct)
	}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 0, 64<<10), maxEventLine)
	var data []byte
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case len(line) == 0: // the end of an event (or of a comment)
			if len(data) == 0 {
				continue
			}
			ev, err := ParseEvent(data)
			data = data[:0]
			if err != nil {
				return true, got, false, &decodeError{fmt.Errorf("client: GET %s: %w", path, err)}
			}
			if ev.Seq <= *last {
				continue
			}
			*last, got = ev.Seq, true
			if !f(ev) {
				return true, got, true, nil
			}
		case line[0] == ':': // a comment (heartbeat)
		case bytes.HasPrefix(line, []byte("data:")):
			v := bytes.TrimPrefix(bytes.TrimPrefix(line, []byte("data:")), []byte(" "))
			if len(data) > 0 {
				data = append(data, '\n')
			}
			data = append(data, v...)
		default: // id:, event:, retry: — the sequence is in the event
		}
	}
	// An event cut by the end of the stream is dropped: the next stream
	// sends it again (Last-Event-ID is the last whole one).
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return true, got, false, fmt.Errorf("client: GET %s: %w", path, err)
	}
	return true, got, false, nil
}

// Wait returns once the campaign is in one of states, with the event that
// brought it there: it watches the campaign's events (HTTPClient.Watch) and
// takes an event that enters one of states once GET
// /api/v1/campaigns/{id} shows the campaign in that state (a campaign that
// passed through a state earlier is not taken to be in it now). Errors: as
// Watch's and Get's; ErrNoState; ctx's when it ends first.
func (c *HTTPClient) Wait(ctx context.Context, tenant, campaign string, states ...State) (Event, error) {
	if len(states) == 0 {
		return Event{}, ErrNoState
	}
	var (
		found  Event
		done   bool
		getErr error
	)
	err := c.watch(ctx, tenant, campaign, 0, func(ev Event) bool {
		s, changes := ev.State()
		if !changes || !slices.Contains(states, s) {
			return true
		}
		now, err := c.Get(ctx, tenant, campaign)
		if err != nil {
			getErr = err
			return false
		}
		if now.State == s {
			found, done = ev, true
			return false
		}
		return true // it has moved on: its next events are on their way
	})
	switch {
	case done:
		return found, nil
	case getErr != nil:
		return Event{}, getErr
	case err == nil:
		err = ctx.Err()
	}
	return Event{}, err
}
