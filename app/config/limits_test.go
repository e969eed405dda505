package config

import (
	"strings"
	"testing"
	"time"
)

func limitsEnv(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

func TestConnectionLimitsFromEnv(t *testing.T) {
	c, err := FromEnv(limitsEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.BodyTimeout != 30*time.Second || c.HelloTimeout != 5*time.Second || c.MaxConnsPerAddr != 256 ||
		c.MaxConnsPerIdentity != 64 || c.ClientAddrHeader != "" {
		t.Fatalf("defaults: %+v", c)
	}
	c, err = FromEnv(limitsEnv(map[string]string{
		"AUTOGLM_BODY_TIMEOUT": "2s", "AUTOGLM_HELLO_TIMEOUT": "750ms",
		"AUTOGLM_MAX_CONNS_PER_ADDR": "0", "AUTOGLM_MAX_CONNS_PER_IDENTITY": "3",
		"AUTOGLM_CLIENT_ADDR_HEADER": "X-Forwarded-For",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.BodyTimeout != 2*time.Second || c.HelloTimeout != 750*time.Millisecond || c.MaxConnsPerAddr != 0 ||
		c.MaxConnsPerIdentity != 3 || c.ClientAddrHeader != "X-Forwarded-For" {
		t.Fatalf("parsed: %+v", c)
	}
	for k, v := range map[string]string{
		"AUTOGLM_BODY_TIMEOUT": "0", "AUTOGLM_HELLO_TIMEOUT": "soon",
		"AUTOGLM_MAX_CONNS_PER_ADDR": "-1", "AUTOGLM_MAX_CONNS_PER_IDENTITY": "many",
	} {
		if _, err := FromEnv(limitsEnv(map[string]string{k: v})); err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%q: got %v, want an error naming it", k, v, err)
		}
	}
}
