package httpapi

import (
	"sync"

	"golang.org/x/time/rate"
)

// maxLimiters bounds the per-tenant limiter table: in development mode the
// tenant is whatever X-Tenant-ID says, so the table is cleared when it grows
// past this many tenants rather than growing without bound.
const maxLimiters = 10000

// tenantLimiter is a token bucket per tenant for the command endpoints
// (Config.CommandRate); nil when rate limiting is off.
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

func (l *tenantLimiter) allow(tenant string) bool {
	l.mu.Lock()
	lim, ok := l.m[tenant]
	if !ok {
		if len(l.m) >= maxLimiters {
			clear(l.m)
		}
		lim = rate.NewLimiter(l.rate, l.burst)
		l.m[tenant] = lim
	}
	l.mu.Unlock()
	return lim.Allow()
}

// limit answers 429 when the tenant sends commands faster than allowed.
func (s *Server) limit(tenant string) error {
	if s.limiter == nil || s.limiter.allow(tenant) {
		return nil
	}
	return errorf(CodeRateLimited, "", "too many commands for tenant %s; slow down", tenant)
}
