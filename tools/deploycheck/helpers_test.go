package deploycheck

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	componentsv1alpha1 "github.com/dapr/dapr/pkg/apis/components/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/open-autoglm/autoglm/app/config"
)

// The kustomization directories of the deployment.
const (
	manifestsDir = "manifests"
	istioDir     = "istio"
)

// appContainerName is the app's container in both Deployments (daprd and
// istio-proxy are added by the injectors).
const appContainerName = "autoglm"

// mustRoot returns the repository root.
func mustRoot(tb testing.TB) string {
	tb.Helper()
	wd, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	root, err := FindRoot(wd)
	if err != nil {
		tb.Fatal(err)
	}
	return root
}

// mustReadFile reads a file given relative to the repository root.
func mustReadFile(tb testing.TB, rel string) []byte {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(mustRoot(tb), filepath.FromSlash(rel)))
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// mustBundle loads and strictly decodes a kustomization directory.
func mustBundle(tb testing.TB, dir string) Bundle {
	tb.Helper()
	b, err := LoadBundle(mustRoot(tb), dir)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// all returns the objects of type T among objs, in order.
func all[T any](objs []Object) []*T {
	var out []*T
	for _, o := range objs {
		if v, ok := o.Value.(*T); ok {
			out = append(out, v)
		}
	}
	return out
}

// mustOne returns the object of type T called name.
func mustOne[T any](tb testing.TB, objs []Object, name string) *T {
	tb.Helper()
	var found []*T
	for _, o := range objs {
		if v, ok := o.Value.(*T); ok && o.Name == name {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		var zero T
		tb.Fatalf("found %d %T named %q, want 1", len(found), zero, name)
	}
	return found[0]
}

// mustDeployments returns the app's Deployments, which must be exactly
// autoglm-v1 and autoglm-v2, keyed by their version label.
func mustDeployments(tb testing.TB, objs []Object) map[string]*appsv1.Deployment {
	tb.Helper()
	deps := all[appsv1.Deployment](objs)
	out := make(map[string]*appsv1.Deployment, len(deps))
	for _, d := range deps {
		out[d.Spec.Template.Labels["version"]] = d
	}
	var names []string
	for _, d := range deps {
		names = append(names, d.Name)
	}
	slices.Sort(names)
	if want := []string{config.DefaultAppID + "-v1", config.DefaultAppID + "-v2"}; !slices.Equal(names, want) || len(out) != 2 {
		tb.Fatalf("Deployments %v (versions %d), want %v with distinct version labels", names, len(out), want)
	}
	return out
}

// mustAppContainer returns the app container of a pod template.
func mustAppContainer(tb testing.TB, d *appsv1.Deployment) *corev1.Container {
	tb.Helper()
	for i := range d.Spec.Template.Spec.Containers {
		if c := &d.Spec.Template.Spec.Containers[i]; c.Name == appContainerName {
			return c
		}
	}
	tb.Fatalf("Deployment %s has no container %q", d.Name, appContainerName)
	return nil
}

// resolvePort returns the container port number a probe or Service port
// refers to, by number or by name.
func resolvePort(c *corev1.Container, p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("container %s has no port named %q", c.Name, p.StrVal)
}

// envValue returns the literal value of an environment variable of c.
func envVar(c *corev1.Container, name string) (corev1.EnvVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return corev1.EnvVar{}, false
}

// selects reports whether every key of selector has the same value in labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// componentMeta returns the metadata entries of a Dapr component by name.
func componentMeta(c *componentsv1alpha1.Component) map[string]componentMetaValue {
	out := make(map[string]componentMetaValue, len(c.Spec.Metadata))
	for _, m := range c.Spec.Metadata {
		out[m.Name] = componentMetaValue{
			Value:     m.Value.String(),
			HasValue:  m.HasValue(),
			SecretRef: m.SecretKeyRef.Name != "",
			EnvRef:    m.EnvRef,
		}
	}
	return out
}

type componentMetaValue struct {
	Value     string
	HasValue  bool
	SecretRef bool
	EnvRef    string
}

// splitImage splits "registry/repo:tag" into repository and tag.
func splitImage(image string) (repo, tag string) {
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		return image[:i], image[i+1:]
	}
	return image, ""
}

func itoa(n int) string { return strconv.Itoa(n) }
