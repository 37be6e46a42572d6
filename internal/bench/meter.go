package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
)

// Meters are where a run reads its resource figures. Every field is
// optional: what is missing is reported as not measured.
type Meters struct {
	// Redis is read with INFO commandstats (calls per command name) and
	// INFO cpu (the server's own CPU time) before and after each phase.
	Redis *redis.Client
	// JSAPI returns the NATS server's count of JetStream API requests
	// (nats-server's JetStreamStats.API.Total: every request answered by the
	// JetStream API handlers; pull requests (CONSUMER.MSG.NEXT) and direct
	// gets are not counted there, see APISeen).
	JSAPI func(context.Context) (uint64, error)
	// JSAPISource says where JSAPI reads the counter.
	JSAPISource string
	// NC, when set, is subscribed to $JS.API.> during the run: every API
	// request published in the account (pull requests and direct gets
	// included) is counted by kind.
	NC *nats.Conn
	// NATSServer is the pid of a nats-server child process (0: none; an
	// embedded server's CPU is this process's).
	NATSServer int
	// Orchestrators are the pids of `orchestrator serve` child processes,
	// measured each apart (CPU from /proc/<pid>/stat, peak RSS from
	// /proc/<pid>/status VmHWM).
	Orchestrators []int
	// SelfIncludes says what this process runs besides the orchestrator,
	// since its CPU and RSS include it.
	SelfIncludes string
}

// snapshot is every counter at one instant.
type snapshot struct {
	at         time.Time
	self       time.Duration
	nats       time.Duration
	natsOK     bool
	orch       []time.Duration
	orchOK     bool
	redisCalls map[string]uint64
	redisReads uint64
	redisCPU   float64
	redisOK    bool
	jsapi      uint64
	jsapiOK    bool
	seen       map[string]uint64
}

// meter takes snapshots.
type meter struct {
	m    Meters
	seen *apiCounter
	errs []string // what could not be read, once each
}

func newMeter(m Meters) (*meter, error) {
	mt := &meter{m: m}
	if m.NC != nil {
		c, err := newAPICounter(m.NC)
		if err != nil {
			return nil, err
		}
		mt.seen = c
	}
	return mt, nil
}

func (mt *meter) close() {
	if mt.seen != nil {
		mt.seen.close()
	}
}

func (mt *meter) note(what string, err error) {
	s := what + ": " + err.Error()
	for _, e := range mt.errs {
		if e == s {
			return
		}
	}
	mt.errs = append(mt.errs, s)
}

func (mt *meter) snapshot(ctx context.Context) snapshot {
	s := snapshot{at: time.Now(), self: selfCPU()}
	if mt.m.NATSServer > 0 {
		d, err := procCPU(mt.m.NATSServer)
		if err != nil {
			mt.note("nats-server CPU", err)
		} else {
			s.nats, s.natsOK = d, true
		}
	}
	if len(mt.m.Orchestrators) > 0 {
		s.orch, s.orchOK = make([]time.Duration, len(mt.m.Orchestrators)), true
		for i, pid := range mt.m.Orchestrators {
			d, err := procCPU(pid)
			if err != nil {
				mt.note(fmt.Sprintf("orchestrator %d CPU", pid), err)
				s.orchOK = false
				continue
			}
			s.orch[i] = d
		}
	}
	if mt.m.Redis != nil {
		calls, reads, cpu, err := redisStats(ctx, mt.m.Redis)
		if err != nil {
			mt.note("redis INFO", err)
		} else {
			s.redisCalls, s.redisReads, s.redisCPU, s.redisOK = calls, reads, cpu, true
		}
	}
	if mt.m.JSAPI != nil {
		n, err := mt.m.JSAPI(ctx)
		if err != nil {
			mt.note("JetStream API counter ("+mt.m.JSAPISource+")", err)
		} else {
			s.jsapi, s.jsapiOK = n, true
		}
	}
	if mt.seen != nil {
		// Requests published just before are delivered to the counter
		// after a round trip.
		_ = mt.m.NC.FlushTimeout(2 * time.Second)
		s.seen = mt.seen.counts()
	}
	return s
}

