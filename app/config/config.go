// Package config reads the service configuration from environment variables,
// with defaults that run the embedded profile on one machine.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Defaults shared with the deployment files (manifests/, components/,
// dapr.yaml); tests cross-check them.
const (
	DefaultPort            = 8080
	DefaultDaprHTTPPort    = 3500
	DefaultDaprGRPCPort    = 50001
	DefaultDaprMetricsPort = 9090
	DefaultHost            = "127.0.0.1"
	DefaultAppID           = "autoglm"
	DefaultStateStore      = "statestore"
	DefaultBroadcastPubsub = "broadcast"
	DefaultBroadcastTopic  = "changes"
	DefaultTasksPubsub     = "tasks"
	DefaultLockStore       = "lock"
)

// Config is every setting of the service. Secrets are masked by String.
type Config struct {
	Port    int    // AUTOGLM_PORT: HTTP port for clients and the sidecar
	Host    string // AUTOGLM_HOST: address the HTTP port is bound to; loopback by default, 0.0.0.0 in containers
	AppID   string // AUTOGLM_APP_ID: Dapr app id (for logs and self-invocation)
	NodeID  string // AUTOGLM_NODE_ID: replica id stamped on HLC timestamps; default hostname+pid
	Version string // set at build time; not from the environment

	DaprGRPCPort int    // DAPR_GRPC_PORT (set by the sidecar injector)
	DaprHTTPPort int    // DAPR_HTTP_PORT
	DaprAPIToken string // DAPR_API_TOKEN: sent to daprd (secret)
	AppAPIToken  string // APP_API_TOKEN: required from daprd on callbacks (secret)

	StateStore      string // AUTOGLM_STATE_STORE
	BroadcastPubsub string // AUTOGLM_BROADCAST_PUBSUB
	BroadcastTopic  string // AUTOGLM_BROADCAST_TOPIC
	TasksPubsub     string // AUTOGLM_TASKS_PUBSUB
	LockStore       string // AUTOGLM_LOCK_STORE

	// Background tasks, webhooks and integration events (docs/events.md).
	TasksTopic         string        // AUTOGLM_TASKS_TOPIC: topic prefix: <prefix>-high, -medium, -low, -dead
	TaskWorkers        int           // AUTOGLM_TASK_WORKERS: tasks run at once by a replica
	WebhookAttempts    int           // AUTOGLM_WEBHOOK_ATTEMPTS: tries before a delivery is dead-lettered
	WebhookBackoff     time.Duration // AUTOGLM_WEBHOOK_BACKOFF: first retry delay (doubles, full jitter)
	WebhookMaxBackoff  time.Duration // AUTOGLM_WEBHOOK_MAX_BACKOFF
	WebhookBreakerOpen time.Duration // AUTOGLM_WEBHOOK_BREAKER_OPEN: open time before a probe
	WebhookBreakerTrip int           // AUTOGLM_WEBHOOK_BREAKER_TRIP: consecutive failures that open it
	WebhookTick        time.Duration // AUTOGLM_WEBHOOK_TICK: how often parked deliveries are checked
	EventsPubsub       string        // AUTOGLM_EVENTS_PUBSUB: where integration events go
	EventsTopic        string        // AUTOGLM_EVENTS_TOPIC
	OutboxStore        string        // AUTOGLM_OUTBOX_STORE: state component with Dapr's outbox; used when the sidecar has it
	WebhookAllow       string        // AUTOGLM_WEBHOOK_ALLOW: internal webhook receivers allowed despite the address rules (docs/events.md#targets)
	WebhookAnonymous   bool          // AUTOGLM_WEBHOOK_ANONYMOUS: POST /v1/webhooks accepted while authentication is off
	QueryAPI           bool          // AUTOGLM_QUERY_API: on state.postgresql, store documents as JSON and answer REST queries through the state query API

	// Op-log compaction (app/compaction): a singleton job under a lease on
	// the lock component; without one (local profile) it runs unguarded.
	CompactionInterval time.Duration // AUTOGLM_COMPACTION_INTERVAL: time between passes; 0 turns it off
	CompactionLease    time.Duration // AUTOGLM_COMPACTION_LEASE: lock lease; a dead holder is replaced after it
	CompactionQuiet    time.Duration // AUTOGLM_COMPACTION_QUIET: a document unchanged this long has its tail archived

	Collections    string        // AUTOGLM_COLLECTIONS: collections config file (YAML); empty: every collection lww
	LogWindow      int           // AUTOGLM_LOG_WINDOW: op-log entries kept per document
	MaxBodyBytes   int64         // AUTOGLM_MAX_BODY: REST body and WebSocket message limit
	MaxDocBytes    int           // AUTOGLM_MAX_DOC: stored document size limit
	MaxOpsPerMsg   int           // AUTOGLM_MAX_OPS: field operations in one op
	WriteRetries   int           // AUTOGLM_WRITE_RETRIES: ETag-conflict retries per batch
	Heartbeat      time.Duration // AUTOGLM_HEARTBEAT: WebSocket ping interval
	SessionQueue   int           // AUTOGLM_SESSION_QUEUE: per-session outbound queue length
	MaxSubs        int           // AUTOGLM_MAX_SUBS: documents one connection may watch
	ShutdownGrace  time.Duration // AUTOGLM_SHUTDOWN_GRACE: drain time on stop
	ProbeInterval  time.Duration // AUTOGLM_PROBE_INTERVAL: sidecar health poll
	AntiEntropy    time.Duration // AUTOGLM_ANTI_ENTROPY: how often quiet watched documents are re-checked against the store
	MaxClockSkew   time.Duration // AUTOGLM_MAX_CLOCK_SKEW: future HLC stamps refused past this
	LogFormat      string        // AUTOGLM_LOG_FORMAT: text or json
	LogLevel       string        // AUTOGLM_LOG_LEVEL
	AllowedOrigins []string      // AUTOGLM_ALLOWED_ORIGINS: comma list; empty = same host only, "*" = any

	// Connection limits (docs/security.md).
	BodyTimeout         time.Duration // AUTOGLM_BODY_TIMEOUT: time to read one request body (408 request_timeout)
	HelloTimeout        time.Duration // AUTOGLM_HELLO_TIMEOUT: a WebSocket without hello this long after the upgrade is closed (4006)
	MaxConnsPerAddr     int           // AUTOGLM_MAX_CONNS_PER_ADDR: sync sessions open at once per client address; 0: no cap
	MaxConnsPerIdentity int           // AUTOGLM_MAX_CONNS_PER_IDENTITY: sync sessions open at once per token subject; 0: no cap
	ClientAddrHeader    string        // AUTOGLM_CLIENT_ADDR_HEADER: header a trusted proxy sets to the client address; empty (default): none is trusted

	Auth         string  // AUTOGLM_AUTH: off (default) or jwt
	JWTSecret    string  // AUTOGLM_JWT_SECRET: HS256 shared secret, ≥ 32 bytes (secret)
	JWKSURL      string  // AUTOGLM_JWKS_URL: RS256/ES256 keys
	JWTIssuer    string  // AUTOGLM_JWT_ISSUER: required iss, if set
	JWTAudience  string  // AUTOGLM_JWT_AUDIENCE: required aud, if set
	ConnRate     float64 // AUTOGLM_CONN_RATE: messages per second per sync connection (burst 2×)
	IdentityRate float64 // AUTOGLM_IDENTITY_RATE: REST requests per second per identity (burst 2×)
	Pprof        string  // AUTOGLM_PPROF: address of the Go profiler (127.0.0.1:6060); empty = off
}

