//go:build chaos

package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSNode is one nats-server of a NATSCluster: a child process with its
// own configuration file and JetStream directory, whose client and route
// ports stay the same across Kill and Start.
type NATSNode struct {
	proc
	Name        string // server_name: n1, n2, n3
	bin, dir    string
	port, route int
}

// NATSCluster is a JetStream cluster of nats-server processes on 127.0.0.1,
// routed to each other (cluster "chaos").
type NATSCluster struct {
	Nodes []*NATSNode
}

// StartNATSCluster starts n nats-server processes in a cluster, with their
// data under dir/<name>, waits until JetStream answers (a meta leader is
// elected), and kills them in t.Cleanup.
func StartNATSCluster(t testing.TB, bin, dir string, n int) *NATSCluster {
	t.Helper()
	c := &NATSCluster{}
	for i := range n {
		nd := &NATSNode{Name: "n" + strconv.Itoa(i+1), bin: bin, dir: filepath.Join(dir, "nats-n"+strconv.Itoa(i+1))}
		if err := os.MkdirAll(nd.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if nd.port, err = freePort(); err != nil {
			t.Fatal(err)
		}
		if nd.route, err = freePort(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nd.kill)
		c.Nodes = append(c.Nodes, nd)
	}
	for _, nd := range c.Nodes {
		if err := nd.launch(c); err != nil {
			t.Fatalf("nats-server %s: %v", nd.Name, err)
		}
	}
	for _, nd := range c.Nodes {
		if err := nd.waitClients(15 * time.Second); err != nil {
			t.Fatalf("nats-server %s: %v", nd.Name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.WaitJetStream(ctx, n); err != nil {
		t.Fatalf("NATS cluster: %v", err)
	}
	return c
}

// URLs is the NATS_URL of the whole cluster, comma-separated.
func (c *NATSCluster) URLs() string {
	var out []string
	for _, nd := range c.Nodes {
		out = append(out, nd.URL())
	}
	return strings.Join(out, ",")
}

// Node returns the node named name (nil if none).
func (c *NATSCluster) Node(name string) *NATSNode {
	for _, nd := range c.Nodes {
		if nd.Name == name {
			return nd
		}
	}
	return nil
}

// WaitJetStream waits until the cluster can place a stream of replicas
// replicas: JetStream answers (a meta leader) and knows enough peers (a meta
// leader alone answers "no suitable peers for placement" for a while). It
// creates and deletes a small memory stream to know.
func (c *NATSCluster) WaitJetStream(ctx context.Context, replicas int) error {
	nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	var last error
	if err := waitFor(ctx, 200*time.Millisecond, func() bool {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if _, last = js.CreateStream(actx, jetstream.StreamConfig{Name: "CHAOS_PROBE", Subjects: []string{"chaos.probe"},
			Storage: jetstream.MemoryStorage, Replicas: replicas}); last != nil {
			return false
		}
		last = js.DeleteStream(actx, "CHAOS_PROBE")
		return last == nil
	}); err != nil {
		return fmt.Errorf("JetStream cannot place a stream of %d replicas: %v (last: %v)", replicas, err, last)
	}
	return nil
}

// URL is the node's client URL.
func (nd *NATSNode) URL() string { return "nats://127.0.0.1:" + strconv.Itoa(nd.port) }

// Pid is the running process's id (0 when down).
func (nd *NATSNode) Pid() int { return nd.pid() }

// Up reports whether the process runs.
func (nd *NATSNode) Up() bool { return nd.running() }

// LogPath is the node's log (appended to across restarts).
func (nd *NATSNode) LogPath() string { return filepath.Join(nd.dir, "nats-server.log") }

// Kill sends SIGKILL and waits for the exit.
func (nd *NATSNode) Kill() { nd.kill() }

// Start starts the node again (same ports, same data) and waits until it
// accepts clients.
func (nd *NATSNode) Start(c *NATSCluster) error {
	if err := nd.launch(c); err != nil {
		return err
	}
	return nd.waitClients(15 * time.Second)
}

// launch writes the configuration (routes to every node of c) and starts
// nats-server without waiting.
func (nd *NATSNode) launch(c *NATSCluster) error {
	var routes []string
	for _, o := range c.Nodes {
		if o != nd {
			routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", o.route))
		}
	}
	conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
jetstream {
  store_dir: %q
}
cluster {
  name: chaos
  listen: 127.0.0.1:%d
  routes: [%s]
}
`, nd.Name, nd.port, filepath.Join(nd.dir, "jetstream"), nd.route, strings.Join(routes, ", "))
	path := filepath.Join(nd.dir, "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	return nd.start(nd.bin, []string{"-c", path}, []string{"PATH=" + os.Getenv("PATH")}, nd.LogPath())
}

func (nd *NATSNode) waitClients(d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		select {
		case <-nd.exited():
			return fmt.Errorf("exited at start-up:\n%s", tail(nd.LogPath(), 2000))
		default:
		}
		nc, err := nats.Connect(nd.URL(), nats.Timeout(500*time.Millisecond), nats.MaxReconnects(0))
		if err == nil {
			nc.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not accepting connections on %d after %s:\n%s", nd.port, d, tail(nd.LogPath(), 2000))
}

// Asset is a stream, or a consumer of a stream, of the cluster.
type Asset struct {
	Stream, Consumer string // Consumer "" for the stream itself
}

func (a Asset) String() string {
	if a.Consumer == "" {
		return "stream " + a.Stream
	}
	return "consumer " + a.Stream + "/" + a.Consumer
}

// clusterInfo is the cluster part of $JS.API.STREAM.INFO or
// $JS.API.CONSUMER.INFO for a.
func clusterInfo(ctx context.Context, js jetstream.JetStream, a Asset) (*jetstream.ClusterInfo, error) {
	// Short: while there is no leader nobody answers, and the time to a
	// new leader is measured by polling this.
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	st, err := js.Stream(ctx, a.Stream) // a STREAM.INFO request
	if err != nil {
		return nil, err
	}
	if a.Consumer == "" {
		ci := st.CachedInfo().Cluster
		if ci == nil {
			return nil, errors.New("no cluster info: not clustered")
		}
		return ci, nil
	}
	cons, err := st.Consumer(ctx, a.Consumer) // a CONSUMER.INFO request
	if err != nil {
		return nil, err
	}
	ci := cons.CachedInfo().Cluster
	if ci == nil {
		return nil, errors.New("no cluster info: not clustered")
	}
	return ci, nil
}

// Leader is the name of a's raft leader ("" while there is none).
func Leader(ctx context.Context, js jetstream.JetStream, a Asset) (string, error) {
	ci, err := clusterInfo(ctx, js, a)
	if err != nil {
		return "", err
	}
	return ci.Leader, nil
}

// Replicated reports whether a has a leader and every one of its want
// replicas besides it is current and online; it returns what is missing.
func Replicated(ctx context.Context, js jetstream.JetStream, a Asset, want int) (bool, string) {
	ci, err := clusterInfo(ctx, js, a)
	if err != nil {
		return false, err.Error()
	}
	if ci.Leader == "" {
		return false, "no leader"
	}
	if len(ci.Replicas) != want-1 {
		return false, fmt.Sprintf("leader %s with %d other replicas, want %d", ci.Leader, len(ci.Replicas), want-1)
	}
	for _, p := range ci.Replicas {
		if !p.Current || p.Offline {
			return false, fmt.Sprintf("replica %s current %v offline %v lag %d", p.Name, p.Current, p.Offline, p.Lag)
		}
	}
	return true, ""
}
