// Package config reads the orchestrator's settings (CONTRACT section 8) from
// the environment and command-line flags (a flag wins over its variable) and
// validates them: a setting that makes no sense stops start-up with an error
// that names it. It does no I/O beyond reading the environment, checking
// that the files it is given exist and reading the natscli context file
// that NATS_CONTEXT names.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Role selects what `orchestrator serve` runs.
type Role string

// Roles.
const (
	RoleAll     Role = "all"     // ingress and workers
	RoleIngress Role = "ingress" // HTTP ingress only
	RoleWorker  Role = "worker"  // workers only
)

// Config is every setting of `orchestrator serve`.
type Config struct {
	HTTPAddr         string
	NATSURL          string
	NATSStoreDir     string
	EmbeddedNATSAddr string
	// NATSSync is the embedded server's JetStream sync_interval: how long
	// after a write it is fsynced; 0 means "always" (before the PubAck).
	NATSSync           time.Duration
	RedisURL           string
	CORSAllowedOrigins []string
	WorkflowsFile      string
	StepsBaseURL       string
	DuplicateWindow    time.Duration
	StreamReplicas     int
	CampaignRetention  time.Duration
	LockTTL            time.Duration
	StepTimeout        time.Duration
	StepMaxRetries     int
	StepBackoffBase    time.Duration
	// StepH2C: plain http:// step services are called over HTTP/2 without
	// TLS (STEP_PROTOCOL=h2c).
	StepH2C       bool
	Workers       int
	StepsInFlight int
	APITokensFile string
	APITokens     string
	LogLevel      slog.Level
	// PprofAddr, when not empty, is the loopback address of the Go
	// profiling endpoints (net/http/pprof).
	PprofAddr string
	Role      Role
	// IdempotencySecret keys the Idempotency-Key → command id hash; empty:
	// the ingress generates one and keeps it in the store.
	IdempotencySecret Secret
	// NATS is NATS_URL (the same as NATSURL) with its credentials and TLS;
	// Redis is REDIS_URL (the same as RedisURL) or Sentinel or Cluster, with
	// TLS (connection.go).
	NATS  NATS
	Redis Redis
	// Ingress are the ingress's rate limit, trusted proxies and request
	// timeout (ingress.go).
	Ingress Ingress
}

// MinSecretLength is the shortest IDEMPOTENCY_SECRET accepted, in bytes.
const MinSecretLength = 16

// Secret is a setting that is never printed: fmt, slog and encoders see
// "[redacted]" (or "" when it is empty). Convert it ([]byte(s)) to use it.
type Secret string

const redacted = "[redacted]"

// String implements fmt.Stringer.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString implements fmt.GoStringer (%#v).
func (s Secret) GoString() string { return strconv.Quote(s.String()) }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText implements encoding.TextMarshaler (JSON, YAML).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// setting is one variable: its flag name, default and help.
type setting struct {
	env, def, help string
	// typ is the value's kind as --help shows it (duration, int, url …).
	typ string
}