// Default returns the configuration with every default applied.
func Default() Config {
	host, _ := os.Hostname()
	return Config{
		Port:            DefaultPort,
		Host:            DefaultHost,
		AppID:           DefaultAppID,
		NodeID:          fmt.Sprintf("%s-%d", host, os.Getpid()),
		DaprGRPCPort:    DefaultDaprGRPCPort,
		DaprHTTPPort:    DefaultDaprHTTPPort,
		StateStore:      DefaultStateStore,
		BroadcastPubsub: DefaultBroadcastPubsub,
		BroadcastTopic:  DefaultBroadcastTopic,
		TasksPubsub:     DefaultTasksPubsub,
		LockStore:       DefaultLockStore,
		LogWindow:       1000,
		MaxBodyBytes:    1 << 20,
		MaxDocBytes:     1 << 20,
		MaxOpsPerMsg:    256,
		WriteRetries:    8,
		Heartbeat:       15 * time.Second,
		SessionQueue:    500,
		MaxSubs:         1000,
		ShutdownGrace:   10 * time.Second,
		ProbeInterval:   2 * time.Second,
		AntiEntropy:     5 * time.Second,
		MaxClockSkew:    time.Minute,
		LogFormat:       "text",
		Auth:            "off",
		ConnRate:        500,
		IdentityRate:    1000,
		LogLevel:        "info",

		TasksTopic:         "tasks",
		TaskWorkers:        8,
		WebhookAttempts:    8,
		WebhookBackoff:     time.Second,
		WebhookMaxBackoff:  5 * time.Minute,
		WebhookBreakerOpen: 30 * time.Second,
		WebhookBreakerTrip: 5,
		WebhookTick:        time.Second,
		EventsPubsub:       "events",
		EventsTopic:        "doc-events",
		OutboxStore:        "outbox",

		CompactionInterval: 5 * time.Minute,
		CompactionLease:    30 * time.Second,
		CompactionQuiet:    time.Minute,

		BodyTimeout:         30 * time.Second,
		HelloTimeout:        5 * time.Second,
		MaxConnsPerAddr:     256,
		MaxConnsPerIdentity: 64,
	}
}

