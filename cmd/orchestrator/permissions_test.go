package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/campaign-orchestrator/orchestrator/internal/config"
	"github.com/campaign-orchestrator/orchestrator/internal/store/redistest"
)

// The users of deploy/nats/auth.conf and the passwords the test gives them.
var permUsers = map[string]string{
	"worker": "worker-pw", "ingress": "ingress-pw", "acme": "acme-pw", "operator": "operator-pw",
}

// violationLog records the server's permission violations.
type violationLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *violationLog) add(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if strings.Contains(msg, "Violation") {
		l.mu.Lock()
		l.lines = append(l.lines, msg)
		l.mu.Unlock()
	}
}

func (l *violationLog) Noticef(f string, v ...any) { l.add(f, v...) }
func (l *violationLog) Warnf(f string, v ...any)   { l.add(f, v...) }
func (l *violationLog) Fatalf(f string, v ...any)  { l.add(f, v...) }
func (l *violationLog) Errorf(f string, v ...any)  { l.add(f, v...) }
func (l *violationLog) Debugf(f string, v ...any)  {}
func (l *violationLog) Tracef(f string, v ...any)  {}

func (l *violationLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// startPermServer runs nats-server in-process with deploy/nats/server.conf
// (which includes auth.conf) as shipped, except for the listen port and the
// storage directory.
func startPermServer(t *testing.T) (*server.Server, *violationLog) {
	t.Helper()
	for u, pw := range permUsers {
		t.Setenv("NATS_"+strings.ToUpper(u)+"_PASSWORD", pw)
	}
	opts, err := server.ProcessConfigFile("../../deploy/nats/server.conf")
	if err != nil {
		t.Fatalf("deploy/nats/server.conf: %v", err)
	}
	opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", server.RANDOM_PORT, 0
	opts.StoreDir, opts.NoSigs = t.TempDir(), true
	opts.SyncAlways = false
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	log := &violationLog{}
	srv.SetLoggerV2(log, false, false, false)
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server with deploy/nats/server.conf not ready")
	}
	return srv, log
}

// userURL is the server's URL with user's credentials.
func userURL(srv *server.Server, user string) string {
	return strings.Replace(srv.ClientURL(), "nats://", "nats://"+user+":"+permUsers[user]+"@", 1)
}

// permitted reports whether user may publish on subject (pub) or subscribe
// to it (sub): the server answers a violation with -ERR before the PONG
// of the flush, and nats.go records it as the connection's last error.
func permitted(t *testing.T, srv *server.Server, user, op, subject string) bool {
	t.Helper()
	nc, err := nats.Connect(userURL(srv, user), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	defer nc.Close()
	switch op {
	case "pub":
		err = nc.Publish(subject, []byte("{}"))
	case "sub":
		_, err = nc.SubscribeSync(subject)
	}
	if err != nil {
		t.Fatalf("%s %s %s: %v", user, op, subject, err)
	}
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		t.Fatalf("flush: %v", err)
	}
	last := nc.LastError()
	if last != nil && !strings.Contains(last.Error(), "Permissions Violation") {
		t.Fatalf("%s %s %s: unexpected error %v", user, op, subject, last)
	}
	return last == nil
}

