package connect

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/campaign-orchestrator/orchestrator/internal/config"
)

// Reconnection back-off: after every server of the list failed, wait
// ReconnectBase, doubled each round up to ReconnectMax, each with up to a
// quarter of jitter; forever.
const (
	ReconnectBase = 250 * time.Millisecond
	ReconnectMax  = 5 * time.Second
)

// ReconnectDelay is the wait before the next round of reconnection
// attempts, the attempts-th (from 1).
func ReconnectDelay(attempts int) time.Duration {
	d := ReconnectBase
	for i := 1; i < attempts && d < ReconnectMax; i++ {
		d *= 2
	}
	d = min(d, ReconnectMax)
	return d + rand.N(d/4+1)
}

// NATSOptions are the nats.go options for c: the credentials file or NKey
// seed, a natscli context's user and password or token, TLS (NATS_TLS_CA,
// NATS_TLS_CERT, NATS_TLS_KEY), and reconnecting forever with back-off.
// User and password or token in the URL need no option: nats.go reads them
// from each URL (and prefers them to the options').
func NATSOptions(c config.NATS, name string) ([]nats.Option, error) {
	opts := []nats.Option{
		nats.Name(name), nats.Timeout(5 * time.Second),
		nats.MaxReconnects(-1), nats.CustomReconnectDelay(ReconnectDelay),
	}
	switch {
	case c.Creds != "":
		opts = append(opts, nats.UserCredentials(c.Creds))
	case c.NKeySeed != "":
		o, err := nats.NkeyOptionFromSeed(c.NKeySeed)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.Source("NATS_NKEY_SEED"), err)
		}
		opts = append(opts, o)
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, string(c.Password)))
	case c.Token != "":
		opts = append(opts, nats.Token(string(c.Token)))
	}
	tc, err := TLSConfig("NATS_TLS", c.TLSCA, c.TLSCert, c.TLSKey)
	if err != nil {
		if c.Source("NATS_TLS_CA") != "NATS_TLS_CA" || c.Source("NATS_TLS_CERT") != "NATS_TLS_CERT" {
			return nil, fmt.Errorf("NATS_CONTEXT %s (its ca, cert and key stand for these): %w", c.Context, err)
		}
		return nil, err
	}
	if tc != nil {
		opts = append(opts, nats.Secure(tc))
	}
	return opts, nil
}

// NATS connects to c.URL with NATSOptions and then extra. Its errors say
// which setting to look at: the credentials when the server refuses them,
// TLS when the server requires it or its certificate is not trusted.
func NATS(c config.NATS, name string, extra ...nats.Option) (*nats.Conn, error) {
	if strings.TrimSpace(c.URL) == "" {
		return nil, errors.New("NATS_URL: empty")
	}
	opts, err := NATSOptions(c, name)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(c.URL, append(opts, extra...)...)
	if err != nil {
		return nil, ExplainNATS(c, err)
	}
	return nc, nil
}

// ExplainNATS turns a connection error into one that names the setting to
// fix; the URL is shown without its password or token.
func ExplainNATS(c config.NATS, err error) error {
	where := "NATS_URL " + c.String()
	var auth string
	switch {
	case c.Creds != "":
		auth = c.Source("NATS_CREDS")
	case c.NKeySeed != "":
		auth = c.Source("NATS_NKEY_SEED")
	case c.User != "":
		auth = "the user and password of NATS_CONTEXT " + c.Context + " (or the user:password@ in NATS_URL)"
	case c.Token != "":
		auth = "the token of NATS_CONTEXT " + c.Context + " (or the token@ in NATS_URL)"
	case c.Context != "":
		auth = "the user:password@ or token@ in NATS_URL (or NATS_CREDS, NATS_NKEY_SEED; NATS_CONTEXT " + c.Context + " gives none)"
	default:
		auth = "the user:password@ or token@ in NATS_URL (or NATS_CREDS, NATS_NKEY_SEED, NATS_CONTEXT)"
	}
	ca, cert, key := c.Source("NATS_TLS_CA"), c.Source("NATS_TLS_CERT"), c.Source("NATS_TLS_KEY")
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked),
		strings.Contains(strings.ToLower(err.Error()), "authorization violation"):
		return fmt.Errorf("%s: the server refused the credentials; check %s: %w", where, auth, err)
	case errors.Is(err, nats.ErrSecureConnRequired):
		return fmt.Errorf("%s: the server requires TLS; use tls:// URLs and set NATS_TLS_CA (NATS_TLS_CERT and NATS_TLS_KEY if it verifies clients): %w", where, err)
	case errors.Is(err, nats.ErrSecureConnWanted):
		return fmt.Errorf("%s: TLS is asked for (tls:// or NATS_TLS_*) but the server does not offer it: %w", where, err)
	case errAs[x509.UnknownAuthorityError](err), errAs[x509.HostnameError](err), errAs[x509.CertificateInvalidError](err),
		errAs[*tls.CertificateVerificationError](err):
		return fmt.Errorf("%s: the server's TLS certificate is not trusted; check %s: %w", where, ca, err)
	case errAs[tls.AlertError](err), strings.Contains(err.Error(), "certificate required"), strings.Contains(err.Error(), "bad certificate"):
		return fmt.Errorf("%s: the server refused the TLS client certificate; check %s and %s: %w", where, cert, key, err)
	case strings.Contains(err.Error(), "closed by remote after TLS handshake"):
		// TLS 1.3: a refused client certificate shows only as a close.
		return fmt.Errorf("%s: the server closed the connection after the TLS handshake, as it does when it requires a client certificate; check %s and %s: %w", where, cert, key, err)
	}
	return fmt.Errorf("%s: connect: %w", where, err)
}
