package deploycheck

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	componentsv1alpha1 "github.com/dapr/dapr/pkg/apis/components/v1alpha1"
	configurationv1alpha1 "github.com/dapr/dapr/pkg/apis/configuration/v1alpha1"
	"sigs.k8s.io/yaml"

	"github.com/open-autoglm/autoglm/app/config"
)

// runFile is the part of the Dapr CLI's multi-app run file that dapr.yaml
// uses; decoding is strict, so a deprecated or misspelt key (resourcesPath)
// fails.
type runFile struct {
	Version int `json:"version"`
	Common  struct {
		ResourcesPaths []string          `json:"resourcesPaths"`
		ConfigFilePath string            `json:"configFilePath"`
		Env            map[string]string `json:"env"`
	} `json:"common"`
	Apps []struct {
		AppID        string            `json:"appID"`
		AppDirPath   string            `json:"appDirPath"`
		AppPort      int               `json:"appPort"`
		AppProtocol  string            `json:"appProtocol"`
		DaprHTTPPort int               `json:"daprHTTPPort"`
		DaprGRPCPort int               `json:"daprGRPCPort"`
		MetricsPort  int               `json:"metricsPort"`
		LogLevel     string            `json:"logLevel"`
		Env          map[string]string `json:"env"`
		Command      []string          `json:"command"`
	} `json:"apps"`
}

// dapr.yaml runs what make run runs: the built service with the
// collections file, on the ports and app id of the runner's defaults, on
// component and configuration files daprd can use as they are.
func TestDaprRunFileMatchesMakeRun(t *testing.T) {
	root := mustRoot(t)
	var rf runFile
	if err := yaml.UnmarshalStrict(mustReadFile(t, "dapr.yaml"), &rf); err != nil {
		t.Fatalf("dapr.yaml: %v", err)
	}
	if rf.Version != 1 || len(rf.Apps) != 1 {
		t.Fatalf("dapr.yaml: version %d, %d apps; want version 1 and the one service", rf.Version, len(rf.Apps))
	}
	app := rf.Apps[0]
	if app.AppID != config.DefaultAppID || app.AppPort != config.DefaultPort || app.AppProtocol != "http" ||
		app.DaprHTTPPort != config.DefaultDaprHTTPPort || app.DaprGRPCPort != config.DefaultDaprGRPCPort ||
		app.MetricsPort != config.DefaultDaprMetricsPort {
		t.Errorf("app %s ports %d/%d/%d/%d: want the runner's defaults", app.AppID, app.AppPort, app.DaprHTTPPort, app.DaprGRPCPort, app.MetricsPort)
	}
	if app.Env["AUTOGLM_PORT"] != strconv.Itoa(app.AppPort) || app.Env["AUTOGLM_APP_ID"] != app.AppID {
		t.Errorf("env %v: AUTOGLM_PORT and AUTOGLM_APP_ID must match appPort and appID", app.Env)
	}
	dir := filepath.Join(root, app.AppDirPath)
	if c := app.Env["AUTOGLM_COLLECTIONS"]; c != "config/collections.yaml" {
		t.Errorf("AUTOGLM_COLLECTIONS %q, want config/collections.yaml as make run", c)
	} else if _, err := os.Stat(filepath.Join(dir, c)); err != nil {
		t.Error(err)
	}
	// A built binary, the one make build writes (not go run: the CLI would
	// count the compile against the app's start).
	if !slices.Equal(app.Command, []string{"./bin/autoglm"}) {
		t.Errorf("command %q, want [./bin/autoglm]", app.Command)
	}
	if mk := string(mustReadFile(t, "Makefile")); !strings.Contains(mk, "-o bin/autoglm ./app/cmd/autoglm") {
		t.Error("make build does not write bin/autoglm")
	}
	if rf.Common.Env["DAPR_HOST_IP"] != "127.0.0.1" {
		t.Error("DAPR_HOST_IP: want 127.0.0.1, the address the sidecar registers with the name resolver")
	}

	// The resources: used as they are, no placeholders, the components the
	// app names.
	if len(rf.Common.ResourcesPaths) != 1 || rf.Common.ResourcesPaths[0] != "./components/local" {
		t.Fatalf("resourcesPaths %q, want [./components/local]", rf.Common.ResourcesPaths)
	}
	res := filepath.Join(root, rf.Common.ResourcesPaths[0])
	entries, err := os.ReadDir(res)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, e := range entries {
		rel := filepath.ToSlash(filepath.Join("components/local", e.Name()))
		b := mustReadFile(t, rel)
		if i := strings.Index(string(b), "{{"); i >= 0 {
			end := strings.Index(string(b[i:]), "}}")
			t.Errorf("%s: placeholder %s: the folder must be usable as it is", rel, b[i:i+max(end+2, 2)])
		}
		objs, err := DecodeFile(b, rel)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range all[componentsv1alpha1.Component](objs) {
			names[c.Name] = true
		}
	}
	for _, n := range []string{config.DefaultStateStore, config.DefaultBroadcastPubsub, config.DefaultTasksPubsub} {
		if !names[n] {
			t.Errorf("components/local has no component %q", n)
		}
	}

	// The sidecar configuration: SQLite name resolution, as the runners.
	objs, err := DecodeFile(mustReadFile(t, strings.TrimPrefix(rf.Common.ConfigFilePath, "./")), rf.Common.ConfigFilePath)
	if err != nil {
		t.Fatal(err)
	}
	cfgs := all[configurationv1alpha1.Configuration](objs)
	if len(cfgs) != 1 || cfgs[0].Spec.NameResolutionSpec == nil || cfgs[0].Spec.NameResolutionSpec.Component != "sqlite" {
		t.Fatalf("%s: want one Configuration with nameResolution sqlite", rf.Common.ConfigFilePath)
	}
}
