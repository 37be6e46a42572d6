package events_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/events/natstest"
	"github.com/campaign-orchestrator/orchestrator/streams"
)

// defaultLockTTL is CONTRACT section 8's LOCK_TTL default: a command's ack
// wait must outlast it.
const defaultLockTTL = 30 * time.Second

// TestSpecFilesRoundTrip decodes each file strictly into the jetstream type,
// encodes it again and checks that every field of the file survives with
// the same JSON value (enums and nanosecond durations included).
func TestSpecFilesRoundTrip(t *testing.T) {
	names, err := fs.Glob(streams.FS, "*.json")
	if err != nil || len(names) != 4 {
		t.Fatalf("streams.FS holds %v (%v), want 4 files", names, err)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			data, err := fs.ReadFile(streams.FS, name)
			if err != nil {
				t.Fatal(err)
			}
			var cfg any = &jetstream.StreamConfig{}
			if strings.HasSuffix(name, events.ConsumerFileSuffix) {
				cfg = &jetstream.ConsumerConfig{}
			}
			dec := json.NewDecoder(bytes.NewReader(data))
			dec.DisallowUnknownFields()
			if err := dec.Decode(cfg); err != nil {
				t.Fatalf("strict decode: %v", err)
			}
			out, err := json.Marshal(cfg)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			var file, enc map[string]any
			_ = json.Unmarshal(data, &file)
			_ = json.Unmarshal(out, &enc)
			for k, want := range file {
				got, ok := enc[k]
				// omitempty drops zero values (e.g. num_replicas 0 on the consumer is kept, max_age 0 is kept).
				if !ok && !reflect.ValueOf(want).IsZero() {
					t.Errorf("%s: field %s lost in the round trip", name, k)
					continue
				}
				if ok && !reflect.DeepEqual(got, want) {
					t.Errorf("%s: field %s = %v after the round trip, file has %v", name, k, got, want)
				}
			}
			again := reflect.New(reflect.TypeOf(cfg).Elem()).Interface()
			if err := json.Unmarshal(out, again); err != nil || !reflect.DeepEqual(again, cfg) {
				t.Errorf("second decode differs: %v\n%+v\n%+v", err, again, cfg)
			}
		})
	}
}

func TestLoadSpecs(t *testing.T) {
	specs, err := events.LoadSpecs(streams.FS)
	if err != nil {
		t.Fatalf("LoadSpecs: %v", err)
	}
	byName := map[string]jetstream.StreamConfig{}
	for _, s := range specs.Streams {
		byName[s.Name] = s
		if !s.AllowDirect || s.Storage != jetstream.FileStorage || s.Replicas != 1 || s.Discard != jetstream.DiscardOld {
			t.Errorf("%s: allow_direct %v storage %v replicas %d discard %v", s.Name, s.AllowDirect, s.Storage, s.Replicas, s.Discard)
		}
		if s.Duplicates != 2*time.Minute {
			t.Errorf("%s: duplicate_window %s, want 2m", s.Name, s.Duplicates)
		}
	}
	const days30 = 30 * 24 * time.Hour
	for _, tt := range []struct {
		name      string
		subject   string
		retention jetstream.RetentionPolicy
		maxAge    time.Duration
	}{
		{events.StreamCommands, "campaign.cmd.>", jetstream.WorkQueuePolicy, 0},
		{events.StreamEvents, "campaign.evt.>", jetstream.LimitsPolicy, days30},
		{events.StreamDLQ, "campaign.dlq.>", jetstream.LimitsPolicy, days30},
	} {
		s, ok := byName[tt.name]
		if !ok {
			t.Errorf("no stream %s", tt.name)
			continue
		}
		if !reflect.DeepEqual(s.Subjects, []string{tt.subject}) || s.Retention != tt.retention || s.MaxAge != tt.maxAge {
			t.Errorf("%s: subjects %v retention %v max_age %s", tt.name, s.Subjects, s.Retention, s.MaxAge)
		}
	}
	c := specs.Consumer
	wantBackoff := []time.Duration{45 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute, 5 * time.Minute}
	if c.Durable != events.ConsumerName || c.AckPolicy != jetstream.AckExplicitPolicy || c.DeliverPolicy != jetstream.DeliverAllPolicy ||
		c.MaxDeliver != 8 || c.AckWait != 45*time.Second || !reflect.DeepEqual(c.BackOff, wantBackoff) ||
		c.MaxAckPending != 20000 || c.MaxWaiting != 512 || c.ReplayPolicy != jetstream.ReplayInstantPolicy {
		t.Errorf("consumer = %+v", c)
	}
	if c.BackOff[0] != c.AckWait || c.AckWait <= defaultLockTTL {
		t.Errorf("ack wait %s / first back-off %s must be equal and above LOCK_TTL %s", c.AckWait, c.BackOff[0], defaultLockTTL)
	}
	if len(c.BackOff) >= c.MaxDeliver {
		t.Errorf("back-off has %d values, max_deliver %d", len(c.BackOff), c.MaxDeliver)
	}
}

