//go:build chaos

package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Fault kinds of TestChaosLocalCluster, as counted in the summary.
const (
	FaultLocalNATSStop  = "local-nats-stop"  // a node of the deploy/local cluster stopped (SIGKILL)
	FaultLocalNATSStart = "local-nats-start" // started again from deploy/local/nats.conf with its data
	FaultLocalOrchStop  = "local-orch-stop"  // one of the two orchestrators stopped (SIGKILL)
	FaultLocalOrchStart = "local-orch-start" // started again
)

// startLocalNATS starts the three nodes of `make cluster` from
// deploy/local/nats.conf, as deploy/local/cluster.sh does, on free ports.
func startLocalNATS(t *testing.T, dir string) (*NATSCluster, func(nd *NATSNode) error) {
	t.Helper()
	conf, err := filepath.Abs(filepath.Join("..", "..", "deploy", "local", "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	c := &NATSCluster{}
	for i := range 3 {
		nd := &NATSNode{Name: "n" + strconv.Itoa(i+1), bin: binaries.NATSServer, dir: filepath.Join(dir, "nats-n"+strconv.Itoa(i+1))}
		if err := os.MkdirAll(nd.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if nd.port, err = freePort(); err != nil {
			t.Fatal(err)
		}
		if nd.route, err = freePort(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nd.kill)
		c.Nodes = append(c.Nodes, nd)
	}
	launch := func(nd *NATSNode) error {
		env := []string{"PATH=" + os.Getenv("PATH"), "NATS_NODE=" + nd.Name, "NATS_PORT=" + strconv.Itoa(nd.port),
			"NATS_HTTP=0", "NATS_CLUSTER=" + strconv.Itoa(nd.route), "NATS_STORE=" + filepath.Join(nd.dir, "jetstream")}
		for i, o := range c.Nodes {
			env = append(env, fmt.Sprintf("NATS_ROUTE_%d=nats-route://127.0.0.1:%d", i+1, o.route))
		}
		if err := nd.start(nd.bin, []string{"-c", conf}, env, nd.LogPath()); err != nil {
			return err
		}
		return nd.waitClients(15 * time.Second)
	}
	for _, nd := range c.Nodes {
		if err := launch(nd); err != nil {
			t.Fatalf("nats-server %s from deploy/local/nats.conf: %v", nd.Name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.WaitJetStream(ctx, 3); err != nil {
		t.Fatalf("local cluster: %v", err)
	}
	return c, launch
}

// TestChaosLocalCluster is `make test-cluster`: 200 campaigns on the local
// cluster's shape (the three nodes of deploy/local/nats.conf, every stream
// and the consumer with 3 replicas, Redis, two orchestrators) while one NATS
// node and one orchestrator are stopped and started again; the checker must
// find nothing. make test-chaos skips it (it runs under make test-cluster).
func TestChaosLocalCluster(t *testing.T) {
	if os.Getenv("CHAOS_LOCAL_CLUSTER") == "" {
		t.Skip("run by make test-cluster (CHAOS_LOCAL_CLUSTER=1)")
	}
	var nc *NATSCluster
	var launch func(*NATSNode) error
	s := newScenarioNATS(t, func(dir string) string {
		nc, launch = startLocalNATS(t, dir)
		return nc.URLs()
	})
	s.cl.env = append(s.cl.env, "STREAM_REPLICAS=3")
	s.load.cfg.Campaigns = 200
	s.load.cfg.Spread = 30 * time.Second
	s.load.cfg.PublishAttempts = 60
	orchs := s.startOrchs("A", "B")
	ctx := context.Background()
	loadDone := make(chan struct{})
	go func() { s.load.Run(ctx); close(loadDone) }()

	sleepCtx(ctx, 5*time.Second)
	nd := nc.Nodes[0]
	nd.Kill()
	s.faults.Add(FaultLocalNATSStop, nd.Name)
	o := orchs[0]
	o.Kill()
	s.faults.Add(FaultLocalOrchStop, o.Name)
	sleepCtx(ctx, 8*time.Second)
	if err := launch(nd); err != nil {
		t.Fatalf("restart %s: %v", nd.Name, err)
	}
	s.faults.Add(FaultLocalNATSStart, nd.Name)
	if err := o.Start(); err != nil {
		t.Fatalf("restart %s: %v", o.Name, err)
	}
	s.faults.Add(FaultLocalOrchStart, o.Name)
	<-loadDone
	sum := s.finish(4 * time.Minute)
	if got := sum.FinalStates; len(got) == 0 {
		t.Fatalf("no final states: %+v", sum)
	}
}