// TestNATSPermissions checks deploy/nats/auth.conf's allow/deny table
// against a real server running it.
func TestNATSPermissions(t *testing.T) {
	srv, _ := startPermServer(t)
	tests := []struct {
		user, op, subject string
		want              bool
	}{
		// tenant acme: its own commands, never advance, never another tenant's
		{"acme", "pub", "campaign.cmd.acme.spring.create", true},
		{"acme", "pub", "campaign.cmd.acme.spring.start", true},
		{"acme", "pub", "campaign.cmd.acme.spring.advance", false},
		{"acme", "pub", "campaign.cmd.globex.spring.create", false},
		{"acme", "pub", "campaign.evt.acme.spring.campaign.completed", false},
		{"acme", "pub", "campaign.dlq.acme.spring", false},
		{"acme", "pub", "$JS.API.STREAM.PURGE.CAMPAIGN_COMMANDS", false},
		{"acme", "sub", "campaign.evt.acme.>", true},
		{"acme", "sub", "campaign.evt.globex.>", false},
		{"acme", "sub", "campaign.cmd.>", false},
		// the ingress: any tenant's commands but advance; no event, no DLQ
		{"ingress", "pub", "campaign.cmd.acme.spring.create", true},
		{"ingress", "pub", "campaign.cmd.globex.x.cancel", true},
		{"ingress", "pub", "campaign.cmd.acme.spring.advance", false},
		{"ingress", "pub", "campaign.evt.acme.spring.campaign.completed", false},
		{"ingress", "pub", "campaign.dlq.acme.spring", false},
		{"ingress", "pub", "$JS.API.STREAM.UPDATE.CAMPAIGN_COMMANDS", false},
		{"ingress", "pub", "$JS.API.STREAM.DELETE.CAMPAIGN_EVENTS", false},
		{"ingress", "pub", "$JS.API.CONSUMER.MSG.NEXT.CAMPAIGN_COMMANDS.orchestrator", false},
		{"ingress", "pub", "$JS.API.DIRECT.GET.CAMPAIGN_EVENTS", true},
		{"ingress", "sub", "campaign.evt.acme.spring.>", true},
		{"ingress", "sub", "campaign.cmd.>", false},
		{"ingress", "sub", "$JS.EVENT.ADVISORY.>", false},
		// the workers: what they use, nothing else
		{"worker", "pub", "campaign.evt.acme.spring.campaign.completed", true},
		{"worker", "pub", "campaign.dlq.acme.spring", true},
		{"worker", "pub", "campaign.cmd.acme.spring.advance", true},
		{"worker", "pub", "$JS.API.STREAM.UPDATE.CAMPAIGN_COMMANDS", true},
		{"worker", "pub", "$JS.API.CONSUMER.MSG.NEXT.CAMPAIGN_COMMANDS.orchestrator", true},
		{"worker", "pub", "$JS.ACK.CAMPAIGN_COMMANDS.orchestrator.1.5.5.1700000000000000000.0", true},
		{"worker", "pub", "$JS.API.STREAM.MSG.DELETE.CAMPAIGN_COMMANDS", true},
		{"worker", "pub", "$JS.API.STREAM.MSG.DELETE.CAMPAIGN_EVENTS", false},
		{"worker", "pub", "$JS.API.STREAM.DELETE.CAMPAIGN_COMMANDS", false},
		{"worker", "pub", "$JS.API.STREAM.PURGE.CAMPAIGN_EVENTS", false},
		{"worker", "pub", "$JS.API.CONSUMER.CREATE.CAMPAIGN_COMMANDS.other", false},
		{"worker", "pub", "$JS.API.CONSUMER.DELETE.CAMPAIGN_COMMANDS.orchestrator", false},
		// orchestrator rebuild's ordered consumer on the events, nothing on the DLQ
		{"worker", "pub", "$JS.API.CONSUMER.CREATE.CAMPAIGN_EVENTS.x1.campaign.evt.acme.*.>", true},
		{"worker", "pub", "$JS.API.CONSUMER.MSG.NEXT.CAMPAIGN_EVENTS.x1", true},
		{"worker", "pub", "$JS.API.CONSUMER.CREATE.CAMPAIGN_DLQ.x1", false},
		{"worker", "pub", "$JS.API.STREAM.PURGE.CAMPAIGN_EVENTS.x1", false},
		{"worker", "pub", "other.subject", false},
		{"worker", "sub", "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.CAMPAIGN_COMMANDS.orchestrator", true},
		{"worker", "sub", "campaign.cmd.>", false},
		{"worker", "sub", "campaign.evt.>", false},
		// the operator: reads, never publishes a message or changes a stream
		{"operator", "pub", "campaign.cmd.acme.spring.create", false},
		{"operator", "pub", "campaign.cmd.acme.spring.advance", false},
		{"operator", "pub", "campaign.evt.acme.spring.campaign.completed", false},
		{"operator", "pub", "campaign.dlq.acme.spring", false},
		{"operator", "pub", "other.subject", false},
		{"operator", "pub", "$JS.API.STREAM.PURGE.CAMPAIGN_DLQ", false},
		{"operator", "pub", "$JS.API.STREAM.DELETE.CAMPAIGN_EVENTS", false},
		{"operator", "pub", "$JS.API.STREAM.MSG.DELETE.CAMPAIGN_DLQ", false},
		{"operator", "pub", "$JS.API.STREAM.UPDATE.CAMPAIGN_EVENTS", false},
		{"operator", "pub", "$JS.API.CONSUMER.CREATE.CAMPAIGN_COMMANDS.x", false},
		{"operator", "pub", "$JS.API.CONSUMER.DELETE.CAMPAIGN_COMMANDS.orchestrator", false},
		{"operator", "pub", "$JS.ACK.CAMPAIGN_COMMANDS.orchestrator.1.5.5.1700000000000000000.0", false},
		{"operator", "pub", "$JS.API.STREAM.INFO.CAMPAIGN_COMMANDS", true},
		{"operator", "pub", "$JS.API.CONSUMER.INFO.CAMPAIGN_COMMANDS.orchestrator", true},
		{"operator", "pub", "$JS.API.DIRECT.GET.CAMPAIGN_EVENTS.campaign.evt.acme.spring.>", true},
		{"operator", "pub", "$JS.API.CONSUMER.CREATE.CAMPAIGN_EVENTS.view.campaign.evt.acme.>", true},
		{"operator", "sub", "campaign.evt.>", true},
		{"operator", "sub", "campaign.dlq.>", true},
		{"operator", "sub", "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>", true},
		{"operator", "sub", "campaign.cmd.>", false},
	}
	for _, tc := range tests {
		if got := permitted(t, srv, tc.user, tc.op, tc.subject); got != tc.want {
			t.Errorf("%s %s %s: permitted %v, want %v", tc.user, tc.op, tc.subject, got, tc.want)
		}
	}
	if _, err := nats.Connect(strings.Replace(userURL(srv, "acme"), "acme-pw", "wrong", 1)); err == nil {
		t.Error("a wrong password was accepted")
	}
	if _, err := nats.Connect(srv.ClientURL()); err == nil {
		t.Error("a connection without credentials was accepted")
	}
}

