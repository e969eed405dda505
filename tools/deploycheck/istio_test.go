package deploycheck

import (
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	istionet "istio.io/api/networking/v1alpha3"
	istiosec "istio.io/api/security/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/open-autoglm/autoglm/app/config"
)

// The tester header that pins a request to the canary, as documented.
const (
	canaryHeader = "x-autoglm-canary"
	canaryValue  = "always"
	canarySubset = "v2"
	stableSubset = "v1"
)

// sessionPaths are the transports whose session lives in one pod's memory
// (SSE with POSTs, long-poll): their requests must not be split across
// tracks.
var sessionPaths = []string{"/v1/events", "/v1/poll"}

// sessionBound reports whether a route serves the session-bound transports.
func sessionBound(r *istionet.HTTPRoute) bool {
	for _, mr := range r.Match {
		for _, p := range sessionPaths {
			if strings.HasPrefix(mr.GetUri().GetPrefix(), p) || strings.HasPrefix(p, mr.GetUri().GetPrefix()) && mr.GetUri().GetPrefix() != "" {
				return true
			}
		}
	}
	return false
}

// mesh is everything the Istio checks look at.
type mesh struct {
	ns       string
	svc      *corev1.Service
	deps     map[string]*appsv1.Deployment
	dr       *networkingv1.DestinationRule
	vs       *networkingv1.VirtualService
	gateways map[string]*networkingv1.Gateway
	peers    []*securityv1.PeerAuthentication
}

func mustMesh(tb testing.TB) mesh {
	tb.Helper()
	m, i := mustBundle(tb, manifestsDir), mustBundle(tb, istioDir)
	out := mesh{
		ns:       i.Kustomization.Namespace,
		svc:      mustOne[corev1.Service](tb, m.Objects, config.DefaultAppID),
		deps:     mustDeployments(tb, m.Objects),
		gateways: map[string]*networkingv1.Gateway{},
		peers:    all[securityv1.PeerAuthentication](i.Objects),
	}
	for _, g := range all[networkingv1.Gateway](i.Objects) {
		out.gateways[g.Name] = g
	}
	drs, vss := all[networkingv1.DestinationRule](i.Objects), all[networkingv1.VirtualService](i.Objects)
	if len(drs) != 1 || len(vss) != 1 {
		tb.Fatalf("%d DestinationRules and %d VirtualServices, want one of each", len(drs), len(vss))
	}
	out.dr, out.vs = drs[0], vss[0]
	return out
}

// isService reports whether an Istio host name refers to the Service, in
// any of the forms Istio resolves from the rule's namespace.
func (m mesh) isService(host string) bool {
	s := m.svc.Name
	return slices.Contains([]string{s, s + "." + m.ns, s + "." + m.ns + ".svc", s + "." + m.ns + ".svc.cluster.local"}, host)
}

func (m mesh) subsets() map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, s := range m.dr.Spec.Subsets {
		out[s.Name] = s.Labels
	}
	return out
}

func TestDestinationRule(t *testing.T) {
	m := mustMesh(t)
	spec := &m.dr.Spec
	if !m.isService(spec.Host) {
		t.Errorf("host %q is not the Service %s in namespace %s", spec.Host, m.svc.Name, m.ns)
	}
	if got := spec.GetTrafficPolicy().GetTls().GetMode(); got != istionet.ClientTLSSettings_ISTIO_MUTUAL {
		t.Errorf("trafficPolicy.tls.mode %v, want ISTIO_MUTUAL", got)
	}
	subsets := m.subsets()
	if diff := cmp.Diff([]string{"v1", "v2"}, slices.Sorted(maps.Keys(subsets))); diff != "" {
		t.Errorf("subsets (-want +got):\n%s", diff)
	}
	for name, labels := range subsets {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(map[string]string{"version": name}, labels); diff != "" {
				t.Errorf("labels (-want +got):\n%s", diff)
			}
			// The subset is the Service's pods narrowed by the subset labels:
			// it must be exactly one Deployment's pods.
			sel := maps.Clone(m.svc.Spec.Selector)
			maps.Copy(sel, labels)
			var hits []string
			for _, d := range m.deps {
				if selects(sel, d.Spec.Template.Labels) {
					hits = append(hits, d.Name)
				}
			}
			if len(hits) != 1 {
				t.Errorf("subset %s selects Deployments %v, want exactly one", name, hits)
			}
		})
	}
}