func TestLoadSpecsErrors(t *testing.T) {
	good := map[string]string{}
	for _, n := range []string{"CAMPAIGN_COMMANDS.json", "CAMPAIGN_EVENTS.json", "CAMPAIGN_DLQ.json", "orchestrator.consumer.json"} {
		b, err := fs.ReadFile(streams.FS, n)
		if err != nil {
			t.Fatal(err)
		}
		good[n] = string(b)
	}
	with := func(edit func(m map[string]string)) fstest.MapFS {
		m := map[string]string{}
		for k, v := range good {
			m[k] = v
		}
		edit(m)
		fsys := fstest.MapFS{}
		for k, v := range m {
			fsys[k] = &fstest.MapFile{Data: []byte(v)}
		}
		return fsys
	}
	tests := []struct {
		name, want string
		fsys       fstest.MapFS
	}{
		{"unknown stream field", `unknown field "max_agee"`, with(func(m map[string]string) {
			m["CAMPAIGN_DLQ.json"] = strings.Replace(m["CAMPAIGN_DLQ.json"], `"max_age"`, `"max_agee"`, 1)
		})},
		{"unknown consumer field", `unknown field "ack_wiat"`, with(func(m map[string]string) {
			m["orchestrator.consumer.json"] = strings.Replace(m["orchestrator.consumer.json"], `"ack_wait"`, `"ack_wiat"`, 1)
		})},
		{"bad enum", "CAMPAIGN_EVENTS.json", with(func(m map[string]string) {
			m["CAMPAIGN_EVENTS.json"] = strings.Replace(m["CAMPAIGN_EVENTS.json"], `"limits"`, `"Limits"`, 1)
		})},
		{"duration as text", "orchestrator.consumer.json", with(func(m map[string]string) {
			m["orchestrator.consumer.json"] = strings.Replace(m["orchestrator.consumer.json"], `45000000000,`, `"45s",`, 1)
		})},
		{"missing stream", "no CAMPAIGN_DLQ.json", with(func(m map[string]string) { delete(m, "CAMPAIGN_DLQ.json") })},
		{"missing consumer", "want 1", with(func(m map[string]string) { delete(m, "orchestrator.consumer.json") })},
		{"wrong durable", `durable_name "other"`, with(func(m map[string]string) {
			m["orchestrator.consumer.json"] = strings.Replace(m["orchestrator.consumer.json"], `"orchestrator"`, `"other"`, 1)
		})},
		{"name mismatch", `name "CAMPAIGN_DLQ", want "DLQ2"`, with(func(m map[string]string) { m["DLQ2.json"] = m["CAMPAIGN_DLQ.json"] })},
		{"trailing data", "trailing data", with(func(m map[string]string) { m["CAMPAIGN_DLQ.json"] += "{}" })},
	}
	for _, tt := range tests {
		_, err := events.LoadSpecs(tt.fsys)
		if !errors.Is(err, events.ErrBadSpec) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want ErrBadSpec mentioning %q", tt.name, err, tt.want)
		}
	}
}