// Resources is what a phase cost, between two snapshots.
type Resources struct {
	// CPU seconds of each process.
	CPU CPU `json:"cpu_s"`
	// Redis commands run by the server (our own INFO excluded).
	Redis *RedisUse `json:"redis,omitempty"`
	// JetStreamAPI is the server's API request counter and the $JS.API
	// requests seen by the subscription.
	JetStreamAPI *JSAPIUse `json:"jetstream_api,omitempty"`
}

// CPU is CPU time per process, in seconds or (PerUnit) milliseconds per
// campaign or command. A nil field was not measured.
type CPU struct {
	// Self is this process: the orchestrator (or, in the baseline, the bare
	// pipeline) plus what Meters.SelfIncludes says.
	Self float64 `json:"self"`
	// NATSServer is a nats-server child process.
	NATSServer *float64 `json:"nats_server,omitempty"`
	// Orchestrators are the `orchestrator serve` child processes, each
	// (in the order of Meters.Orchestrators), and OrchestratorsTotal their
	// sum.
	Orchestrators      []float64 `json:"orchestrators,omitempty"`
	OrchestratorsTotal *float64  `json:"orchestrators_total,omitempty"`
	// RedisServer is the Redis server (INFO cpu: used_cpu_user + used_cpu_sys).
	RedisServer *float64 `json:"redis_server,omitempty"`
	// Total is the sum of the measured ones.
	Total float64 `json:"total"`
}

func (c CPU) scaled(f float64) CPU {
	out := CPU{Self: c.Self * f, Total: c.Total * f}
	if c.NATSServer != nil {
		v := *c.NATSServer * f
		out.NATSServer = &v
	}
	if c.RedisServer != nil {
		v := *c.RedisServer * f
		out.RedisServer = &v
	}
	if c.OrchestratorsTotal != nil {
		v := *c.OrchestratorsTotal * f
		out.OrchestratorsTotal = &v
		for _, o := range c.Orchestrators {
			out.Orchestrators = append(out.Orchestrators, o*f)
		}
	}
	return out
}

// RedisUse counts Redis commands (INFO commandstats deltas) and round trips
// (INFO stats total_reads_processed).
type RedisUse struct {
	// Calls are the commands Redis executed, those that scripts call
	// included (commandstats counts both); our own INFO excluded.
	Calls   uint64            `json:"calls"`
	EvalSHA uint64            `json:"evalsha"`
	Eval    uint64            `json:"eval"`
	ByName  map[string]uint64 `json:"by_command"`
	// RoundTrips are the reads of client requests Redis made (a pipeline
	// is one, a request over 16 KiB or a closed connection adds one); our
	// own INFO excluded.
	RoundTrips uint64 `json:"round_trips"`
	// Per command (of the orchestrator or the bare pipeline).
	CallsPerCommand      float64 `json:"calls_per_command"`
	EvalSHAPerCommand    float64 `json:"evalsha_per_command"`
	EvalPerCommand       float64 `json:"eval_per_command"`
	RoundTripsPerCommand float64 `json:"round_trips_per_command"`
}

// JSAPIUse counts JetStream API requests.
type JSAPIUse struct {
	// Server is the delta of the server's counter (nil: not measured).
	Server           *uint64  `json:"server_api_total,omitempty"`
	ServerPerCommand *float64 `json:"server_api_total_per_command,omitempty"`
	Source           string   `json:"server_source,omitempty"`
	// Seen are the requests on $JS.API.> by kind (STREAM.INFO,
	// CONSUMER.MSG.NEXT, DIRECT.GET, …), pull requests and direct gets
	// included.
	Seen           map[string]uint64 `json:"seen,omitempty"`
	SeenTotal      uint64            `json:"seen_total"`
	SeenPerCommand float64           `json:"seen_per_command"`
}

