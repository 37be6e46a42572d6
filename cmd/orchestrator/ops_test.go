package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// Bad command lines of the operator commands fail before connecting, with
// the usage on stderr.
func TestOpsUsageErrors(t *testing.T) {
	tests := []struct {
		args      []string
		wantErr   string
		wantUsage string
	}{
		{[]string{"trace"}, "want one <tenant>/<campaign>", "orchestrator trace <tenant>/<campaign>"},
		{[]string{"trace", "acme"}, "is not <tenant>/<campaign>", "orchestrator trace"},
		{[]string{"trace", "acme/a.b"}, "is not <tenant>/<campaign>", "orchestrator trace"},
		{[]string{"trace", "acme/a", "acme/b"}, "want one", "orchestrator trace"},
		{[]string{"trace", "acme/a", "--bogus"}, "flag provided but not defined", "--follow"},
		{[]string{"dlq"}, "want `dlq list` or `dlq replay`", "orchestrator dlq replay"},
		{[]string{"dlq", "purge"}, "want `dlq list` or `dlq replay`", "orchestrator dlq list"},
		{[]string{"dlq", "list", "extra"}, "unexpected", "orchestrator dlq list"},
		{[]string{"dlq", "replay"}, "want one <seq> or --all", "orchestrator dlq replay"},
		{[]string{"dlq", "replay", "3", "--all"}, "want one <seq> or --all", "orchestrator dlq replay"},
		{[]string{"dlq", "replay", "three"}, "not a CAMPAIGN_DLQ sequence", "orchestrator dlq replay"},
		{[]string{"dlq", "replay", "0"}, "not a CAMPAIGN_DLQ sequence", "orchestrator dlq replay"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tt.args, func(string) string { return "" }, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if !strings.Contains(stderr.String(), tt.wantUsage) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantUsage, stderr.String())
			}
		})
	}
}

func TestParseInterspersed(t *testing.T) {
	fs, url := opsFlags("x", "x", func(k string) string { return map[string]string{"NATS_URL": "nats://env:4222"}[k] }, &bytes.Buffer{})
	follow := fs.Bool("follow", false, "")
	pos, err := parseInterspersed(fs, []string{"acme/a", "--follow", "b", "--nats-url", "nats://flag:4222"})
	if c, cerr := url(); err != nil || cerr != nil || strings.Join(pos, ",") != "acme/a,b" || !*follow || c.URL != "nats://flag:4222" {
		t.Fatalf("pos %v, follow %v, url %s (%v), err %v", pos, *follow, c.URL, cerr, err)
	}
	fs, url = opsFlags("x", "x", func(string) string { return "" }, &bytes.Buffer{})
	if _, err := parseInterspersed(fs, nil); err != nil {
		t.Fatal(err)
	}
	if c, err := url(); err != nil || c.URL != defaultNATSURL {
		t.Fatalf("default url %s, err %v", c.URL, err)
	}
}