var settings = []setting{
	{"HTTP_ADDR", ":8000", "HTTP ingress address", "host:port"},
	{"NATS_URL", "", "NATS server URL(s), comma-separated; empty: NATS_CONTEXT's url if one is named, else run an embedded NATS server with JetStream", "url"},
	{"NATS_STORE_DIR", "", "embedded JetStream storage directory; empty: a private temporary directory removed at exit", "dir"},
	{"EMBEDDED_NATS_ADDR", "127.0.0.1:4222", "listen address of the embedded NATS server", "host:port"},
	{"NATS_SYNC_INTERVAL", "2m", "embedded NATS server: how long after a write JetStream fsyncs it (a duration), or always (before acknowledging: slower, survives a machine crash)", "duration|always"},
	{"REDIS_URL", "", "redis://… URL; empty: in-process store and lock (one process only)", "url"},
	{"CORS_ALLOWED_ORIGINS", "http://localhost:3000,http://internal-dashboard", "comma-separated exact origins allowed by CORS", "origins"},
	{"WORKFLOWS_FILE", "", "workflows file (YAML or JSON, see examples/workflows.yaml); empty: the built-in standard workflow", "file"},
	{"STEPS_BASE_URL", "http://127.0.0.1:8081", "base URL of the built-in workflow's step services", "url"},
	{"DUPLICATE_WINDOW", "2m", "JetStream duplicate window of the command stream", "duration"},
	{"STREAM_REPLICAS", "1", "replicas of every stream and of the consumer (1 to 5)", "int"},
	{"CAMPAIGN_RETENTION", "720h", "how long an ended campaign (and its command ledger) is kept", "duration"},
	{"LOCK_TTL", "30s", "campaign lock time to live, extended while held", "duration"},
	{"STEP_TIMEOUT", "10s", "timeout of one step attempt", "duration"},
	{"STEP_MAX_RETRIES", "2", "retries of a step after a network error (0 to 20)", "int"},
	{"STEP_BACKOFF_BASE", "500ms", "first retry delay of a step (doubles each retry, with jitter)", "duration"},
	{"STEP_PROTOCOL", "http1", "how http:// step services are called: http1 (HTTP/1.1, one connection per call in flight) or h2c " +
		"(HTTP/2 without TLS, many calls per connection: every http:// step service must speak it); https:// ones negotiate HTTP/2 either way", "http1|h2c"},
	{"WORKERS", "8", "commands handled at once by this process (1 to 1024)", "int"},
	{"STEPS_IN_FLIGHT", "4096", "step calls running at once in this process (a step's call does not hold one of WORKERS)", "int"},
	{"API_TOKENS_FILE", "", "file of hashed API tokens mapped to tenants (see: orchestrator token hash --help)", "file"},
	{"API_TOKENS", "", "tenant:token pairs, comma-separated (prefer API_TOKENS_FILE: a flag is visible to other local users)", "secret"},
	{"LOG_LEVEL", "info", "debug, info, warn or error", "level"},
	{"PPROF_ADDR", "", "loopback address (127.0.0.1:6060, say) of the Go profiling endpoints at /debug/pprof/; empty: none. " +
		"They show the process's memory: they listen on a loopback address only", "host:port"},
	{"IDEMPOTENCY_SECRET", "", "key (at least 16 bytes, the same for every ingress process) of the Idempotency-Key → command id hash; " +
		"empty: generated once and kept in the store. Prefer the variable: a flag is visible to other local users", "secret"},
}

// settingOf returns the setting of variable env.
func settingOf(env string) setting {
	for _, s := range settings {
		if s.env == env {
			return s
		}
	}
	panic("config: no setting " + env)
}

// flagName turns HTTP_ADDR into http-addr.
func flagName(env string) string { return strings.ReplaceAll(strings.ToLower(env), "_", "-") }

// Value is the flag.Value of one setting. Its default is the built-in one,
// never the environment's (so --help shows no secret and no value from the
// environment); Set.Resolve applies the variable when the flag is not given.
type Value struct {
	env, typ, def, v string
}

// String implements flag.Value.
func (v *Value) String() string {
	if v == nil {
		return ""
	}
	return v.v
}

// Set implements flag.Value.
func (v *Value) Set(s string) error { v.v = s; return nil }

// Type is the kind of value the flag takes, as usage texts show it.
func (v *Value) Type() string { return v.typ }

// Env is the setting's environment variable ("" for a flag only).
func (v *Value) Env() string { return v.env }

// Set is the settings of one command: groups of them (NATSFlags,
// StreamFlags, ServeFlags) register their flags on the command's flag set,
// each reading only what it registered. After the flag set is parsed,
// Resolve applies the environment to the flags not given and validates, so a
// bad setting the command does not use can never stop it.
type Set struct {
	fs       *flag.FlagSet
	getenv   func(string) string
	vals     map[string]*string
	resolved bool
	finish   []func(*parser)
}

// NewSet starts the settings of a command whose flags are fs; getenv looks
// the variables up (nil: os.LookupEnv).
func NewSet(fs *flag.FlagSet, getenv func(string) string) *Set {
	return &Set{fs: fs, getenv: getenv, vals: map[string]*string{}}
}

// add registers the flag of variable env once.
func (s *Set) add(env string) {
	st := settingOf(env)
	s.addWith(env, st.def, st.help)
}

// addWith registers the flag of variable env once, with its own default and
// help.
func (s *Set) addWith(env, def, help string) {
	if _, ok := s.vals[env]; ok {
		return
	}
	v := &Value{env: env, typ: settingOf(env).typ, def: def, v: def}
	s.fs.Var(v, flagName(env), help)
	s.vals[env] = &v.v
}

