package worker

import "github.com/campaign-orchestrator/orchestrator/internal/events"

// InboxItem is what the worker keeps in a campaign's inbox for a command
// published on subject with id and body, for tests that strand a campaign.
func InboxItem(subject, id string, body []byte) []byte {
	b, err := events.EncodeInbox(events.InboxItem{Subject: subject, ID: id, Body: body})
	if err != nil {
		panic(err)
	}
	return b
}
