package deploycheck

import (
	"maps"
	"slices"
	"strings"
	"testing"

	componentsv1alpha1 "github.com/dapr/dapr/pkg/apis/components/v1alpha1"
	"github.com/dapr/dapr/pkg/injector/annotations"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
)

const deployDoc = "docs/deploy.md"

// secretRef is a Secret the deployment needs but does not contain.
type secretRef struct {
	name, key string // key "" for TLS secrets (tls.crt / tls.key)
	tls       bool
}

// referencedSecrets collects every Secret the manifests and Istio files
// refer to.
func referencedSecrets(tb testing.TB) map[string]secretRef {
	tb.Helper()
	out := map[string]secretRef{}
	add := func(r secretRef) { out[r.name+"/"+r.key] = r }
	m, i := mustBundle(tb, manifestsDir), mustBundle(tb, istioDir)
	for _, d := range mustDeployments(tb, m.Objects) {
		for _, a := range []string{annotations.KeyAPITokenSecret, annotations.KeyAppTokenSecret} {
			if s := d.Spec.Template.Annotations[a]; s != "" {
				add(secretRef{name: s, key: "token"})
			}
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					add(secretRef{name: e.ValueFrom.SecretKeyRef.Name, key: e.ValueFrom.SecretKeyRef.Key})
				}
			}
			for _, ef := range c.EnvFrom {
				if ef.SecretRef != nil {
					add(secretRef{name: ef.SecretRef.Name})
				}
			}
		}
	}
	for _, c := range all[componentsv1alpha1.Component](m.Objects) {
		for _, md := range c.Spec.Metadata {
			if md.SecretKeyRef.Name != "" {
				add(secretRef{name: md.SecretKeyRef.Name, key: md.SecretKeyRef.Key})
			}
		}
	}
	for _, g := range all[networkingv1.Gateway](i.Objects) {
		for _, s := range g.Spec.Servers {
			if n := s.GetTls().GetCredentialName(); n != "" {
				add(secretRef{name: n, tls: true})
			}
		}
	}
	return out
}

// TestDocsCreateEverySecret: every Secret the files refer to is created,
// with the right key, by a command in docs/deploy.md.
func TestDocsCreateEverySecret(t *testing.T) {
	doc := string(mustReadFile(t, deployDoc))
	// Join continued shell lines so a command reads as one line.
	doc = strings.ReplaceAll(doc, "\\\n", " ")
	var commands []string
	for _, line := range strings.Split(doc, "\n") {
		if strings.Contains(line, "kubectl") && strings.Contains(line, "create secret") {
			commands = append(commands, line)
		}
	}
	refs := referencedSecrets(t)
	if len(refs) == 0 {
		t.Fatal("no Secret references found; the check would prove nothing")
	}
	for _, id := range slices.Sorted(maps.Keys(refs)) {
		r := refs[id]
		t.Run(id, func(t *testing.T) {
			ok := slices.ContainsFunc(commands, func(c string) bool {
				if !strings.Contains(c, " "+r.name+" ") {
					return false
				}
				if r.tls {
					return strings.Contains(c, "create secret tls")
				}
				return r.key == "" || strings.Contains(c, "--from-literal="+r.key+"=") || strings.Contains(c, "--from-file="+r.key+"=")
			})
			if !ok {
				t.Errorf("%s has no `kubectl create secret` for %s (key %q)", deployDoc, r.name, r.key)
			}
		})
	}
}

func TestDocsCoverTheDeployment(t *testing.T) {
	doc := string(mustReadFile(t, deployDoc))
	tests := []struct {
		name, want string
	}{
		{"Title", "# Deploy to Kubernetes with Dapr and Istio"},
		{"ApplyManifests", "kubectl apply -k manifests/"},
		{"ApplyIstio", "kubectl apply -k istio/"},
		{"VersionHeader", "grep -i X-Autoglm-Version"},
		{"TesterHeader", canaryHeader + ": " + canaryValue},
		{"ExcludeInbound", istioExcludeInbound},
		{"ExcludeOutbound", istioExcludeOutbound},
		{"DaprInternalPort", "50002"},
		{"MTLSSection", "## How Istio mTLS and Dapr mTLS are combined"},
		{"Rollback", "## 10. Roll back"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(doc, tt.want) {
				t.Errorf("%s does not contain %q", deployDoc, tt.want)
			}
		})
	}
}
