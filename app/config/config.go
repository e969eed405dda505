// Package config reads the service configuration from environment variables,
// with defaults that run the embedded profile on one machine.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
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
	Port    int    `env:"AUTOGLM_PORT" min:"1"` // HTTP port for clients and the sidecar
	Host    string `env:"AUTOGLM_HOST"`         // address the HTTP port is bound to; loopback by default, 0.0.0.0 in containers
	AppID   string `env:"AUTOGLM_APP_ID"`       // Dapr app id (for logs and self-invocation)
	NodeID  string `env:"AUTOGLM_NODE_ID"`      // replica id stamped on HLC timestamps; default hostname+pid
	Version string // set at build time; not from the environment

	DaprGRPCPort int    `env:"DAPR_GRPC_PORT" min:"1"` // set by the sidecar injector
	DaprHTTPPort int    `env:"DAPR_HTTP_PORT" min:"1"`
	DaprAPIToken string `env:"DAPR_API_TOKEN"` // sent to daprd (secret)
	AppAPIToken  string `env:"APP_API_TOKEN"`  // required from daprd on callbacks (secret)

	StateStore      string `env:"AUTOGLM_STATE_STORE"`
	BroadcastPubsub string `env:"AUTOGLM_BROADCAST_PUBSUB"`
	BroadcastTopic  string `env:"AUTOGLM_BROADCAST_TOPIC"`
	TasksPubsub     string `env:"AUTOGLM_TASKS_PUBSUB"`
	LockStore       string `env:"AUTOGLM_LOCK_STORE"`

	// Background tasks, webhooks and integration events (docs/events.md).
	TasksTopic         string        `env:"AUTOGLM_TASKS_TOPIC"`              // topic prefix: <prefix>-high, -medium, -low, -dead
	TaskWorkers        int           `env:"AUTOGLM_TASK_WORKERS" min:"1"`     // tasks run at once by a replica
	WebhookAttempts    int           `env:"AUTOGLM_WEBHOOK_ATTEMPTS" min:"1"` // tries before a delivery is dead-lettered
	WebhookBackoff     time.Duration `env:"AUTOGLM_WEBHOOK_BACKOFF"`          // first retry delay (doubles, full jitter)
	WebhookMaxBackoff  time.Duration `env:"AUTOGLM_WEBHOOK_MAX_BACKOFF"`
	WebhookBreakerOpen time.Duration `env:"AUTOGLM_WEBHOOK_BREAKER_OPEN"`         // open time before a probe
	WebhookBreakerTrip int           `env:"AUTOGLM_WEBHOOK_BREAKER_TRIP" min:"1"` // consecutive failures that open it
	WebhookTick        time.Duration `env:"AUTOGLM_WEBHOOK_TICK"`                 // how often parked deliveries are checked
	EventsPubsub       string        `env:"AUTOGLM_EVENTS_PUBSUB"`                // where integration events go
	EventsTopic        string        `env:"AUTOGLM_EVENTS_TOPIC"`
	OutboxStore        string        `env:"AUTOGLM_OUTBOX_STORE"`      // state component with Dapr's outbox; used when the sidecar has it
	WebhookAllow       string        `env:"AUTOGLM_WEBHOOK_ALLOW"`     // internal webhook receivers allowed despite the address rules (docs/events.md#targets)
	WebhookAnonymous   bool          `env:"AUTOGLM_WEBHOOK_ANONYMOUS"` // POST /v1/webhooks accepted while authentication is off
	QueryAPI           bool          `env:"AUTOGLM_QUERY_API"`         // on state.postgresql, store documents as JSON and answer REST queries through the state query API

	// Op-log compaction (app/compaction): a singleton job under a lease on
	// the lock component; without one (local profile) it runs unguarded.
	CompactionInterval time.Duration `env:"AUTOGLM_COMPACTION_INTERVAL" off:"0"` // time between passes; 0 turns it off
	CompactionLease    time.Duration `env:"AUTOGLM_COMPACTION_LEASE"`            // lock lease; a dead holder is replaced after it
	CompactionQuiet    time.Duration `env:"AUTOGLM_COMPACTION_QUIET"`            // a document unchanged this long has its tail archived

	Collections    string        `env:"AUTOGLM_COLLECTIONS"`            // collections config file (YAML); empty: every collection lww
	LogWindow      int           `env:"AUTOGLM_LOG_WINDOW" min:"1"`     // op-log entries kept per document
	MaxBodyBytes   int64         `env:"AUTOGLM_MAX_BODY" min:"1024"`    // REST body and WebSocket message limit
	MaxDocBytes    int           `env:"AUTOGLM_MAX_DOC" min:"1024"`     // stored document size limit
	MaxOpsPerMsg   int           `env:"AUTOGLM_MAX_OPS" min:"1"`        // field operations in one op
	WriteRetries   int           `env:"AUTOGLM_WRITE_RETRIES" min:"0"`  // ETag-conflict retries per batch
	Heartbeat      time.Duration `env:"AUTOGLM_HEARTBEAT"`              // WebSocket ping interval
	SessionQueue   int           `env:"AUTOGLM_SESSION_QUEUE" min:"16"` // per-session outbound queue length
	MaxSubs        int           `env:"AUTOGLM_MAX_SUBS" min:"1"`       // documents one connection may watch
	ShutdownGrace  time.Duration `env:"AUTOGLM_SHUTDOWN_GRACE"`         // drain time on stop
	ProbeInterval  time.Duration `env:"AUTOGLM_PROBE_INTERVAL"`         // sidecar health poll
	AntiEntropy    time.Duration `env:"AUTOGLM_ANTI_ENTROPY"`           // how often quiet watched documents are re-checked against the store
	MaxClockSkew   time.Duration `env:"AUTOGLM_MAX_CLOCK_SKEW"`         // future HLC stamps refused past this
	LogFormat      string        `env:"AUTOGLM_LOG_FORMAT"`             // text or json
	LogLevel       string        `env:"AUTOGLM_LOG_LEVEL"`
	AllowedOrigins []string      `env:"AUTOGLM_ALLOWED_ORIGINS"` // comma list; empty = same host only, "*" = any

	// Connection limits (docs/security.md).
	BodyTimeout         time.Duration `env:"AUTOGLM_BODY_TIMEOUT"`                   // time to read one request body (408 request_timeout)
	HelloTimeout        time.Duration `env:"AUTOGLM_HELLO_TIMEOUT"`                  // a WebSocket without hello this long after the upgrade is closed (4006)
	MaxConnsPerAddr     int           `env:"AUTOGLM_MAX_CONNS_PER_ADDR" min:"0"`     // sync sessions open at once per client address; 0: no cap
	MaxConnsPerIdentity int           `env:"AUTOGLM_MAX_CONNS_PER_IDENTITY" min:"0"` // sync sessions open at once per token subject; 0: no cap
	ClientAddrHeader    string        `env:"AUTOGLM_CLIENT_ADDR_HEADER"`             // header a trusted proxy sets to the client address; empty (default): none is trusted

	Auth         string  `env:"AUTOGLM_AUTH"`          // off (default) or jwt
	JWTSecret    string  `env:"AUTOGLM_JWT_SECRET"`    // HS256 shared secret, ≥ 32 bytes (secret)
	JWKSURL      string  `env:"AUTOGLM_JWKS_URL"`      // RS256/ES256 keys
	JWTIssuer    string  `env:"AUTOGLM_JWT_ISSUER"`    // required iss, if set
	JWTAudience  string  `env:"AUTOGLM_JWT_AUDIENCE"`  // required aud, if set
	ConnRate     float64 `env:"AUTOGLM_CONN_RATE"`     // messages per second per sync connection (burst 2×)
	IdentityRate float64 `env:"AUTOGLM_IDENTITY_RATE"` // REST requests per second per identity (burst 2×)
	Pprof        string  `env:"AUTOGLM_PPROF"`         // address of the Go profiler (127.0.0.1:6060); empty = off
	// Procs is the Go scheduler's Ps: 0 (default) sizes them to the load,
	// one while the process needs less than a core (app/internal/procs);
	// n fixes them at n. A GOMAXPROCS in the environment wins over both.
	Procs int `env:"AUTOGLM_PROCS" min:"0"`
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
// lookup (os.LookupEnv in production): each field tagged env reads the
// variable the tag names, and an unset or empty variable keeps the
// default. Integers must be at least the tag min, durations positive (the
// tag off names the value that turns the setting off), rates at least 0.
func FromEnv(lookup func(string) (string, bool)) (Config, error) {
	c := Default()
	var errs []string
	fields := reflect.ValueOf(&c).Elem()
	for i := range fields.NumField() {
		f := fields.Type().Field(i)
		name := f.Tag.Get("env")
		if name == "" {
			continue
		}
		if v, ok := lookup(name); ok && v != "" {
			if err := setFromEnv(fields.Field(i), f.Tag, v); err != nil {
				errs = append(errs, fmt.Sprintf("%s=%q: %v", name, v, err))
			}
		}
	}
	if err := c.Validate(); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("config: %s", strings.Join(errs, "; "))
	}
	return c, nil
}

