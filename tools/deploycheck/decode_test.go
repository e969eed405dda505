package deploycheck

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestBundlesDecodeStrictly(t *testing.T) {
	for _, dir := range []string{manifestsDir, istioDir} {
		t.Run(dir, func(t *testing.T) {
			b := mustBundle(t, dir)
			if len(b.Objects) == 0 {
				t.Fatal("no objects")
			}
			seen := map[string]Object{}
			for _, o := range b.Objects {
				if o.Name == "" {
					t.Errorf("%s: no metadata.name", o)
				}
				id := o.Type.APIVersion + "/" + o.Type.Kind + "/" + o.Name
				if prev, dup := seen[id]; dup {
					t.Errorf("%s and %s declare the same resource", prev, o)
				}
				seen[id] = o
			}
		})
	}
}

func TestKustomizationListsEveryFile(t *testing.T) {
	root := mustRoot(t)
	for _, dir := range []string{manifestsDir, istioDir} {
		t.Run(dir, func(t *testing.T) {
			b := mustBundle(t, dir)
			entries, err := os.ReadDir(filepath.Join(root, dir))
			if err != nil {
				t.Fatal(err)
			}
			var files []string
			for _, e := range entries {
				ext := filepath.Ext(e.Name())
				if e.IsDir() || (ext != ".yaml" && ext != ".yml") || e.Name() == "kustomization.yaml" {
					continue
				}
				files = append(files, e.Name())
			}
			listed := slices.Clone(b.Kustomization.Resources)
			for _, r := range listed {
				if strings.Contains(r, "/") || strings.Contains(r, "://") {
					t.Errorf("resource %q: want a file of this directory", r)
				}
			}
			slices.Sort(listed)
			if d := slices.Compact(slices.Clone(listed)); len(d) != len(listed) {
				t.Errorf("resources list a file twice: %v", b.Kustomization.Resources)
			}
			slices.Sort(files)
			if diff := cmp.Diff(files, listed); diff != "" {
				t.Errorf("YAML files (-) versus kustomization resources (+):\n%s", diff)
			}
		})
	}
}

