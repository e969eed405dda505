package deploycheck

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	componentsv1alpha1 "github.com/dapr/dapr/pkg/apis/components/v1alpha1"
	"github.com/dapr/dapr/pkg/injector/annotations"
	"github.com/google/go-cmp/cmp"

	"github.com/open-autoglm/autoglm/app/config"
)

const composeFile = "compose.yaml"

// loadCompose parses compose.yaml with Compose's own loader (schema
// validation, interpolation, consistency checks) under env.
func loadCompose(tb testing.TB, env map[string]string) (*types.Project, error) {
	tb.Helper()
	root := mustRoot(tb)
	return loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  root,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(root, composeFile)}},
		Environment: env,
	}, func(o *loader.Options) { o.SetProjectName("autoglm", true) })
}

func mustCompose(tb testing.TB) *types.Project {
	tb.Helper()
	p, err := loadCompose(tb, map[string]string{"DAPR_API_TOKEN": "dapr-token", "APP_API_TOKEN": "app-token"})
	if err != nil {
		tb.Fatalf("%s: %v", composeFile, err)
	}
	return p
}

func mustService(tb testing.TB, p *types.Project, name string) types.ServiceConfig {
	tb.Helper()
	s, err := p.GetService(name)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// flags reads "--name value" pairs of a command line.
func flags(tb testing.TB, cmd []string) map[string]string {
	tb.Helper()
	out := map[string]string{}
	for i := 1; i < len(cmd); i++ {
		name, ok := strings.CutPrefix(cmd[i], "--")
		if !ok || i+1 >= len(cmd) {
			tb.Fatalf("daprd command %q: %q is not a --flag value pair", cmd, cmd[i])
		}
		out[name] = cmd[i+1]
		i++
	}
	return out
}

// pinnedDaprVersion is the Dapr release tools/daprd builds.
func pinnedDaprVersion(tb testing.TB) string {
	tb.Helper()
	m := regexp.MustCompile(`(?m)^\s*github\.com/dapr/dapr v(\S+)$`).FindSubmatch(mustReadFile(tb, "tools/daprd/go.mod"))
	if m == nil {
		tb.Fatal("tools/daprd/go.mod does not require github.com/dapr/dapr")
	}
	return string(m[1])
}

func TestComposeNeedsTheTokens(t *testing.T) {
	for _, missing := range []string{"DAPR_API_TOKEN", "APP_API_TOKEN"} {
		env := map[string]string{"DAPR_API_TOKEN": "d", "APP_API_TOKEN": "a"}
		delete(env, missing)
		if _, err := loadCompose(t, env); err == nil || !strings.Contains(err.Error(), missing) {
			t.Errorf("without %s: error %v, want one naming it", missing, err)
		}
	}
}

// The compose file runs the image of the Dockerfile beside the official
// daprd of the pinned release, with the app id, ports and components of
// the Kubernetes manifests.
func TestComposeMatchesTheManifests(t *testing.T) {
	p := mustCompose(t)
	objs := mustBundle(t, manifestsDir).Objects
	deps := mustDeployments(t, objs)
	app := mustService(t, p, "autoglm")
	side := mustService(t, p, "daprd")

	if app.Build == nil || app.Build.Dockerfile != "Dockerfile" || app.Build.Context != mustRoot(t) {
		t.Errorf("autoglm build %+v: want the repository's Dockerfile", app.Build)
	}
	if want := "daprio/daprd:" + pinnedDaprVersion(t); side.Image != want {
		t.Errorf("daprd image %q, want %q (the release tools/daprd pins)", side.Image, want)
	}
	if side.NetworkMode != "service:autoglm" {
		t.Errorf("daprd network_mode %q: the sidecar must share the app's network namespace", side.NetworkMode)
	}
	if len(side.Command) == 0 || side.Command[0] != "./daprd" {
		t.Fatalf("daprd command %q", side.Command)
	}
	f := flags(t, side.Command)
	for name, d := range deps {
		a := d.Spec.Template.Annotations
		for flag, key := range map[string]string{"app-id": annotations.KeyAppID, "app-port": annotations.KeyAppPort,
			"app-protocol": annotations.KeyAppProtocol, "metrics-port": annotations.KeyMetricsPort} {
			if f[flag] != a[key] {
				t.Errorf("daprd --%s %q, %s has %s %q", flag, f[flag], name, key, a[key])
			}
		}
	}
	env := func(k string) string {
		if v := app.Environment[k]; v != nil {
			return *v
		}
		return ""
	}
	for k, want := range map[string]string{
		"AUTOGLM_PORT": f["app-port"], "AUTOGLM_APP_ID": f["app-id"],
		"DAPR_HTTP_PORT": f["dapr-http-port"], "DAPR_GRPC_PORT": f["dapr-grpc-port"],
		"DAPR_API_TOKEN": "dapr-token", "APP_API_TOKEN": "app-token",
	} {
		if env(k) != want {
			t.Errorf("autoglm %s = %q, want %q", k, env(k), want)
		}
	}
	if f["app-port"] != strconv.Itoa(config.DefaultPort) || f["app-id"] != config.DefaultAppID {
		t.Errorf("app port %s, app id %s: want the app's defaults %d, %s", f["app-port"], f["app-id"], config.DefaultPort, config.DefaultAppID)
	}
	for _, k := range []string{"DAPR_API_TOKEN", "APP_API_TOKEN"} {
		if v := side.Environment[k]; v == nil || *v != env(k) {
			t.Errorf("daprd %s differs from the app's", k)
		}
	}
	// Published on loopback only: the app, daprd's HTTP API and metrics.
	published := map[string]bool{}
	for _, port := range app.Ports {
		if port.HostIP != "127.0.0.1" || port.Published != strconv.Itoa(int(port.Target)) {
			t.Errorf("port %+v: want 127.0.0.1:N:N", port)
		}
		published[strconv.Itoa(int(port.Target))] = true
	}
	for _, flag := range []string{"app-port", "dapr-http-port", "metrics-port"} {
		if !published[f[flag]] {
			t.Errorf("--%s %s is not published", flag, f[flag])
		}
	}
	if c := app.Volumes; len(c) != 1 || c[0].Source != filepath.Join(mustRoot(t), "config", "collections.yaml") || c[0].Target != env("AUTOGLM_COLLECTIONS") {
		t.Errorf("autoglm volumes %+v: want config/collections.yaml at AUTOGLM_COLLECTIONS", c)
	}
	if d, ok := side.DependsOn["components"]; !ok || d.Condition != types.ServiceConditionCompletedSuccessfully {
		t.Errorf("daprd must wait for the rendered components: %+v", side.DependsOn)
	}

	t.Run("Components", func(t *testing.T) {
		render := mustService(t, p, "components")
		var src, dst string
		for _, v := range render.Volumes {
			switch v.Target {
			case "/profile":
				src = v.Source
			case "/resources":
				dst = v.Source
			}
		}
		if src != filepath.Join(mustRoot(t), "components", "redis") {
			t.Fatalf("components service renders %q, want components/redis", src)
		}
		if len(side.Volumes) != 1 || side.Volumes[0].Source != dst || side.Volumes[0].Target != f["resources-path"] {
			t.Fatalf("daprd volumes %+v: want the rendered volume %q at --resources-path %q", side.Volumes, dst, f["resources-path"])
		}
		const sed = "s#{{REDIS_HOST}}#redis:6379#g"
		if !strings.Contains(strings.Join(render.Command, " "), sed) {
			t.Fatalf("components command %q does not fill in {{REDIS_HOST}}", render.Command)
		}
		if _, err := p.GetService("redis"); err != nil {
			t.Fatal(err)
		}
		// Render as the components service does and decode strictly.
		got := map[string]string{}
		entries, err := os.ReadDir(src)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join(src, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			s := strings.ReplaceAll(string(b), "{{REDIS_HOST}}", "redis:6379")
			if i := strings.Index(s, "{{"); i >= 0 {
				t.Fatalf("%s: placeholder left after rendering: %.30s", e.Name(), s[i:])
			}
			objs, err := DecodeFile([]byte(s), "components/redis/"+e.Name())
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range all[componentsv1alpha1.Component](objs) {
				got[c.Name] = c.Spec.Type
			}
		}
		want := map[string]string{}
		for _, c := range all[componentsv1alpha1.Component](objs) {
			want[c.Name] = c.Spec.Type
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("components (name: type) -manifests +compose:\n%s", diff)
		}
		if len(got) == 0 {
			t.Error("no components")
		}
	})
}
