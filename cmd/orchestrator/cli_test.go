package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/events/natstest"
	"github.com/campaign-orchestrator/orchestrator/internal/httpapi"
)

func noEnv(string) string { return "" }

// usageFlagLine is a flag's line in a usage text: two spaces, --name, and the
// type of its value (none for a boolean).
var usageFlagLine = regexp.MustCompile(`^  --[a-z0-9-]+( [^ ]+)?$`)

// --help (and -h) on every subcommand prints its own usage on stdout, and
// the process exits 0.
func TestHelpOfEverySubcommand(t *testing.T) {
	for _, sc := range subcommands {
		for _, h := range []string{"--help", "-h"} {
			args := append(strings.Fields(sc.path), h)
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), args, noEnv, &stdout, &stderr)
			if code := exitCode(err, io.Discard); code != 0 {
				t.Errorf("%v: exit %d (%v), want 0", args, code, err)
			}
			out := stdout.String()
			if !strings.HasPrefix(out, "usage: orchestrator "+sc.path+" ") || stderr.Len() > 0 {
				t.Errorf("%v: stdout lacks its usage, or stderr has something:\n%s\nstderr:\n%s", args, out, stderr.String())
			}
			if strings.Contains(out, "Usage of") {
				t.Errorf("%v: the flag package's default usage:\n%s", args, out)
			}
			// Every flag as --name, then its type in one word: no
			// single-dash form, no back-quoted words turned into a value
			// name (-processes orchestrator serve).
			for _, line := range strings.Split(out, "\n") {
				if strings.HasPrefix(line, "  -") && !usageFlagLine.MatchString(line) {
					t.Errorf("%v: flag line %q, want \"  --name [type]\"", args, line)
				}
			}
		}
	}
	for _, args := range [][]string{{"--help"}, {"help"}, {"dlq", "--help"}} {
		var stdout, stderr bytes.Buffer
		if code := exitCode(run(context.Background(), args, noEnv, &stdout, &stderr), io.Discard); code != 0 {
			t.Errorf("%v: exit %d", args, code)
		}
	}
	// A bad command line exits 2.
	for _, args := range [][]string{{}, {"bogus"}, {"dlq", "purge"}, {"trace", "--bogus"}, {"serve", "extra"},
		{"dashboard", "--bogus"}, {"dashboard", "extra"}, {"bench", "--bogus"}, {"bench", "--store", "disk"}, {"version", "extra"}} {
		if code := exitCode(run(context.Background(), args, noEnv, io.Discard, io.Discard), io.Discard); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}

// Each subcommand's usage shows its own flags only, each with its type and
// variable; no value from the environment, so no secret, is ever shown.
func TestUsageShowsTypesNotSecrets(t *testing.T) {
	secrets := map[string]string{
		"API_TOKENS":         "acme:a-very-secret-api-token-1234",
		"IDEMPOTENCY_SECRET": "0123456789abcdef-idempotency-secret",
		"NATS_URL":           "nats://user:nats-password-5678@127.0.0.1:4222",
		"REDIS_URL":          "redis://:redis-password-9012@127.0.0.1:6379",
	}
	env := func(k string) string { return secrets[k] }
	help := func(args ...string) string {
		var stdout bytes.Buffer
		if err := run(context.Background(), append(args, "--help"), env, &stdout, io.Discard); !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("%v --help: %v", args, err)
		}
		for _, v := range secrets {
			if strings.Contains(stdout.String(), v) || strings.Contains(stdout.String(), "nats-password") || strings.Contains(stdout.String(), "redis-password") {
				t.Errorf("%v --help shows an environment value:\n%s", args, stdout.String())
			}
		}
		return stdout.String()
	}
	serve := help("serve")
	for _, want := range []string{"--lock-ttl duration", "--workers int", "--stream-replicas int", "--api-tokens-file file",
		"--api-tokens secret", "--idempotency-secret secret", "--role role", "$LOCK_TTL, default 30s", "--http-addr host:port"} {
		if !strings.Contains(serve, want) {
			t.Errorf("serve --help lacks %q:\n%s", want, serve)
		}
	}
	if regexp.MustCompile("-api-tokens-file orchestrator|`").MatchString(serve) {
		t.Errorf("serve --help turned a back-quoted word into a value name:\n%s", serve)
	}
	apply := help("streams", "apply")
	flags := regexp.MustCompile(`(?m)^  --([a-z-]+)`).FindAllStringSubmatch(apply, -1)
	var got []string
	for _, f := range flags {
		got = append(got, f[1])
	}
	if want := "duplicate-window nats-context nats-creds nats-nkey-seed nats-tls-ca nats-tls-cert nats-tls-key nats-url stream-replicas"; strings.Join(got, " ") != want {
		t.Errorf("streams apply flags %v, want %s:\n%s", got, want, apply)
	}
	if bench := help("bench"); !strings.Contains(bench, "\n  --processes int\n") || !strings.Contains(bench, "\n  --step-latency duration\n") || !strings.Contains(bench, "\n  --ingress\n") {
		t.Errorf("bench --help:\n%s", bench)
	}
	if dash := help("dashboard"); !strings.Contains(dash, "\n  --addr string\n") || !strings.Contains(dash, "default 127.0.0.1:3000") {
		t.Errorf("dashboard --help:\n%s", dash)
	}
	if trace := help("trace"); !strings.Contains(trace, "--follow") || strings.Contains(trace, "--lock-ttl") || !strings.Contains(trace, "default "+defaultNATSURL) {
		t.Errorf("trace --help:\n%s", trace)
	}
}

