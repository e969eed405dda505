// Package backend reaches the backing services of the real-backend component
// profiles (components/redis, components/postgres) for the dev runner and the
// tests: where they listen, whether they answer, the placeholder values a
// profile is rendered with, the JetStream stream the PostgreSQL profile
// broadcasts into, and a minimal Redis client for inspection and fault
// injection. It needs no client libraries: NATS and Redis are spoken over
// their plain text protocols.
package backend

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
)

// Profiles that need servers, and the services each one uses.
var needs = map[string][]string{
	"local":    nil,
	"redis":    {"redis"},
	"postgres": {"postgres", "nats", "redis"}, // redis: the lock component
}

// RedisAddr is the Redis the redis profile (and every profile's lock) uses:
// $REDIS_ADDR or 127.0.0.1:6379.
func RedisAddr() string { return env("REDIS_ADDR", "127.0.0.1:6379") }

// PostgresConn is the PostgreSQL connection string of the postgres profile:
// $PG_CONN or the machine's server with trust authentication.
func PostgresConn() string {
	return env("PG_CONN", "host=127.0.0.1 port=5432 user=postgres dbname=test sslmode=disable connect_timeout=5")
}

// NATSURL is the NATS server (with JetStream) of the postgres profile:
// $NATS_URL or nats://127.0.0.1:4222.
func NATSURL() string { return env("NATS_URL", "nats://127.0.0.1:4222") }

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// PostgresAddr is host:port of PostgresConn.
func PostgresAddr() string {
	host, port := "127.0.0.1", "5432"
	for _, f := range strings.Fields(PostgresConn()) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "host":
			host = v
		case "port":
			port = v
		}
	}
	return net.JoinHostPort(host, port)
}

// NATSAddr is host:port of NATSURL.
func NATSAddr() string {
	u, err := url.Parse(NATSURL())
	if err != nil || u.Host == "" {
		return strings.TrimPrefix(NATSURL(), "nats://")
	}
	return u.Host
}

func addrOf(service string) string {
	switch service {
	case "redis":
		return RedisAddr()
	case "postgres":
		return PostgresAddr()
	case "nats":
		return NATSAddr()
	}
	return ""
}

// Require reports an error naming every service of profile that does not
// accept connections.
func Require(profile string) error {
	services, ok := needs[profile]
	if !ok {
		return fmt.Errorf("unknown profile %q (want local, redis or postgres)", profile)
	}
	var errs []error
	for _, s := range services {
		c, err := net.DialTimeout("tcp", addrOf(s), 2*time.Second)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s at %s is required by the %s profile: %w", s, addrOf(s), profile, err))
			continue
		}
		c.Close()
	}
	return errors.Join(errs...)
}

// Vars are the placeholder values components/<profile> is rendered with
// (see daprrun.Render). topic is the broadcast topic; on the postgres
// profile it names the JetStream stream (see BroadcastStream).
func Vars(profile, dataDir, topic string) map[string]string {
	v := map[string]string{"DATA_DIR": dataDir, "REDIS_HOST": RedisAddr()}
	if profile == "postgres" {
		v["PG_CONN"] = PostgresConn()
		v["NATS_URL"] = NATSURL()
		v["NATS_STREAM"] = BroadcastStream(topic).Name
	}
	return v
}

// Prepare creates what profile needs on its servers before a sidecar
// starts: the JetStream stream of the postgres profile. It is idempotent.
func Prepare(profile, topic string) error {
	if profile != "postgres" {
		return nil
	}
	return EnsureStream(NATSURL(), BroadcastStream(topic))
}

// Discard removes a test cluster's broadcast from the broker once its
// replicas have stopped (test clusters use a topic each): the JetStream
// stream of the postgres profile, the Redis stream (with its consumer
// groups) of the redis profile. The default topic is never removed.
func Discard(profile, topic string) error {
	if topic == "changes" {
		return nil
	}
	switch profile {
	case "redis":
		_, err := Redis(RedisAddr(), "DEL", topic)
		return err
	case "postgres":
		return DeleteStream(NATSURL(), BroadcastStream(topic).Name)
	}
	return nil
}
