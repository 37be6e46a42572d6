package redistest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Cluster is a Redis Cluster of private redis-server processes on loopback,
// masters only, created with `redis-cli --cluster create`.
type Cluster struct {
	Nodes []*Server
}

// NewCluster starts masters redis-server processes in cluster mode (each
// with its own cluster bus port, so no port+10000 is needed), joins them
// with `redis-cli --cluster create`, and waits until every node reports
// cluster_state:ok with all 16384 slots assigned. The servers are killed in
// tb.Cleanup. It fails the test if redis-cli is missing or the cluster does
// not form within a minute.
func NewCluster(tb testing.TB, masters int) *Cluster {
	tb.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		tb.Fatalf("redistest: redis-cli not found (%v): install redis-tools or redis-server", err)
	}
	c := &Cluster{}
	for range masters {
		c.Nodes = append(c.Nodes, NewWith(tb,
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(FreePort(tb)), "--cluster-node-timeout", "5000"))
	}
	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		tb.Fatalf("redistest: redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	deadline := time.Now().Add(time.Minute)
	for _, n := range c.Nodes {
		for {
			info, err := bulk(n.Addr(), "CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_slots_assigned:16384") {
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("redistest: cluster node %s not ok after a minute (%v):\n%s\n%s", n.Addr(), err, info, n.logTail())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c
}

// Addrs are the nodes' host:port, in start order.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr()
	}
	return out
}

// bulk sends one command and returns its bulk-string answer.
func bulk(addr string, args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte(encode(args...))); err != nil {
		return "", err
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasPrefix(line, "$") && !strings.HasPrefix(line, "=") {
		return "", fmt.Errorf("%s: %q", strings.Join(args, " "), line)
	}
	n, err := strconv.Atoi(line[1:])
	if err != nil || n < 0 {
		return "", fmt.Errorf("%s: bad length %q", strings.Join(args, " "), line)
	}
	buf := make([]byte, n+2)
	if _, err := io.ReadFull(r, buf); err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}
