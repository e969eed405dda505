package webhooks_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/internal/daprtest"
	"github.com/open-autoglm/autoglm/app/internal/servicetest"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
	"github.com/open-autoglm/autoglm/app/webhooks"
)

func TestSignVerify(t *testing.T) {
	body := []byte(`{"doc":"a/b","version":1}`)
	now := time.Unix(1764096000, 0)
	sig := webhooks.Sign("whsec_x", now, body)
	if !strings.HasPrefix(sig, "t=1764096000,v1=") || len(sig) != len("t=1764096000,v1=")+64 {
		t.Fatalf("signature %q", sig)
	}
	if err := webhooks.Verify("whsec_x", sig, body, now.Add(time.Minute), 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"WrongSecret": webhooks.Verify("whsec_y", sig, body, now, 5*time.Minute),
		"ChangedBody": webhooks.Verify("whsec_x", sig, append(body, ' '), now, 5*time.Minute),
		"TooOld":      webhooks.Verify("whsec_x", sig, body, now.Add(10*time.Minute), 5*time.Minute),
		"Malformed":   webhooks.Verify("whsec_x", "v1=abc", body, now, 5*time.Minute),
	} {
		if err == nil {
			t.Errorf("%s: verified", name)
		}
	}
}

// receiver is a webhook endpoint on loopback that checks every signature
// and records what arrives, and can be told to fail or to be down.
type receiver struct {
	t      *testing.T
	secret string
	srv    *http.Server
	addr   string

	mu        sync.Mutex
	failFirst int  // answer 500 to this many more calls
	down      bool // refuse connections
	calls     int
	badSigs   int
	got       map[string][]webhooks.Delivery // doc → deliveries accepted, in arrival order
	callTimes []time.Time
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{t: t, got: map[string][]webhooks.Delivery{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rc.addr = ln.Addr().String()
	rc.serve(ln)
	t.Cleanup(func() { rc.setDown(true) })
	return rc
}

// failNext makes the receiver answer 500 to its next n calls.
func (rc *receiver) failNext(n int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.failFirst = n
}

func (rc *receiver) serve(ln net.Listener) {
	rc.srv = &http.Server{Handler: http.HandlerFunc(rc.handle)}
	go func() { _ = rc.srv.Serve(ln) }()
}

// setDown stops or restarts the listener: while down, connections are
// refused, as for a crashed endpoint.
func (rc *receiver) setDown(down bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if down == rc.down {
		return
	}
	rc.down = down
	if down {
		_ = rc.srv.Close()
		return
	}
	var ln net.Listener
	var err error
	testutil.Within(time.Second, func() bool { ln, err = net.Listen("tcp", rc.addr); return err == nil })
	if err != nil {
		rc.t.Errorf("receiver cannot listen again: %v", err)
		return
	}
	rc.serve(ln)
}

func (rc *receiver) handle(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.calls++
	rc.callTimes = append(rc.callTimes, time.Now())
	if err := webhooks.Verify(rc.secret, r.Header.Get(webhooks.HeaderSignature), body, time.Now(), 5*time.Minute); err != nil {
		rc.badSigs++
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if rc.failFirst > 0 {
		rc.failFirst--
		http.Error(w, "not now", http.StatusInternalServerError)
		return
	}
	var d webhooks.Delivery
	if err := json.Unmarshal(body, &d); err != nil {
		rc.t.Errorf("delivery body %s: %v", body, err)
	}
	if r.Header.Get(webhooks.HeaderDelivery) != d.ID || d.ID != fmt.Sprintf("%s:%s@%d", d.Webhook, d.Doc, d.Version) {
		rc.t.Errorf("delivery id header %q, body %q", r.Header.Get(webhooks.HeaderDelivery), d.ID)
	}
	rc.got[d.Doc] = append(rc.got[d.Doc], d)
	w.WriteHeader(http.StatusNoContent)
}

func (rc *receiver) versions(doc string) []int64 {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var vs []int64
	for _, d := range rc.got[doc] {
		vs = append(vs, d.Version)
	}
	return vs
}

func call(t *testing.T, method, url, body string, hdr ...string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	if res.StatusCode >= 300 {
		t.Logf("%s %s: %d %s", method, url, res.StatusCode, bytes.TrimSpace(raw))
	}
	return res.StatusCode, out
}

// errorOf is the error object of an error answer.
func errorOf(body map[string]any) map[string]any {
	e, _ := body["error"].(map[string]any)
	return e
}

func register(t *testing.T, r replica, coll string, rc *receiver) string {
	t.Helper()
	status, ep := call(t, "POST", r.URL()+"/v1/webhooks",
		fmt.Sprintf(`{"collection":%q,"url":"http://%s/hook"}`, coll, rc.addr))
	if status != http.StatusCreated {
		t.Fatalf("register: %d %v", status, ep)
	}
	rc.mu.Lock()
	rc.secret = ep["secret"].(string)
	rc.mu.Unlock()
	if !strings.HasPrefix(rc.secret, "whsec_") {
		t.Fatalf("secret %v", ep)
	}
	return ep["id"].(string)
}

// replica is a running service: in process (servicetest) or beside daprd
// (daprtest).
type replica interface{ URL() string }

// startReplica starts a replica in process whose webhooks may be
// registered without authentication and may reach receivers on 127.0.0.1
// (the tests' receivers); f adjusts the configuration further.
func startReplica(t *testing.T, f func(*config.Config)) replica {
	return servicetest.Start(t, servicetest.Options{Config: func(c *config.Config) {
		c.WebhookAllow, c.WebhookAnonymous = "127.0.0.1", true
		c.TasksTopic = "tasks-" + uuid.NewString()[:8]
		c.WebhookBackoff = 40 * time.Millisecond
		c.WebhookMaxBackoff = 300 * time.Millisecond
		c.WebhookTick = 50 * time.Millisecond
		c.WebhookBreakerTrip = 3
		c.WebhookBreakerOpen = 400 * time.Millisecond
		f(c)
	}})
}

// newCollection names a collection no other test uses, starting with
// prefix.
func newCollection(prefix string) string {
	return prefix + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
}

// startRegistered starts a replica in process that tries a delivery
// attempts times, and a receiver registered as an endpoint (id) for a new
// collection coll named after prefix.
func startRegistered(t *testing.T, prefix string, attempts int) (r replica, rc *receiver, coll, id string) {
	t.Helper()
	r = startReplica(t, func(c *config.Config) { c.WebhookAttempts = attempts })
	rc = newReceiver(t)
	coll = newCollection(prefix)
	return r, rc, coll, register(t, r, coll, rc)
}

func patch(t *testing.T, r replica, doc string, n int) {
	t.Helper()
	status, body := call(t, "PATCH", r.URL()+"/v1/docs/"+doc, fmt.Sprintf(`{"ops":[{"op":"set","path":"n","value":%d}]}`, n))
	if status/100 != 2 {
		t.Fatalf("patch %s: %d %v", doc, status, body)
	}
}

// TestWebhookDeliveries drives one endpoint through failures on a replica
// in process: the receiver fails its first calls, then is down
// long enough for the breaker to open, probe and open again, then comes
// back. Every call must carry a valid signature, and every document's
// versions must arrive complete and in order.
func TestWebhookDeliveries(t *testing.T) {
	t.Parallel()
	r, rc, coll, id := startRegistered(t, "wh", 40)
	docs := []string{coll + "/a", coll + "/b", coll + "/c"}

	// Phase 1: the first 4 calls fail; deliveries are retried in order.
	rc.failNext(4)
	for i := 1; i <= 3; i++ {
		for _, d := range docs {
			patch(t, r, d, i)
		}
	}
	testutil.Eventually(t, 20*time.Second, "phase 1 deliveries", func() bool {
		for _, d := range docs {
			if len(rc.versions(d)) < 3 {
				return false
			}
		}
		return true
	})

	// Phase 2: the endpoint is down; writes go on.
	rc.setDown(true)
	downAt := time.Now()

	for i := 4; i <= 6; i++ {
		for _, d := range docs {
			patch(t, r, d, i)
		}
		time.Sleep(150 * time.Millisecond) // spreads the writes over the outage, as traffic would
	}
	breaker := func() webhooks.EndpointStats {
		_, body := call(t, "GET", r.URL()+"/v1/webhooks", "")
		var out struct {
			Stats webhooks.Stats `json:"stats"`
		}
		b, _ := json.Marshal(body)
		_ = json.Unmarshal(b, &out)
		return out.Stats.Endpoints[id]
	}
	testutil.Eventually(t, 10*time.Second, "breaker opens, half-opens and opens again", func() bool {
		n := 0
		for _, tr := range breaker().Transitions {
			if tr.From == "half-open" && tr.To == "open" && tr.At.After(downAt) {
				n++
			}
		}
		return n >= 2
	})
	rc.setDown(false)
	upAt := time.Now()
	testutil.Eventually(t, 30*time.Second, "every version after the outage", func() bool {
		for _, d := range docs {
			if len(rc.versions(d)) < 6 {
				return false
			}
		}
		return true
	})
	testutil.Eventually(t, 5*time.Second, "breaker closed", func() bool { return breaker().Breaker == "closed" })

	rc.mu.Lock()
	bad, calls := rc.badSigs, rc.calls
	rc.mu.Unlock()
	if bad != 0 {
		t.Fatalf("%d of %d calls had a bad signature", bad, calls)
	}
	for _, d := range docs {
		vs := rc.versions(d)
		for i, v := range vs {
			if v != int64(i+1) {
				t.Fatalf("%s: versions arrived as %v; want 1..6 in order, each once", d, vs)
			}
		}
		if len(vs) != 6 {
			t.Fatalf("%s: %v", d, vs)
		}
	}
	st := breaker()
	var timeline []string
	for _, tr := range st.Transitions {
		timeline = append(timeline, fmt.Sprintf("%s→%s at %+dms", tr.From, tr.To, tr.At.Sub(downAt).Milliseconds()))
	}
	t.Logf("endpoint down at 0ms, back at %+dms; breaker: %s", upAt.Sub(downAt).Milliseconds(), strings.Join(timeline, ", "))
	t.Logf("%d calls in all, every signature valid; 3 documents × 6 versions delivered in order", calls)
	if len(st.Transitions) < 4 || st.Transitions[0].To != "open" {
		t.Fatalf("breaker transitions %+v", st.Transitions)
	}
	if dead := deadLetters(t, r); len(dead) != 0 {
		t.Fatalf("dead letters: %+v", dead)
	}
}

func deadLetters(t *testing.T, r replica) []webhooks.DeadLetter {
	_, body := call(t, "GET", r.URL()+"/v1/webhooks/dead", "")
	var out struct {
		Letters []webhooks.DeadLetter `json:"dead_letters"`
	}
	b, _ := json.Marshal(body)
	_ = json.Unmarshal(b, &out)
	return out.Letters
}

// TestWebhookDeadLetterReplay: an endpoint that keeps failing gets its
// pending versions dead-lettered after the configured attempts; later
// writes are still delivered; a replay sends the dead versions again,
// flagged, and clears the letter.
func TestWebhookDeadLetterReplay(t *testing.T) {
	t.Parallel()
	r, rc, coll, id := startRegistered(t, "wd", 3)
	doc := coll + "/x"

	rc.failNext(1 << 20)
	patch(t, r, doc, 1)
	patch(t, r, doc, 2)
	var dead []webhooks.DeadLetter
	testutil.Eventually(t, 20*time.Second, "dead letter", func() bool { dead = deadLetters(t, r); return len(dead) > 0 })
	l := dead[0]
	if l.Endpoint != id || l.Doc != doc || l.From != 1 || l.Attempts != 3 {
		t.Fatalf("dead letter %+v", l)
	}
	rc.failNext(0)
	// The range may have ended at 1 or 2 (version 2 may have been queued
	// after the letter); a new write is delivered either way.
	patch(t, r, doc, 3)
	testutil.Eventually(t, 10*time.Second, "delivery after the dead letter", func() bool {
		vs := rc.versions(doc)
		return len(vs) > 0 && vs[len(vs)-1] == 3
	})
	var deadVersions []int64
	for _, l := range dead {
		for v := l.From; v <= l.To; v++ {
			deadVersions = append(deadVersions, v)
		}
	}
	status, body := call(t, "POST", r.URL()+"/v1/webhooks/dead/"+l.ID+"/replay", "")
	if status != http.StatusAccepted || body["task"] == "" {
		t.Fatalf("replay: %d %v", status, body)
	}
	testutil.Eventually(t, 10*time.Second, "replayed versions", func() bool {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		n := 0
		for _, d := range rc.got[doc] {
			if d.Replay {
				n++
			}
		}
		return n == int(l.To-l.From+1)
	})
	testutil.Eventually(t, 5*time.Second, "letter removed", func() bool { return len(deadLetters(t, r)) == len(dead)-1 })
	if status, _ := call(t, "POST", r.URL()+"/v1/webhooks/dead/nope/replay", ""); status != http.StatusNotFound {
		t.Fatalf("replay of an unknown letter: %d", status)
	}
	t.Logf("dead-lettered versions %v after 3 attempts; replayed %d..%d; arrivals %v", deadVersions, l.From, l.To, rc.versions(doc))
}

// TestWebhookAPI checks registration, listing without secrets, and
// deletion.
func TestWebhookAPI(t *testing.T) {
	t.Parallel()
	r := startReplica(t, func(*config.Config) {})
	status, _ := call(t, "POST", r.URL()+"/v1/webhooks", `{"collection":"orders","url":"ftp://x"}`)
	if status != http.StatusBadRequest {
		t.Fatalf("bad url: %d", status)
	}
	status, ep := call(t, "POST", r.URL()+"/v1/webhooks", `{"collection":"orders","url":"http://127.0.0.1:1/h","secret":"s3cret"}`)
	if status != http.StatusCreated || ep["secret"] != "s3cret" {
		t.Fatalf("create: %d %v", status, ep)
	}
	_, list := call(t, "GET", r.URL()+"/v1/webhooks", "")
	b, _ := json.Marshal(list)
	if !strings.Contains(string(b), ep["id"].(string)) || strings.Contains(string(b), "s3cret") {
		t.Fatalf("list: %s", b)
	}
	if status, _ := call(t, "DELETE", r.URL()+"/v1/webhooks/"+ep["id"].(string), ""); status != http.StatusOK {
		t.Fatalf("delete: %d", status)
	}
	if status, _ := call(t, "DELETE", r.URL()+"/v1/webhooks/"+ep["id"].(string), ""); status != http.StatusNotFound {
		t.Fatalf("delete again: %d", status)
	}
	if status, _ := call(t, "GET", r.URL()+"/v1/tasks/stats", ""); status != http.StatusOK {
		t.Fatalf("task stats: %d", status)
	}
}

// TestWebhookTargetsOnReplica: on a replica with authentication on, an
// admin cannot register a webhook aimed at loopback, link-local or private
// addresses or at the sidecar (its /v1.0/shutdown would stop it); a public
// address is accepted.
func TestWebhookTargetsOnReplica(t *testing.T) {
	const secret = "webhook-test-secret-webhook-test-secret"
	r := daprtest.Start(t, daprtest.Options{Config: func(c *config.Config) {
		c.Auth, c.JWTSecret = "jwt", secret
		c.TasksTopic = "tasks-" + uuid.NewString()[:8]
	}})
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "root", "roles": []string{"admin"}, "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	admin := []string{"Authorization", "Bearer " + tok}
	for _, url := range []string{
		fmt.Sprintf("http://127.0.0.1:%d/v1.0/shutdown", r.Cfg.DaprHTTPPort),
		fmt.Sprintf("http://localhost:%d/v1.0/shutdown", r.Cfg.DaprHTTPPort),
		r.URL() + "/v1/docs/x/y",
		"http://[::1]:9000/h",
		"http://169.254.169.254/latest/meta-data/",
		"http://10.0.0.7/h",
		"http://172.20.0.1/h",
		"http://192.168.0.1/h",
		"http://[fd12::1]/h",
		"http://100.100.100.100/h",
		"http://0.0.0.0:8080/h",
		"http://239.0.0.1/h",
	} {
		status, body := call(t, "POST", r.URL()+"/v1/webhooks", fmt.Sprintf(`{"collection":"orders","url":%q}`, url), admin...)
		if status != http.StatusForbidden || errorOf(body)["code"] != "forbidden" {
			t.Errorf("register %s: %d %v; want 403 forbidden", url, status, body)
		}
	}
	status, body := call(t, "POST", r.URL()+"/v1/webhooks", `{"collection":"orders","url":"https://93.184.216.34/hooks"}`, admin...)
	if status != http.StatusCreated {
		t.Fatalf("register a public address: %d %v", status, body)
	}
	if status, _ := call(t, "GET", r.DaprURL()+"/v1.0/healthz", "", "dapr-api-token", r.Cfg.DaprAPIToken); status/100 != 2 {
		t.Fatalf("sidecar health: %d", status)
	}
}

// TestWebhookDeliveryRefused: with authentication off, API registration is
// refused unless enabled; a webhook declared in the collections file whose
// host name resolves to loopback is never called: its delivery is refused
// after name resolution and dead-lettered at once with the reason.
func TestWebhookDeliveryRefused(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t)
	_, port, _ := net.SplitHostPort(rc.addr)
	coll := newCollection("wr")
	yaml := fmt.Sprintf("collections:\n  %s:\n    webhooks:\n      - {id: inside, url: \"http://localhost:%s/hook\", secret_env: WEBHOOK_TEST_UNSET}\n", coll, port)
	r := servicetest.Start(t, servicetest.Options{Collections: yaml, Config: func(c *config.Config) {
		c.WebhookTick = 50 * time.Millisecond
	}})
	status, body := call(t, "POST", r.URL()+"/v1/webhooks", fmt.Sprintf(`{"collection":%q,"url":"https://93.184.216.34/h"}`, coll))
	if e := errorOf(body); status != http.StatusForbidden || e["code"] != "forbidden" || !strings.Contains(fmt.Sprint(e["message"]), "AUTOGLM_WEBHOOK_ANONYMOUS") {
		t.Fatalf("registration with authentication off: %d %v; want 403 forbidden naming AUTOGLM_WEBHOOK_ANONYMOUS", status, body)
	}
	patch(t, r, coll+"/d", 1)
	var dead []webhooks.DeadLetter
	testutil.Eventually(t, 20*time.Second, "dead letter of the refused delivery", func() bool { dead = deadLetters(t, r); return len(dead) > 0 })
	if l := dead[0]; l.Endpoint != "inside" || l.Attempts != 1 || !strings.Contains(l.Error, "localhost resolves to") || !strings.Contains(l.Error, "loopback") {
		t.Fatalf("dead letter %+v; want one attempt refused as loopback after resolving localhost", l)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.calls != 0 {
		t.Fatalf("the loopback receiver was called %d times", rc.calls)
	}
	t.Logf("delivery refused and dead-lettered: %s", dead[0].Error)
}
