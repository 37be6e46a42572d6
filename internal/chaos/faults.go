//go:build chaos

package chaos

import (
	"context"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"time"
)

// Fault kinds, as counted in the summary.
const (
	FaultKill9   = "kill9"
	FaultRestart = "restart"
	FaultStop    = "sigstop"
	FaultCont    = "sigcont"
)

// Faults counts the faults injected, by kind, and keeps a timeline.
type Faults struct {
	mu     sync.Mutex
	counts map[string]int
	log    []string
	start  time.Time
}

// NewFaults starts a fault record; times in the timeline are relative to now.
func NewFaults() *Faults { return &Faults{counts: map[string]int{}, start: time.Now()} }

// Add records one fault.
func (f *Faults) Add(kind, what string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counts[kind]++
	f.log = append(f.log, time.Since(f.start).Round(time.Millisecond).String()+" "+kind+" "+what)
}

// Counts returns a copy of the counts.
func (f *Faults) Counts() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int, len(f.counts))
	for k, v := range f.counts {
		out[k] = v
	}
	return out
}

// Timeline returns the faults in order.
func (f *Faults) Timeline() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.log...)
}

// KillLoop kills a random running orchestrator instance with SIGKILL every
// `every` (± half), and starts it again after `down` (± half), until ctx
// ends; one instance at most is down at a time. It returns after the last
// killed instance is running again, with the first error starting one.
func KillLoop(ctx context.Context, cl *Cluster, rng *rand.Rand, every, down time.Duration, f *Faults) error {
	for {
		sleepCtx(ctx, randDur(rng, every/2, every*3/2))
		if ctx.Err() != nil {
			return nil
		}
		var up []*Orch
		for _, o := range cl.Orchs {
			if o.Up() {
				up = append(up, o)
			}
		}
		if len(up) < 2 {
			continue
		}
		sort.Slice(up, func(i, j int) bool { return up[i].Name < up[j].Name })
		victim := up[rng.IntN(len(up))]
		pid := victim.Pid()
		victim.Kill()
		f.Add(FaultKill9, victim.Name+" pid "+strconv.Itoa(pid))
		// Restart even when ctx ended meanwhile: the scenario goes on
		// with every instance.
		t := time.NewTimer(randDur(rng, down/2, down*3/2))
		<-t.C
		if err := victim.Start(); err != nil {
			return err
		}
		f.Add(FaultRestart, victim.Name+" pid "+strconv.Itoa(victim.Pid()))
	}
}