func TestVirtualServiceHostsAndGateways(t *testing.T) {
	m := mustMesh(t)
	spec := &m.vs.Spec
	if !slices.ContainsFunc(spec.Hosts, m.isService) {
		t.Errorf("hosts %v do not include the Service %s", spec.Hosts, m.svc.Name)
	}
	if len(spec.Gateways) > 0 && !slices.Contains(spec.Gateways, "mesh") {
		t.Errorf("gateways %v lack \"mesh\": the canary routes would not apply inside the mesh", spec.Gateways)
	}
	gatewayHosts := map[string]bool{}
	for _, name := range spec.Gateways {
		if name == "mesh" {
			continue
		}
		g, ok := m.gateways[name]
		if !ok {
			t.Errorf("gateway %q is not defined in %s/", name, istioDir)
			continue
		}
		for _, s := range g.Spec.Servers {
			for _, h := range s.Hosts {
				gatewayHosts[h] = true
			}
		}
	}
	for _, h := range spec.Hosts {
		if !m.isService(h) && !gatewayHosts[h] {
			t.Errorf("host %q is neither the Service nor served by a referenced Gateway", h)
		}
	}
	for h := range gatewayHosts {
		if !slices.Contains(spec.Hosts, h) {
			t.Errorf("a Gateway serves %q but the VirtualService does not route it", h)
		}
	}
}

func TestVirtualServiceRoutes(t *testing.T) {
	m := mustMesh(t)
	routes := m.vs.Spec.Http
	if len(routes) == 0 {
		t.Fatal("no http routes")
	}
	if last := routes[len(routes)-1]; len(last.Match) != 0 {
		t.Errorf("last route %q has a match; want a catch-all so no request goes unrouted", last.Name)
	}
	subsets := m.subsets()
	names := map[string]bool{}
	for _, r := range routes {
		t.Run(r.Name, func(t *testing.T) {
			if r.Name == "" || names[r.Name] {
				t.Errorf("route name %q: want a unique name (the docs and metrics refer to it)", r.Name)
			}
			names[r.Name] = true
			if len(r.Route) == 0 {
				t.Fatal("no destinations")
			}
			var sum int32
			for _, d := range r.Route {
				if !m.isService(d.Destination.GetHost()) {
					t.Errorf("destination host %q is not the Service", d.Destination.GetHost())
				}
				if _, ok := subsets[d.Destination.GetSubset()]; !ok {
					t.Errorf("subset %q is not defined in the DestinationRule", d.Destination.GetSubset())
				}
				sum += d.Weight
			}
			if !(len(r.Route) == 1 && sum == 0) && sum != 100 {
				t.Errorf("weights sum to %d, want 100", sum)
			}
			if r.Retries == nil {
				t.Error("no retries block: Istio would apply its default retries, also to writes")
			}
		})
	}
}

// weights returns the share of each subset in a route.
func weights(r *istionet.HTTPRoute) map[string]int32 {
	out := map[string]int32{}
	for _, d := range r.Route {
		w := d.Weight
		if len(r.Route) == 1 && w == 0 {
			w = 100
		}
		out[d.Destination.GetSubset()] += w
	}
	return out
}

// withoutCanaryHeader returns the match with the tester header removed.
func withoutCanaryHeader(mr *istionet.HTTPMatchRequest) *istionet.HTTPMatchRequest {
	c := proto.Clone(mr).(*istionet.HTTPMatchRequest)
	delete(c.Headers, canaryHeader)
	if len(c.Headers) == 0 {
		c.Headers = nil
	}
	return c
}