// diff is what happened between a and b; commands divides the per-command
// figures.
func (mt *meter) diff(a, b snapshot, commands int) Resources {
	var r Resources
	r.CPU.Self = (b.self - a.self).Seconds()
	r.CPU.Total = r.CPU.Self
	if a.natsOK && b.natsOK {
		v := (b.nats - a.nats).Seconds()
		r.CPU.NATSServer = &v
		r.CPU.Total += v
	}
	if a.orchOK && b.orchOK && len(a.orch) == len(b.orch) {
		var sum float64
		for i := range b.orch {
			v := (b.orch[i] - a.orch[i]).Seconds()
			r.CPU.Orchestrators = append(r.CPU.Orchestrators, v)
			sum += v
		}
		r.CPU.OrchestratorsTotal = &sum
		r.CPU.Total += sum
	}
	if a.redisOK && b.redisOK {
		v := b.redisCPU - a.redisCPU
		r.CPU.RedisServer = &v
		r.CPU.Total += v
		u := &RedisUse{ByName: map[string]uint64{}}
		for name, n := range b.redisCalls {
			d := n - a.redisCalls[name]
			if d == 0 || name == "info" {
				continue
			}
			u.ByName[name] = d
			u.Calls += d
		}
		u.EvalSHA, u.Eval = u.ByName["evalsha"], u.ByName["eval"]
		if d := b.redisReads - a.redisReads; d > 0 {
			u.RoundTrips = d - 1 // the INFO of snapshot b
		}
		if commands > 0 {
			c := float64(commands)
			u.CallsPerCommand, u.EvalSHAPerCommand, u.EvalPerCommand = float64(u.Calls)/c, float64(u.EvalSHA)/c, float64(u.Eval)/c
			u.RoundTripsPerCommand = float64(u.RoundTrips) / c
		}
		r.Redis = u
	}
	if (a.jsapiOK && b.jsapiOK) || b.seen != nil {
		j := &JSAPIUse{Source: mt.m.JSAPISource}
		if a.jsapiOK && b.jsapiOK {
			d := b.jsapi - a.jsapi
			j.Server = &d
			if commands > 0 {
				p := float64(d) / float64(commands)
				j.ServerPerCommand = &p
			}
		}
		if b.seen != nil {
			j.Seen = map[string]uint64{}
			for k, n := range b.seen {
				if d := n - a.seen[k]; d > 0 {
					j.Seen[k] = d
					j.SeenTotal += d
				}
			}
			if commands > 0 {
				j.SeenPerCommand = float64(j.SeenTotal) / float64(commands)
			}
		}
		r.JetStreamAPI = j
	}
	return r
}

// selfCPU is this process's user + system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux architecture Go supports (sysconf(_SC_CLK_TCK) needs cgo).
const clockTicks = 100

// procCPU is a process's utime + stime from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("unreadable /proc stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	// f[0] is field 3 (state): utime and stime are fields 14 and 15.
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// PeakRSS returns this process's peak resident set size (VmHWM) and current
// one (VmRSS), in bytes.
func PeakRSS() (peak, now uint64, err error) { return procRSS("self") }

// ProcPeakRSS is PeakRSS of process pid.
func ProcPeakRSS(pid int) (peak, now uint64, err error) { return procRSS(strconv.Itoa(pid)) }

// procRSS reads VmHWM and VmRSS from /proc/<pid>/status.
func procRSS(pid string) (peak, now uint64, err error) {
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmHWM" && k != "VmRSS") {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", k, err)
		}
		if k == "VmHWM" {
			peak = n << 10
		} else {
			now = n << 10
		}
	}
	return peak, now, sc.Err()
}

// resetPeakRSS makes VmHWM start again from the current RSS (Linux 4.0+);
// it reports whether it could.
func resetPeakRSS() bool { return resetProcPeakRSS("self") }

// resetProcPeakRSS is resetPeakRSS of process pid (a child of ours: same
// user, so the kernel lets us).
func resetProcPeakRSS(pid string) bool {
	return os.WriteFile("/proc/"+pid+"/clear_refs", []byte("5"), 0) == nil
}

