package webhooks_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/tasks"
	"github.com/open-autoglm/autoglm/app/webhooks"
)

// names is a resolver for tests: host → addresses, changeable while in use.
type names struct {
	mu sync.Mutex
	m  map[string][]netip.Addr
}

func (n *names) set(host string, addrs ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m == nil {
		n.m = map[string][]netip.Addr{}
	}
	n.m[host] = nil
	for _, a := range addrs {
		n.m[host] = append(n.m[host], netip.MustParseAddr(a))
	}
}

func (n *names) lookup(_ context.Context, host string) ([]netip.Addr, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if a, ok := n.m[host]; ok {
		return a, nil
	}
	return net.DefaultResolver.LookupNetIP(context.Background(), "ip", host)
}

func guard(t *testing.T, o webhooks.GuardOptions) *webhooks.Guard {
	t.Helper()
	g, err := webhooks.NewGuard(o)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestTargetClasses: every refused address class is refused at
// registration, named in the reason; public addresses pass.
func TestTargetClasses(t *testing.T) {
	var dns names
	dns.set("internal.test", "10.1.2.3")
	dns.set("mixed.test", "93.184.216.34", "192.168.7.7")
	dns.set("public.test", "93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")
	g := guard(t, webhooks.GuardOptions{Lookup: dns.lookup, Protected: []int{3500, 50001}})
	for url, class := range map[string]string{
		"http://127.0.0.1/h":               "loopback",
		"http://127.9.9.9:8080/h":          "loopback",
		"http://[::1]/h":                   "loopback",
		"http://localhost:3500/v1.0/x":     "port 3500 on this machine",
		"http://localhost:9000/h":          "loopback",
		"http://169.254.169.254/latest":    "link-local",
		"http://[fe80::1]/h":               "link-local",
		"http://10.0.0.1/h":                "private",
		"http://172.16.5.4/h":              "private",
		"http://172.31.255.255/h":          "private",
		"https://192.168.1.1/h":            "private",
		"http://[fd00::1]/h":               "private",
		"http://100.64.0.1/h":              "shared (carrier-grade NAT)",
		"http://100.127.255.254/h":         "shared (carrier-grade NAT)",
		"http://0.0.0.0/h":                 "unspecified",
		"http://0.1.2.3/h":                 "unspecified",
		"http://[::]/h":                    "unspecified",
		"http://224.0.0.1/h":               "multicast",
		"http://239.1.2.3/h":               "multicast",
		"http://[ff02::1]/h":               "multicast",
		"http://[ff0e::1]/h":               "multicast",
		"http://255.255.255.255/h":         "multicast",
		"http://[::ffff:127.0.0.1]/h":      "loopback",
		"http://[::ffff:10.0.0.1]/h":       "private",
		"http://[64:ff9b::a9fe:a9fe]/h":    "link-local",
		"http://internal.test/h":           "internal.test resolves to 10.1.2.3, a private address",
		"http://mixed.test/h":              "mixed.test resolves to 192.168.7.7, a private address",
		"http://127.0.0.1:50001/":          "port 50001 on this machine",
		"http://[::ffff:127.0.0.1]:3500/h": "port 3500 on this machine",
	} {
		err := g.CheckURL(context.Background(), url)
		var refused *webhooks.RefusedError
		if !errors.As(err, &refused) || !strings.Contains(refused.Reason, class) {
			t.Errorf("%s: %v; want refused as %q", url, err, class)
		}
	}
	for _, url := range []string{"http://93.184.216.34/h", "https://public.test:8443/h", "http://[2606:2800:220:1::1]/h",
		"http://172.32.0.1/h", "http://100.128.0.1/h", "http://93.184.216.34:3500/h"} {
		if err := g.CheckURL(context.Background(), url); err != nil {
			t.Errorf("%s: %v; want allowed", url, err)
		}
	}
	for _, url := range []string{"ftp://x/h", "http:///h", "http://x:0/h", "not a url"} {
		var refused *webhooks.RefusedError
		if err := g.CheckURL(context.Background(), url); err == nil || errors.As(err, &refused) {
			t.Errorf("%s: %v; want a malformed-URL error", url, err)
		}
	}
}

// TestTargetAllowList: entries open exactly what they name; the protected
// ports stay closed whatever the list says.
func TestTargetAllowList(t *testing.T) {
	var dns names
	dns.set("hooks.internal", "192.168.0.5")
	dns.set("other.internal", "192.168.0.5")
	g := guard(t, webhooks.GuardOptions{Lookup: dns.lookup, Protected: []int{3500},
		Allow: "127.0.0.1:9000, 10.0.0.0/8,Hooks.Internal,[::1]:7000,127.0.0.2"})
	for url, ok := range map[string]bool{
		"http://127.0.0.1:9000/h":      true,
		"http://127.0.0.1:9001/h":      false,
		"http://10.200.3.4/h":          true,
		"http://11.0.0.1/h":            true, // public
		"http://hooks.internal/h":      true,
		"http://other.internal/h":      false,
		"http://[::1]:7000/h":          true,
		"http://[::1]:7001/h":          false,
		"http://127.0.0.2:3500/v1.0/x": false, // the sidecar's port, although 127.0.0.2 is listed
		"http://127.0.0.2:3501/h":      true,
	} {
		if err := g.CheckURL(context.Background(), url); (err == nil) != ok {
			t.Errorf("%s: %v; want allowed=%v", url, err, ok)
		}
	}
	for _, bad := range []string{"10.0.0.0/33", "host:0", "a b", "127.0.0.1:99999", "hooks.internal:x"} {
		if _, err := webhooks.NewGuard(webhooks.GuardOptions{Allow: bad}); err == nil {
			t.Errorf("allow-list %q accepted", bad)
		}
	}
}

// counter is a receiver that counts the requests it gets.
func counter(t *testing.T, status int, hdr ...string) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		for i := 0; i+1 < len(hdr); i += 2 {
			w.Header().Set(hdr[i], hdr[i+1])
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// TestTargetCheckedAtDelivery: a name that passed registration and then
// resolves to a refused address (DNS rebinding) is not reached; neither is
// a refused literal; an allow-listed name is.
func TestTargetCheckedAtDelivery(t *testing.T) {
	srv, hits := counter(t, http.StatusNoContent)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	var dns names
	dns.set("rebind.test", "93.184.216.34")
	g := guard(t, webhooks.GuardOptions{Lookup: dns.lookup})
	url := "http://rebind.test:" + port + "/hook"
	if err := g.CheckURL(context.Background(), url); err != nil {
		t.Fatalf("registration while the name is public: %v", err)
	}
	dns.set("rebind.test", "127.0.0.1")
	c := g.Client(2 * time.Second)
	for _, u := range []string{url, srv.URL + "/hook", "http://[::ffff:127.0.0.1]:" + port + "/hook"} {
		res, err := c.Post(u, "application/json", strings.NewReader(`{}`))
		if err == nil {
			res.Body.Close()
		}
		var refused *webhooks.RefusedError
		if !errors.As(err, &refused) || !strings.Contains(refused.Reason, "loopback") {
			t.Errorf("delivery to %s: %v; want refused (loopback)", u, err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the loopback receiver got %d requests", n)
	}

	open := guard(t, webhooks.GuardOptions{Lookup: dns.lookup, Allow: "rebind.test:" + port})
	res, err := open.Client(2*time.Second).Post(url, "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatalf("allow-listed receiver: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNoContent || hits.Load() != 1 {
		t.Fatalf("allow-listed receiver: %d, %d requests", res.StatusCode, hits.Load())
	}
}

// TestTargetRedirectNotFollowed: a receiver's redirect is its answer (a
// failed delivery), never a second request, even to an allowed address.
func TestTargetRedirectNotFollowed(t *testing.T) {
	target, hits := counter(t, http.StatusNoContent)
	redirect, _ := counter(t, http.StatusTemporaryRedirect, "Location", target.URL+"/elsewhere")
	g := guard(t, webhooks.GuardOptions{Allow: "127.0.0.1"})
	res, err := g.Client(2*time.Second).Post(redirect.URL, "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusTemporaryRedirect || hits.Load() != 0 {
		t.Fatalf("redirect: status %d, target reached %d times", res.StatusCode, hits.Load())
	}
}

// TestRegistrationClosed: with RegistrationClosed set (the service sets it
// while authentication is off), POST /v1/webhooks is refused as forbidden
// with the reason, and refused targets are refused as forbidden too.
func TestRegistrationClosed(t *testing.T) {
	post := func(s *webhooks.Service, body string) error {
		r := httptest.NewRequest("POST", "/v1/webhooks", strings.NewReader(body))
		_, _, err := s.Create(r)
		return err
	}
	closed := webhooks.New(webhooks.Options{Tasks: tasks.New(tasks.Options{}), RegistrationClosed: "registration is off"})
	err := post(closed, `{"collection":"orders","url":"https://93.184.216.34/h"}`)
	if core.CodeOf(err) != core.CodeForbidden || !strings.Contains(err.Error(), "registration is off") {
		t.Fatalf("closed registration: %v", err)
	}
	open := webhooks.New(webhooks.Options{Tasks: tasks.New(tasks.Options{})})
	err = post(open, `{"collection":"orders","url":"http://169.254.169.254/latest/meta-data"}`)
	if core.CodeOf(err) != core.CodeForbidden || !strings.Contains(err.Error(), "link-local") ||
		!strings.Contains(err.Error(), "AUTOGLM_WEBHOOK_ALLOW") {
		t.Fatalf("metadata address: %v", err)
	}
}
