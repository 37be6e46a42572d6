package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/streams"
)

func TestJetStreamNotReady(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"no meta leader", &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, true},
		{"peers not up", fmt.Errorf("stream X: %w", &jetstream.APIError{Code: 503, ErrorCode: 10023, Description: "insufficient resources"}), true},
		{"no responders", fmt.Errorf("create: %w", nats.ErrNoResponders), true},
		{"request timeout", nats.ErrTimeout, true},
		{"replicas on one server", &jetstream.APIError{Code: 500, ErrorCode: 10074, Description: "replicas > 1 not supported in non-clustered mode"}, false},
		{"JetStream off", jetstream.ErrJetStreamNotEnabled, false},
		{"permission", errors.New("nats: permissions violation for publish to \"$JS.API.STREAM.CREATE.X\""), false},
		{"name in use", jetstream.ErrStreamNameAlreadyInUse, false},
	} {
		if got := jetStreamNotReady(tc.err); got != tc.want {
			t.Errorf("%s: jetStreamNotReady(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// TestApplyStreamsWaitsForTheCluster starts a worker's stream set-up on the
// first node of a 3-node JetStream cluster whose other nodes are not up yet
// (no meta leader: JetStream cannot place anything), then starts them: the
// set-up goes on once the cluster has formed, and the streams have their 3
// replicas.
func TestApplyStreamsWaitsForTheCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	clusterPorts, clientPorts := freePorts(t, 3), freePorts(t, 3)
	var routes []*url.URL
	for _, p := range clusterPorts {
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)})
	}
	start := func(i int) *server.Server {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: clientPorts[i],
			JetStream: true, StoreDir: t.TempDir(), NoSigs: true,
			Cluster: server.ClusterOpts{Name: "forming", Host: "127.0.0.1", Port: clusterPorts[i]},
			Routes:  routes,
		}
		srv, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("node %d: %v", i+1, err)
		}
		go srv.Start()
		if !srv.ReadyForConnections(10 * time.Second) {
			t.Fatalf("node %d not ready", i+1)
		}
		t.Cleanup(srv.Shutdown)
		return srv
	}
	first := start(0)
	nc, err := nats.Connect(first.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	a := &App{js: js, log: slog.New(slog.NewTextHandler(logs, nil))}
	specs, err := events.LoadSpecs(streams.FS)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.applyStreams(ctx, specs, events.Overrides{Replicas: 3}) }()

	// Retrying (it said so), not returned, while the first node is alone.
	for !strings.Contains(logs.String(), "trying again") {
		select {
		case err := <-done:
			t.Fatalf("applyStreams returned before the cluster formed: %v", err)
		case <-ctx.Done():
			t.Fatal("applyStreams neither returned nor tried again")
		case <-time.After(20 * time.Millisecond):
		}
	}
	start(1)
	start(2)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("applyStreams: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("applyStreams still waiting after the cluster formed")
	}
	for _, s := range specs.Streams {
		info, err := js.Stream(ctx, s.Name)
		if err != nil {
			t.Fatalf("stream %s: %v", s.Name, err)
		}
		if r := info.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("stream %s has %d replicas, want 3", s.Name, r)
		}
	}
	if n := strings.Count(logs.String(), "trying again"); n == 0 || n > 5 {
		t.Errorf("%d \"trying again\" warnings, want one per change of error (1 to 5):\n%s", n, logs.String())
	}
}

// freePorts returns n loopback ports free a moment ago.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var out []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		_ = ln.Close()
	}
	return out
}