func TestSplitDocuments(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // the "name:" of each document
	}{
		{"OneDocument", "name: a\n", []string{"a"}},
		{"LeadingSeparator", "---\nname: a\n", []string{"a"}},
		{"TwoDocuments", "name: a\n---\nname: b\n", []string{"a", "b"}},
		{"CommentOnlyDocumentDropped", "# head\n---\nname: a\n---\n# nothing\n---\nname: b\n---\n", []string{"a", "b"}},
		{"SeparatorInsideBlockScalarIsText", "name: a\nnote: |\n  ---\n  text\n---\nname: b\n", []string{"a", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs, err := SplitDocuments([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, d := range docs {
				for _, line := range strings.Split(string(d), "\n") {
					if v, ok := strings.CutPrefix(line, "name: "); ok {
						got = append(got, v)
					}
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("documents (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMultiDocumentFiles(t *testing.T) {
	tests := []struct {
		file string
		want []string
	}{
		{"manifests/hpa.yaml", []string{"autoglm-v1", "autoglm-v2"}},
		{"manifests/dapr-pubsub.yaml", []string{"broadcast", "tasks"}},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.file), func(t *testing.T) {
			objs, err := DecodeFile(mustReadFile(t, tt.file), tt.file)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, o := range objs {
				got = append(got, o.Name)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("objects (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDecodeRejects proves the decoding is strict for each family of types:
// each document decodes with the good word and fails with the bad one.
func TestDecodeRejects(t *testing.T) {
	tests := []struct {
		name      string
		doc       string // %s is replaced by good or bad
		good, bad string
		wantErr   string
	}{
		{
			name: "DeploymentUnknownSpecField",
			doc: `apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  %s: 2
  selector: {matchLabels: {app: x}}
  template:
    metadata: {labels: {app: x}}
    spec: {containers: [{name: x, image: x}]}
`,
			good: "replicas", bad: "replicaz", wantErr: `unknown field "spec.replicaz"`,
		},
		{
			name: "ContainerUnknownNestedField",
			doc: `apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  selector: {matchLabels: {app: x}}
  template:
    metadata: {labels: {app: x}}
    spec:
      containers:
        - name: x
          image: x
          %s: IfNotPresent
`,
			good: "imagePullPolicy", bad: "imagePullPolcy", wantErr: "imagePullPolcy",
		},
		{
			name: "ServiceFieldCaseMismatch",
			doc: `apiVersion: v1
kind: Service
metadata: {name: x}
spec:
  ports: [{%s: 80}]
`,
			good: "port", bad: "Port", wantErr: `"spec.ports[0].Port"`,
		},
		{
			name: "DuplicateKey",
			doc: `apiVersion: v1
kind: ConfigMap
metadata: {name: x}
data:
  a: "1"
  %s: "2"
`,
			good: "b", bad: "a", wantErr: "already set",
		},
		{
			name: "UnknownKind",
			doc: `apiVersion: apps/v1
kind: %s
metadata: {name: x}
`,
			good: "Deployment", bad: "Deploymnet", wantErr: "unknown resource type",
		},
		{
			name: "DaprComponentUnknownField",
			doc: `apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: x}
spec:
  type: state.redis
  version: v1
  %s:
    - {name: redisHost, value: "localhost:6379"}
`,
			good: "metadata", bad: "metdata", wantErr: `unknown field "spec.metdata"`,
		},
		{
			name: "DaprResiliencyUnknownField",
			doc: `apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata: {name: x}
spec:
  policies:
    retries:
      r: {policy: constant, duration: 1s, %s: 3}
  targets: {}
`,
			good: "maxRetries", bad: "maxRetry", wantErr: "maxRetry",
		},
		{
			name: "DaprConfigurationUnknownField",
			doc: `apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata: {name: x}
spec:
  api:
    %s:
      - {name: state, version: v1, protocol: grpc}
`,
			good: "allowed", bad: "allow", wantErr: `unknown field "spec.api.allow"`,
		},
		{
			name: "IstioVirtualServiceUnknownNestedField",
			doc: `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: x}
spec:
  hosts: [x]
  http:
    - route:
        - destination: {host: x, subset: v1}
      %s: {attempts: 0}
`,
			good: "retries", bad: "retrys", wantErr: "retrys",
		},
		{
			name: "IstioDestinationRuleUnknownDeepField",
			doc: `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: x}
spec:
  host: x
  trafficPolicy:
    tls: {%s: ISTIO_MUTUAL}
`,
			good: "mode", bad: "mod", wantErr: "mod",
		},
		{
			name: "IstioBadEnumValue",
			doc: `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: x}
spec:
  mtls: {mode: %s}
`,
			good: "STRICT", bad: "STRIKT", wantErr: "STRIKT",
		},
		{
			name: "IstioEnvelopeUnknownField",
			doc: `apiVersion: networking.istio.io/v1
kind: Gateway
%s: {name: x}
spec: {}
`,
			good: "metadata", bad: "metdata", wantErr: `unknown field "metdata"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := DecodeDocument([]byte(fmt.Sprintf(tt.doc, tt.good))); err != nil {
				t.Fatalf("good document: %v", err)
			}
			_, _, err := DecodeDocument([]byte(fmt.Sprintf(tt.doc, tt.bad)))
			if err == nil {
				t.Fatalf("bad document decoded without error")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q, want it to mention %q", err, tt.wantErr)
			}
		})
	}
}

func TestDecodeKustomizationRejectsUnknownField(t *testing.T) {
	const doc = `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
%s:
  - a.yaml
`
	if _, err := DecodeKustomization([]byte(fmt.Sprintf(doc, "resources"))); err != nil {
		t.Fatalf("good kustomization: %v", err)
	}
	if _, err := DecodeKustomization([]byte(fmt.Sprintf(doc, "resource"))); err == nil || !strings.Contains(err.Error(), "resource") {
		t.Fatalf("error %v, want one about the unknown field resource", err)
	}
}
