package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
)

// A natscli context (NATS_CONTEXT) is read here rather than with
// github.com/nats-io/jsm.go/natscontext, the nats CLI's own package: that
// module raises nats-server's antithesis-sdk-go from v0.8.0-default-no-op to
// v0.8.0, which turns the Antithesis assertions on in the embedded server,
// and brings op:// and nsc:// look-ups that run other programs. The format
// is natscli's (natscontext's settings, v0.5.0): one JSON object per file,
// $XDG_CONFIG_HOME/nats/context/<name>.json (default ~/.config/nats).

// defaultContextURL is natscli's URL for a context without one
// (nats.DefaultURL).
const defaultContextURL = "nats://127.0.0.1:4222"

// natsContextFile is the part of a natscli context file this service
// reads: the fields that map onto its settings, and those it refuses
// rather than silently ignore. Others (name, description, color_scheme)
// are ignored, as natscli ignores fields it does not know.
type natsContextFile struct {
	URL      string `json:"url"`
	User     string `json:"user"`
	Password string `json:"password"`
	Token    string `json:"token"`
	Creds    string `json:"creds"`
	NKey     string `json:"nkey"`
	Cert     string `json:"cert"`
	Key      string `json:"key"`
	CA       string `json:"ca"`

	SocksProxy        string   `json:"socks_proxy"`
	NSC               string   `json:"nsc"`
	JSDomain          string   `json:"jetstream_domain"`
	JSAPIPrefix       string   `json:"jetstream_api_prefix"`
	JSEventPrefix     string   `json:"jetstream_event_prefix"`
	InboxPrefix       string   `json:"inbox_prefix"`
	UserJWT           string   `json:"user_jwt"`
	UserSeed          string   `json:"user_seed"`
	TLSFirst          bool     `json:"tls_first"`
	WinCertStore      string   `json:"windows_cert_store"`
	WinCertMatchBy    string   `json:"windows_cert_match_by"`
	WinCertMatch      string   `json:"windows_cert_match"`
	WinCACertsMatches []string `json:"windows_ca_certs_match"`
}

// contextField is the context field of each setting it can supply.
var contextField = map[string]string{
	"NATS_URL": "url", "NATS_CREDS": "creds", "NATS_NKEY_SEED": "nkey",
	"NATS_TLS_CA": "ca", "NATS_TLS_CERT": "cert", "NATS_TLS_KEY": "key",
}

// secretLookups are natscli's credential look-ups (jsm.go natscontext's
// resolvers), which this service does not run: op:// (the 1Password CLI),
// nsc:// (the nsc tool), env://, data: and, for the password and token,
// file://.
var secretLookups = []string{"op", "nsc", "env", "data", "file"}

// natsContext fills n from the natscli context ref (a name or a file),
// field by field where n has no value of its own: url where NATS_URL was
// not given; the authentication (user and password, token, creds or nkey)
// unless NATS_CREDS, NATS_NKEY_SEED or a user@ in a given NATS_URL
// authenticates; ca unless NATS_TLS_CA is set; cert and key (a pair) unless
// NATS_TLS_CERT and NATS_TLS_KEY are. Every error names NATS_CONTEXT and
// never shows a password, token or seed.
func (p *parser) natsContext(n *NATS, ref string) {
	const env = "NATS_CONTEXT"
	path, err := p.contextPath(ref)
	if err != nil {
		p.fail(env, "%s", err)
		return
	}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && path != ref:
		p.fail(env, "no natscli context %q: %s does not exist (`nats context ls` lists the contexts)", ref, path)
		return
	case err != nil:
		p.fail(env, "%v", err)
		return
	}
	var c natsContextFile
	if err := json.Unmarshal(data, &c); err != nil {
		// A syntax or type error names an offset or a field, never a value.
		p.fail(env, "%s is not a natscli context (JSON): %v", path, err)
		return
	}
	bad := func(f string, a ...any) { p.fail(env, "context %s: %s", ref, fmt.Sprintf(f, a...)) }
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"socks_proxy", c.SocksProxy != ""}, {"nsc", c.NSC != ""}, {"jetstream_domain", c.JSDomain != ""},
		{"jetstream_api_prefix", c.JSAPIPrefix != ""}, {"jetstream_event_prefix", c.JSEventPrefix != ""},
		{"inbox_prefix", c.InboxPrefix != ""}, {"user_jwt", c.UserJWT != ""}, {"user_seed", c.UserSeed != ""},
		{"tls_first", c.TLSFirst},
		{"windows_cert_store", c.WinCertStore != "" || c.WinCertMatch != "" || c.WinCertMatchBy != "" || len(c.WinCACertsMatches) > 0},
	} {
		if f.set {
			bad("%s is set, which this service does not support: remove it, or give a context without it "+
				"(supported: url, user and password, token, creds, nkey, cert, key, ca)", f.name)
		}
	}
	ways := 0
	for _, v := range []string{c.User, c.Token, c.Creds, c.NKey} {
		if v != "" {
			ways++
		}
	}
	if ways > 1 {
		bad("more than one of user, token, creds and nkey: give one way to authenticate")
	}
	if c.Password != "" && c.User == "" {
		bad("password without user")
	}
	for _, f := range []struct{ name, v string }{{"password", c.Password}, {"token", c.Token}} {
		if s := scheme(f.v); s != "" && slices.Contains(secretLookups, s) {
			bad("the %s is a natscli %s look-up, which this service does not run: "+
				"put the value itself in the context, or use NATS_URL's user:password@ (op://, nsc://, env://, data: and file:// are not supported)", f.name, lookupForm(s))
		}
	}
	for _, f := range []struct {
		name string
		v    *string
	}{{"creds", &c.Creds}, {"nkey", &c.NKey}, {"cert", &c.Cert}, {"key", &c.Key}, {"ca", &c.CA}} {
		if *f.v == "" {
			continue
		}
		switch s := scheme(*f.v); s {
		case "", "file":
			*f.v = p.expandPath(strings.TrimPrefix(*f.v, "file://"))
		default:
			bad("the %s is a %s reference, which this service does not resolve: give a file path "+
				"(op://, nsc://, env:// and data: are not supported)", f.name, lookupForm(s))
			*f.v = ""
		}
	}
	if (c.Cert == "") != (c.Key == "") {
		bad("cert and key go together: give both or neither")
	}
	for _, u := range strings.Split(c.URL, ",") {
		if u = strings.TrimSpace(u); u == "" {
			continue
		}
		if !strings.Contains(u, "://") {
			u = "nats://" + u // as nats.go reads a URL without a scheme
		}
		pu, err := url.Parse(u)
		if err != nil || pu.Host == "" || !slices.Contains([]string{"nats", "tls", "ws", "wss"}, pu.Scheme) {
			bad("url %q must be nats://, tls://, ws:// or wss:// URLs with a host", RedactURLs(u))
		}
	}

	n.Context = ref
	from := func(env string) { n.FromContext = append(n.FromContext, env) }
	if !p.given["NATS_URL"] {
		n.URL = strings.TrimSpace(c.URL)
		if n.URL == "" {
			n.URL = defaultContextURL
		}
		from("NATS_URL")
	}
	urlAuth := p.given["NATS_URL"] && strings.Contains(n.URL, "@")
	if n.Creds == "" && n.NKeySeed == "" && !urlAuth {
		n.User, n.Password, n.Token = c.User, Secret(c.Password), Secret(c.Token)
		if c.Creds != "" {
			n.Creds = p.contextFile(ref, "creds", c.Creds)
			from("NATS_CREDS")
		}
		if c.NKey != "" {
			n.NKeySeed = p.contextFile(ref, "nkey", c.NKey)
			from("NATS_NKEY_SEED")
		}
	}
	if n.TLSCA == "" && c.CA != "" {
		n.TLSCA = p.contextFile(ref, "ca", c.CA)
		from("NATS_TLS_CA")
	}
	if n.TLSCert == "" && n.TLSKey == "" && c.Cert != "" && c.Key != "" {
		n.TLSCert, n.TLSKey = p.contextFile(ref, "cert", c.Cert), p.contextFile(ref, "key", c.Key)
		from("NATS_TLS_CERT")
		from("NATS_TLS_KEY")
	}
}