// TestNATSPermissionsServe runs a worker and an ingress, each with its own
// user of deploy/nats/auth.conf, and a tenant publisher: a campaign
// created over HTTP and one published by the tenant on NATS both complete,
// and the server records no permission violation at all (every subject
// the service uses is allowed).
func TestNATSPermissionsServe(t *testing.T) {
	srv, violations := startPermServer(t)
	down, _ := newDownstream(t)
	rurl, _ := redistest.Start(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	start := func(role, user string) *App {
		cfg := testConfig(t, map[string]string{"NATS_URL": userURL(srv, user), "REDIS_URL": rurl, "STEPS_BASE_URL": down.URL})
		cfg.Role = config.Role(role)
		app, err := NewApp(ctx, cfg, log, Options{})
		if err != nil {
			t.Fatalf("%s as NATS user %s: %v", role, user, err)
		}
		done := make(chan error, 1)
		go func() { done <- app.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			<-done
			_ = app.Close()
		})
		return app
	}
	start("worker", "worker")
	ingress := start("ingress", "ingress")
	base := "http://" + ingress.HTTPAddr()

	req, _ := http.NewRequest("POST", base+"/api/v1/campaigns", strings.NewReader(`{"campaign_id":"autumn-sale","name":"Autumn sale","start":true}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Tenant-ID", "acme")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("create over HTTP: %d", res.StatusCode)
	}
	tenant, err := nats.Connect(userURL(srv, "acme"))
	if err != nil {
		t.Fatal(err)
	}
	defer tenant.Close()
	m := nats.NewMsg("campaign.cmd.acme.autumn.create")
	m.Header.Set("Nats-Msg-Id", "autumn-1")
	m.Data = []byte(`{"id":"autumn-1","type":"create","tenant_id":"acme","campaign_id":"autumn","payload":{"name":"Autumn","start":true}}`)
	if _, err := tenant.RequestMsg(m, 5*time.Second); err != nil {
		t.Fatalf("tenant publish with PubAck: %v", err)
	}
	for _, id := range []string{"autumn-sale", "autumn"} {
		waitUntil(t, 30*time.Second, id+" completed", func() bool {
			req, _ := http.NewRequest("GET", base+"/api/v1/campaigns/"+id, nil)
			req.Header.Set("X-Tenant-ID", "acme")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				return false
			}
			defer res.Body.Close()
			var st struct {
				State string `json:"state"`
			}
			_ = json.NewDecoder(res.Body).Decode(&st)
			return st.State == "completed"
		})
	}
	// The event history (direct gets by the ingress) and readiness.
	for _, path := range []string{"/api/v1/campaigns/autumn-sale/events", "/readyz"} {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("X-Tenant-ID", "acme")
		res, err := http.DefaultClient.Do(req)
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %v %v", path, res, err)
		}
		res.Body.Close()
	}
	if v := violations.all(); len(v) > 0 {
		t.Fatalf("permission violations while serving:\n%s", strings.Join(v, "\n"))
	}

	// The read-only operator: trace and dlq list work with its user.
	out, err := cli(t, ctx, "trace", "acme/autumn-sale", "--nats-url", userURL(srv, "operator"))
	if err != nil || !strings.Contains(out, "completed") {
		t.Fatalf("trace as operator: %v\n%s", err, out)
	}
	if _, err := cli(t, ctx, "dlq", "list", "--nats-url", userURL(srv, "operator")); err != nil {
		t.Fatalf("dlq list as operator: %v", err)
	}
	if v := violations.all(); len(v) > 0 {
		t.Fatalf("permission violations of trace or dlq list as operator:\n%s", strings.Join(v, "\n"))
	}
	t.Run("OperatorNatsCLI", func(t *testing.T) {
		bin := findNatsCLI(t)
		readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
		if err != nil {
			t.Fatal(err)
		}
		n := &natsCLI{t: t, bin: bin, readme: string(readme),
			env: append(os.Environ(), "NATS_URL="+userURL(srv, "operator"), "XDG_CONFIG_HOME="+t.TempDir(), "HOME="+t.TempDir())}
		out := n.run(n.recipe(`nats sub --stream CAMPAIGN_EVENTS --all -T 'campaign.evt.acme.autumn-sale.>'`)...)
		wantInOrder(t, "nats sub --stream as operator", out, "acme.autumn-sale.1\n", "acme.autumn-sale.13\n")
		out = n.run(n.recipe(`nats stream get CAMPAIGN_EVENTS --last-for 'campaign.evt.acme.autumn-sale.>'`)...)
		wantInOrder(t, "nats stream get as operator", out, "Nats-Msg-Id: acme.autumn-sale.13")
		out = n.run(n.recipe(`nats consumer info CAMPAIGN_COMMANDS orchestrator`)...)
		wantInOrder(t, "nats consumer info as operator", out, "Outstanding Acks: 0")
		n.run(n.recipe(`nats stream info CAMPAIGN_COMMANDS`)...)
		n.run(n.recipe(`nats stream subjects CAMPAIGN_DLQ`)...)
		if v := violations.all(); len(v) > 0 {
			t.Fatalf("permission violations of the read-only recipes:\n%s", strings.Join(v, "\n"))
		}
		// Anything that writes is refused.
		for _, args := range [][]string{
			{"pub", "--jetstream", "campaign.cmd.acme.autumn-sale.cancel", "{}"},
			{"stream", "purge", "CAMPAIGN_DLQ", "-f"},
			{"stream", "rmm", "CAMPAIGN_EVENTS", "1", "-f"},
		} {
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			cmd, out := n.command(ctx, append(args, "--timeout", "2s"))
			if err := cmd.Run(); err == nil {
				t.Errorf("nats %s as operator succeeded:\n%s", strings.Join(args, " "), out.String())
			}
			cancel()
		}
		if len(violations.all()) == 0 {
			t.Error("the operator's writes left no permission violation in the server log")
		}
	})
	// The admin commands that auth.conf gives the worker's user: streams
	// apply, dlq replay and rebuild, each run as that user, succeed and
	// leave no violation (rebuild reads CAMPAIGN_EVENTS with an ordered
	// consumer, dlq replay publishes and purges).
	t.Run("AdminCommandsAsWorker", func(t *testing.T) {
		before := len(violations.all())
		worker := userURL(srv, "worker")
		if out, err := cli(t, ctx, "streams", "apply", "--nats-url", worker); err != nil {
			t.Fatalf("streams apply as worker: %v\n%s", err, out)
		}
		// A start of a campaign that does not exist is dead-lettered.
		g := nats.NewMsg("campaign.cmd.acme.ghost.start")
		g.Header.Set("Nats-Msg-Id", "ghost-1")
		g.Data = []byte(`{"id":"ghost-1","type":"start","tenant_id":"acme","campaign_id":"ghost"}`)
		if _, err := tenant.RequestMsg(g, 5*time.Second); err != nil {
			t.Fatalf("tenant publish: %v", err)
		}
		var seq uint64
		waitUntil(t, 30*time.Second, "ghost-1 dead-lettered", func() bool {
			out, err := cli(t, ctx, "dlq", "list", "--json", "--nats-url", userURL(srv, "operator"))
			var entries []struct {
				Seq       uint64 `json:"seq"`
				CommandID string `json:"command_id"`
			}
			if err != nil || json.Unmarshal([]byte(out), &entries) != nil {
				return false
			}
			for _, e := range entries {
				if e.CommandID == "ghost-1" {
					seq = e.Seq
				}
			}
			return seq != 0
		})
		out, err := cli(t, ctx, "dlq", "replay", fmt.Sprint(seq), "--new-id", "--purge", "--nats-url", worker)
		if err != nil {
			t.Fatalf("dlq replay as worker: %v\n%s", err, out)
		}
		t.Logf("dlq replay: %s", strings.TrimSpace(out))

		// Redis loses everything; rebuild as the worker brings both campaigns back.
		rc := redis.NewClient(&redis.Options{Addr: strings.TrimSuffix(strings.TrimPrefix(rurl, "redis://"), "/0")})
		defer rc.Close()
		if err := rc.FlushAll(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		out, err = cli(t, ctx, "rebuild", "--tenant", "acme", "--nats-url", worker, "--redis-url", rurl)
		if err != nil {
			t.Fatalf("rebuild as worker: %v\n%s", err, out)
		}
		if n := summary(t, out, "rebuilt"); n["rebuilt"]+n["skipped"] != 2 || n["failed"] != 0 {
			t.Fatalf("rebuild as worker said:\n%s", out)
		}
		for _, id := range []string{"autumn-sale", "autumn"} {
			req, _ := http.NewRequest("GET", base+"/api/v1/campaigns/"+id, nil)
			req.Header.Set("X-Tenant-ID", "acme")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var st struct {
				State string `json:"state"`
			}
			_ = json.NewDecoder(res.Body).Decode(&st)
			res.Body.Close()
			if st.State != "completed" {
				t.Fatalf("%s after rebuild: %d, state %q", id, res.StatusCode, st.State)
			}
		}
		if v := violations.all()[before:]; len(v) > 0 {
			t.Fatalf("permission violations of the worker's admin commands:\n%s", strings.Join(v, "\n"))
		}
	})
}