// TestCanaryRoutes checks the route pairs: every public route has a tester
// twin just before it that sends the same requests to v2, with the same
// timeout and retries; and the public routes all split the same way.
func TestCanaryRoutes(t *testing.T) {
	m := mustMesh(t)
	routes := m.vs.Spec.Http
	var public []*istionet.HTTPRoute
	for i := 0; i < len(routes); i++ {
		r := routes[i]
		base, isCanary := strings.CutSuffix(r.Name, "-canary")
		if !isCanary {
			t.Errorf("route %q has no %q twin before it: testers would not reach v2 for these requests", r.Name, r.Name+"-canary")
			public = append(public, r)
			continue
		}
		t.Run(r.Name, func(t *testing.T) {
			if diff := cmp.Diff(map[string]int32{canarySubset: 100}, weights(r)); diff != "" {
				t.Errorf("tester route weights (-want +got):\n%s", diff)
			}
			if len(r.Match) == 0 {
				t.Fatal("no match")
			}
			for _, mr := range r.Match {
				if h := mr.Headers[canaryHeader]; h.GetExact() != canaryValue {
					t.Errorf("a match lacks header %s: {exact: %s}", canaryHeader, canaryValue)
				}
			}
			if i+1 >= len(routes) || routes[i+1].Name != base {
				t.Fatalf("not followed by its public route %q", base)
			}
			pub := routes[i+1]
			var stripped []*istionet.HTTPMatchRequest
			for _, mr := range r.Match {
				if c := withoutCanaryHeader(mr); !proto.Equal(c, &istionet.HTTPMatchRequest{}) {
					stripped = append(stripped, c)
				}
			}
			if len(stripped) != len(pub.Match) {
				t.Errorf("%d matches without the header, %q has %d", len(stripped), base, len(pub.Match))
			}
			for j := range min(len(stripped), len(pub.Match)) {
				if !proto.Equal(stripped[j], pub.Match[j]) {
					t.Errorf("match %d differs from %q's beyond the tester header", j, base)
				}
			}
			if !proto.Equal(r.Timeout, pub.Timeout) || !proto.Equal(r.Retries, pub.Retries) {
				t.Errorf("timeout/retries differ from %q's: testers must see what everyone will see", base)
			}
		})
		public = append(public, routes[i+1])
		i++
	}
	t.Run("PublicRoutesSplitAlike", func(t *testing.T) {
		var split []*istionet.HTTPRoute
		for _, r := range public {
			if sessionBound(r) {
				if diff := cmp.Diff(map[string]int32{stableSubset: 100}, weights(r)); diff != "" {
					t.Errorf("session-bound route %q (-want +got): a split would send a session's requests to pods that do not have it:\n%s", r.Name, diff)
				}
				continue
			}
			split = append(split, r)
		}
		if len(split) == 0 {
			t.Fatal("no split routes")
		}
		want := weights(split[0])
		for _, r := range split[1:] {
			if diff := cmp.Diff(want, weights(r)); diff != "" {
				t.Errorf("route %q splits differently from %q (-%s +%s):\n%s", r.Name, split[0].Name, split[0].Name, r.Name, diff)
			}
		}
	})
}

// TestRetriesOnlyForIdempotentRequests: a route whose requests may change
// state is never retried by Envoy; one that retries matches GET/HEAD only.
func TestRetriesOnlyForIdempotentRequests(t *testing.T) {
	m := mustMesh(t)
	for _, r := range m.vs.Spec.Http {
		t.Run(r.Name, func(t *testing.T) {
			if r.GetRetries().GetAttempts() == 0 {
				return
			}
			if len(r.Match) == 0 {
				t.Fatalf("retries %d attempts on a catch-all route (writes included)", r.Retries.Attempts)
			}
			for _, mr := range r.Match {
				if method := mr.GetMethod().GetExact(); method != "GET" && method != "HEAD" {
					t.Errorf("retries on a match with method %q; want exact GET or HEAD", method)
				}
			}
			for _, cond := range strings.Split(r.Retries.RetryOn, ",") {
				if !slices.Contains([]string{"5xx", "gateway-error", "reset", "connect-failure", "refused-stream", "retriable-status-codes", "unavailable", "cancelled", "deadline-exceeded", "resource-exhausted"}, cond) {
					t.Errorf("retryOn %q: unknown condition", cond)
				}
			}
			if r.Retries.PerTryTimeout == nil || r.Timeout == nil || r.Retries.PerTryTimeout.AsDuration() > r.Timeout.AsDuration() {
				t.Errorf("perTryTimeout %v, timeout %v: want both, per try within the route timeout", r.Retries.PerTryTimeout, r.Timeout)
			}
		})
	}
}

