package deploycheck

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	componentsv1alpha1 "github.com/dapr/dapr/pkg/apis/components/v1alpha1"
	configurationv1alpha1 "github.com/dapr/dapr/pkg/apis/configuration/v1alpha1"
	resiliencyv1alpha1 "github.com/dapr/dapr/pkg/apis/resiliency/v1alpha1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	networkingv1beta1 "istio.io/client-go/pkg/apis/networking/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	securityv1beta1 "istio.io/client-go/pkg/apis/security/v1beta1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// ModulePath is the module of the product; FindRoot looks for its go.mod.
const ModulePath = "github.com/open-autoglm/autoglm"

// TypeKey names a resource type as it appears in a manifest.
type TypeKey struct {
	APIVersion string
	Kind       string
}

// knownTypes maps every resource type the deployment may contain to its Go
// type. A document of any other type is an error: a typo in apiVersion or
// kind would otherwise escape every check.
var knownTypes = map[TypeKey]func() any{
	{"v1", "Namespace"}:      func() any { return new(corev1.Namespace) },
	{"v1", "ServiceAccount"}: func() any { return new(corev1.ServiceAccount) },
	{"v1", "ConfigMap"}:      func() any { return new(corev1.ConfigMap) },
	{"v1", "Secret"}:         func() any { return new(corev1.Secret) },
	{"v1", "Service"}:        func() any { return new(corev1.Service) },

	{"apps/v1", "Deployment"}:                            func() any { return new(appsv1.Deployment) },
	{"autoscaling/v2", "HorizontalPodAutoscaler"}:        func() any { return new(autoscalingv2.HorizontalPodAutoscaler) },
	{"policy/v1", "PodDisruptionBudget"}:                 func() any { return new(policyv1.PodDisruptionBudget) },
	{"dapr.io/v1alpha1", componentsv1alpha1.Kind}:        func() any { return new(componentsv1alpha1.Component) },
	{"dapr.io/v1alpha1", "Resiliency"}:                   func() any { return new(resiliencyv1alpha1.Resiliency) },
	{"dapr.io/v1alpha1", "Configuration"}:                func() any { return new(configurationv1alpha1.Configuration) },
	{"networking.istio.io/v1", "VirtualService"}:         func() any { return new(networkingv1.VirtualService) },
	{"networking.istio.io/v1", "DestinationRule"}:        func() any { return new(networkingv1.DestinationRule) },
	{"networking.istio.io/v1", "Gateway"}:                func() any { return new(networkingv1.Gateway) },
	{"networking.istio.io/v1beta1", "VirtualService"}:    func() any { return new(networkingv1beta1.VirtualService) },
	{"networking.istio.io/v1beta1", "DestinationRule"}:   func() any { return new(networkingv1beta1.DestinationRule) },
	{"networking.istio.io/v1beta1", "Gateway"}:           func() any { return new(networkingv1beta1.Gateway) },
	{"security.istio.io/v1", "PeerAuthentication"}:       func() any { return new(securityv1.PeerAuthentication) },
	{"security.istio.io/v1", "AuthorizationPolicy"}:      func() any { return new(securityv1.AuthorizationPolicy) },
	{"security.istio.io/v1beta1", "PeerAuthentication"}:  func() any { return new(securityv1beta1.PeerAuthentication) },
	{"security.istio.io/v1beta1", "AuthorizationPolicy"}: func() any { return new(securityv1beta1.AuthorizationPolicy) },
}

// istioSpec returns the protobuf message holding the spec of an Istio
// object, or nil for other objects. Istio's generated UnmarshalJSON methods
// ignore unknown fields, so DecodeDocument decodes these specs a second time
// with protojson, which does not.
func istioSpec(obj any) proto.Message {
	switch o := obj.(type) {
	case *networkingv1.VirtualService:
		return &o.Spec
	case *networkingv1.DestinationRule:
		return &o.Spec
	case *networkingv1.Gateway:
		return &o.Spec
	case *networkingv1beta1.VirtualService:
		return &o.Spec
	case *networkingv1beta1.DestinationRule:
		return &o.Spec
	case *networkingv1beta1.Gateway:
		return &o.Spec
	case *securityv1.PeerAuthentication:
		return &o.Spec
	case *securityv1.AuthorizationPolicy:
		return &o.Spec
	case *securityv1beta1.PeerAuthentication:
		return &o.Spec
	case *securityv1beta1.AuthorizationPolicy:
		return &o.Spec
	}
	return nil
}

// Object is one decoded YAML document.
type Object struct {
	File  string // slash-separated path relative to the repository root
	Index int    // position among the non-empty documents of File, from 0
	Type  TypeKey
	Name  string
	Value any // pointer to the typed object, e.g. *appsv1.Deployment
}

func (o Object) String() string {
	return fmt.Sprintf("%s#%d (%s %s)", o.File, o.Index, o.Type.Kind, o.Name)
}

// SplitDocuments splits a YAML stream at its "---" lines and drops the
// documents that hold nothing but comments and blank lines.
func SplitDocuments(data []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", len(docs), err)
		}
		if string(bytes.TrimSpace(j)) == "null" {
			continue
		}
		docs = append(docs, doc)
	}
}

