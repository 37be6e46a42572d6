package asyncapi_test

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// summary is what validate.mjs prints.
type summary struct {
	Errors     []string          `json:"errors"`
	Warnings   []string          `json:"warnings"`
	Channels   map[string]string `json:"channels"`
	Operations map[string]struct {
		Action   string   `json:"action"`
		Channel  string   `json:"channel"`
		Messages []string `json:"messages"`
	} `json:"operations"`
	Messages []string `json:"messages"`
}

// parse runs the official parser on doc. Without node the test is skipped,
// except in CI (CI set, as .ci/run sets it), where it fails.
func parse(t *testing.T, doc string) (summary, error) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("CI: node is required to validate docs/asyncapi.yaml (.ci/run installs nodejs)")
		}
		t.Skip("node is not on PATH: docs/asyncapi.yaml not validated")
	}
	if _, err := os.Stat(filepath.Join("node_modules", "@asyncapi", "parser", "package.json")); err != nil {
		t.Fatal("test/asyncapi/node_modules is missing: run `npm ci --prefix test/asyncapi` (make test does)")
	}
	cmd := exec.Command(node, "validate.mjs", doc)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, runErr := cmd.Output()
	var s summary
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("validate.mjs: %v (%v)\n%s\n%s", err, runErr, out, stderr.String())
	}
	var exit *exec.ExitError
	if runErr != nil && !errors.As(runErr, &exit) {
		t.Fatalf("validate.mjs: %v", runErr)
	}
	if runErr != nil && len(s.Errors) == 0 {
		t.Fatalf("validate.mjs failed without errors: %v\n%s", runErr, stderr.String())
	}
	return s, runErr
}

// TestAsyncAPIDocumentParses validates docs/asyncapi.yaml (and the schemas
// it refers to) with @asyncapi/parser: no error, the three channels on the
// service's subjects, and the operations the service sends and receives.
func TestAsyncAPIDocumentParses(t *testing.T) {
	s, err := parse(t, filepath.Join("..", "..", "docs", "asyncapi.yaml"))
	if err != nil || len(s.Errors) > 0 {
		t.Fatalf("docs/asyncapi.yaml does not parse: %v\n%s", err, strings.Join(s.Errors, "\n"))
	}
	for _, w := range s.Warnings {
		t.Log("warning:", w)
	}
	wantChannels := map[string]string{
		"commands":    "campaign.cmd.{tenant}.{campaign}.{verb}",
		"events":      "campaign.evt.{tenant}.{campaign}.{type}",
		"deadLetters": "campaign.dlq.{tenant}.{campaign}",
	}
	for id, addr := range wantChannels {
		if s.Channels[id] != addr {
			t.Errorf("channel %s: %q, want %q", id, s.Channels[id], addr)
		}
	}
	wantOps := map[string][3]any{ // action, channel, messages
		"receiveCommand": {"receive", "commands", 7},
		"sendEvent":      {"send", "events", 13},
		"sendDeadLetter": {"send", "deadLetters", 1},
	}
	for id, w := range wantOps {
		op, ok := s.Operations[id]
		if !ok || op.Action != w[0] || op.Channel != w[1] || len(op.Messages) != w[2] {
			t.Errorf("operation %s: %+v, want %v", id, op, w)
		}
	}
	if len(s.Messages) != 21 {
		t.Errorf("%d messages, want 21 (7 commands, 13 events, a dead letter): %v", len(s.Messages), s.Messages)
	}
}

// TestAsyncAPIParserRejects checks the check: a copy of the document with
// an operation that names no action, and one with a reference to a schema
// that does not exist, are refused.
func TestAsyncAPIParserRejects(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "..", "docs", "asyncapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.CopyFS(filepath.Join(dir, "schemas"), os.DirFS(filepath.Join("..", "..", "docs", "schemas"))); err != nil {
		t.Fatal(err)
	}
	for name, broken := range map[string]string{
		"no action":      strings.Replace(string(src), "    action: receive\n", "", 1),
		"missing schema": strings.Replace(string(src), "$ref: 'schemas/data-created.json'", "$ref: 'schemas/data-nope.json'", 1),
	} {
		if broken == string(src) {
			t.Fatalf("%s: the replacement changed nothing", name)
		}
		path := filepath.Join(dir, "asyncapi.yaml")
		if err := os.WriteFile(path, []byte(broken), 0o644); err != nil {
			t.Fatal(err)
		}
		if s, err := parse(t, path); err == nil || len(s.Errors) == 0 {
			t.Errorf("%s: the parser took the broken document", name)
		}
	}
}