// FromEnv returns the defaults overridden by the environment as read by
// lookup (os.LookupEnv in production).
func FromEnv(lookup func(string) (string, bool)) (Config, error) {
	c := Default()
	var errs []string
	str := func(name string, dst *string) {
		if v, ok := lookup(name); ok && v != "" {
			*dst = v
		}
	}
	num := func(name string, dst *int, minimum int) {
		if v, ok := lookup(name); ok && v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < minimum {
				errs = append(errs, fmt.Sprintf("%s=%q: want an integer >= %d", name, v, minimum))
				return
			}
			*dst = n
		}
	}
	dur := func(name string, dst *time.Duration) {
		if v, ok := lookup(name); ok && v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				errs = append(errs, fmt.Sprintf("%s=%q: want a positive duration such as 15s", name, v))
				return
			}
			*dst = d
		}
	}
	num("AUTOGLM_PORT", &c.Port, 1)
	str("AUTOGLM_HOST", &c.Host)
	str("AUTOGLM_APP_ID", &c.AppID)
	str("AUTOGLM_NODE_ID", &c.NodeID)
	num("DAPR_GRPC_PORT", &c.DaprGRPCPort, 1)
	num("DAPR_HTTP_PORT", &c.DaprHTTPPort, 1)
	str("DAPR_API_TOKEN", &c.DaprAPIToken)
	str("APP_API_TOKEN", &c.AppAPIToken)
	str("AUTOGLM_STATE_STORE", &c.StateStore)
	str("AUTOGLM_BROADCAST_PUBSUB", &c.BroadcastPubsub)
	str("AUTOGLM_BROADCAST_TOPIC", &c.BroadcastTopic)
	str("AUTOGLM_TASKS_PUBSUB", &c.TasksPubsub)
	str("AUTOGLM_LOCK_STORE", &c.LockStore)
	str("AUTOGLM_COLLECTIONS", &c.Collections)
	num("AUTOGLM_LOG_WINDOW", &c.LogWindow, 1)
	var maxBody int
	num("AUTOGLM_MAX_BODY", &maxBody, 1024)
	if maxBody > 0 {
		c.MaxBodyBytes = int64(maxBody)
	}
	num("AUTOGLM_MAX_DOC", &c.MaxDocBytes, 1024)
	num("AUTOGLM_MAX_OPS", &c.MaxOpsPerMsg, 1)
	num("AUTOGLM_WRITE_RETRIES", &c.WriteRetries, 0)
	dur("AUTOGLM_HEARTBEAT", &c.Heartbeat)
	num("AUTOGLM_SESSION_QUEUE", &c.SessionQueue, 16)
	num("AUTOGLM_MAX_SUBS", &c.MaxSubs, 1)
	dur("AUTOGLM_SHUTDOWN_GRACE", &c.ShutdownGrace)
	dur("AUTOGLM_PROBE_INTERVAL", &c.ProbeInterval)
	dur("AUTOGLM_ANTI_ENTROPY", &c.AntiEntropy)
	if v, _ := lookup("AUTOGLM_COMPACTION_INTERVAL"); v == "0" {
		c.CompactionInterval = 0
	} else {
		dur("AUTOGLM_COMPACTION_INTERVAL", &c.CompactionInterval)
	}
	dur("AUTOGLM_COMPACTION_LEASE", &c.CompactionLease)
	str("AUTOGLM_TASKS_TOPIC", &c.TasksTopic)
	num("AUTOGLM_TASK_WORKERS", &c.TaskWorkers, 1)
	num("AUTOGLM_WEBHOOK_ATTEMPTS", &c.WebhookAttempts, 1)
	dur("AUTOGLM_WEBHOOK_BACKOFF", &c.WebhookBackoff)
	dur("AUTOGLM_WEBHOOK_MAX_BACKOFF", &c.WebhookMaxBackoff)
	dur("AUTOGLM_WEBHOOK_BREAKER_OPEN", &c.WebhookBreakerOpen)
	num("AUTOGLM_WEBHOOK_BREAKER_TRIP", &c.WebhookBreakerTrip, 1)
	dur("AUTOGLM_WEBHOOK_TICK", &c.WebhookTick)
	str("AUTOGLM_EVENTS_PUBSUB", &c.EventsPubsub)
	str("AUTOGLM_EVENTS_TOPIC", &c.EventsTopic)
	str("AUTOGLM_OUTBOX_STORE", &c.OutboxStore)
	str("AUTOGLM_WEBHOOK_ALLOW", &c.WebhookAllow)
	if v, ok := lookup("AUTOGLM_WEBHOOK_ANONYMOUS"); ok && v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Sprintf("AUTOGLM_WEBHOOK_ANONYMOUS=%q: want true or false", v))
		}
		c.WebhookAnonymous = b
	}
	if v, ok := lookup("AUTOGLM_QUERY_API"); ok && v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Sprintf("AUTOGLM_QUERY_API=%q: want true or false", v))
		}
		c.QueryAPI = b
	}
	dur("AUTOGLM_COMPACTION_QUIET", &c.CompactionQuiet)
	dur("AUTOGLM_MAX_CLOCK_SKEW", &c.MaxClockSkew)
	str("AUTOGLM_LOG_FORMAT", &c.LogFormat)
	str("AUTOGLM_LOG_LEVEL", &c.LogLevel)
	str("AUTOGLM_PPROF", &c.Pprof)
	if v, ok := lookup("AUTOGLM_ALLOWED_ORIGINS"); ok && v != "" {
		for _, o := range strings.Split(v, ",") {
			if o = strings.TrimSpace(o); o != "" {
				c.AllowedOrigins = append(c.AllowedOrigins, o)
			}
		}
	}
	dur("AUTOGLM_BODY_TIMEOUT", &c.BodyTimeout)
	dur("AUTOGLM_HELLO_TIMEOUT", &c.HelloTimeout)
	num("AUTOGLM_MAX_CONNS_PER_ADDR", &c.MaxConnsPerAddr, 0)
	num("AUTOGLM_MAX_CONNS_PER_IDENTITY", &c.MaxConnsPerIdentity, 0)
	str("AUTOGLM_CLIENT_ADDR_HEADER", &c.ClientAddrHeader)
	str("AUTOGLM_AUTH", &c.Auth)
	str("AUTOGLM_JWT_SECRET", &c.JWTSecret)
	str("AUTOGLM_JWKS_URL", &c.JWKSURL)
	str("AUTOGLM_JWT_ISSUER", &c.JWTIssuer)
	str("AUTOGLM_JWT_AUDIENCE", &c.JWTAudience)
	flt := func(name string, dst *float64) {
		if v, ok := lookup(name); ok && v != "" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f < 0 {
				errs = append(errs, fmt.Sprintf("%s=%q: want a number >= 0 (0: unlimited)", name, v))
				return
			}
			*dst = f
		}
	}
	flt("AUTOGLM_CONN_RATE", &c.ConnRate)
	flt("AUTOGLM_IDENTITY_RATE", &c.IdentityRate)
	if err := c.Validate(); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("config: %s", strings.Join(errs, "; "))
	}
	return c, nil
}

