package config

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
)

// NATS is how to reach and authenticate to NATS: the serve settings and the
// flag group of every operator command (NATSFlags).
type NATS struct {
	// URL is one URL or a comma-separated list of cluster URLs; each may
	// carry user:password@ or token@ (NATS_URL).
	URL string
	// Creds is a JWT credentials file (NATS_CREDS).
	Creds string
	// NKeySeed is a file holding a user NKey seed, SU… (NATS_NKEY_SEED).
	NKeySeed string
	// TLSCA verifies the servers (NATS_TLS_CA); TLSCert and TLSKey are the
	// client certificate for servers that verify clients.
	TLSCA, TLSCert, TLSKey string
	// Context is NATS_CONTEXT as given: a natscli context's name or file
	// (natscontext.go). The fields above that it supplied are in
	// FromContext; User and Password, or Token, come from it only
	// (NATS_URL carries its own in each URL).
	Context     string
	FromContext []string
	User        string
	Password    Secret
	Token       Secret
}

// Source names where setting env (NATS_URL, NATS_CREDS …) of n came from,
// for errors: env itself, or the context's field that gave it.
func (n NATS) Source(env string) string {
	if slices.Contains(n.FromContext, env) {
		return fmt.Sprintf("the %s of NATS_CONTEXT %s", contextField[env], n.Context)
	}
	return env
}

// Redis is how to reach the store: one server (URL), Sentinel
// (SentinelAddrs and MasterName) or Redis Cluster (ClusterAddrs).
type Redis struct {
	// URL is redis://, rediss:// (TLS) or unix://, with an ACL user and
	// password (REDIS_URL). With SentinelAddrs or ClusterAddrs it is optional
	// and gives only the scheme (TLS), user, password and database: its host
	// is not used.
	URL string
	// SentinelAddrs are host:port of Sentinels (REDIS_SENTINEL_ADDRS) that
	// name the master MasterName (REDIS_MASTER_NAME).
	SentinelAddrs []string
	MasterName    string
	// SentinelPassword authenticates to the Sentinels
	// (REDIS_SENTINEL_PASSWORD), when they require one.
	SentinelPassword Secret
	// ClusterAddrs are host:port of some Redis Cluster nodes (REDIS_CLUSTER_ADDRS).
	ClusterAddrs []string
	// TLSCA verifies the servers (REDIS_TLS_CA, with rediss://); TLSCert and
	// TLSKey are a client certificate for servers that verify clients.
	TLSCA, TLSCert, TLSKey string
}

// Configured reports whether a Redis store is configured at all (else the
// in-process store is used).
func (r Redis) Configured() bool {
	return r.URL != "" || len(r.SentinelAddrs) > 0 || len(r.ClusterAddrs) > 0
}

// natsSecuritySettings are NATS's authentication and TLS settings, shared
// by serve (Load) and the operator commands (NATSFlags).
var natsSecuritySettings = []setting{
	{"NATS_CONTEXT", "", "natscli context giving the URL, credentials and TLS files: a name, read from " +
		"$XDG_CONFIG_HOME/nats/context/<name>.json (~/.config/nats/… without XDG_CONFIG_HOME), or a .json file; " +
		"each other NATS setting given overrides its field", "name|file"},
	{"NATS_CREDS", "", "NATS JWT credentials file (.creds)", "file"},
	{"NATS_NKEY_SEED", "", "file holding the NATS user's NKey seed (SU…)", "file"},
	{"NATS_TLS_CA", "", "CA certificate file that verifies the NATS servers (TLS)", "file"},
	{"NATS_TLS_CERT", "", "client certificate file for NATS servers that verify clients (with NATS_TLS_KEY)", "file"},
	{"NATS_TLS_KEY", "", "client key file of NATS_TLS_CERT", "file"},
}

var redisSettings = []setting{
	{"REDIS_SENTINEL_ADDRS", "", "Redis Sentinel host:port list, comma-separated (with REDIS_MASTER_NAME) instead of REDIS_URL's host", "host:port,…"},
	{"REDIS_MASTER_NAME", "", "name of the master the Sentinels watch", "string"},
	{"REDIS_SENTINEL_PASSWORD", "", "password of the Sentinels, when they require one", "secret"},
	{"REDIS_CLUSTER_ADDRS", "", "Redis Cluster node host:port list, comma-separated, instead of REDIS_URL's host", "host:port,…"},
	{"REDIS_TLS_CA", "", "CA certificate file that verifies the Redis servers (with rediss://)", "file"},
	{"REDIS_TLS_CERT", "", "client certificate file for Redis servers that verify clients (with REDIS_TLS_KEY)", "file"},
	{"REDIS_TLS_KEY", "", "client key file of REDIS_TLS_CERT", "file"},
}

func init() {
	settings = append(settings, natsSecuritySettings...)
	settings = append(settings, redisSettings...)
}

// nats reads the NATS settings.
func (p *parser) nats() NATS {
	n := NATS{
		URL: p.natsURL("NATS_URL"), Creds: p.file("NATS_CREDS"), NKeySeed: p.file("NATS_NKEY_SEED"),
		TLSCA: p.file("NATS_TLS_CA"), TLSCert: p.file("NATS_TLS_CERT"), TLSKey: p.file("NATS_TLS_KEY"),
	}
	if n.Creds != "" && n.NKeySeed != "" {
		p.fail("NATS_NKEY_SEED", "is set but NATS_CREDS is too: give one way to authenticate")
	}
	p.pair("NATS_TLS_CERT", n.TLSCert, "NATS_TLS_KEY", n.TLSKey)
	if ref := p.str("NATS_CONTEXT"); ref != "" {
		p.natsContext(&n, ref)
	}
	if n.URL == "" && (n.Creds != "" || n.NKeySeed != "" || n.TLSCA != "" || n.TLSCert != "") {
		p.fail("NATS_URL", "is empty (embedded server) but NATS credentials or TLS settings are given: they are for a NATS_URL server")
	}
	return n
}