// contextPath is the file of context ref: ref itself when it is a path (it
// ends in .json or has a directory), else natscli's
// $XDG_CONFIG_HOME/nats/context/<ref>.json, ~/.config without
// XDG_CONFIG_HOME.
func (p *parser) contextPath(ref string) (string, error) {
	if strings.HasSuffix(ref, ".json") || strings.ContainsRune(ref, '/') || strings.ContainsRune(ref, filepath.Separator) {
		return p.expandPath(ref), nil
	}
	if strings.Contains(ref, "..") {
		return "", fmt.Errorf("%q is not a context name (a name has no \"..\"; a file ends in .json)", ref)
	}
	root, _ := lookup(p.getenv, "XDG_CONFIG_HOME")
	if root == "" {
		home, err := p.home()
		if err != nil {
			return "", fmt.Errorf("context %q: no XDG_CONFIG_HOME and no home directory to find ~/.config/nats in: %v", ref, err)
		}
		root = filepath.Join(home, ".config")
	}
	return filepath.Join(root, "nats", "context", ref+".json"), nil
}

// home is $HOME, else the user's home directory.
func (p *parser) home() (string, error) {
	if h, _ := lookup(p.getenv, "HOME"); h != "" {
		return h, nil
	}
	u, err := user.Current()
	if err != nil {
		return "", err
	}
	if u.HomeDir == "" {
		return "", errors.New("the user has no home directory")
	}
	return u.HomeDir, nil
}

// expandPath expands $VAR and a leading ~ in a context's file path, as
// natscli does.
func (p *parser) expandPath(v string) string {
	v = os.Expand(v, func(k string) string { s, _ := lookup(p.getenv, k); return s })
	if strings.HasPrefix(v, "~") {
		if h, err := p.home(); err == nil {
			v = h + v[1:]
		}
	}
	return v
}

// contextFile checks that the file a context's field names exists.
func (p *parser) contextFile(ref, field, v string) string {
	if st, err := os.Stat(v); err != nil {
		p.fail("NATS_CONTEXT", "context %s: %s: %v", ref, field, err)
	} else if st.IsDir() {
		p.fail("NATS_CONTEXT", "context %s: %s: %s is a directory", ref, field, v)
	}
	return v
}

// scheme is the URI scheme of a context value, as natscli reads it (at
// least two letters, so C:\ is a path); "" for none.
func scheme(v string) string {
	u, err := url.Parse(v)
	if err != nil || len(u.Scheme) < 2 {
		return ""
	}
	return strings.ToLower(u.Scheme)
}

// lookupForm shows scheme s as natscli writes it: op://, data:.
func lookupForm(s string) string {
	if s == "data" {
		return "data:"
	}
	return s + "://"
}