// DecodeDocument decodes one YAML document into the Go type of its
// apiVersion and kind, the way the API server does with strict field
// validation: duplicate keys, unknown fields and fields whose case differs
// from the schema are errors.
func DecodeDocument(doc []byte) (TypeKey, any, error) {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return TypeKey{}, nil, err
	}
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := json.Unmarshal(j, &head); err != nil {
		return TypeKey{}, nil, fmt.Errorf("not an object: %w", err)
	}
	key := TypeKey{head.APIVersion, head.Kind}
	newObj, ok := knownTypes[key]
	if !ok {
		return key, nil, fmt.Errorf("unknown resource type apiVersion=%q kind=%q", key.APIVersion, key.Kind)
	}
	obj := newObj()
	if err := unmarshalStrict(j, obj); err != nil {
		return key, nil, err
	}
	if msg := istioSpec(obj); msg != nil {
		var raw struct {
			Spec json.RawMessage `json:"spec"`
		}
		if err := json.Unmarshal(j, &raw); err != nil {
			return key, nil, err
		}
		if len(raw.Spec) > 0 {
			// protojson resets msg first and rejects unknown fields.
			if err := protojson.Unmarshal(raw.Spec, msg); err != nil {
				return key, nil, fmt.Errorf("spec: %w", err)
			}
		}
	}
	return key, obj, nil
}

// unmarshalStrict decodes JSON with the strictness of the API server.
func unmarshalStrict(j []byte, v any) error {
	strictErrs, err := sigsjson.UnmarshalStrict(j, v, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

// DecodeFile decodes every document of a YAML file. rel names the file in
// the returned objects.
func DecodeFile(data []byte, rel string) ([]Object, error) {
	docs, err := SplitDocuments(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", rel, err)
	}
	objs := make([]Object, 0, len(docs))
	for i, doc := range docs {
		key, v, err := DecodeDocument(doc)
		if err != nil {
			return nil, fmt.Errorf("%s#%d: %w", rel, i, err)
		}
		name := ""
		if n, ok := v.(interface{ GetName() string }); ok {
			name = n.GetName()
		}
		objs = append(objs, Object{File: rel, Index: i, Type: key, Name: name, Value: v})
	}
	return objs, nil
}

// Kustomization is the part of kustomize's Kustomization that this
// deployment uses. It is decoded strictly too: a field kustomize knows but
// this type does not must be added here, deliberately, with a check.
type Kustomization struct {
	APIVersion  string            `json:"apiVersion"`
	Kind        string            `json:"kind"`
	Namespace   string            `json:"namespace,omitempty"`
	Labels      []KustomizeLabels `json:"labels,omitempty"`
	SortOptions *SortOptions      `json:"sortOptions,omitempty"`
	Resources   []string          `json:"resources"`
}

// KustomizeLabels is one entry of a Kustomization's labels.
type KustomizeLabels struct {
	Pairs            map[string]string `json:"pairs"`
	IncludeSelectors bool              `json:"includeSelectors,omitempty"`
	IncludeTemplates bool              `json:"includeTemplates,omitempty"`
}

// SortOptions is a Kustomization's sortOptions.
type SortOptions struct {
	Order string `json:"order"`
}

// DecodeKustomization strictly decodes a kustomization.yaml.
func DecodeKustomization(data []byte) (Kustomization, error) {
	var k Kustomization
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return k, err
	}
	if err := unmarshalStrict(j, &k); err != nil {
		return k, err
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		return k, fmt.Errorf("apiVersion/kind = %s/%s, want kustomize.config.k8s.io/v1beta1/Kustomization", k.APIVersion, k.Kind)
	}
	return k, nil
}

// Bundle is one kustomization directory with its decoded resources, in the
// order the kustomization lists them.
type Bundle struct {
	Dir           string // slash-separated, relative to the repository root
	Kustomization Kustomization
	Objects       []Object
}

// LoadBundle reads dir/kustomization.yaml under root and decodes every file
// it lists.
func LoadBundle(root, dir string) (Bundle, error) {
	b := Bundle{Dir: dir}
	data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(dir), "kustomization.yaml"))
	if err != nil {
		return b, err
	}
	if b.Kustomization, err = DecodeKustomization(data); err != nil {
		return b, fmt.Errorf("%s/kustomization.yaml: %w", dir, err)
	}
	for _, res := range b.Kustomization.Resources {
		rel := path.Join(dir, res)
		data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rel)))
		if err != nil {
			return b, fmt.Errorf("%s/kustomization.yaml lists %q: %w", dir, res, err)
		}
		objs, err := DecodeFile(data, rel)
		if err != nil {
			return b, err
		}
		b.Objects = append(b.Objects, objs...)
	}
	return b, nil
}

// FindRoot returns the repository root: the nearest directory at or above
// dir whose go.mod declares ModulePath.
func FindRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && modulePath(data) == ModulePath {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of module %s above the working directory", ModulePath)
		}
		dir = parent
	}
}

func modulePath(gomod []byte) string {
	for _, line := range strings.Split(string(gomod), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}