// redis reads the Redis settings.
func (p *parser) redis() Redis {
	r := Redis{
		URL: p.redisURL("REDIS_URL"), SentinelAddrs: p.hostPorts("REDIS_SENTINEL_ADDRS"),
		MasterName: p.str("REDIS_MASTER_NAME"), SentinelPassword: p.secret("REDIS_SENTINEL_PASSWORD", 0),
		ClusterAddrs: p.hostPorts("REDIS_CLUSTER_ADDRS"),
		TLSCA:        p.file("REDIS_TLS_CA"), TLSCert: p.file("REDIS_TLS_CERT"), TLSKey: p.file("REDIS_TLS_KEY"),
	}
	switch {
	case len(r.SentinelAddrs) > 0 && len(r.ClusterAddrs) > 0:
		p.fail("REDIS_CLUSTER_ADDRS", "is set but REDIS_SENTINEL_ADDRS is too: choose Sentinel or Cluster")
	case len(r.SentinelAddrs) > 0 && r.MasterName == "":
		p.fail("REDIS_MASTER_NAME", "is empty, but REDIS_SENTINEL_ADDRS needs the name of the master the Sentinels watch")
	case len(r.SentinelAddrs) == 0 && r.MasterName != "":
		p.fail("REDIS_MASTER_NAME", "is set without REDIS_SENTINEL_ADDRS")
	}
	if strings.HasPrefix(r.URL, "unix:") && (len(r.SentinelAddrs) > 0 || len(r.ClusterAddrs) > 0) {
		p.fail("REDIS_URL", "is a unix socket URL: Sentinel and Cluster need redis:// or rediss://")
	}
	p.pair("REDIS_TLS_CERT", r.TLSCert, "REDIS_TLS_KEY", r.TLSKey)
	if (r.TLSCA != "" || r.TLSCert != "") && !strings.HasPrefix(r.URL, "rediss://") {
		p.fail("REDIS_TLS_CA", "and REDIS_TLS_CERT are for TLS: REDIS_URL must be rediss://… (for Sentinel or Cluster, rediss://user:password@/0 names only the scheme and credentials)")
	}
	return r
}

// pair fails unless both or neither of two settings are given.
func (p *parser) pair(a, av, b, bv string) {
	if (av == "") != (bv == "") {
		p.fail(a, "and %s go together: give both or neither", b)
	}
}

// hostPorts reads a comma-separated host:port list.
func (p *parser) hostPorts(env string) []string {
	var out []string
	for _, v := range strings.Split(p.str(env), ",") {
		if v = strings.TrimSpace(v); v == "" {
			continue
		}
		host, port, err := net.SplitHostPort(v)
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n <= 0 || n > 65535 {
			p.fail(env, "%q is not host:port", v)
			continue
		}
		out = append(out, v)
	}
	return out
}

// NATSFlags registers the NATS connection flag group (--nats-url,
// --nats-context, --nats-creds, --nats-nkey-seed, --nats-tls-ca,
// --nats-tls-cert, --nats-tls-key: NATS_URL and natsSecuritySettings) of a
// command on s; the returned NATS is filled by s.Resolve, whose errors name
// the setting. defaultURL is what an empty NATS_URL without NATS_CONTEXT
// means to the command: "" for serve (its embedded server), else the URL to
// use (the operator commands: the embedded server's default address,
// defaultNATSURL).
func NATSFlags(s *Set, defaultURL string) *NATS {
	n := &NATS{}
	if defaultURL != "" {
		s.addWith("NATS_URL", defaultURL, "NATS server URL(s), comma-separated; user:password@ or token@ allowed; "+
			"given, it overrides NATS_CONTEXT's url")
	}
	envs := []string{"NATS_URL"}
	for _, st := range natsSecuritySettings {
		envs = append(envs, st.env)
	}
	s.group(func(p *parser) { *n = p.nats() }, envs...)
	return n
}

// RedisFlags registers the store's connection settings (REDIS_URL and
// redisSettings) on s; the returned Redis is filled by s.Resolve.
func RedisFlags(s *Set) *Redis {
	r := &Redis{}
	envs := []string{"REDIS_URL"}
	for _, st := range redisSettings {
		envs = append(envs, st.env)
	}
	s.group(func(p *parser) { *r = p.redis() }, envs...)
	return r
}

// String shows where NATS is without any password or token.
func (n NATS) String() string {
	if n.Context != "" && slices.Contains(n.FromContext, "NATS_URL") {
		return RedactURLs(n.URL) + " (NATS_CONTEXT " + n.Context + ")"
	}
	return RedactURLs(n.URL)
}

// RedactURLs replaces the user information of each URL in a comma-separated
// list with "[redacted]" (for logs and errors).
func RedactURLs(list string) string {
	parts := strings.Split(list, ",")
	for i, u := range parts {
		u = strings.TrimSpace(u)
		if at := strings.LastIndex(u, "@"); at >= 0 {
			if s := strings.Index(u, "://"); s >= 0 && s < at {
				u = u[:s+3] + redacted + u[at:]
			} else {
				u = redacted + u[at:]
			}
		}
		parts[i] = u
	}
	return strings.Join(parts, ",")
}
