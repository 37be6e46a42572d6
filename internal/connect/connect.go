// Package connect builds the service's connections to NATS and Redis from
// the configuration (config.NATS, config.Redis): credentials, TLS, cluster
// URL lists, Sentinel and Redis Cluster, reconnection. serve and every
// operator command connect through it, so they all accept the same
// settings. Its errors name the setting to fix and never quote a password.
// It owns no long-running work: callers close what it returns.
package connect

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSConfig builds a client TLS configuration: ca (a PEM file) replaces the
// system roots when given; cert and key (PEM files) are the client
// certificate when given. prefix names the settings in errors
// ("NATS_TLS", "REDIS_TLS"). It returns nil when all three are empty.
func TLSConfig(prefix, ca, cert, key string) (*tls.Config, error) {
	if ca == "" && cert == "" && key == "" {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("%s_CA: %w", prefix, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s_CA: %s holds no PEM certificate", prefix, ca)
		}
		c.RootCAs = pool
	}
	if cert != "" || key != "" {
		if cert == "" || key == "" {
			return nil, fmt.Errorf("%s_CERT and %s_KEY go together: give both or neither", prefix, prefix)
		}
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("%s_CERT/%s_KEY: %w", prefix, prefix, err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

// errAs reports whether err holds a T.
func errAs[T error](err error) bool {
	var t T
	return errors.As(err, &t)
}
