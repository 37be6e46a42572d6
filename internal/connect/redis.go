package connect

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/campaign-orchestrator/orchestrator/internal/config"
)

// Redis builds the client for c without connecting (the store's
// NewRedisClient pings it): one server from REDIS_URL, a failover client
// through Sentinel (REDIS_SENTINEL_ADDRS, REDIS_MASTER_NAME), or a Redis
// Cluster client (REDIS_CLUSTER_ADDRS). REDIS_URL gives the scheme
// (rediss:// for TLS), the ACL user and password and the database; with
// Sentinel or Cluster its host is not dialled but, with rediss://, is the
// name the servers' certificates must carry. REDIS_TLS_CA replaces the
// system roots; REDIS_TLS_CERT and REDIS_TLS_KEY add a client certificate.
func Redis(c config.Redis) (redis.UniversalClient, error) {
	if !c.Configured() {
		return nil, errors.New("REDIS_URL: empty")
	}
	ro := &redis.Options{}
	if c.URL != "" {
		var err error
		if ro, err = redis.ParseURL(c.URL); err != nil {
			// The message may quote the URL, password included: leave it out.
			return nil, fmt.Errorf("REDIS_URL: %s", strings.ReplaceAll(err.Error(), c.URL, "<REDIS_URL>"))
		}
	}
	tc, err := TLSConfig("REDIS_TLS", c.TLSCA, c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, err
	}
	if tc != nil {
		if ro.TLSConfig == nil {
			return nil, errors.New("REDIS_TLS_CA, REDIS_TLS_CERT: TLS settings need a rediss:// REDIS_URL")
		}
		tc.ServerName = ro.TLSConfig.ServerName
		ro.TLSConfig = tc
	}
	if ro.TLSConfig != nil && ro.TLSConfig.MinVersion == 0 {
		ro.TLSConfig.MinVersion = tls.VersionTLS12
	}
	switch {
	case len(c.ClusterAddrs) > 0:
		if ro.DB != 0 {
			return nil, fmt.Errorf("REDIS_URL: database %d: Redis Cluster has database 0 only", ro.DB)
		}
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: c.ClusterAddrs, Username: ro.Username, Password: ro.Password, TLSConfig: ro.TLSConfig,
			MaxRetries: ro.MaxRetries, DialTimeout: ro.DialTimeout, ReadTimeout: ro.ReadTimeout, WriteTimeout: ro.WriteTimeout,
			PoolSize: ro.PoolSize,
		}), nil
	case len(c.SentinelAddrs) > 0:
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: c.MasterName, SentinelAddrs: c.SentinelAddrs, SentinelPassword: string(c.SentinelPassword),
			Username: ro.Username, Password: ro.Password, DB: ro.DB, TLSConfig: ro.TLSConfig,
			MaxRetries: ro.MaxRetries, DialTimeout: ro.DialTimeout, ReadTimeout: ro.ReadTimeout, WriteTimeout: ro.WriteTimeout,
			PoolSize: ro.PoolSize,
		}), nil
	}
	return redis.NewClient(ro), nil
}

// RedisWhere names the Redis servers of c for logs and errors, without a
// password.
func RedisWhere(c config.Redis) string {
	switch {
	case len(c.ClusterAddrs) > 0:
		return "cluster " + strings.Join(c.ClusterAddrs, ",")
	case len(c.SentinelAddrs) > 0:
		return "sentinel " + strings.Join(c.SentinelAddrs, ",") + " master " + c.MasterName
	}
	return config.RedactURLs(c.URL)
}

// ExplainRedis turns a connection error into one that names the setting to
// fix.
func ExplainRedis(c config.Redis, err error) error {
	where := "REDIS_URL " + RedisWhere(c)
	switch {
	case len(c.ClusterAddrs) > 0:
		where = "REDIS_CLUSTER_ADDRS " + RedisWhere(c)
	case len(c.SentinelAddrs) > 0:
		where = "REDIS_SENTINEL_ADDRS " + RedisWhere(c)
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "WRONGPASS"), strings.Contains(msg, "NOAUTH"), strings.Contains(msg, "invalid username-password"):
		return fmt.Errorf("%s: the server refused the credentials; check the user and password in REDIS_URL: %w", where, err)
	case strings.Contains(msg, "NOPERM"):
		return fmt.Errorf("%s: the ACL user lacks a permission the store needs (see the README's Redis ACL): %w", where, err)
	case strings.Contains(msg, "certificate"), strings.Contains(msg, "x509"), strings.Contains(msg, "tls:"):
		return fmt.Errorf("%s: TLS failed; check rediss:// and REDIS_TLS_CA (REDIS_TLS_CERT, REDIS_TLS_KEY): %w", where, err)
	}
	return fmt.Errorf("%s: %w", where, err)
}
