package config_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/config"
)

func TestIngressSettings(t *testing.T) {
	c, err := config.Load(nil, env(map[string]string{
		"COMMAND_RATE": "2.5", "COMMAND_BURST": "10", "TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1,::1", "REQUEST_TIMEOUT": "5s",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	in := c.Ingress
	if in.CommandRate != 2.5 || in.CommandBurst != 10 || in.RequestTimeout != 5*time.Second || len(in.TrustedProxies) != 3 ||
		in.TrustedProxies[1].String() != "192.0.2.1/32" || in.TrustedProxies[2].String() != "::1/128" {
		t.Fatalf("got %+v", in)
	}
	if d, _ := config.Load(nil, env(nil), io.Discard); d.Ingress.CommandRate != 0 || d.Ingress.RequestTimeout != 30*time.Second || d.Ingress.TrustedProxies != nil {
		t.Fatalf("defaults %+v", d.Ingress)
	}
	for _, tc := range []struct{ env map[string]string }{
		{map[string]string{"COMMAND_RATE": "-1"}},
		{map[string]string{"COMMAND_RATE": "fast"}},
		{map[string]string{"COMMAND_BURST": "5"}},
		{map[string]string{"TRUSTED_PROXIES": "proxy.internal"}},
		{map[string]string{"TRUSTED_PROXIES": "0.0.0.0/0"}},
		{map[string]string{"REQUEST_TIMEOUT": "0s"}},
	} {
		var name string
		for k := range tc.env {
			name = k
		}
		if _, err := config.Load(nil, env(tc.env), io.Discard); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("env %v: error %v, want one naming %s", tc.env, err, name)
		}
	}
}
