package events

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ConsumerFileSuffix ends the name of the consumer file among the spec files
// (orchestrator.consumer.json); every other *.json file is a stream, named
// after the stream (CAMPAIGN_EVENTS.json).
const ConsumerFileSuffix = ".consumer.json"

// ErrBadSpec is returned by LoadSpecs and Apply for spec files or overrides
// that cannot be used.
var ErrBadSpec = errors.New("bad stream spec")

// Overrides are the configuration settings applied on top of the spec files
// (CONTRACT section 3). Zero keeps the file's value.
type Overrides struct {
	// DuplicateWindow replaces CAMPAIGN_COMMANDS's duplicate_window
	// (DUPLICATE_WINDOW); the other streams keep theirs.
	DuplicateWindow time.Duration
	// Replicas replaces num_replicas of every stream and of the consumer
	// (STREAM_REPLICAS).
	Replicas int
}

// Specs are the stream and consumer configurations of streams/*.json.
type Specs struct {
	// Streams are the streams, in file name order.
	Streams []jetstream.StreamConfig
	// Consumer is the orchestrator consumer on CAMPAIGN_COMMANDS.
	Consumer jetstream.ConsumerConfig
}

// LoadSpecs decodes every *.json file at the top of fsys strictly (unknown
// fields are errors) into jetstream.StreamConfig, or, for the one file named
// *.consumer.json, into jetstream.ConsumerConfig. A stream file must be named
// after its stream; the streams CAMPAIGN_COMMANDS, CAMPAIGN_EVENTS and
// CAMPAIGN_DLQ must all be there, and the consumer must be the durable
// "orchestrator". Errors wrap ErrBadSpec and name the file.
func LoadSpecs(fsys fs.FS) (Specs, error) {
	names, err := fs.Glob(fsys, "*.json")
	if err != nil {
		return Specs{}, fmt.Errorf("list stream specs: %w", err)
	}
	sort.Strings(names)
	var specs Specs
	consumers := 0
	seen := map[string]bool{}
	for _, name := range names {
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			return Specs{}, fmt.Errorf("read stream spec %s: %w", name, err)
		}
		if strings.HasSuffix(name, ConsumerFileSuffix) {
			consumers++
			if err := decodeSpec(data, &specs.Consumer); err != nil {
				return Specs{}, fmt.Errorf("consumer spec %s: %w: %w", name, ErrBadSpec, err)
			}
			if specs.Consumer.Durable != ConsumerName {
				return Specs{}, fmt.Errorf("consumer spec %s: durable_name %q, want %q: %w", name, specs.Consumer.Durable, ConsumerName, ErrBadSpec)
			}
			continue
		}
		var cfg jetstream.StreamConfig
		if err := decodeSpec(data, &cfg); err != nil {
			return Specs{}, fmt.Errorf("stream spec %s: %w: %w", name, ErrBadSpec, err)
		}
		if want := strings.TrimSuffix(path.Base(name), ".json"); cfg.Name != want {
			return Specs{}, fmt.Errorf("stream spec %s: name %q, want %q: %w", name, cfg.Name, want, ErrBadSpec)
		}
		seen[cfg.Name] = true
		specs.Streams = append(specs.Streams, cfg)
	}
	for _, s := range []string{StreamCommands, StreamEvents, StreamDLQ} {
		if !seen[s] {
			return Specs{}, fmt.Errorf("stream specs: no %s.json: %w", s, ErrBadSpec)
		}
	}
	if consumers != 1 {
		return Specs{}, fmt.Errorf("stream specs: %d *%s files, want 1: %w", consumers, ConsumerFileSuffix, ErrBadSpec)
	}
	return specs, nil
}

// decodeSpec decodes one JSON object strictly: unknown fields and trailing
// data are errors.
func decodeSpec(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// Apply creates or updates every stream (CreateOrUpdateStream), then the
// consumer on CAMPAIGN_COMMANDS (CreateOrUpdateConsumer), with o applied on
// top of the files. Applying the same specs again changes nothing. Errors
// name the stream or consumer; negative overrides wrap ErrBadSpec.
func (s Specs) Apply(ctx context.Context, js jetstream.JetStream, o Overrides) error {
	if o.DuplicateWindow < 0 || o.Replicas < 0 {
		return fmt.Errorf("apply streams: negative override (duplicate window %s, replicas %d): %w", o.DuplicateWindow, o.Replicas, ErrBadSpec)
	}
	for _, cfg := range s.Streams {
		if cfg.Name == StreamCommands && o.DuplicateWindow > 0 {
			cfg.Duplicates = o.DuplicateWindow
		}
		if o.Replicas > 0 {
			cfg.Replicas = o.Replicas
		}
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("apply stream %s: %w", cfg.Name, err)
		}
	}
	cfg := s.Consumer
	cfg.BackOff = append([]time.Duration(nil), cfg.BackOff...)
	if o.Replicas > 0 {
		cfg.Replicas = o.Replicas
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, StreamCommands, cfg); err != nil {
		return fmt.Errorf("apply consumer %s on stream %s: %w", cfg.Durable, StreamCommands, err)
	}
	return nil
}
