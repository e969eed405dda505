package daprrun

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/open-autoglm/autoglm/app/telemetry"
)

// TracingConfig renders components/tracing (a Dapr Configuration with
// tracing.otel) into dir when env, the app's environment, sets an OTLP
// endpoint, and returns the file to pass as --config: daprd then exports
// its spans to the app's collector. It returns "" when the app does not
// trace.
func TracingConfig(env []string, dir string) (string, error) {
	endpoint, protocol, err := telemetry.Endpoint(func(k string) string { return lookupEnv(env, k) })
	if err != nil || endpoint == "" {
		return "", err
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("OTLP endpoint %q: want a URL such as http://127.0.0.1:4317", endpoint)
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	// daprd may run in another directory (Options.Dir).
	if dir, err = filepath.Abs(dir); err != nil {
		return "", err
	}
	vars := map[string]string{"OTLP_ENDPOINT": u.Host, "OTLP_SECURE": strconv.FormatBool(u.Scheme == "https"),
		"OTLP_PROTOCOL": map[string]string{"grpc": "grpc", "http/protobuf": "http"}[protocol]}
	if err := Render(filepath.Join(root, "components", "tracing"), dir, vars); err != nil {
		return "", err
	}
	return filepath.Join(dir, "config.yaml"), nil
}

// lookupEnv reads k from env (KEY=value entries, the last one wins), or
// from this process's environment when env is nil.
func lookupEnv(env []string, k string) string {
	if env == nil {
		return os.Getenv(k)
	}
	v := ""
	for _, kv := range env {
		if rest, ok := strings.CutPrefix(kv, k+"="); ok {
			v = rest
		}
	}
	return v
}