// streams apply reads only its own settings: a bad setting of serve's (a
// CORS origin, a lock TTL) does not stop it; a bad one of its own does.
func TestStreamsApplyReadsOnlyItsSettings(t *testing.T) {
	srv := natstest.Start(t)
	env := map[string]string{"NATS_URL": srv.ClientURL(), "CORS_ALLOWED_ORIGINS": "*", "LOCK_TTL": "soon", "WORKERS": "0"}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"streams", "apply"}, func(k string) string { return env[k] }, &stdout, &stderr); err != nil {
		t.Fatalf("streams apply: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "stream CAMPAIGN_COMMANDS: applied") || !strings.Contains(stdout.String(), "consumer orchestrator on CAMPAIGN_COMMANDS: applied") {
		t.Fatalf("streams apply printed:\n%s", stdout.String())
	}
	env["STREAM_REPLICAS"] = "9"
	err := run(context.Background(), []string{"streams", "apply"}, func(k string) string { return env[k] }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "STREAM_REPLICAS") {
		t.Fatalf("STREAM_REPLICAS=9: error %v, want one naming it", err)
	}
}

// token hash reads the token from standard input; --help is help, not a
// token; the argument form works with a warning.
func TestTokenHash(t *testing.T) {
	const tok = "s3cret-token-value-0123456789"
	hash := func(stdin string, args ...string) (string, string, error) {
		var stdout, stderr bytes.Buffer
		err := runIO(context.Background(), append([]string{"token", "hash"}, args...), noEnv, strings.NewReader(stdin), &stdout, &stderr)
		return stdout.String(), stderr.String(), err
	}
	out, errOut, err := hash(tok + "\n")
	if err != nil || out != httpapi.HashToken(tok)+"\n" || errOut != "" {
		t.Fatalf("stdin: %q %q %v", out, errOut, err)
	}
	out, _, err = hash(tok+"\n\nanother-token-0123456789\n", "--tenant", "acme")
	if err != nil || out != "acme sha256:"+httpapi.HashToken(tok)+"\nacme sha256:"+httpapi.HashToken("another-token-0123456789")+"\n" {
		t.Fatalf("two tokens with --tenant: %q %v", out, err)
	}
	out, _, err = hash("", "--help")
	if !errors.Is(err, flag.ErrHelp) || strings.Contains(out, httpapi.HashToken("--help")) || !strings.Contains(out, "usage: orchestrator token hash") {
		t.Fatalf("--help: %q %v", out, err)
	}
	out, errOut, err = hash("", tok)
	if err != nil || out != httpapi.HashToken(tok)+"\n" || !strings.Contains(errOut, "warning") {
		t.Fatalf("argument: %q %q %v", out, errOut, err)
	}
	if _, _, err := hash(""); err == nil {
		t.Fatal("no token: no error")
	}
	if _, _, err := hash("short\n"); err == nil || !strings.Contains(err.Error(), "too short") {
		t.Fatalf("short token: %v", err)
	}
}

