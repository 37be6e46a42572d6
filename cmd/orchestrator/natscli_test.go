package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/deadletter"
	"github.com/campaign-orchestrator/orchestrator/internal/events/natstest"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/worker"
)

// natsCLIVersion is the natscli release `make tools` installs and the
// recipes were written against.
const natsCLIVersion = "v0.5.0"

// findNatsCLI returns the nats binary: on PATH, else where `make tools`
// (go install) puts it, $(go env GOBIN) or $(go env GOPATH)/bin.
func findNatsCLI(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nats"); err == nil {
		return p
	}
	var dirs []string
	if out, err := exec.Command("go", "env", "GOBIN").Output(); err == nil && strings.TrimSpace(string(out)) != "" {
		dirs = append(dirs, strings.TrimSpace(string(out)))
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
			dirs = append(dirs, filepath.Join(dir, "bin"))
		}
	}
	for _, dir := range dirs {
		p := filepath.Join(dir, "nats")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	t.Skip("nats CLI not found on PATH, in $(go env GOBIN) or $(go env GOPATH)/bin: the README's nats recipes are not tested (`make tools` installs natscli " + natsCLIVersion + ")")
	return ""
}

// shellWords splits a README command line as sh would for what the recipes
// use: words separated by spaces, single-quoted strings taken literally.
func shellWords(t *testing.T, line string) []string {
	t.Helper()
	var words []string
	var cur strings.Builder
	inWord, quoted := false, false
	for _, r := range line {
		switch {
		case quoted && r == '\'':
			quoted = false
		case quoted:
			cur.WriteRune(r)
		case r == '\'':
			quoted, inWord = true, true
		case r == ' ':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("unterminated quote in %q", line)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// natsCLI runs recipes from the README with the real nats binary against one
// server.
type natsCLI struct {
	t      *testing.T
	bin    string
	env    []string
	readme string
}

// recipe returns the arguments of a README command line, which must appear
// in the README verbatim (so the README and this test cannot drift apart).
func (n *natsCLI) recipe(line string) []string {
	n.t.Helper()
	if !strings.Contains(n.readme, "    "+line+"\n") {
		n.t.Fatalf("README.md has no recipe line %q", line)
	}
	w := shellWords(n.t, line)
	if w[0] != "nats" {
		n.t.Fatalf("recipe %q does not run nats", line)
	}
	return w[1:]
}

func (n *natsCLI) command(ctx context.Context, args []string) (*exec.Cmd, *syncBuffer) {
	cmd := exec.CommandContext(ctx, n.bin, args...)
	cmd.Env = n.env
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	return cmd, &out
}

// run runs nats with args to completion and returns its output.
func (n *natsCLI) run(args ...string) string {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd, out := n.command(ctx, args)
	if err := cmd.Run(); err != nil {
		n.t.Fatalf("nats %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// background starts a subscription (args, e.g. with --count) and returns once
// it is subscribed; wait returns its output after it exited.
func (n *natsCLI) background(args ...string) (wait func() string) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	cmd, out := n.command(ctx, args)
	if err := cmd.Start(); err != nil {
		cancel()
		n.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	n.t.Cleanup(func() { cancel(); <-done })
	waitUntil(n.t, 10*time.Second, "nats "+strings.Join(args, " ")+" subscribed", func() bool { return strings.Contains(out.String(), "Subscribing on") })
	return func() string {
		n.t.Helper()
		select {
		case err := <-done:
			done <- err // for the cleanup
			if err != nil {
				n.t.Fatalf("nats %s: %v\n%s", strings.Join(args, " "), err, out.String())
			}
		case <-time.After(30 * time.Second):
			n.t.Fatalf("nats %s still running after 30s:\n%s", strings.Join(args, " "), out.String())
		}
		return out.String()
	}
}

// wantInOrder checks that out holds every string of want, in that order.
func wantInOrder(t *testing.T, what, out string, want ...string) {
	t.Helper()
	rest := out
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Errorf("%s: %q missing (or out of order) in:\n%s", what, w, out)
			return
		}
		rest = rest[i+len(w):]
	}
}

// The README's "Tracing with the nats CLI" recipes, run with the real nats
// binary against the service on an embedded server: every recipe that needs
// no terminal is run and its output checked; the others must at least be in
// the README.
func TestNatsCLIRecipes(t *testing.T) {
	bin := findNatsCLI(t)
	if out, err := exec.Command(bin, "--version").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != natsCLIVersion {
		t.Logf("nats --version: %s (%v); the recipes were checked against %s", strings.TrimSpace(string(out)), err, natsCLIVersion)
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}

	srv := natstest.Start(t)
	down, _ := newDownstream(t)
	cfg := testConfig(t, map[string]string{"NATS_URL": srv.ClientURL(), "STEPS_BASE_URL": down.URL})
	cfg.LockTTL = 500 * time.Millisecond
	app, err := NewApp(context.Background(), cfg, testLog(), Options{
		// Quick poison messages: 3 deliveries, 1.5 s apart.
		Consumer: func(c *jetstream.ConsumerConfig) { c.AckWait, c.BackOff, c.MaxDeliver = 1500*time.Millisecond, nil, 3 },
		Fault: func(p worker.FaultPoint, k store.Key) error {
			if p == worker.BeforeWrite && k.Campaign == "poison" {
				return errors.New("injected: the handler keeps failing")
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- app.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-runDone; err != nil {
			t.Errorf("app: %v", err)
		}
		_ = app.Close()
	})

	n := &natsCLI{t: t, bin: bin, readme: string(readme),
		// NATS_URL as in the README; a private config directory, so no
		// nats context of the machine applies.
		env: append(os.Environ(), "NATS_URL="+srv.ClientURL(), "XDG_CONFIG_HOME="+t.TempDir(), "HOME="+t.TempDir())}
	if !strings.Contains(n.readme, "## Tracing with the nats CLI") {
		t.Fatal(`README.md has no "Tracing with the nats CLI" section`)
	}

	// Watch one tenant's events while a command published with nats pub runs.
	watch := n.background(append(n.recipe(`nats sub 'campaign.evt.acme.>'`), "--count", "13")...)
	out := n.run(n.recipe(`nats pub campaign.cmd.acme.autumn-sale.create -H Nats-Msg-Id:autumn-1 '{"id":"autumn-1","type":"create","tenant_id":"acme","campaign_id":"autumn-sale","payload":{"name":"Autumn sale","start":true}}'`)...)
	wantInOrder(t, "nats pub", out, `Published`, `campaign.cmd.acme.autumn-sale.create`)
	ids := make([]string, 13)
	for i := range ids {
		ids[i] = fmt.Sprintf("Nats-Msg-Id: acme.autumn-sale.%d\n", i+1)
	}
	out = watch()
	for _, id := range ids {
		wantInOrder(t, "nats sub (tenant's events)", out, id)
	}
	wantInOrder(t, "nats sub (tenant's events)", out, `"type":"campaign.created"`, `"type":"campaign.completed"`)

	// The same command again: JetStream reports the duplicate.
	out = n.run(n.recipe(`nats pub --jetstream campaign.cmd.acme.autumn-sale.create -H Nats-Msg-Id:autumn-1 '{"id":"autumn-1","type":"create","tenant_id":"acme","campaign_id":"autumn-sale","payload":{"name":"Autumn sale","start":true}}'`)...)
	wantInOrder(t, "nats pub --jetstream", out, "Stored in Stream: CAMPAIGN_COMMANDS", "Duplicate: true")
	// A new command id: stored, not a duplicate.
	out = n.run(n.recipe(`nats pub --jetstream campaign.cmd.acme.winter-sale.create -H Nats-Msg-Id:winter-1 '{"id":"winter-1","type":"create","tenant_id":"acme","campaign_id":"winter-sale","payload":{"name":"Winter sale","start":true}}'`)...)
	wantInOrder(t, "nats pub --jetstream (new id)", out, "Stored in Stream: CAMPAIGN_COMMANDS Sequence: ")
	if strings.Contains(out, "Duplicate") {
		t.Errorf("nats pub --jetstream of a new command id: a duplicate:\n%s", out)
	}

	// One campaign's history.
	out = n.run(n.recipe(`nats sub --stream CAMPAIGN_EVENTS --all -T 'campaign.evt.acme.autumn-sale.>'`)...)
	wantInOrder(t, "nats sub --stream CAMPAIGN_EVENTS (history)", out, ids...)
	out = n.run(n.recipe(`nats stream get CAMPAIGN_EVENTS --last-for 'campaign.evt.acme.autumn-sale.>'`)...)
	wantInOrder(t, "nats stream get --last-for", out, "on Subject campaign.evt.acme.autumn-sale.completed", "Nats-Msg-Id: acme.autumn-sale.13", `"sequence":"00000000000000000013"`)
	n.recipe(`nats stream view CAMPAIGN_EVENTS --subject 'campaign.evt.acme.autumn-sale.>'`) // needs a terminal: not run

	// The consumer: nothing pending, nothing held, once every command is acknowledged.
	_, js := natstest.Connect(t, srv)
	commands, err := js.Stream(context.Background(), "CAMPAIGN_COMMANDS")
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "work queue empty", func() bool {
		info, err := commands.Info(context.Background())
		return err == nil && info.State.Msgs == 0
	})
	out = n.run(n.recipe(`nats consumer info CAMPAIGN_COMMANDS orchestrator`)...)
	wantInOrder(t, "nats consumer info", out, "Maximum Deliveries: 3", "Outstanding Acks: 0", "Redelivered Messages: 0", "Unprocessed Messages: 0")
	var info struct {
		Config struct {
			MaxDeliver int `json:"max_deliver"`
		} `json:"config"`
		NumPending     *uint64 `json:"num_pending"`
		NumAckPending  *int    `json:"num_ack_pending"`
		NumRedelivered *int    `json:"num_redelivered"`
	}
	out = n.run(n.recipe(`nats consumer info CAMPAIGN_COMMANDS orchestrator --json`)...)
	if err := json.Unmarshal([]byte(out), &info); err != nil || info.Config.MaxDeliver != 3 || info.NumPending == nil || info.NumAckPending == nil || info.NumRedelivered == nil {
		t.Errorf("nats consumer info --json: %+v (%v):\n%s", info, err, out)
	}
	out = n.run(n.recipe(`nats stream info CAMPAIGN_COMMANDS`)...)
	wantInOrder(t, "nats stream info CAMPAIGN_COMMANDS", out, "Messages: 0")

	// The DLQ: a command for an unknown campaign, and a poison message seen
	// through its advisory.
	advisories := n.background(append(n.recipe(`nats sub '$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>'`), "--count", "1")...)
	n.run(n.recipe(`nats pub campaign.cmd.acme.ghost.start -H Nats-Msg-Id:ghost-1 '{"id":"ghost-1","type":"start","tenant_id":"acme","campaign_id":"ghost"}'`)...)
	n.run("pub", "campaign.cmd.acme.poison.create", "-H", "Nats-Msg-Id:poison-1",
		`{"id":"poison-1","type":"create","tenant_id":"acme","campaign_id":"poison","payload":{"name":"Poison"}}`)
	out = advisories()
	wantInOrder(t, "nats sub (MAX_DELIVERIES advisory)", out, "CONSUMER.MAX_DELIVERIES.CAMPAIGN_COMMANDS.orchestrator", `"io.nats.jetstream.advisory.v1.max_deliver"`, `"deliveries":3`)
	waitUntil(t, 20*time.Second, "two dead letters", func() bool {
		entries, err := deadletter.List(context.Background(), js)
		return err == nil && len(entries) == 2
	})
	out = n.run(n.recipe(`nats stream subjects CAMPAIGN_DLQ`)...)
	for _, s := range []string{"campaign.dlq.acme.ghost", "campaign.dlq.acme.poison"} {
		wantInOrder(t, "nats stream subjects CAMPAIGN_DLQ", out, s)
	}
	out = n.run(n.recipe(`nats sub --stream CAMPAIGN_DLQ --all -T 'campaign.dlq.>'`)...)
	wantInOrder(t, "nats sub --stream CAMPAIGN_DLQ", out, "subject: campaign.dlq.acme.ghost", "Reason: unknown campaign", `{"id":"ghost-1"`,
		"subject: campaign.dlq.acme.poison", "Reason: max deliveries", `{"id":"poison-1"`)
	for _, h := range []string{"Original-Subject: campaign.cmd.acme.ghost.start", "Command-Id: ghost-1", "Command-Id: poison-1", "Nats-Msg-Id: dlq.maxdeliver."} {
		wantInOrder(t, "nats sub --stream CAMPAIGN_DLQ", out, h)
	}
	out = n.run(n.recipe(`nats stream get CAMPAIGN_DLQ --last-for 'campaign.dlq.acme.ghost'`)...)
	wantInOrder(t, "nats stream get CAMPAIGN_DLQ", out, "on Subject campaign.dlq.acme.ghost", "Reason: unknown campaign")
	out = n.run(n.recipe(`nats stream info CAMPAIGN_COMMANDS`)...)
	wantInOrder(t, "nats stream info CAMPAIGN_COMMANDS (poison removed)", out, "Messages: 0")
}