// setFromEnv parses v into the field dst as its type and tag say.
func setFromEnv(dst reflect.Value, tag reflect.StructTag, v string) error {
	switch dst.Interface().(type) {
	case string:
		dst.SetString(v)
	case int, int64:
		minimum, _ := strconv.Atoi(tag.Get("min"))
		n, err := strconv.Atoi(v)
		if err != nil || n < minimum {
			return fmt.Errorf("want an integer >= %d", minimum)
		}
		dst.SetInt(int64(n))
	case time.Duration:
		if off, ok := tag.Lookup("off"); ok && v == off {
			dst.SetInt(0)
			return nil
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return errors.New("want a positive duration such as 15s")
		}
		dst.SetInt(int64(d))
	case float64:
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 {
			return errors.New("want a number >= 0 (0: unlimited)")
		}
		dst.SetFloat(f)
	case bool:
		b, err := strconv.ParseBool(v)
		dst.SetBool(b)
		if err != nil {
			return errors.New("want true or false")
		}
	case []string: // a comma list
		for _, o := range strings.Split(v, ",") {
			if o = strings.TrimSpace(o); o != "" {
				dst.Set(reflect.Append(dst, reflect.ValueOf(o)))
			}
		}
	default:
		panic(fmt.Sprintf("config: no reader for a %s from the environment", dst.Type()))
	}
	return nil
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
		"pprof": c.Pprof, "procs": c.Procs,
	}
}
