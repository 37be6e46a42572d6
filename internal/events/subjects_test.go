package events_test

import (
	"strings"
	"testing"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

func TestValidToken(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"simple", "acme", true},
		{"all classes", "Spring_Sale-2026", true},
		{"one char", "a", true},
		{"64 chars", strings.Repeat("x", 64), true},
		{"65 chars", strings.Repeat("x", 65), false},
		{"empty", "", false},
		{"dot", "a.b", false},
		{"full wildcard", "a.>", false},
		{"gt alone", ">", false},
		{"star", "*", false},
		{"star in token", "a*", false},
		{"space", "a b", false},
		{"tab", "a\tb", false},
		{"newline at end", "abc\n", false},
		{"unicode letter", "café", false},
		{"unicode digit", "١٢٣", false},
		{"slash", "a/b", false},
		{"dollar", "$JS", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := events.ValidToken(tt.in); got != tt.want {
				t.Errorf("ValidToken(%q) = %v, want %v", tt.in, got, tt.want)
			}
			if got := events.TokenRE.MatchString(tt.in); got != tt.want {
				t.Errorf("TokenRE.MatchString(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestSubjects(t *testing.T) {
	tests := []struct {
		name, got, want string
	}{
		{"command", events.CommandSubject("acme", "spring-sale", fsm.Start), "campaign.cmd.acme.spring-sale.start"},
		{"advance", events.CommandSubject("acme", "c1", fsm.Advance), "campaign.cmd.acme.c1.advance"},
		{"campaign commands", events.CampaignCommands("acme", "c1"), "campaign.cmd.acme.c1.*"},
		{"event with dots", events.EventSubject("acme", "c1", fsm.EvStepSucceeded), "campaign.evt.acme.c1.step.succeeded"},
		{"event", events.EventSubject("acme", "c1", fsm.EvCreated), "campaign.evt.acme.c1.created"},
		{"rejected", events.EventSubject("acme", "c1", fsm.EvRejected), "campaign.evt.acme.c1.command.rejected"},
		{"campaign events", events.CampaignEvents("acme", "c1"), "campaign.evt.acme.c1.>"},
		{"dlq", events.DLQSubject("acme", "c1"), "campaign.dlq.acme.c1"},
		{"dlq bad campaign", events.DLQSubject("acme", "a.>"), "campaign.dlq.acme._unknown"},
		{"dlq bad tenant", events.DLQSubject("", "c1"), "campaign.dlq._unknown.c1"},
		{"dlq both bad", events.DLQSubject("*", strings.Repeat("x", 65)), "campaign.dlq._unknown._unknown"},
		{"event id", events.EventID("acme", "spring-sale", 7), "acme.spring-sale.7"},
		{"sequence", events.FormatSequence(7), "00000000000000000007"},
		{"sequence max", events.FormatSequence(^uint64(0)), "18446744073709551615"},
		{"advance id", events.AdvanceID("acme", "c1", 12, "n0"), "acme.c1.advance.12.n0"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
	if a, b := events.FormatSequence(9), events.FormatSequence(10); !(a < b) {
		t.Errorf("FormatSequence does not order lexicographically: %q >= %q", a, b)
	}
}