// request is an HTTP request as the route matcher sees it.
type request struct {
	method, path string
	headers      map[string]string
}

// route returns the first route matching req, as Envoy picks it. It fails
// the test on match conditions it does not model rather than guess.
func route(tb testing.TB, routes []*istionet.HTTPRoute, req request) *istionet.HTTPRoute {
	tb.Helper()
	for _, r := range routes {
		if len(r.Match) == 0 {
			return r
		}
		for _, mr := range r.Match {
			if matches(tb, mr, req) {
				return r
			}
		}
	}
	return nil
}

func matches(tb testing.TB, mr *istionet.HTTPMatchRequest, req request) bool {
	tb.Helper()
	rest := proto.Clone(mr).(*istionet.HTTPMatchRequest)
	rest.Name, rest.Uri, rest.Method, rest.Headers = "", nil, nil, nil
	if !proto.Equal(rest, &istionet.HTTPMatchRequest{}) {
		tb.Fatalf("match %v uses conditions the test's matcher does not model; extend it", mr)
	}
	if !stringMatch(tb, mr.Uri, req.path, true) || !stringMatch(tb, mr.Method, req.method, true) {
		return false
	}
	for name, sm := range mr.Headers {
		v, ok := req.headers[name]
		if !ok || !stringMatch(tb, sm, v, false) {
			return false
		}
	}
	return true
}

func stringMatch(tb testing.TB, sm *istionet.StringMatch, v string, nilMatches bool) bool {
	tb.Helper()
	if sm == nil {
		return nilMatches
	}
	switch m := sm.MatchType.(type) {
	case *istionet.StringMatch_Exact:
		return v == m.Exact
	case *istionet.StringMatch_Prefix:
		return strings.HasPrefix(v, m.Prefix)
	case *istionet.StringMatch_Regex:
		return regexp.MustCompile("^(?:" + m.Regex + ")$").MatchString(v)
	}
	tb.Fatalf("string match %v not modelled", sm)
	return false
}

// TestRoutingTable runs typical requests through the routes.
func TestRoutingTable(t *testing.T) {
	m := mustMesh(t)
	canary := map[string]string{canaryHeader: canaryValue}
	ws := map[string]string{"upgrade": "websocket", "connection": "Upgrade"}
	wsCanary := map[string]string{"upgrade": "websocket", "connection": "Upgrade", canaryHeader: canaryValue}
	tests := []struct {
		name      string
		req       request
		wantRoute string
		stream    bool // long-lived: no timeout, no retries
		retried   bool
	}{
		{"WebSocket", request{"GET", "/v1/sync", ws}, "streams", true, false},
		{"WebSocketTester", request{"GET", "/v1/sync?since=12", wsCanary}, "streams-canary", true, false},
		{"SSE", request{"GET", "/v1/events?hello=%7B%7D", nil}, "sessions", true, false},
		{"SSETester", request{"GET", "/v1/events?hello=%7B%7D", canary}, "sessions-canary", true, false},
		{"SSEPost", request{"POST", "/v1/events/4f1c", nil}, "sessions", false, false},
		{"LongPollOpen", request{"POST", "/v1/poll", nil}, "sessions", false, false},
		{"LongPoll", request{"GET", "/v1/poll/4f1c?after=7", nil}, "sessions", true, false},
		{"LongPollSendTester", request{"POST", "/v1/poll/4f1c", canary}, "sessions-canary", false, false},
		{"ReadDoc", request{"GET", "/v1/docs/notes/1", nil}, "reads", false, true},
		{"HeadDocTester", request{"HEAD", "/v1/docs/notes/1", canary}, "reads-canary", false, true},
		{"CreateDoc", request{"POST", "/v1/docs/notes", nil}, "default", false, false},
		{"PatchDocTester", request{"PATCH", "/v1/docs/notes/1", canary}, "default-canary", false, false},
		{"DeleteDoc", request{"DELETE", "/v1/docs/notes/1", nil}, "default", false, false},
		{"Version", request{"GET", "/version", nil}, "default", false, false},
		{"OtherHeaderValueIsNotTester", request{"GET", "/v1/docs/notes/1", map[string]string{canaryHeader: "sometimes"}}, "reads", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := route(t, m.vs.Spec.Http, tt.req)
			if r == nil {
				t.Fatal("no route")
			}
			if r.Name != tt.wantRoute {
				t.Errorf("route %q, want %q", r.Name, tt.wantRoute)
			}
			_, tester := tt.req.headers[canaryHeader]
			tester = tester && tt.req.headers[canaryHeader] == canaryValue
			if w := weights(r); tester && w[canarySubset] != 100 {
				t.Errorf("tester request split %v, want all on %s", w, canarySubset)
			}
			if tt.stream {
				if r.Timeout == nil || (r.Timeout.AsDuration() != 0 && r.Timeout.AsDuration() < time.Hour) {
					t.Errorf("timeout %v on a long-lived stream, want 0s (none)", r.Timeout)
				}
			}
			if got := r.GetRetries().GetAttempts() > 0; got != tt.retried {
				t.Errorf("retried = %v, want %v", got, tt.retried)
			}
		})
	}
}

