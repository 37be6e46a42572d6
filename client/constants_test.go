package client_test

import (
	"slices"
	"testing"

	"github.com/campaign-orchestrator/orchestrator/client"
	"github.com/campaign-orchestrator/orchestrator/internal/deadletter"
	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// The package's constants are written out for its readers; they are the
// service's.
func TestConstantsAreTheService(t *testing.T) {
	var verbs []fsm.Verb
	for _, v := range client.Verbs {
		verbs = append(verbs, fsm.Verb(v))
	}
	if !slices.Equal(verbs, fsm.ExternalVerbs) {
		t.Errorf("verbs %v, the service's %v", verbs, fsm.ExternalVerbs)
	}
	var states []fsm.State
	for _, s := range client.States {
		states = append(states, fsm.State(s))
		if client.State(s).Terminal() != fsm.State(s).Terminal() {
			t.Errorf("state %s: terminal differs", s)
		}
	}
	if !slices.Equal(states, fsm.States) {
		t.Errorf("states %v, the service's %v", states, fsm.States)
	}
	wantTypes := []string{fsm.EvCreated, fsm.EvStarted, fsm.EvStepStarted, fsm.EvStepSucceeded, fsm.EvStepRetrying, fsm.EvStepFailed,
		fsm.EvPaused, fsm.EvResumed, fsm.EvCancelled, fsm.EvRetried, fsm.EvCompleted, fsm.EvFailed, fsm.EvRejected}
	if !slices.Equal(client.EventTypes, wantTypes) {
		t.Errorf("event types %v, the service's %v", client.EventTypes, wantTypes)
	}
	for got, want := range map[string]string{
		client.StreamCommands: events.StreamCommands, client.StreamEvents: events.StreamEvents, client.StreamDLQ: events.StreamDLQ,
		client.HeaderTraceparent: events.HdrTraceparent, client.HeaderCommandID: events.HdrCommandID,
		client.HeaderTenantID: events.HdrTenantID, client.HeaderCampaignID: events.HdrCampaignID,
		client.HeaderReason: events.HdrReason, client.HeaderOriginalSubject: events.HdrOriginalSubject,
		client.HeaderOriginalSequence: events.HdrOriginalSequence, client.DefaultWorkflow: fsm.DefaultWorkflow,
		client.HeaderReplayedFrom: deadletter.HdrReplayedFrom,
	} {
		if got != want {
			t.Errorf("%q, the service's %q", got, want)
		}
	}
	if client.MaxIDBytes != events.MaxCommandIDBytes || client.MaxNameLength != events.MaxNameLength {
		t.Errorf("bounds %d %d, the service's %d %d", client.MaxIDBytes, client.MaxNameLength, events.MaxCommandIDBytes, events.MaxNameLength)
	}
}