func TestApply(t *testing.T) {
	srv := natstest.Start(t)
	_, js := natstest.Connect(t, srv)
	ctx := testCtx(t)
	specs, err := events.LoadSpecs(streams.FS)
	if err != nil {
		t.Fatalf("LoadSpecs: %v", err)
	}

	check := func(step string, wantCmdDup time.Duration) {
		t.Helper()
		for _, want := range specs.Streams {
			info, err := mustStream(t, js, want.Name).Info(ctx)
			if err != nil {
				t.Fatalf("%s: info %s: %v", step, want.Name, err)
			}
			got := info.Config
			wantDup := want.Duplicates
			if want.Name == events.StreamCommands {
				wantDup = wantCmdDup
			}
			if !reflect.DeepEqual(got.Subjects, want.Subjects) || got.Retention != want.Retention || got.Storage != want.Storage ||
				got.MaxAge != want.MaxAge || got.Duplicates != wantDup || got.AllowDirect != want.AllowDirect ||
				got.Replicas != want.Replicas || got.Discard != want.Discard || got.MaxMsgSize != want.MaxMsgSize ||
				got.MaxMsgs != want.MaxMsgs || got.MaxBytes != want.MaxBytes || got.MaxConsumers != want.MaxConsumers {
				t.Errorf("%s: live %s config = %+v, want %+v with duplicate window %s", step, want.Name, got, want, wantDup)
			}
		}
		cons, err := js.Consumer(ctx, events.StreamCommands, events.ConsumerName)
		if err != nil {
			t.Fatalf("%s: consumer: %v", step, err)
		}
		got, want := cons.CachedInfo().Config, specs.Consumer
		if got.Durable != want.Durable || got.AckPolicy != want.AckPolicy || got.DeliverPolicy != want.DeliverPolicy ||
			got.AckWait != want.AckWait || got.MaxDeliver != want.MaxDeliver || !reflect.DeepEqual(got.BackOff, want.BackOff) ||
			got.MaxAckPending != want.MaxAckPending || got.MaxWaiting != want.MaxWaiting || got.ReplayPolicy != want.ReplayPolicy {
			t.Errorf("%s: live consumer config = %+v, want %+v", step, got, want)
		}
	}

	if err := specs.Apply(ctx, js, events.Overrides{}); err != nil {
		t.Fatalf("first Apply: %v", err)
	}
	check("create", 2*time.Minute)
	if err := specs.Apply(ctx, js, events.Overrides{}); err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	check("idempotent update", 2*time.Minute)
	if err := specs.Apply(ctx, js, events.Overrides{DuplicateWindow: time.Second, Replicas: 1}); err != nil {
		t.Fatalf("Apply with overrides: %v", err)
	}
	check("overrides", time.Second)
	if err := specs.Apply(ctx, js, events.Overrides{}); err != nil {
		t.Fatalf("Apply back to the files: %v", err)
	}
	check("files again", 2*time.Minute)

	if err := specs.Apply(ctx, js, events.Overrides{DuplicateWindow: -time.Second}); !errors.Is(err, events.ErrBadSpec) {
		t.Errorf("negative override: err = %v, want ErrBadSpec", err)
	}
	// An impossible change is reported with the stream's name.
	bad := specs
	bad.Streams = append([]jetstream.StreamConfig(nil), specs.Streams...)
	for i := range bad.Streams {
		if bad.Streams[i].Name == events.StreamEvents {
			bad.Streams[i].Storage = jetstream.MemoryStorage
		}
	}
	if err := bad.Apply(ctx, js, events.Overrides{}); err == nil || !strings.Contains(err.Error(), events.StreamEvents) {
		t.Errorf("storage change: err = %v, want an error naming %s", err, events.StreamEvents)
	}
}
