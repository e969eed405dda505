// Package servicetest serves the whole HTTP API in process on the in-memory
// adapters (service.MemoryDeps): real HTTP on a loopback listener, the real
// configuration and collections loader, JWT authentication when asked, the
// task queue, webhooks, integration events and compaction on an in-memory
// state, and no daprd. Replica answers URL and WSURL as daprtest.Replica does, so a
// test body runs against either.
package servicetest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/sirupsen/logrus"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/inmem"
	"github.com/open-autoglm/autoglm/app/internal/daprrun"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
	"github.com/open-autoglm/autoglm/app/protocol"
	"github.com/open-autoglm/autoglm/app/service"
)

// Options for an in-process replica.
type Options struct {
	// Collections is the text of a collections file; empty means the
	// repository's config/collections.yaml.
	Collections string
	// Secret turns JWT authentication on, with tokens signed by this HMAC
	// secret (Token makes them).
	Secret string
	// Config, if set, adjusts the configuration last.
	Config func(*config.Config)
	// Store, Broker and State are shared by the replicas of one cluster;
	// nil means new ones. A new State redelivers failed tasks after 20ms,
	// doubling up to 200ms, and has the configured lock component and
	// events pub/sub.
	Store  *inmem.Store
	Broker *inmem.Broker
	State  *inmem.State
}

// Replica is one service in process.
type Replica struct {
	Svc    *service.Service
	Cfg    config.Config
	Store  *inmem.Store
	Broker *inmem.Broker
	State  *inmem.State
	addr   string
	log    *testutil.Buffer
}

// URL is the app's base URL.
func (r *Replica) URL() string { return "http://" + r.addr }

// WSURL is the sync endpoint.
func (r *Replica) WSURL() string { return protocol.SyncURL(r.URL()) }

// Start serves a replica on a free loopback port; it stops when the test
// ends, and its log is written to the test's output if the test failed.
func Start(t testing.TB, opt Options) *Replica {
	t.Helper()
	if opt.Store == nil {
		opt.Store = inmem.NewStore()
	}
	if opt.Broker == nil {
		opt.Broker = &inmem.Broker{}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	cfg := config.Default()
	cfg.Host, cfg.Port = "127.0.0.1", port
	cfg.NodeID = fmt.Sprintf("mem-%d", port)
	cfg.Version = "test"
	cfg.Heartbeat = 2 * time.Second
	cfg.Collections = collectionsFile(t, opt.Collections)
	if opt.Secret != "" {
		cfg.Auth, cfg.JWTSecret = "jwt", opt.Secret
		cfg.AppAPIToken = daprrun.NewToken()
	}
	if opt.Config != nil {
		opt.Config(&cfg)
	}
	if opt.State == nil {
		opt.State = inmem.NewState()
		opt.State.Components = []string{"lock:" + cfg.LockStore, "pubsub:" + cfg.EventsPubsub}
		opt.State.Redelivery = inmem.Redelivery{Backoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
	}
	r := &Replica{Cfg: cfg, Store: opt.Store, Broker: opt.Broker, State: opt.State, addr: ln.Addr().String(), log: &testutil.Buffer{Max: 4 << 20}}
	log := logrus.New()
	log.SetOutput(r.log)
	svc, err := service.New(cfg, log, service.MemoryDeps(opt.Store, opt.Broker, opt.State))
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	if err := svc.Start(ln); err != nil {
		t.Fatal(err)
	}
	r.Svc = svc
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("---- in-process replica %s log ----\n%s", r.addr, r.log.String())
		}
		r.Stop()
	})
	return r
}

// Stop shuts the replica down (graceful); a second call does nothing.
func (r *Replica) Stop() {
	if r.Svc == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = r.Svc.Shutdown(ctx)
	r.Svc = nil
}

func collectionsFile(t testing.TB, text string) string {
	t.Helper()
	if text == "" {
		root, err := daprrun.RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		return filepath.Join(root, "config", "collections.yaml")
	}
	f := filepath.Join(t.TempDir(), "collections.yaml")
	if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// Token signs a token for sub with roles and any extra claims, valid for
// ttl (negative: already expired), with secret.
func Token(t testing.TB, secret, sub string, ttl time.Duration, extra map[string]any, roles ...string) string {
	t.Helper()
	c := jwt.MapClaims{"sub": sub, "roles": roles, "exp": time.Now().Add(ttl).Unix()}
	for k, v := range extra {
		c[k] = v
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}