// group registers the flags of envs and f, run by Resolve to read them.
func (s *Set) group(f func(*parser), envs ...string) {
	for _, env := range envs {
		s.add(env)
	}
	s.finish = append(s.finish, f)
}

// Resolve applies each variable whose flag was not given, then reads and
// validates every group: the error names each bad setting.
func (s *Set) Resolve() error {
	if s.resolved {
		return nil
	}
	s.resolved = true
	given := map[string]bool{}
	s.fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for env, v := range s.vals {
		if given[flagName(env)] {
			continue
		}
		if e, ok := lookup(s.getenv, env); ok {
			*v = e
		}
	}
	p := &parser{vals: s.vals, given: map[string]bool{}, getenv: s.getenv}
	for env, v := range s.vals {
		_, fromEnv := lookup(s.getenv, env)
		p.given[env] = strings.TrimSpace(*v) != "" && (given[flagName(env)] || fromEnv)
	}
	for _, f := range s.finish {
		f(p)
	}
	return errors.Join(p.errs...)
}

// Streams is how the streams and the consumer are provisioned.
type Streams struct {
	DuplicateWindow time.Duration
	Replicas        int
}

// StreamFlags registers DUPLICATE_WINDOW and STREAM_REPLICAS on s.
func StreamFlags(s *Set) *Streams {
	st := &Streams{}
	s.group(func(p *parser) {
		st.DuplicateWindow = p.duration("DUPLICATE_WINDOW")
		st.Replicas = p.intIn("STREAM_REPLICAS", 1, 5)
	}, "DUPLICATE_WINDOW", "STREAM_REPLICAS")
	return st
}

// RetentionFlags registers CAMPAIGN_RETENTION on s (orchestrator rebuild:
// a campaign that ended longer ago than that expired from the store rather
// than got lost).
func RetentionFlags(s *Set) *time.Duration {
	var d time.Duration
	s.group(func(p *parser) { d = p.duration("CAMPAIGN_RETENTION") }, "CAMPAIGN_RETENTION")
	return &d
}

// LockTTLFlags registers LOCK_TTL on s (for the commands that must wait
// out a lock, as `orchestrator rebuild` does); the returned duration is
// filled by s.Resolve.
func LockTTLFlags(s *Set) *time.Duration {
	var d time.Duration
	s.group(func(p *parser) { d = p.duration("LOCK_TTL") }, "LOCK_TTL")
	return &d
}

// ServeFlags registers every setting of `orchestrator serve` (and --role)
// on s; the returned Config is filled by s.Resolve.
func ServeFlags(s *Set) *Config {
	c := &Config{}
	nats := NATSFlags(s, "")
	redis := RedisFlags(s)
	streams := StreamFlags(s)
	role := &Value{typ: "role", def: string(RoleAll), v: string(RoleAll)}
	s.fs.Var(role, "role", "what to run: all, ingress or worker")
	var envs []string
	for _, st := range settings {
		envs = append(envs, st.env)
	}
	s.group(func(p *parser) {
		*c = Config{
			NATS: *nats, Redis: *redis, Ingress: p.ingress(),
			HTTPAddr:           p.addr("HTTP_ADDR"),
			NATSURL:            nats.URL,
			NATSStoreDir:       p.str("NATS_STORE_DIR"),
			EmbeddedNATSAddr:   p.addr("EMBEDDED_NATS_ADDR"),
			NATSSync:           p.syncInterval("NATS_SYNC_INTERVAL"),
			RedisURL:           redis.URL,
			CORSAllowedOrigins: p.origins("CORS_ALLOWED_ORIGINS"),
			WorkflowsFile:      p.file("WORKFLOWS_FILE"),
			StepsBaseURL:       p.httpURL("STEPS_BASE_URL"),
			DuplicateWindow:    streams.DuplicateWindow,
			StreamReplicas:     streams.Replicas,
			CampaignRetention:  p.duration("CAMPAIGN_RETENTION"),
			LockTTL:            p.duration("LOCK_TTL"),
			StepTimeout:        p.duration("STEP_TIMEOUT"),
			StepMaxRetries:     p.intIn("STEP_MAX_RETRIES", 0, 20),
			StepBackoffBase:    p.duration("STEP_BACKOFF_BASE"),
			StepH2C:            p.oneOf("STEP_PROTOCOL", "http1", "h2c") == "h2c",
			Workers:            p.intIn("WORKERS", 1, 1024),
			StepsInFlight:      p.intIn("STEPS_IN_FLIGHT", 1, 1<<20),
			APITokensFile:      p.file("API_TOKENS_FILE"),
			APITokens:          p.str("API_TOKENS"),
			LogLevel:           p.level("LOG_LEVEL"),
			PprofAddr:          p.loopbackAddr("PPROF_ADDR"),
			Role:               Role(role.v),
			IdempotencySecret:  p.secret("IDEMPOTENCY_SECRET", MinSecretLength),
		}
		switch c.Role {
		case RoleAll, RoleIngress, RoleWorker:
			if c.Role != RoleAll && !c.Redis.Configured() {
				p.fail("REDIS_URL", "is empty, but --role %s needs a shared store (the in-process store serves one process only)", c.Role)
			}
		default:
			p.errs = append(p.errs, fmt.Errorf("--role: %q is not all, ingress or worker", role.v))
		}
		if c.NATSURL != "" && c.NATSStoreDir != "" {
			p.fail("NATS_STORE_DIR", "is set but NATS_URL (or NATS_CONTEXT) is too: the storage directory is only for the embedded server (leave one of them empty)")
		}
		if c.LockTTL > 0 && c.LockTTL < time.Second {
			p.fail("LOCK_TTL", "%s is too short (at least 1s)", c.LockTTL)
		}
	}, envs...)
	return c
}