// redisStats reads INFO commandstats (calls by lower-case command name,
// "config|get" style subcommands folded into their command), INFO stats
// (total_reads_processed) and INFO cpu (seconds).
func redisStats(ctx context.Context, rc *redis.Client) (map[string]uint64, uint64, float64, error) {
	txt, err := rc.Info(ctx, "commandstats", "stats", "cpu").Result()
	if err != nil {
		return nil, 0, 0, err
	}
	calls := map[string]uint64{}
	var reads uint64
	var cpu float64
	for line := range strings.Lines(txt) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "cmdstat_"):
			name, rest, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":")
			if !ok {
				continue
			}
			name, _, _ = strings.Cut(name, "|")
			for kv := range strings.SplitSeq(rest, ",") {
				if v, ok := strings.CutPrefix(kv, "calls="); ok {
					n, err := strconv.ParseUint(v, 10, 64)
					if err == nil {
						calls[strings.ToLower(name)] += n
					}
				}
			}
		case strings.HasPrefix(line, "total_reads_processed:"):
			reads, _ = strconv.ParseUint(strings.TrimPrefix(line, "total_reads_processed:"), 10, 64)
		case strings.HasPrefix(line, "used_cpu_user:"), strings.HasPrefix(line, "used_cpu_sys:"):
			_, v, _ := strings.Cut(line, ":")
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				cpu += f
			}
		}
	}
	return calls, reads, cpu, nil
}

// MonitorJSAPI returns a Meters.JSAPI reading the API total from a NATS
// server's monitoring endpoint (base URL, e.g. http://127.0.0.1:8222): GET
// /jsz, field api.total.
func MonitorJSAPI(base string) func(context.Context) (uint64, error) {
	base = strings.TrimRight(base, "/")
	client := &http.Client{Timeout: 5 * time.Second}
	return func(ctx context.Context) (uint64, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/jsz", nil)
		if err != nil {
			return 0, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("GET %s/jsz: %s", base, resp.Status)
		}
		var v struct {
			API struct {
				Total uint64 `json:"total"`
			} `json:"api"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			return 0, fmt.Errorf("GET %s/jsz: %w", base, err)
		}
		return v.API.Total, nil
	}
}

// apiCounter counts the requests published on $JS.API.> by kind.
type apiCounter struct {
	sub *nats.Subscription
	mu  sync.Mutex
	n   map[string]uint64
}

func newAPICounter(nc *nats.Conn) (*apiCounter, error) {
	c := &apiCounter{n: map[string]uint64{}}
	sub, err := nc.Subscribe("$JS.API.>", func(m *nats.Msg) {
		k := apiKind(m.Subject)
		c.mu.Lock()
		c.n[k]++
		c.mu.Unlock()
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe $JS.API.>: %w", err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		return nil, err
	}
	c.sub = sub
	return c, nil
}

func (c *apiCounter) counts() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]uint64, len(c.n))
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

func (c *apiCounter) close() { _ = c.sub.Unsubscribe() }

// apiKinds are the JetStream API request kinds (nats-server's
// jetstream_api.go), longest first.
var apiKinds = func() []string {
	k := []string{
		"INFO", "STREAM.CREATE", "STREAM.UPDATE", "STREAM.NAMES", "STREAM.LIST", "STREAM.INFO", "STREAM.DELETE",
		"STREAM.PURGE", "STREAM.SNAPSHOT", "STREAM.RESTORE", "STREAM.MSG.DELETE", "STREAM.MSG.GET",
		"STREAM.LEADER.STEPDOWN", "STREAM.PEER.REMOVE", "CONSUMER.CREATE", "CONSUMER.DURABLE.CREATE",
		"CONSUMER.NAMES", "CONSUMER.LIST", "CONSUMER.INFO", "CONSUMER.DELETE", "CONSUMER.PAUSE",
		"CONSUMER.MSG.NEXT", "CONSUMER.LEADER.STEPDOWN", "CONSUMER.UNPIN", "CONSUMER.RESET", "DIRECT.GET",
	}
	sort.Slice(k, func(i, j int) bool { return len(k[i]) > len(k[j]) })
	return k
}()

// apiKind names the kind of a $JS.API request subject.
func apiKind(subject string) string {
	rest := strings.TrimPrefix(subject, "$JS.API.")
	for _, k := range apiKinds {
		if rest == k || strings.HasPrefix(rest, k+".") {
			return k
		}
	}
	a, b, _ := strings.Cut(rest, ".")
	if b == "" {
		return a
	}
	b, _, _ = strings.Cut(b, ".")
	return a + "." + b
}