// SessionQueueLen is the live queue of a session: AUTOGLM_SESSION_QUEUE,
// but never more than half the op-log window. A session whose queue
// overflows drops it and replays what it missed from the op log; with the
// queue at most half the window, the log still holds every version the
// session missed plus as many again written while it catches up, so the
// subscriber receives every change as a delta. Only a subscriber that falls
// further behind than the window gets a snapshot in place of deltas.
func (c Config) SessionQueueLen() int {
	return max(1, min(c.SessionQueue, c.LogWindow/2))
}

// Validate checks the settings that depend on each other. FromEnv calls
// it; so does the service, for configurations built in code.
func (c Config) Validate() error {
	var errs []string
	switch {
	case c.Auth != "off" && c.Auth != "jwt":
		errs = append(errs, fmt.Sprintf("AUTOGLM_AUTH=%q: want off or jwt", c.Auth))
	case c.Auth == "jwt" && (c.JWTSecret == "") == (c.JWKSURL == ""):
		errs = append(errs, "AUTOGLM_AUTH=jwt needs exactly one of AUTOGLM_JWT_SECRET and AUTOGLM_JWKS_URL")
	}
	if c.Auth == "jwt" && c.AppAPIToken == "" {
		errs = append(errs, "AUTOGLM_AUTH=jwt needs APP_API_TOKEN (the token daprd presents on its calls to the app): "+
			"without it anyone who reaches the app can post forged broadcasts and tasks")
	}
	if net.ParseIP(c.Host) == nil {
		errs = append(errs, fmt.Sprintf("AUTOGLM_HOST=%q: want an IP address (127.0.0.1 for this machine only, 0.0.0.0 or :: for every interface)", c.Host))
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Sprintf("AUTOGLM_LOG_FORMAT=%q: want text or json", c.LogFormat))
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// Fields returns the configuration as log fields with secrets masked.
func (c Config) Fields() map[string]any {
	mask := func(s string) string {
		if s == "" {
			return ""
		}
		return "***"
	}
	return map[string]any{
		"port": c.Port, "host": c.Host, "app_id": c.AppID, "node_id": c.NodeID, "version": c.Version,
		"dapr_grpc_port": c.DaprGRPCPort, "dapr_http_port": c.DaprHTTPPort,
		"dapr_api_token": mask(c.DaprAPIToken), "app_api_token": mask(c.AppAPIToken),
		"state_store": c.StateStore, "broadcast_pubsub": c.BroadcastPubsub,
		"broadcast_topic": c.BroadcastTopic, "tasks_pubsub": c.TasksPubsub, "lock_store": c.LockStore,
		"collections": c.Collections, "log_window": c.LogWindow, "max_body": c.MaxBodyBytes, "max_doc": c.MaxDocBytes,
		"max_ops": c.MaxOpsPerMsg, "write_retries": c.WriteRetries, "heartbeat": c.Heartbeat.String(),
		"session_queue": c.SessionQueue, "max_subs": c.MaxSubs, "shutdown_grace": c.ShutdownGrace.String(), "probe_interval": c.ProbeInterval.String(), "anti_entropy": c.AntiEntropy.String(),
		"max_clock_skew": c.MaxClockSkew.String(), "allowed_origins": c.AllowedOrigins,
		"tasks_topic": c.TasksTopic, "task_workers": c.TaskWorkers, "webhook_attempts": c.WebhookAttempts,
		"webhook_backoff": c.WebhookBackoff.String(), "webhook_breaker_open": c.WebhookBreakerOpen.String(),
		"events_pubsub": c.EventsPubsub, "events_topic": c.EventsTopic, "outbox_store": c.OutboxStore,
		"webhook_allow": c.WebhookAllow, "webhook_anonymous": c.WebhookAnonymous, "query_api": c.QueryAPI,
		"compaction_interval": c.CompactionInterval.String(), "compaction_lease": c.CompactionLease.String(), "compaction_quiet": c.CompactionQuiet.String(),
		"body_timeout": c.BodyTimeout.String(), "hello_timeout": c.HelloTimeout.String(),
		"max_conns_per_addr": c.MaxConnsPerAddr,
		"client_addr_header": c.ClientAddrHeader, "max_conns_per_identity": c.MaxConnsPerIdentity,
		"auth": c.Auth, "jwt_secret": mask(c.JWTSecret), "jwks_url": c.JWKSURL, "jwt_issuer": c.JWTIssuer,
		"jwt_audience": c.JWTAudience, "conn_rate": c.ConnRate, "identity_rate": c.IdentityRate,
		"pprof": c.Pprof,
	}
}