// version (and --version) names the Go version and the versions of the
// dependencies that go.mod requires.
func TestVersion(t *testing.T) {
	mod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	required := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(mod))
	for sc.Scan() {
		if f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "require ")); len(f) >= 2 {
			required[f[0]] = f[1]
		}
	}
	for _, args := range [][]string{{"version"}, {"--version"}} {
		var stdout bytes.Buffer
		if err := run(context.Background(), args, noEnv, &stdout, io.Discard); err != nil {
			t.Fatal(err)
		}
		for _, d := range versionDeps {
			want := required[d.path]
			if want == "" || !regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(d.name)+` +`+regexp.QuoteMeta(want)+`$`).MatchString(stdout.String()) {
				t.Errorf("%v: no line %q %q:\n%s", args, d.name, want, stdout.String())
			}
		}
		if !strings.Contains(stdout.String(), "go ") || !strings.HasPrefix(stdout.String(), "orchestrator ") || !strings.Contains(stdout.String(), "commit ") {
			t.Errorf("%v:\n%s", args, stdout.String())
		}
	}
	var stdout bytes.Buffer
	if err := run(context.Background(), []string{"version", "--json"}, noEnv, &stdout, io.Discard); err != nil {
		t.Fatal(err)
	}
	var b buildInfo
	if err := json.Unmarshal(stdout.Bytes(), &b); err != nil || b.Deps["nats.go"] != required["github.com/nats-io/nats.go"] || b.Go == "" {
		t.Fatalf("version --json: %v\n%s", err, stdout.String())
	}
}

// The completion scripts, run by bash and zsh, complete subcommands and each
// one's flags.
func TestCompletion(t *testing.T) {
	cases := []struct {
		line string // the words before the one completed, then that word's start
		want []string
	}{
		{"orchestrator |", []string{"serve", "streams", "token", "trace", "dlq", "rebuild", "bench", "dashboard", "version", "completion", "help", "--help", "--version"}},
		{"orchestrator dl|", []string{"dlq"}},
		{"orchestrator dlq |", []string{"list", "replay"}},
		{"orchestrator dlq replay 3 --n|", []string{"--nats-context", "--nats-creds", "--nats-nkey-seed", "--nats-tls-ca", "--nats-tls-cert", "--nats-tls-key", "--nats-url", "--new-id"}},
		{"orchestrator dlq replay 3 --p|", []string{"--purge"}},
		{"orchestrator streams apply --nats-url nats://x:4222 --dup|", []string{"--duplicate-window"}},
		{"orchestrator serve --lock|", []string{"--lock-ttl"}},
		{"orchestrator bench --base|", []string{"--baseline", "--baseline-workers"}},
		{"orchestrator completion |", []string{"bash", "zsh", "--help"}},
		{"orchestrator dashboard --|", []string{"--addr", "--api", "--help"}},
		{"orchestrator trace acme/spring --f|", []string{"--follow"}},
	}
	dir := t.TempDir()
	for _, shell := range []string{"bash", "zsh"} {
		if _, err := exec.LookPath(shell); err != nil {
			t.Fatalf("%s not on PATH (.ci/run installs it): %v", shell, err)
		}
		var script bytes.Buffer
		if err := run(context.Background(), []string{"completion", shell}, noEnv, &script, io.Discard); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, shell)
		if err := os.WriteFile(path, script.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, tc := range cases {
			before, _, _ := strings.Cut(tc.line, "|")
			words, cur := strings.Fields(before), ""
			if !strings.HasSuffix(before, " ") {
				words, cur = words[:len(words)-1], words[len(words)-1]
			}
			var prog string
			if shell == "bash" {
				prog = `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _orchestrator; printf '%s\n' "${COMPREPLY[@]}"`
			} else {
				prog = `source "$1"; shift; cur="${@[-1]}"; for w in $(_orchestrator_words "${@[1,-2]}"); do [[ $w == "$cur"* ]] && print -r -- $w; done; true`
			}
			args := append([]string{"-c", prog, shell, path}, words...)
			args = append(args, cur)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			out, err := exec.CommandContext(ctx, shell, args...).CombinedOutput()
			cancel()
			got := strings.Fields(string(out))
			if err != nil || strings.Join(sorted(got), " ") != strings.Join(sorted(tc.want), " ") {
				t.Errorf("%s %q: %v %q, want %q", shell, tc.line, err, got, tc.want)
			}
		}
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// Durations are logged as Go duration strings, in JSON as in text.
func TestLoggedDurations(t *testing.T) {
	var buf bytes.Buffer
	log := newLogger(&buf, slog.LevelInfo)
	log.With("lock_ttl", 30*time.Second).Info("pulling commands", "delay", 1500*time.Millisecond)
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	if line["lock_ttl"] != "30s" || line["delay"] != "1.5s" {
		t.Fatalf("durations logged as %v and %v, want 30s and 1.5s: %s", line["lock_ttl"], line["delay"], buf.String())
	}
}
