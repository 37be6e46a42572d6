//go:build chaos

package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// Fault kinds of TestChaosMakeCluster: what `deploy/local/cluster.sh stop`
// and `start` did, as the README's local cluster section shows them.
const (
	FaultScriptStop  = "cluster.sh-stop"  // cluster.sh stop NAME (SIGTERM, SIGKILL after 15 s)
	FaultScriptStart = "cluster.sh-start" // cluster.sh start NAME
)

// localCluster is deploy/local/cluster.sh run on free ports, with its
// binaries, pid files and logs in a test directory.
type localCluster struct {
	t      *testing.T
	script string
	dir    string // CLUSTER_DIR
	env    []string
	ports  map[string]int // the script's port variables
}

// run runs cluster.sh with args and returns its output; it fails the test
// when the script fails.
func (c *localCluster) run(args ...string) string {
	c.t.Helper()
	out, err := c.try(args...)
	if err != nil {
		c.t.Fatalf("cluster.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (c *localCluster) try(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.script, args...)
	cmd.Env = c.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// pids reads the script's pid files: name → pid.
func (c *localCluster) pids() map[string]int {
	c.t.Helper()
	files, err := filepath.Glob(filepath.Join(c.dir, "*.pid"))
	if err != nil {
		c.t.Fatal(err)
	}
	out := map[string]int{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			c.t.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			c.t.Fatalf("%s: %v", f, err)
		}
		out[strings.TrimSuffix(filepath.Base(f), ".pid")] = pid
	}
	return out
}

// alive reports whether pid is a live process (a zombie is not).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) S …: the state follows the last ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// status200 reports whether GET url answers 200.
func status200(url string) bool {
	client := &http.Client{Timeout: time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// TestChaosMakeCluster is `make cluster` itself under `make test-cluster`:
// deploy/local/cluster.sh starts its three nats-server nodes, redis-server,
// the step simulator, two workers and the ingress (on free ports, the step
// calls pointed at the downstream fake); 200 campaigns are created and
// started over the ingress's HTTP API and on NATS while `cluster.sh stop
// nats-n1` and `cluster.sh stop worker-1` take a node and a worker away and
// `cluster.sh start` brings them back, as the README shows. Every campaign
// must complete, the checker must find nothing, and `cluster.sh down` must
// leave no process running and no port taken.
func TestChaosMakeCluster(t *testing.T) {
	if os.Getenv("CHAOS_LOCAL_CLUSTER") == "" {
		t.Skip("run by make test-cluster (CHAOS_LOCAL_CLUSTER=1)")
	}
	seed := *flagSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano()) % 1_000_000_007
	}
	t.Logf("%s: seed %d (replay: CHAOS_LOCAL_CLUSTER=1 go test -tags chaos ./internal/chaos/ -run '^%s$' -v -chaos.seed %d)", t.Name(), seed, t.Name(), seed)
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := workDir(t)

	// The script's binaries: the suite's orchestrator and nats-server, and
	// the step simulator (which the script starts; the workers call the fake).
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, src := range map[string]string{"orchestrator": binaries.Orchestrator, "nats-server": binaries.NATSServer} {
		if err := os.Symlink(src, filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "stepsim"), "./cmd/stepsim")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/stepsim: %v\n%s", err, out)
	}

	down := NewDownstream(seed, *flagLatency, 0) // no step fails: every campaign completes
	t.Cleanup(down.Close)                        // after cluster.sh down (Cleanup is last-in first-out)
	c := &localCluster{t: t, script: filepath.Join(root, "deploy", "local", "cluster.sh"), dir: filepath.Join(dir, "cluster"), ports: map[string]int{}}
	for _, v := range []string{"NATS_PORT_1", "NATS_PORT_2", "NATS_PORT_3", "NATS_ROUTE_PORT_1", "NATS_ROUTE_PORT_2", "NATS_ROUTE_PORT_3",
		"NATS_HTTP_PORT_1", "NATS_HTTP_PORT_2", "NATS_HTTP_PORT_3", "REDIS_PORT", "STEPSIM_PORT", "INGRESS_PORT", "WORKER_PORT_1", "WORKER_PORT_2"} {
		p, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		c.ports[v] = p
	}
	c.env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "TMPDIR=" + dir, "BIN=" + bin, "CLUSTER_DIR=" + c.dir,
		"STEPS_BASE_URL=" + down.URL(), "OTEL_SDK_DISABLED=true", "LOG_LEVEL=info"}
	for v, p := range c.ports {
		c.env = append(c.env, v+"="+strconv.Itoa(p))
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range []string{"worker-1", "worker-2", "ingress", "nats-n1"} {
				t.Logf("%s log ends:\n%s", n, tail(filepath.Join(c.dir, n+".log"), 2000))
			}
		}
		if out, err := c.try("down"); err != nil {
			t.Errorf("cluster.sh down: %v\n%s", err, out)
		}
	})

	start := time.Now()
	t.Logf("cluster.sh up:\n%s", c.run("up"))
	t.Logf("cluster up in %s", time.Since(start).Round(time.Millisecond))
	names := []string{"nats-n1", "nats-n2", "nats-n3", "redis", "stepsim", "worker-1", "worker-2", "ingress"}
	seen := map[int]bool{} // every pid the script started, to check after down
	for _, n := range names {
		pid, ok := c.pids()[n]
		if !ok || !alive(pid) {
			t.Fatalf("%s not running after cluster.sh up (pid %d)", n, pid)
		}
		seen[pid] = true
	}

	var urls []string
	for i := 1; i <= 3; i++ {
		urls = append(urls, "nats://127.0.0.1:"+strconv.Itoa(c.ports["NATS_PORT_"+strconv.Itoa(i)]))
	}
	natsURL := strings.Join(urls, ",")
	redisAddr := "127.0.0.1:" + strconv.Itoa(c.ports["REDIS_PORT"])
	ingress := "127.0.0.1:" + strconv.Itoa(c.ports["INGRESS_PORT"])
	s := &scenario{t: t, name: t.Name(), seed: seed, scale: 1, start: start, faults: NewFaults(),
		rng:   rand.New(rand.NewPCG(seed, 0xfa17)),
		cl:    &Cluster{t: t, Dir: dir, NATS: natsURL, Redis: "redis://" + redisAddr + "/0", Down: down},
		addrs: func() []string { return []string{ingress} }}
	if s.nc, err = nats.Connect(natsURL, nats.MaxReconnects(-1)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.nc.Close)
	if s.js, err = jetstream.New(s.nc); err != nil {
		t.Fatal(err)
	}
	s.rdb = redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { s.rdb.Close() })
	// Creates (80 % with "start": true, the rest followed by a start), half
	// over the ingress, half on NATS; no other verb, so every campaign runs
	// to completed.
	s.load = NewLoad(LoadConfig{
		Seed: seed, Campaigns: 200, Tenants: []string{"acme", "globex", "initech"},
		Spread: 30 * time.Second, MaxVerbs: 0, MaxGap: 500 * time.Millisecond, HTTPShare: 0.5, PublishAttempts: 60,
	}, s.js, s.addrs, t.Logf)

	ctx := context.Background()
	loadDone := make(chan struct{})
	go func() { s.load.Run(ctx); close(loadDone) }()
	stop := func(name string) {
		t.Logf("cluster.sh stop %s: %s", name, strings.TrimSpace(c.run("stop", name)))
		s.faults.Add(FaultScriptStop, name)
	}
	startAgain := func(name, readyURL string) {
		t.Logf("cluster.sh start %s: %s", name, strings.TrimSpace(c.run("start", name)))
		s.faults.Add(FaultScriptStart, name)
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		if err := waitFor(wctx, 100*time.Millisecond, func() bool { return status200(readyURL) }); err != nil {
			t.Fatalf("%s not ready on %s after cluster.sh start: %v", name, readyURL, err)
		}
		seen[c.pids()[name]] = true
	}
	sleepCtx(ctx, 5*time.Second)
	stop("nats-n1")
	stop("worker-1")
	for _, n := range []string{"nats-n1", "worker-1"} {
		if pid, ok := c.pids()[n]; ok {
			t.Fatalf("%s: pid file left by cluster.sh stop (pid %d)", n, pid)
		}
	}
	if out := c.run("status"); !strings.Contains(out, "nats-n1: stopped") || !strings.Contains(out, "worker-1: stopped") {
		t.Fatalf("cluster.sh status after the stops:\n%s", out)
	}
	sleepCtx(ctx, 8*time.Second)
	startAgain("nats-n1", fmt.Sprintf("http://127.0.0.1:%d/healthz?js-enabled-only=true", c.ports["NATS_HTTP_PORT_1"]))
	startAgain("worker-1", fmt.Sprintf("http://127.0.0.1:%d/readyz", c.ports["WORKER_PORT_1"]))
	<-loadDone
	t.Logf("load sent in %s", time.Since(start).Round(time.Millisecond))

	sum := s.finish(4 * time.Minute)
	if sum.Campaigns != 200 || sum.FinalStates["completed"] != 200 {
		t.Errorf("%d campaigns, final states %v: want 200 completed", sum.Campaigns, sum.FinalStates)
	}
	if out := c.run("status"); strings.Count(out, ": running (pid") != len(names) {
		t.Errorf("cluster.sh status at the end, want all %d running:\n%s", len(names), out)
	}

	// make cluster-down: nothing left running, no pid file, every port free.
	t.Logf("cluster.sh down:\n%s", c.run("down"))
	for pid := range seen {
		if alive(pid) {
			t.Errorf("pid %d still runs after cluster.sh down", pid)
		}
	}
	if left := c.pids(); len(left) > 0 {
		t.Errorf("pid files left after cluster.sh down: %v", left)
	}
	for v, p := range c.ports {
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Errorf("%s port %d still taken after cluster.sh down: %v", v, p, err)
			continue
		}
		ln.Close()
	}
}
