package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// `orchestrator bench --help` prints its usage on stdout and succeeds.
func TestBenchHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h"} {
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), []string{"bench", arg}, func(string) string { return "" }, &stdout, &stderr); err != nil {
			t.Fatalf("bench %s: %v", arg, err)
		}
		for _, want := range []string{"usage: orchestrator bench", "-campaigns", "-baseline", "-rate", "-via", "-json"} {
			if !strings.Contains(stdout.String(), want) {
				t.Errorf("bench %s: usage lacks %q:\n%s", arg, want, stdout.String())
			}
		}
	}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"bench", "--no-such-flag"}, func(string) string { return "" }, &stdout, &stderr); err == nil {
		t.Error("bench --no-such-flag: no error")
	}
}

// The subcommand end to end, as an operator runs it: the service in this
// process on the embedded NATS server and the in-process store, campaigns
// over HTTP, then the bare pipeline; one JSON object out.
func TestBenchJSON(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"bench", "--campaigns", "20", "--store", "memory", "--via", "http", "--baseline", "--baseline-workers", "32", "--json"},
		func(string) string { return "" }, &stdout, &stderr)
	if err != nil {
		t.Fatalf("bench: %v\nstderr:\n%s", err, stderr.String())
	}
	var rep struct {
		Setup struct {
			Store, NATS, Via string
		}
		Service struct {
			Completed           int     `json:"completed"`
			CommandsPerCampaign float64 `json:"commands_per_campaign"`
			CampaignsPerS       float64 `json:"campaigns_per_s"`
			Latency             struct {
				P50, Max float64
			} `json:"create_to_completed_ms"`
		}
		Baseline struct {
			Commands          int     `json:"commands"`
			BareCampaignsPerS float64 `json:"bare_campaigns_per_s"`
		}
		Ratio *float64 `json:"ratio"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, stdout.String())
	}
	s := rep.Service
	if s.Completed != 20 || s.CommandsPerCampaign != 7 || s.CampaignsPerS <= 0 || s.Latency.P50 > s.Latency.Max {
		t.Errorf("service: %+v", s)
	}
	if rep.Setup.Via != "http" || !strings.HasPrefix(rep.Setup.Store, "memory") || !strings.HasPrefix(rep.Setup.NATS, "embedded") {
		t.Errorf("setup: %+v", rep.Setup)
	}
	if rep.Baseline.Commands != 140 || rep.Baseline.BareCampaignsPerS <= 0 || rep.Ratio == nil || *rep.Ratio <= 0 {
		t.Errorf("baseline %+v, ratio %v", rep.Baseline, rep.Ratio)
	}
}
