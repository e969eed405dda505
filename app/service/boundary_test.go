package service_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"github.com/open-autoglm/autoglm/app/client"
	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/daprdeps"
	"github.com/open-autoglm/autoglm/app/internal/daprrun"
	"github.com/open-autoglm/autoglm/app/internal/daprtest"
)

// TestForgedBroadcastRefused: on a replica as the harness starts it (as
// the dev runners do: the app and its daprd share tokens generated for the
// run), a CloudEvent posted to the broadcast route without daprd's token
// is refused, and subscribers never apply it: the real next version
// arrives with its own content.
func TestForgedBroadcastRefused(t *testing.T) {
	r := daprtest.Start(t, daprtest.Options{})
	if r.Cfg.AppAPIToken == "" || r.Cfg.DaprAPIToken == "" {
		t.Fatal("the harness started the replica without API tokens")
	}
	doc := "forms/forged-" + uuid.NewString()[:8]
	wantStatus(t, do(t, "PUT", r.URL()+"/v1/docs/"+doc, `{"n":"real-1"}`), 201, "")
	sub := subscribe(t, dial(t, r.WSURL(), client.Options{}), doc, 0)
	waitAll(t, 1, sub)

	// Version current+1, as an attacker who reads the version would send it.
	forged := fmt.Sprintf(`{"specversion":"1.0","id":"forged-1","source":"autoglm","type":"com.dapr.event.sent",`+
		`"topic":%q,"pubsubname":%q,"datacontenttype":"application/json","data":{"node":"intruder","changes":`+
		`[{"doc":%q,"v":2,"pv":1,"ops":[{"op":"set","path":"n","value":"forged"}],"by":"intruder","hlc":"%d.0.intruder"}]}}`,
		r.Cfg.BroadcastTopic, r.Cfg.BroadcastPubsub, doc, time.Now().UnixMilli())
	for _, hdr := range [][]string{nil, {"dapr-api-token", "wrong"}, {"dapr-api-token", r.Cfg.DaprAPIToken}} {
		if res := do(t, "POST", r.URL()+daprdeps.BroadcastRoute, forged, hdr...); res.Status != http.StatusUnauthorized {
			t.Fatalf("forged broadcast with headers %q: %d %s; want 401", hdr, res.Status, res.Raw)
		}
	}
	wantStatus(t, do(t, "PATCH", r.URL()+"/v1/docs/"+doc, `{"ops":[{"op":"set","path":"n","value":"real-2"}]}`), 200, "")
	waitAll(t, 2, sub)
	if got := sub.Data()["n"]; got != "real-2" {
		t.Fatalf("subscriber holds n=%v at version %d; want the real version 2 (real-2)", got, sub.Version())
	}
	// The route is open to the token daprd presents (an empty message).
	if res := do(t, "POST", r.URL()+daprdeps.BroadcastRoute, `{"id":"e","data":{"node":"n"}}`,
		"dapr-api-token", r.Cfg.AppAPIToken); res.Status != http.StatusOK {
		t.Fatalf("daprd's token: %d %s", res.Status, res.Raw)
	}
	// So are the task routes and the subscription list, to nobody else.
	for _, route := range []string{"/dapr/tasks/high", "/dapr/tasks/dead"} {
		if res := do(t, "POST", r.URL()+route, `{"id":"x","data":{}}`); res.Status != http.StatusUnauthorized {
			t.Fatalf("%s without the token: %d", route, res.Status)
		}
	}
	if res := do(t, "GET", r.URL()+"/dapr/subscribe", ""); res.Status != http.StatusUnauthorized {
		t.Fatalf("subscription list without the token: %d", res.Status)
	}
}

// TestAuthNeedsAppToken: with authentication on and no APP_API_TOKEN the
// service refuses to start, from the environment and from code.
func TestAuthNeedsAppToken(t *testing.T) {
	env := map[string]string{"AUTOGLM_AUTH": "jwt", "AUTOGLM_JWT_SECRET": testSecret}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cfg, err := config.FromEnv(lookup)
	if err == nil || !strings.Contains(err.Error(), "AUTOGLM_AUTH=jwt needs APP_API_TOKEN") {
		t.Fatalf("FromEnv: %v; want the APP_API_TOKEN error", err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	if _, err := daprdeps.NewService(cfg, log); err == nil || !strings.Contains(err.Error(), "APP_API_TOKEN") {
		t.Fatalf("daprdeps.NewService: %v; want the APP_API_TOKEN error", err)
	}
	env["APP_API_TOKEN"] = "from-daprd"
	if _, err := config.FromEnv(lookup); err != nil {
		t.Fatalf("with the token: %v", err)
	}
}

// TestListenAddress: by default the service is reachable on loopback only;
// AUTOGLM_HOST=0.0.0.0 (as the container image sets it) opens every
// interface.
func TestListenAddress(t *testing.T) {
	var external []net.IP
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
				external = append(external, n.IP)
			}
		}
	}
	for _, tc := range []struct {
		host     string
		external bool
	}{{config.DefaultHost, false}, {"0.0.0.0", true}} {
		t.Run(tc.host, func(t *testing.T) {
			cfg, err := config.FromEnv(func(k string) (string, bool) {
				if k == "AUTOGLM_HOST" && tc.host != config.DefaultHost {
					return tc.host, true
				}
				return "", false
			})
			if err != nil {
				t.Fatal(err)
			}
			ports := make([]int, 3)
			for i := range ports {
				if ports[i], err = daprrun.FreePort(); err != nil {
					t.Fatal(err)
				}
			}
			cfg.Port, cfg.DaprHTTPPort, cfg.DaprGRPCPort, cfg.CompactionInterval = ports[0], ports[1], ports[2], 0
			svc := daprtest.Serve(t, cfg, io.Discard, nil)
			t.Cleanup(func() {
				// Nothing is queued; the bound only skips waiting for the
				// sidecar this test does not start.
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				_ = svc.Shutdown(ctx)
			})
			port := strconv.Itoa(cfg.Port)
			wantStatus(t, do(t, "GET", "http://127.0.0.1:"+port+"/healthz", ""), 200, "")
			for _, ip := range external {
				c, err := net.DialTimeout("tcp", net.JoinHostPort(ip.String(), port), 2*time.Second)
				if err == nil {
					c.Close()
				}
				if (err == nil) != tc.external {
					t.Fatalf("dial %s:%s: %v; want reachable=%v", ip, port, err, tc.external)
				}
			}
			if len(external) == 0 {
				t.Log("this machine has no non-loopback IPv4 address; only loopback was checked")
			}
		})
	}
}
