package httpapi

import (
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v5"
	"golang.org/x/time/rate"
)

// maxLimiters bounds the per-key limiter table: in development mode the
// tenant is whatever X-Tenant-ID says, so the table is cleared when it grows
// past this many keys rather than growing without bound.
const maxLimiters = 10000

// tenantLimiter is a token bucket per tenant for the command endpoints
// (Config.CommandRate, COMMAND_RATE), and in development mode (no API
// tokens: the client names its tenant) one per client address too, so that
// naming a new tenant in each request does not escape the limit; nil when
// rate limiting is off. The address is the peer's, or what a trusted proxy
// says (TrustedProxies).
type tenantLimiter struct {
	rate  rate.Limit
	burst int
	mu    sync.Mutex
	m     map[string]*rate.Limiter
}

func newTenantLimiter(perSecond float64, burst int) *tenantLimiter {
	if perSecond <= 0 {
		return nil
	}
	if burst <= 0 {
		burst = max(1, int(perSecond))
	}
	return &tenantLimiter{rate: rate.Limit(perSecond), burst: burst, m: map[string]*rate.Limiter{}}
}

func (l *tenantLimiter) get(key string) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.m[key]
	if !ok {
		if len(l.m) >= maxLimiters {
			clear(l.m)
		}
		lim = rate.NewLimiter(l.rate, l.burst)
		l.m[key] = lim
	}
	return lim
}

// allow takes one token from each key's bucket, or none: when one bucket
// is empty it returns false and how long until both have a token.
func (l *tenantLimiter) allow(now time.Time, keys ...string) (bool, time.Duration) {
	res := make([]*rate.Reservation, 0, len(keys))
	var wait time.Duration
	for _, k := range keys {
		r := l.get(k).ReserveN(now, 1)
		res = append(res, r)
		wait = max(wait, r.DelayFrom(now))
	}
	if wait == 0 {
		return true, 0
	}
	for _, r := range res {
		r.CancelAt(now)
	}
	return false, wait
}

// limit answers 429, with Retry-After in whole seconds (at least 1), when
// the tenant (in development mode, or the client address) sends commands
// faster than allowed.
func (s *Server) limit(c *echo.Context, tenant string) error {
	if s.limiter == nil {
		return nil
	}
	keys := []string{"tenant:" + tenant}
	if len(s.tokens) == 0 {
		keys = append(keys, "addr:"+c.RealIP())
	}
	ok, wait := s.limiter.allow(time.Now(), keys...)
	if ok {
		return nil
	}
	secs := max(1, int(math.Ceil(wait.Seconds())))
	c.Response().Header().Set("Retry-After", strconv.Itoa(secs))
	return errorf(CodeRateLimited, "", "too many commands for tenant %s; retry in %d s", tenant, secs)
}
