package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/bench"
)

// `orchestrator bench --help` prints its usage on stdout and succeeds.
func TestBenchHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h"} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), []string{"bench", arg}, func(string) string { return "" }, &stdout, &stderr)
		if code := exitCode(err, io.Discard); code != 0 {
			t.Fatalf("bench %s: exit %d (%v)", arg, code, err)
		}
		for _, want := range []string{"usage: orchestrator bench", "-campaigns", "-baseline", "-rate", "-via", "-json"} {
			if !strings.Contains(stdout.String(), want) {
				t.Errorf("bench %s: usage lacks %q:\n%s", arg, want, stdout.String())
			}
		}
	}
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"bench", "--no-such-flag"}, func(string) string { return "" }, &stdout, &stderr)
	if code := exitCode(err, io.Discard); code != 2 {
		t.Errorf("bench --no-such-flag: exit %d (%v), want 2", code, err)
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

// benchChildEnv makes this test binary run as the orchestrator (main), so
// that bench's child processes (os.Executable()) are `orchestrator serve`.
const benchChildEnv = "ORCHESTRATOR_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(benchChildEnv) == "1" {
		main() // exits
	}
	os.Exit(m.Run())
}

// --processes 2: two `orchestrator serve` children (this binary) on one
// Redis and the bench's NATS server run every campaign, and each child's CPU
// and peak RSS are reported apart.
func TestBenchProcesses(t *testing.T) {
	if bench.FindRedisServer() == "" {
		t.Skip("redis-server not found")
	}
	t.Setenv(benchChildEnv, "1")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"bench", "--campaigns", "30", "--processes", "2", "--json"},
		func(string) string { return "" }, &stdout, &stderr)
	if err != nil {
		t.Fatalf("bench: %v\nstderr:\n%s", err, stderr.String())
	}
	var rep struct {
		Setup struct {
			Processes int    `json:"processes"`
			Store     string `json:"store"`
		}
		Service struct {
			Completed     int `json:"completed"`
			Unfinished    int `json:"unfinished"`
			Orchestrators []struct {
				PID        int     `json:"pid"`
				CPUS       float64 `json:"cpu_s"`
				PeakRSSMiB float64 `json:"peak_rss_mib"`
			} `json:"orchestrators"`
			PeakRSSSum float64 `json:"orchestrators_peak_rss_mib"`
			Resources  struct {
				CPU struct {
					Orchestrators      []float64 `json:"orchestrators"`
					OrchestratorsTotal *float64  `json:"orchestrators_total"`
				} `json:"cpu_s"`
			} `json:"resources"`
		}
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, stdout.String())
	}
	s := rep.Service
	if rep.Setup.Processes != 2 || !strings.HasPrefix(rep.Setup.Store, "redis") {
		t.Errorf("setup: %+v", rep.Setup)
	}
	if s.Completed != 30 || s.Unfinished != 0 {
		t.Errorf("completed %d, unfinished %d: want 30, 0", s.Completed, s.Unfinished)
	}
	if len(s.Orchestrators) != 2 || len(s.Resources.CPU.Orchestrators) != 2 || s.Resources.CPU.OrchestratorsTotal == nil {
		t.Fatalf("per-child figures missing: %+v", s)
	}
	var sum float64
	for _, o := range s.Orchestrators {
		if o.PID <= 0 || o.CPUS <= 0 || o.PeakRSSMiB <= 0 {
			t.Errorf("child figures: %+v", o)
		}
		sum += o.PeakRSSMiB
	}
	if s.PeakRSSSum != sum {
		t.Errorf("peak RSS total %.1f, want the sum %.1f", s.PeakRSSSum, sum)
	}
	if s.Orchestrators[0].PID == s.Orchestrators[1].PID || s.Orchestrators[0].PID == os.Getpid() {
		t.Errorf("children are not two other processes: %+v (this one %d)", s.Orchestrators, os.Getpid())
	}
}

// --ingress: an `orchestrator serve --role ingress` child accepts campaigns,
// the bare Echo handler too, and the ratio is printed.
func TestBenchIngress(t *testing.T) {
	t.Setenv(benchChildEnv, "1")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"bench", "--ingress", "--ingress-duration", "1s", "--ingress-clients", "4"},
		func(string) string { return "" }, &stdout, &stderr)
	if err != nil {
		t.Fatalf("bench: %v\nstderr:\n%s", err, stderr.String())
	}
	out := stdout.String()
	accepted := regexp.MustCompile(`(?m)^(ingress|bare Echo)[^:]*: (\d+) accepted \(202\), (\d+) errors`).FindAllStringSubmatch(out, -1)
	if len(accepted) != 2 {
		t.Fatalf("want an accepted line for the ingress and the bare handler:\n%s", out)
	}
	for _, m := range accepted {
		if n, _ := strconv.Atoi(m[2]); n <= 0 {
			t.Errorf("%s: %s accepted", m[1], m[2])
		}
		if m[3] != "0" {
			t.Errorf("%s: %s errors", m[1], m[3])
		}
	}
	ratio := regexp.MustCompile(`(?m)^ratio: ingress accepted/s ÷ bare Echo accepted/s = [\d.]+ ÷ [\d.]+ = ([\d.]+)$`).FindStringSubmatch(out)
	if ratio == nil {
		t.Fatalf("no ratio line:\n%s", out)
	}
	if r, err := strconv.ParseFloat(ratio[1], 64); err != nil || r <= 0 {
		t.Errorf("ratio %q", ratio[1])
	}
}
