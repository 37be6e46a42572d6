package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// Setup describes a run, for the report.
type Setup struct {
	Campaigns   int     `json:"campaigns"`
	Concurrency int     `json:"concurrency,omitempty"`
	Rate        float64 `json:"rate,omitempty"`
	Duration    string  `json:"duration,omitempty"`
	Via         string  `json:"via"`
	Workflow    string  `json:"workflow"`
	StepLatency string  `json:"step_latency"`
	Workers     int     `json:"workers"`
	// Processes is the number of `orchestrator serve` child processes (0:
	// the orchestrator runs in the bench process).
	Processes  int    `json:"processes,omitempty"`
	Store      string `json:"store"`
	Redis      string `json:"redis,omitempty"`
	NATS       string `json:"nats"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	CPUs       int    `json:"cpus"`
}

// Report is everything a bench run measured; it is printed as text or as
// one JSON object.
type Report struct {
	Setup    Setup     `json:"setup"`
	Service  *Service  `json:"service"`
	Baseline *Baseline `json:"baseline,omitempty"`
	// Ratio is the service's campaigns/s ÷ the bare pipeline's campaigns/s.
	Ratio *float64 `json:"ratio,omitempty"`
	// Error is why the run is incomplete, if it is.
	Error string `json:"error,omitempty"`
}

// SetBaseline attaches the baseline and computes the ratio.
func (r *Report) SetBaseline(b *Baseline) {
	r.Baseline = b
	if b != nil && r.Service != nil && b.BareCampaignsPerS > 0 {
		v := r.Service.CampaignsPerS / b.BareCampaignsPerS
		r.Ratio = &v
	}
}

// WriteJSON writes the report as one indented JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for people.
func (r *Report) WriteText(w io.Writer) {
	st := r.Setup
	mode := fmt.Sprintf("closed loop, %d in flight", st.Concurrency)
	if st.Rate > 0 {
		mode = fmt.Sprintf("open loop at %g campaigns/s", st.Rate)
		if st.Duration != "" {
			mode += " for " + st.Duration
		}
	}
	procs := "the orchestrator in this process"
	if st.Processes > 0 {
		procs = fmt.Sprintf("%d orchestrator processes", st.Processes)
	}
	fmt.Fprintf(w, "orchestrator bench: %d campaigns of %q via %s, %s; steps %s; %s, %d workers each; store %s; NATS %s; %d CPUs, GOMAXPROCS %d\n",
		st.Campaigns, st.Workflow, st.Via, mode, st.StepLatency, procs, st.Workers, st.Store, st.NATS, st.CPUs, st.GOMAXPROCS)
	if s := r.Service; s != nil {
		fmt.Fprintf(w, "\nservice: %d campaigns, %d completed, %d failed, %d unfinished, %d not sent, in %.2f s\n",
			s.Campaigns, s.Completed, s.Failed, s.Unfinished, s.SendErrors, s.ElapsedS)
		fmt.Fprintf(w, "  campaigns/s          %10.1f\n", s.CampaignsPerS)
		fmt.Fprintf(w, "  commands/s           %10.1f   (%d commands, %.2f per campaign: distinct commandids of the events", s.CommandsPerS, s.Commands, s.CommandsPerCampaign)
		if s.CommandsStored != nil {
			fmt.Fprintf(w, "; %d messages stored in CAMPAIGN_COMMANDS", *s.CommandsStored)
		}
		fmt.Fprintln(w, ")")
		fmt.Fprintf(w, "  events/s             %10.1f   (%d events, %.2f per campaign", s.EventsPerS, s.Events, s.EventsPerCampaign)
		if s.Redelivered > 0 {
			fmt.Fprintf(w, "; %d seen twice", s.Redelivered)
		}
		fmt.Fprintln(w, ")")
		fmt.Fprintf(w, "  latency (ms)                p50        p90        p99        max\n")
		writeDist(w, "create→completed", s.Latency, "from the intended send time")
		writeDist(w, "create accepted", s.Send, "PubAck or 202")
		fmt.Fprintf(w, "  per-step overhead (ms)\n")
		writeDist(w, "(a) due→request", s.StepDue, "event time (ms, truncated) → fake received")
		writeDist(w, "(a) seen→request", s.StepDueSeen, "due event seen by the subscriber → fake received")
		writeDist(w, "(b) answer→seen", s.StepDone, "fake answered → step.succeeded seen")
		writeDist(w, "(b) answer→time", s.StepDoneTime, "fake answered → step.succeeded's time (ms, truncated)")
		writeCPU(w, "CPU per campaign (ms)", s.CPUPerCampaignMS, s.SelfIncludes)
		reset := ""
		if !s.PeakRSSReset {
			reset = " (since the process started: VmHWM could not be reset)"
		}
		fmt.Fprintf(w, "  peak RSS             %10.1f MiB (this process, VmHWM%s)\n", s.PeakRSSMiB, reset)
		if len(s.Orchestrators) > 0 {
			fmt.Fprintf(w, "  orchestrator processes (%d):      CPU s   CPU ms/campaign   peak RSS MiB   RSS at end MiB\n", len(s.Orchestrators))
			var cpu float64
			for _, o := range s.Orchestrators {
				fmt.Fprintf(w, "    pid %-8d           %10.2f   %15.3f   %12.1f   %14.1f\n", o.PID, o.CPUS, o.CPUPerCampaignMS, o.PeakRSSMiB, o.RSSEndMiB)
				cpu += o.CPUS
			}
			per := 0.0
			if n := s.Completed + s.Failed; n > 0 {
				per = cpu * 1000 / float64(n)
			}
			fmt.Fprintf(w, "    total                  %10.2f   %15.3f   %12.1f   (sum of VmHWM; largest sum of VmRSS sampled: %.1f MiB)\n",
				cpu, per, s.OrchestratorsPeakRSSMiB, s.OrchestratorsRSSMaxMiB)
		}
		fmt.Fprintf(w, "  in flight at most   %10d   (campaigns sent and not ended, sampled every 250 ms; all at once: %v)\n", s.MaxInFlight, s.AllInFlight)
		writeRequests(w, s.Resources)
		writeNotMeasured(w, s.NotMeasured)
	}
	if b := r.Baseline; b != nil {
		redis := "with Redis"
		if !b.WithRedis {
			redis = "without Redis"
		}
		fmt.Fprintf(w, "\nbaseline: bare pipeline, %s, %d goroutines: %d commands in %.2f s\n", redis, b.Workers, b.Commands, b.ElapsedS)
		fmt.Fprintf(w, "  commands/s           %10.1f\n", b.CommandsPerS)
		fmt.Fprintf(w, "  commands per campaign%10.2f   (the service's, this run)\n", b.CommandsPerCampaign)
		fmt.Fprintf(w, "  bare campaigns/s     %10.1f\n", b.BareCampaignsPerS)
		if b.Errors > 0 {
			fmt.Fprintf(w, "  errors (nakked)      %10d\n", b.Errors)
		}
		writeCPU(w, "CPU per command (ms)", b.CPUPerCommandMS, b.SelfIncludes)
		writeRequests(w, b.Resources)
		writeNotMeasured(w, b.NotMeasured)
	}
	if r.Ratio != nil {
		fmt.Fprintf(w, "\nratio: service campaigns/s ÷ bare campaigns/s = %.1f ÷ %.1f = %.3f\n", r.Service.CampaignsPerS, r.Baseline.BareCampaignsPerS, *r.Ratio)
	}
	if r.Error != "" {
		fmt.Fprintf(w, "\nincomplete: %s\n", r.Error)
	}
}

func writeDist(w io.Writer, name string, d Dist, what string) {
	if d.Count == 0 {
		fmt.Fprintf(w, "    %-20s  (none)     %s\n", name, what)
		return
	}
	neg := ""
	if d.Negative > 0 {
		neg = fmt.Sprintf(", %d below 0", d.Negative)
	}
	fmt.Fprintf(w, "    %-20s %9.3f  %9.3f  %9.3f  %9.3f   %s (n=%d%s)\n", name, d.P50, d.P90, d.P99, d.Max, what, d.Count, neg)
}

func writeCPU(w io.Writer, title string, c CPU, self string) {
	fmt.Fprintf(w, "  %-21s%10.3f   self", title, c.Self)
	if self != "" {
		fmt.Fprintf(w, " (%s)", self)
	}
	if c.NATSServer != nil {
		fmt.Fprintf(w, ", nats-server %.3f", *c.NATSServer)
	}
	if c.OrchestratorsTotal != nil {
		fmt.Fprintf(w, ", orchestrators %.3f", *c.OrchestratorsTotal)
	}
	if c.RedisServer != nil {
		fmt.Fprintf(w, ", redis-server %.3f", *c.RedisServer)
	}
	fmt.Fprintf(w, "; total %.3f\n", c.Total)
}

func writeRequests(w io.Writer, r Resources) {
	if u := r.Redis; u != nil {
		fmt.Fprintf(w, "  Redis round trips/cmd%10.2f   (%d reads of requests: INFO stats total_reads_processed; EVALSHA %.2f, EVAL %.2f per command)\n",
			u.RoundTripsPerCommand, u.RoundTrips, u.EvalSHAPerCommand, u.EvalPerCommand)
		fmt.Fprintf(w, "  Redis calls/command  %10.2f   (%d, those inside scripts included: %s)\n",
			u.CallsPerCommand, u.Calls, topCounts(u.ByName, 6))
	}
	if j := r.JetStreamAPI; j != nil {
		if j.Server != nil && j.ServerPerCommand != nil {
			fmt.Fprintf(w, "  JetStream API/command%10.2f   (%d: the server's JetStreamStats.API.Total, %s)\n", *j.ServerPerCommand, *j.Server, j.Source)
		}
		if j.Seen != nil {
			fmt.Fprintf(w, "  $JS.API reqs/command %10.2f   (%d seen on $JS.API.>: %s)\n", j.SeenPerCommand, j.SeenTotal, topCounts(j.Seen, 6))
		}
	}
}

func writeNotMeasured(w io.Writer, notes []string) {
	for _, n := range notes {
		fmt.Fprintf(w, "  not measured: %s\n", n)
	}
}

// topCounts lists the n largest counts, "name count" each.
func topCounts(m map[string]uint64, n int) string {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			if m[a] > m[b] {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	var parts []string
	for i, k := range keys {
		if i == n {
			parts = append(parts, "…")
			break
		}
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
