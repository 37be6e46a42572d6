package config

import (
	"net"
	"strconv"
	"strings"
	"time"
)

// Ingress are the HTTP ingress's limits.
type Ingress struct {
	// CommandRate is the commands per second each tenant, and each client
	// address, may send (COMMAND_RATE; 0: no limit); CommandBurst the bucket
	// size (COMMAND_BURST; 0: the rate, at least 1).
	CommandRate  float64
	CommandBurst int
	// TrustedProxies are the proxies (CIDR ranges; a bare address is one
	// host) whose X-Forwarded-For names the client (TRUSTED_PROXIES); empty:
	// the peer's address, whatever headers say.
	TrustedProxies []*net.IPNet
	// RequestTimeout bounds one request, event streams excepted (REQUEST_TIMEOUT).
	RequestTimeout time.Duration
}

var ingressSettings = []setting{
	{"COMMAND_RATE", "0", "commands per second each tenant and each client address may send (0: no limit); over it: 429 with Retry-After", "float"},
	{"COMMAND_BURST", "0", "commands a tenant or address may send at once above COMMAND_RATE (0: the rate, at least 1)", "int"},
	{"TRUSTED_PROXIES", "", "comma-separated proxy addresses or CIDR ranges whose X-Forwarded-For gives the client address; empty: the peer's address", "cidr,…"},
	{"REQUEST_TIMEOUT", "30s", "longest handling of one HTTP request (event streams excepted); past it: 503", "duration"},
}

func init() { settings = append(settings, ingressSettings...) }

func (p *parser) ingress() Ingress {
	in := Ingress{CommandBurst: p.intIn("COMMAND_BURST", 0, 1<<20), RequestTimeout: p.duration("REQUEST_TIMEOUT")}
	v := p.str("COMMAND_RATE")
	r, err := strconv.ParseFloat(v, 64)
	if err != nil || r < 0 || r > 1e6 {
		p.fail("COMMAND_RATE", "%q must be a number of commands per second from 0 (off) to 1000000", v)
	}
	in.CommandRate = r
	if in.CommandBurst > 0 && in.CommandRate == 0 {
		p.fail("COMMAND_BURST", "is set but COMMAND_RATE is 0 (no limit): set the rate too")
	}
	for _, s := range strings.Split(p.str("TRUSTED_PROXIES"), ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if !strings.Contains(s, "/") {
			ip := net.ParseIP(s)
			if ip == nil {
				p.fail("TRUSTED_PROXIES", "%q is not an IP address or CIDR range", s)
				continue
			}
			bits := 128
			if ip.To4() != nil {
				ip, bits = ip.To4(), 32
			}
			in.TrustedProxies = append(in.TrustedProxies, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
			continue
		}
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			p.fail("TRUSTED_PROXIES", "%q is not an IP address or CIDR range", s)
			continue
		}
		if ones, _ := n.Mask.Size(); ones == 0 {
			p.fail("TRUSTED_PROXIES", "%q trusts every address: anyone could choose their client address", s)
			continue
		}
		in.TrustedProxies = append(in.TrustedProxies, n)
	}
	return in
}