// Load parses args (the flags of `orchestrator serve`) over the environment
// looked up with getenv and returns the whole serve configuration. A usage
// error and --help print the flags to usage.
func Load(args []string, getenv func(string) string, usage io.Writer) (Config, error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(usage)
	fs.Usage = func() {
		fmt.Fprintln(usage, "usage: orchestrator serve [flags]\n\nflags:")
		PrintFlags(usage, fs)
	}
	s := NewSet(fs, getenv)
	c := ServeFlags(s)
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if err := s.Resolve(); err != nil {
		return Config{}, err
	}
	return *c, nil
}

// PrintFlags writes fs's flags as usage texts show them: each flag with the
// kind of value it takes (a *Value's Type, else bool, int, duration … from
// the flag's Go type), its help, its variable and its default (never one
// taken from the environment). Unlike flag.PrintDefaults it gives back-quoted
// words in a help text no meaning.
func PrintFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		typ, env := flagType(f), ""
		if v, ok := f.Value.(*Value); ok {
			env = v.Env()
		}
		line := "  --" + f.Name
		if typ != "" {
			line += " " + typ
		}
		fmt.Fprintln(w, line)
		help := f.Usage
		var extra []string
		if env != "" {
			extra = append(extra, "$"+env)
		}
		if f.DefValue != "" && !(typ == "" && f.DefValue == "false") {
			extra = append(extra, "default "+f.DefValue)
		}
		if len(extra) > 0 {
			help += " (" + strings.Join(extra, ", ") + ")"
		}
		fmt.Fprintln(w, "    \t"+strings.ReplaceAll(help, "\n", "\n    \t"))
	})
}

// flagType is the kind of value flag f takes; "" for a boolean flag.
func flagType(f *flag.Flag) string {
	if v, ok := f.Value.(interface{ Type() string }); ok {
		return v.Type()
	}
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return ""
	}
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return "value"
	}
	switch g.Get().(type) {
	case int, int64:
		return "int"
	case uint, uint64:
		return "uint"
	case float64:
		return "float"
	case time.Duration:
		return "duration"
	case string:
		return "string"
	}
	return "value"
}

func lookup(getenv func(string) string, k string) (string, bool) {
	if getenv == nil {
		return os.LookupEnv(k)
	}
	v := getenv(k)
	return v, v != ""
}

type parser struct {
	vals map[string]*string
	// given: the setting was given (a flag or its variable, not empty)
	// rather than left at its default.
	given  map[string]bool
	getenv func(string) string
	errs   []error
}

func (p *parser) fail(env, f string, a ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s (--%s): %s", env, flagName(env), fmt.Sprintf(f, a...)))
}

func (p *parser) str(env string) string { return strings.TrimSpace(*p.vals[env]) }

