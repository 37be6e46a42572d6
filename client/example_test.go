package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/client"
)

// A command's subject is built, and its tokens checked, as the service
// checks them.
func ExampleCommandSubject() {
	subject, err := client.CommandSubject("acme", "spring-sale", client.VerbStart)
	fmt.Println(subject, err)

	_, err = client.CommandSubject("acme", "spring.sale", client.VerbStart)
	fmt.Println(err)
	// Output:
	// campaign.cmd.acme.spring-sale.start <nil>
	// client: invalid command: campaign "spring.sale" must match ^[A-Za-z0-9_-]{1,64}$
}

// NewMessage builds the message Publish sends, for publishing it by other
// means (a core NATS publish, nats req, a test).
func ExampleNewMessage() {
	msg, err := client.NewMessage("acme", "spring-sale",
		client.Create{Name: "Spring sale", Params: map[string]any{"segment": "vip"}, Start: true},
		client.WithID("spring-sale-1"), client.WithIssuedAt(time.Time{}))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(msg.Subject)
	fmt.Println(client.HeaderMsgID+":", msg.Header.Get(client.HeaderMsgID))
	fmt.Println(string(msg.Data))

	_, err = client.NewMessage("acme", "spring-sale", client.Create{Name: "  "})
	fmt.Println(errors.Is(err, client.ErrInvalid), err)
	// Output:
	// campaign.cmd.acme.spring-sale.create
	// Nats-Msg-Id: spring-sale-1
	// {"id":"spring-sale-1","type":"create","tenant_id":"acme","campaign_id":"spring-sale","payload":{"name":"Spring sale","params":{"segment":"vip"},"start":true}}
	// true client: invalid command: create: payload name is required
}

// Publish a command over JetStream, publish it again with the same id (it
// is applied once), and wait for the campaign to complete.
func ExampleClient_Publish() {
	nc, err := nats.Connect(natsURL) // nats://127.0.0.1:4222 with `make run`
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	c := client.New(js)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	create := client.Create{Name: "Autumn sale", Start: true}
	r, err := c.Publish(ctx, "acme", "autumn-sale", create, client.WithID("autumn-sale-create-1"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r.Stream, r.CommandID, "duplicate:", r.Duplicate)

	r, err = c.Publish(ctx, "acme", "autumn-sale", create, client.WithID("autumn-sale-create-1"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r.Stream, r.CommandID, "duplicate:", r.Duplicate)

	ev, err := c.Wait(ctx, "acme", "autumn-sale", client.Completed, client.Failed)
	if err != nil {
		log.Fatal(err)
	}
	state, _ := ev.State()
	fmt.Println(state, "at event", ev.Seq)
	// Output:
	// CAMPAIGN_COMMANDS autumn-sale-create-1 duplicate: false
	// CAMPAIGN_COMMANDS autumn-sale-create-1 duplicate: true
	// completed at event 13
}

// Watch a campaign's events, history then live, until it ends.
func ExampleClient_Watch() {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	c := client.New(js)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, err := c.Publish(ctx, "acme", "winter-sale", client.Create{Name: "Winter sale", Start: true}); err != nil {
		log.Fatal(err)
	}
	for ev, err := range c.Watch(ctx, "acme", "winter-sale", 0) {
		if err != nil {
			log.Fatal(err)
		}
		line := fmt.Sprintf("%2d %s", ev.Seq, ev.Type())
		if d, err := ev.Payload(); err == nil {
			if s, ok := d.(*client.StepSucceededData); ok {
				line += " " + s.Step
			}
		}
		fmt.Println(line)
		if state, ok := ev.State(); ok && state.Terminal() {
			break
		}
	}
	// Output:
	//  1 campaign.created
	//  2 campaign.started
	//  3 campaign.step.started
	//  4 campaign.step.succeeded validate
	//  5 campaign.step.started
	//  6 campaign.step.succeeded segment
	//  7 campaign.step.started
	//  8 campaign.step.succeeded render
	//  9 campaign.step.started
	// 10 campaign.step.succeeded schedule
	// 11 campaign.step.started
	// 12 campaign.step.succeeded dispatch
	// 13 campaign.completed
}

// Over HTTP: create with an Idempotency-Key (a repeat returns the first
// answer), then read the campaign back; errors are typed.
func ExampleHTTPClient_Publish() {
	// Token "": a service without API tokens (make run); the tenant is
	// named in each call.
	h, err := client.NewHTTP(baseURL, "") // http://localhost:8000 with `make run`
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	create := client.Create{Name: "Summer sale"}
	r, err := h.Publish(ctx, "acme", "summer-sale", create, client.WithIdempotencyKey("summer-1"))
	if err != nil {
		log.Fatal(err)
	}
	again, err := h.Publish(ctx, "acme", "summer-sale", create, client.WithIdempotencyKey("summer-1"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r.CampaignID, "same command:", again.CommandID == r.CommandID, "replayed:", again.Replayed)

	_, err = h.Publish(ctx, "acme", "no-such-campaign", client.Start{})
	var apiErr *client.APIError
	if errors.As(err, &apiErr) {
		fmt.Println(apiErr.Status, apiErr.Code, apiErr.Field)
	}
	// Output:
	// summer-sale same command: true replayed: true
	// 404 not_found campaign_id
}

// Over HTTP, watch a campaign's events through the ingress's event stream
// (reconnected with Last-Event-ID if it breaks), and wait for a state.
func ExampleHTTPClient_Watch() {
	h, err := client.NewHTTP(baseURL, "")
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, err := h.Publish(ctx, "acme", "black-friday", client.Create{Name: "Black Friday", Start: true}); err != nil {
		log.Fatal(err)
	}
	for ev, err := range h.Watch(ctx, "acme", "black-friday", 0) {
		if err != nil {
			log.Fatal(err)
		}
		if ev.Type() != client.TypeStepStarted {
			fmt.Println(ev.Seq, ev.Type())
		}
		if state, ok := ev.State(); ok && state.Terminal() {
			break
		}
	}
	ev, err := h.Wait(ctx, "acme", "black-friday", client.Completed, client.Failed)
	if err != nil {
		log.Fatal(err)
	}
	state, _ := ev.State()
	fmt.Println(state, "at event", ev.Seq)
	// Output:
	// 1 campaign.created
	// 2 campaign.started
	// 4 campaign.step.succeeded
	// 6 campaign.step.succeeded
	// 8 campaign.step.succeeded
	// 10 campaign.step.succeeded
	// 12 campaign.step.succeeded
	// 13 campaign.completed
	// completed at event 13
}

// An event's data decodes into the type of its event type.
func ExampleEvent_Payload() {
	ev, err := client.ParseEvent([]byte(`{"specversion":"1.0","id":"acme.spring-sale.4",
		"source":"campaign-orchestrator","type":"campaign.step.succeeded","subject":"acme/spring-sale",
		"time":"2026-11-27T10:00:01.123Z","datacontenttype":"application/json","tenantid":"acme",
		"campaignid":"spring-sale","sequence":"00000000000000000004","commandid":"01JDQ5W7ZK3V0R2Y8N4M6P1S9T",
		"data":{"step":"validate","run":1,"attempt":1,"duration_ms":42,"output":{"valid":true}}}`))
	if err != nil {
		log.Fatal(err)
	}
	d, err := ev.Payload()
	if err != nil {
		log.Fatal(err)
	}
	s := d.(*client.StepSucceededData)
	fmt.Println(ev.Seq, ev.CampaignID, ev.Type(), s.Step, s.Duration(), string(s.Output))
	// Output:
	// 4 spring-sale campaign.step.succeeded validate 42ms {"valid":true}
}