// TestSessionAffinity: the requests of one SSE or long-poll session reach
// the same track (the route does not split them) and the same pod (a hash
// cookie Envoy hands out).
func TestSessionAffinity(t *testing.T) {
	m := mustMesh(t)
	lb := m.dr.Spec.GetTrafficPolicy().GetLoadBalancer()
	cookie := lb.GetConsistentHash().GetHttpCookie()
	if cookie == nil || cookie.GetName() == "" || cookie.GetTtl() == nil {
		t.Errorf("loadBalancer %v: want consistentHash.httpCookie with a name and a ttl (so Envoy creates the cookie)", lb)
	}
	for _, sub := range m.dr.Spec.Subsets {
		if sub.GetTrafficPolicy().GetLoadBalancer() != nil {
			t.Errorf("subset %s overrides the load balancer, and with it the affinity", sub.Name)
		}
	}
	for _, p := range sessionPaths {
		for _, tester := range []bool{false, true} {
			req := request{"POST", p + "/4f1c", nil}
			want := map[string]int32{stableSubset: 100}
			if tester {
				req.headers = map[string]string{canaryHeader: canaryValue}
				want = map[string]int32{canarySubset: 100}
			}
			r := route(t, m.vs.Spec.Http, req)
			if r == nil {
				t.Fatalf("%s %s: no route", req.method, req.path)
			}
			if diff := cmp.Diff(want, weights(r)); diff != "" {
				t.Errorf("%s %s (tester %v) on route %q (-want +got):\n%s", req.method, req.path, tester, r.Name, diff)
			}
		}
	}
}

func TestPeerAuthentication(t *testing.T) {
	m := mustMesh(t)
	if len(m.peers) == 0 {
		t.Skip("no PeerAuthentication: mesh-wide policy applies")
	}
	for _, p := range m.peers {
		t.Run(p.Name, func(t *testing.T) {
			if got := p.Spec.GetMtls().GetMode(); got != istiosec.PeerAuthentication_MutualTLS_STRICT {
				t.Errorf("mtls.mode %v, want STRICT (the DestinationRule sends ISTIO_MUTUAL)", got)
			}
			if sel := p.Spec.GetSelector().GetMatchLabels(); sel != nil {
				for _, d := range m.deps {
					if !selects(sel, d.Spec.Template.Labels) {
						t.Errorf("selector %v misses %s", sel, d.Name)
					}
				}
			}
		})
	}
}

func TestGateways(t *testing.T) {
	m := mustMesh(t)
	for name, g := range m.gateways {
		t.Run(name, func(t *testing.T) {
			if len(g.Spec.Selector) == 0 {
				t.Error("no selector: it would bind no gateway workload")
			}
			for _, s := range g.Spec.Servers {
				switch s.GetPort().GetProtocol() {
				case "HTTPS":
					if s.GetTls().GetCredentialName() == "" {
						t.Errorf("server %s: HTTPS without credentialName", s.GetPort().GetName())
					}
				case "HTTP":
					if !s.GetTls().GetHttpsRedirect() {
						t.Errorf("server %s: plain HTTP without httpsRedirect", s.GetPort().GetName())
					}
				}
			}
		})
	}
}