func (p *parser) file(env string) string {
	v := p.str(env)
	if v == "" {
		return ""
	}
	if st, err := os.Stat(v); err != nil {
		p.fail(env, "%v", err)
	} else if st.IsDir() {
		p.fail(env, "%s is a directory", v)
	}
	return v
}

// secret reads a secret setting: empty, or at least minLen bytes. Its
// errors never quote the value.
func (p *parser) secret(env string, minLen int) Secret {
	v := p.str(env)
	if v != "" && len(v) < minLen {
		p.fail(env, "is %d bytes, too short: at least %d are needed (e.g. the output of `openssl rand -hex 32`)", len(v), minLen)
	}
	return Secret(v)
}

func (p *parser) addr(env string) string {
	v := p.str(env)
	if _, port, err := net.SplitHostPort(v); err != nil {
		p.fail(env, "%q is not host:port: %v", v, err)
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		p.fail(env, "%q: bad port", v)
	}
	return v
}

// loopbackAddr reads an optional host:port whose host is a loopback
// address (127.0.0.1, ::1 or localhost): "" when unset.
func (p *parser) loopbackAddr(env string) string {
	if p.str(env) == "" {
		return ""
	}
	v := p.addr(env)
	host, _, err := net.SplitHostPort(v)
	if err != nil {
		return v // addr failed already
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		p.fail(env, "%q: the host must be a loopback address (127.0.0.1, ::1 or localhost): the profiles show the process's memory", v)
	}
	return v
}

// oneOf reads a setting that must be one of values.
func (p *parser) oneOf(env string, values ...string) string {
	v := p.str(env)
	if !slices.Contains(values, v) {
		p.fail(env, "%q is not one of %s", v, strings.Join(values, ", "))
	}
	return v
}

func (p *parser) duration(env string) time.Duration {
	v := p.str(env)
	d, err := time.ParseDuration(v)
	switch {
	case err != nil:
		p.fail(env, "%q is not a duration (e.g. 500ms, 30s, 2m): %v", v, err)
	case d <= 0:
		p.fail(env, "%q must be positive", v)
	}
	return d
}

// syncInterval reads "always" (0) or a positive duration.
func (p *parser) syncInterval(env string) time.Duration {
	if strings.EqualFold(p.str(env), "always") {
		return 0
	}
	return p.duration(env)
}

func (p *parser) intIn(env string, lo, hi int) int {
	v := p.str(env)
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		p.fail(env, "%q must be a whole number from %d to %d", v, lo, hi)
	}
	return n
}

func (p *parser) level(env string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(p.str(env))); err != nil {
		p.fail(env, "%q is not debug, info, warn or error", p.str(env))
	}
	return l
}

func (p *parser) parseURL(env, v string, schemes ...string) *url.URL {
	u, err := url.Parse(v)
	if err != nil {
		p.fail(env, "%q is not a URL: %v", v, err)
		return nil
	}
	for _, s := range schemes {
		if u.Scheme == s && u.Host != "" {
			return u
		}
	}
	p.fail(env, "%q must be a %s URL with a host", v, strings.Join(schemes, " or "))
	return nil
}

func (p *parser) httpURL(env string) string {
	v := strings.TrimRight(p.str(env), "/")
	p.parseURL(env, v, "http", "https")
	return v
}

func (p *parser) redisURL(env string) string {
	v := p.str(env)
	if v != "" {
		p.parseURL(env, v, "redis", "rediss", "unix")
	}
	return v
}

func (p *parser) natsURL(env string) string {
	v := p.str(env)
	for _, u := range strings.Split(v, ",") {
		if u = strings.TrimSpace(u); u != "" {
			p.parseURL(env, u, "nats", "tls", "ws", "wss")
		}
	}
	return v
}

func (p *parser) origins(env string) []string {
	var out []string
	for _, o := range strings.Split(p.str(env), ",") {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		if strings.Contains(o, "*") {
			p.fail(env, "%q: wildcards are refused; list exact origins such as https://dashboard.example.com", o)
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			p.fail(env, "%q is not an origin (scheme://host[:port])", o)
			continue
		}
		if port := u.Port(); (u.Scheme == "https" && port == "443") || (u.Scheme == "http" && port == "80") {
			p.fail(env, "%q: browsers send the origin without its default port: list %s://%s", o, u.Scheme, u.Hostname())
			continue
		}
		out = append(out, strings.TrimSuffix(o, "/"))
	}
	return out
}
