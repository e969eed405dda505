package deploycheck

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	componentsv1alpha1 "github.com/dapr/dapr/pkg/apis/components/v1alpha1"
	configurationv1alpha1 "github.com/dapr/dapr/pkg/apis/configuration/v1alpha1"
	resiliencyv1alpha1 "github.com/dapr/dapr/pkg/apis/resiliency/v1alpha1"
	"github.com/dapr/dapr/pkg/injector/annotations"
	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/open-autoglm/autoglm/app/config"
)

// Ports of daprd in the pod (Dapr defaults; the injector does not make the
// first two configurable).
const (
	daprInternalGRPCPort = 50002 // daprd-to-daprd service invocation, Dapr mTLS
	daprHealthPort       = 3501  // daprd's own liveness/readiness endpoint
)

// daprAnnotations is every dapr.io/ annotation the Deployments may carry,
// spelled through Dapr's own constants: a misspelt key would be silently
// ignored by the injector, so it fails here instead.
var daprAnnotations = map[string]bool{
	annotations.KeyEnabled:                 true,
	annotations.KeyAppID:                   true,
	annotations.KeyAppPort:                 true,
	annotations.KeyAppProtocol:             true,
	annotations.KeyConfig:                  true,
	annotations.KeyLogLevel:                true,
	annotations.KeyLogAsJSON:               true,
	annotations.KeyEnableMetrics:           true,
	annotations.KeyMetricsPort:             true,
	annotations.KeyAPITokenSecret:          true,
	annotations.KeyAppTokenSecret:          true,
	annotations.KeyCPURequest:              true,
	annotations.KeyCPULimit:                true,
	annotations.KeyMemoryRequest:           true,
	annotations.KeyMemoryLimit:             true,
	annotations.KeyEnableAppHealthCheck:    true,
	annotations.KeyAppHealthCheckPath:      true,
	annotations.KeyAppHealthProbeInterval:  true,
	annotations.KeyAppHealthProbeTimeout:   true,
	annotations.KeyAppHealthThreshold:      true,
	annotations.KeyBlockShutdownDuration:   true,
	annotations.KeyGracefulShutdownSeconds: true,
	annotations.KeyEnableAPILogging:        true,
	annotations.KeyHTTPMaxRequestSize:      true,
	annotations.KeyMaxBodySize:             true,
	annotations.KeyEnv:                     true,
}

// Istio annotations that keep Dapr's ports out of Envoy.
const (
	istioExcludeInbound  = "traffic.sidecar.istio.io/excludeInboundPorts"
	istioExcludeOutbound = "traffic.sidecar.istio.io/excludeOutboundPorts"
)

func TestDeploymentLabelsAndSelectors(t *testing.T) {
	objs := mustBundle(t, manifestsDir).Objects
	for version, d := range mustDeployments(t, objs) {
		t.Run(d.Name, func(t *testing.T) {
			want := map[string]string{"app": config.DefaultAppID, "version": version}
			if version != "v1" && version != "v2" {
				t.Errorf("version label %q, want v1 or v2", version)
			}
			if d.Name != config.DefaultAppID+"-"+version {
				t.Errorf("name %q does not end in its version label %q", d.Name, version)
			}
			if diff := cmp.Diff(want, d.Spec.Selector.MatchLabels); diff != "" {
				t.Errorf("selector.matchLabels (-want +got):\n%s", diff)
			}
			if len(d.Spec.Selector.MatchExpressions) != 0 {
				t.Error("selector.matchExpressions: the Dapr operator copies only matchLabels into the <app-id>-dapr Service")
			}
			for k, v := range want {
				if d.Labels[k] != v {
					t.Errorf("metadata.labels[%s] = %q, want %q", k, d.Labels[k], v)
				}
				if d.Spec.Template.Labels[k] != v {
					t.Errorf("template labels[%s] = %q, want %q", k, d.Spec.Template.Labels[k], v)
				}
			}
			if d.Spec.Replicas != nil {
				t.Error("spec.replicas is set; the HorizontalPodAutoscaler owns the replica count and a re-apply would reset it")
			}
		})
	}
}

func TestServiceSelectsBothTracksOnAppPort(t *testing.T) {
	objs := mustBundle(t, manifestsDir).Objects
	svc := mustOne[corev1.Service](t, objs, config.DefaultAppID)
	if _, ok := svc.Spec.Selector["version"]; ok {
		t.Errorf("Service selector %v names a version; the split belongs to Istio", svc.Spec.Selector)
	}
	if len(svc.Spec.Ports) != 1 {
		t.Fatalf("Service has %d ports, want 1", len(svc.Spec.Ports))
	}
	p := svc.Spec.Ports[0]
	if p.Port != 80 {
		t.Errorf("port %d, want 80", p.Port)
	}
	// Istio picks the protocol from the port name (http or http-*) or appProtocol.
	if p.Name != "http" && !strings.HasPrefix(p.Name, "http-") {
		t.Errorf("port name %q: want http or http-<suffix> so Istio treats it as HTTP", p.Name)
	}
	if p.AppProtocol != nil && *p.AppProtocol != "http" {
		t.Errorf("appProtocol %q, want http", *p.AppProtocol)
	}
	for _, d := range mustDeployments(t, objs) {
		t.Run(d.Name, func(t *testing.T) {
			if !selects(svc.Spec.Selector, d.Spec.Template.Labels) {
				t.Errorf("Service selector %v does not select pod labels %v", svc.Spec.Selector, d.Spec.Template.Labels)
			}
			port, err := resolvePort(mustAppContainer(t, d), p.TargetPort)
			if err != nil {
				t.Fatal(err)
			}
			if port != config.DefaultPort {
				t.Errorf("Service targetPort resolves to %d, want config.DefaultPort %d", port, config.DefaultPort)
			}
		})
	}
}

func TestAppContainerPortsProbesAndEnv(t *testing.T) {
	objs := mustBundle(t, manifestsDir).Objects
	for _, d := range mustDeployments(t, objs) {
		t.Run(d.Name, func(t *testing.T) {
			c := mustAppContainer(t, d)
			var ports []int32
			for _, p := range c.Ports {
				ports = append(ports, p.ContainerPort)
			}
			if !slices.Equal(ports, []int32{config.DefaultPort}) {
				t.Errorf("container ports %v, want [%d]", ports, config.DefaultPort)
			}
			probes := []struct {
				name  string
				probe *corev1.Probe
				path  string
			}{
				{"readinessProbe", c.ReadinessProbe, "/readyz"},
				{"livenessProbe", c.LivenessProbe, "/healthz"},
				{"startupProbe", c.StartupProbe, "/healthz"},
			}
			for _, pr := range probes {
				if pr.probe == nil {
					t.Errorf("%s missing", pr.name)
					continue
				}
				if pr.probe.HTTPGet == nil {
					t.Errorf("%s: want an httpGet probe", pr.name)
					continue
				}
				if pr.probe.HTTPGet.Path != pr.path {
					t.Errorf("%s path %q, want %q", pr.name, pr.probe.HTTPGet.Path, pr.path)
				}
				port, err := resolvePort(c, pr.probe.HTTPGet.Port)
				if err != nil {
					t.Errorf("%s: %v", pr.name, err)
				} else if port != config.DefaultPort {
					t.Errorf("%s port %d, want %d", pr.name, port, config.DefaultPort)
				}
			}

			if p, ok := d.Spec.Template.Annotations["prometheus.io/port"]; ok && p != itoa(config.DefaultPort) {
				t.Errorf("prometheus.io/port %q, want the app port %d (GET /metrics)", p, config.DefaultPort)
			}

			// Literal settings must agree with the app's defaults.
			wantEnv := map[string]string{
				"AUTOGLM_PORT":             itoa(config.DefaultPort),
				"AUTOGLM_APP_ID":           config.DefaultAppID,
				"AUTOGLM_STATE_STORE":      config.DefaultStateStore,
				"AUTOGLM_BROADCAST_PUBSUB": config.DefaultBroadcastPubsub,
				"AUTOGLM_BROADCAST_TOPIC":  config.DefaultBroadcastTopic,
				"AUTOGLM_TASKS_PUBSUB":     config.DefaultTasksPubsub,
				"AUTOGLM_LOCK_STORE":       config.DefaultLockStore,
				"AUTOGLM_LOG_FORMAT":       "json",
			}
			for name, want := range wantEnv {
				if e, ok := envVar(c, name); ok && (e.Value != want || e.ValueFrom != nil) {
					t.Errorf("env %s = %q, want %q", name, e.Value, want)
				}
			}
			if e, ok := envVar(c, "AUTOGLM_LOG_FORMAT"); !ok || e.Value != "json" {
				t.Error("env AUTOGLM_LOG_FORMAT: want json in the cluster")
			}
			// The app binds loopback by default; probes and the Service
			// reach the pod IP.
			if e, ok := envVar(c, "AUTOGLM_HOST"); !ok || !allInterfaces(e.Value) {
				t.Error("env AUTOGLM_HOST: want 0.0.0.0 or :: (every interface) in the cluster")
			}
			if e, ok := envVar(c, "AUTOGLM_NODE_ID"); !ok || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil ||
				e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
				t.Error("env AUTOGLM_NODE_ID: want the pod name from the downward API (fieldRef metadata.name)")
			}

			// Every value the config parses must parse.
			env := map[string]string{}
			for _, e := range c.Env {
				if e.ValueFrom == nil {
					env[e.Name] = e.Value
				}
			}
			if _, err := config.FromEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
				t.Errorf("the app would refuse this environment: %v", err)
			}
		})
	}
}

func TestDaprAnnotations(t *testing.T) {
	objs := mustBundle(t, manifestsDir).Objects
	deps := mustDeployments(t, objs)
	for _, d := range deps {
		t.Run(d.Name, func(t *testing.T) {
			a := d.Spec.Template.Annotations
			for k := range a {
				if strings.HasPrefix(k, "dapr.io/") && !daprAnnotations[k] {
					t.Errorf("annotation %s is not a Dapr annotation this deployment knows", k)
				}
			}
			want := map[string]string{
				annotations.KeyEnabled:     "true",
				annotations.KeyAppID:       config.DefaultAppID,
				annotations.KeyAppPort:     itoa(config.DefaultPort),
				annotations.KeyAppProtocol: "http",
			}
			for k, v := range want {
				if a[k] != v {
					t.Errorf("%s = %q, want %q", k, a[k], v)
				}
			}
			if lvl := a[annotations.KeyLogLevel]; !slices.Contains([]string{"debug", "info", "warn", "error"}, lvl) {
				t.Errorf("%s = %q, want debug, info, warn or error", annotations.KeyLogLevel, lvl)
			}
			cfgName := a[annotations.KeyConfig]
			if cfgName == "" {
				t.Errorf("%s missing", annotations.KeyConfig)
			} else {
				mustOne[configurationv1alpha1.Configuration](t, objs, cfgName)
			}
			for _, pair := range [][2]string{
				{annotations.KeyCPURequest, annotations.KeyCPULimit},
				{annotations.KeyMemoryRequest, annotations.KeyMemoryLimit},
			} {
				req, err1 := resource.ParseQuantity(a[pair[0]])
				lim, err2 := resource.ParseQuantity(a[pair[1]])
				if err1 != nil || err2 != nil {
					t.Errorf("%s=%q / %s=%q: want both, as quantities", pair[0], a[pair[0]], pair[1], a[pair[1]])
				} else if req.Cmp(lim) > 0 {
					t.Errorf("%s %s above %s %s", pair[0], req.String(), pair[1], lim.String())
				}
			}
			// daprd below a core runs best on one P (docs/benchmarks.md,
			// "One P"); its image's Go runtime does not follow the CPU limit.
			if !slices.Contains(strings.Split(a[annotations.KeyEnv], ","), "GOMAXPROCS=1") {
				t.Errorf("%s = %q: want GOMAXPROCS=1 for daprd", annotations.KeyEnv, a[annotations.KeyEnv])
			}
			if a[annotations.KeyEnableAppHealthCheck] == "true" && a[annotations.KeyAppHealthCheckPath] != "/healthz" {
				t.Errorf("%s = %q: want /healthz (liveness); /readyz depends on daprd itself", annotations.KeyAppHealthCheckPath, a[annotations.KeyAppHealthCheckPath])
			}

			// The tokens: daprd gets them through the annotations, the app
			// container needs the same Secret (the injector does not pass
			// them on to app containers).
			c := mustAppContainer(t, d)
			for annotation, env := range map[string]string{
				annotations.KeyAPITokenSecret: "DAPR_API_TOKEN",
				annotations.KeyAppTokenSecret: "APP_API_TOKEN",
			} {
				secret := a[annotation]
				if secret == "" {
					t.Errorf("%s missing", annotation)
					continue
				}
				e, ok := envVar(c, env)
				if !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
					t.Errorf("env %s: want a secretKeyRef to Secret %q", env, secret)
					continue
				}
				ref := e.ValueFrom.SecretKeyRef
				if ref.Name != secret || ref.Key != "token" {
					t.Errorf("env %s from Secret %s key %s, want Secret %s key token (what daprd reads)", env, ref.Name, ref.Key, secret)
				}
				if ref.Optional != nil && *ref.Optional {
					t.Errorf("env %s: the token Secret must not be optional", env)
				}
			}
		})
	}
	t.Run("TracksAgree", func(t *testing.T) {
		dapr := func(d *appsv1.Deployment) map[string]string {
			out := map[string]string{}
			for k, v := range d.Spec.Template.Annotations {
				if strings.HasPrefix(k, "dapr.io/") || strings.Contains(k, "istio.io/") {
					out[k] = v
				}
			}
			return out
		}
		if diff := cmp.Diff(dapr(deps["v1"]), dapr(deps["v2"])); diff != "" {
			t.Errorf("Dapr/Istio annotations of v1 (-) and v2 (+) differ; both tracks must be the same Dapr app:\n%s", diff)
		}
	})
}

// TestIstioLeavesDaprPortsAlone checks the pods do what docs/deploy.md says
// about combining the two meshes: Dapr's ports bypass Envoy, the app's does not.
func TestIstioLeavesDaprPortsAlone(t *testing.T) {
	objs := mustBundle(t, manifestsDir).Objects
	for _, d := range mustDeployments(t, objs) {
		t.Run(d.Name, func(t *testing.T) {
			a := d.Spec.Template.Annotations
			metricsPort, err := strconv.Atoi(a[annotations.KeyMetricsPort])
			if err != nil {
				t.Fatalf("%s = %q: want the metrics port explicitly", annotations.KeyMetricsPort, a[annotations.KeyMetricsPort])
			}
			ports := func(key string) []int {
				var out []int
				for _, f := range strings.Split(a[key], ",") {
					if f = strings.TrimSpace(f); f != "" {
						n, err := strconv.Atoi(f)
						if err != nil {
							t.Errorf("%s: %q is not a port", key, f)
						}
						out = append(out, n)
					}
				}
				return out
			}
			in, out := ports(istioExcludeInbound), ports(istioExcludeOutbound)
			for _, p := range []int{daprInternalGRPCPort, daprHealthPort, metricsPort} {
				if !slices.Contains(in, p) {
					t.Errorf("%s %v lacks Dapr port %d", istioExcludeInbound, in, p)
				}
			}
			if !slices.Contains(out, daprInternalGRPCPort) {
				t.Errorf("%s %v lacks %d (daprd-to-daprd)", istioExcludeOutbound, out, daprInternalGRPCPort)
			}
			if slices.Contains(in, config.DefaultPort) {
				t.Errorf("%s excludes the app port %d: client traffic would bypass Istio", istioExcludeInbound, config.DefaultPort)
			}
		})
	}
}

func TestPodSecurity(t *testing.T) {
	objs := mustBundle(t, manifestsDir).Objects
	for _, d := range mustDeployments(t, objs) {
		t.Run(d.Name, func(t *testing.T) {
			ps := d.Spec.Template.Spec.SecurityContext
			if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot {
				t.Error("pod securityContext.runAsNonRoot: want true")
			}
			if ps == nil || ps.RunAsUser == nil || *ps.RunAsUser == 0 {
				t.Error("pod securityContext.runAsUser: want a non-zero uid")
			} else if uid := dockerfileUID(t); *ps.RunAsUser != uid {
				t.Errorf("pod runAsUser %d, Dockerfile USER %d: want the same uid", *ps.RunAsUser, uid)
			}
			c := mustAppContainer(t, d)
			sc := c.SecurityContext
			if sc == nil {
				t.Fatal("container securityContext missing")
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Error("readOnlyRootFilesystem: want true")
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Error("allowPrivilegeEscalation: want false")
			}
			if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
				t.Error("capabilities.drop: want ALL")
			}
			if sc.Privileged != nil && *sc.Privileged {
				t.Error("privileged container")
			}
		})
	}
}

func TestResourcesAndShutdownBudget(t *testing.T) {
	objs := mustBundle(t, manifestsDir).Objects
	for _, d := range mustDeployments(t, objs) {
		t.Run(d.Name, func(t *testing.T) {
			c := mustAppContainer(t, d)
			for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				req, okReq := c.Resources.Requests[name]
				lim, okLim := c.Resources.Limits[name]
				if !okReq || !okLim {
					t.Errorf("%s: want a request and a limit", name)
				} else if req.Cmp(lim) > 0 {
					t.Errorf("%s request %s above limit %s", name, req.String(), lim.String())
				}
			}

			// SIGTERM reaches the app after preStop; it drains for
			// AUTOGLM_SHUTDOWN_GRACE. daprd blocks its shutdown meanwhile, then
			// shuts down gracefully. All of it must fit in the grace period.
			grace := time.Duration(30) * time.Second
			if g := d.Spec.Template.Spec.TerminationGracePeriodSeconds; g != nil {
				grace = time.Duration(*g) * time.Second
			}
			var preStop time.Duration
			if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
				preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
			}
			drain := config.Default().ShutdownGrace
			if e, ok := envVar(c, "AUTOGLM_SHUTDOWN_GRACE"); ok {
				var err error
				if drain, err = time.ParseDuration(e.Value); err != nil {
					t.Fatal(err)
				}
			}
			if preStop+drain >= grace {
				t.Errorf("preStop %v + app drain %v does not fit in terminationGracePeriodSeconds %v", preStop, drain, grace)
			}
			a := d.Spec.Template.Annotations
			var block, daprGrace time.Duration
			if v := a[annotations.KeyBlockShutdownDuration]; v != "" {
				var err error
				if block, err = time.ParseDuration(v); err != nil {
					t.Fatalf("%s: %v", annotations.KeyBlockShutdownDuration, err)
				}
				if block < preStop+drain {
					t.Errorf("daprd stops blocking after %v, before the app has drained (%v)", block, preStop+drain)
				}
			}
			if v := a[annotations.KeyGracefulShutdownSeconds]; v != "" {
				n, err := strconv.Atoi(v)
				if err != nil {
					t.Fatalf("%s: %v", annotations.KeyGracefulShutdownSeconds, err)
				}
				daprGrace = time.Duration(n) * time.Second
			}
			if block+daprGrace >= grace {
				t.Errorf("daprd block %v + graceful shutdown %v does not fit in terminationGracePeriodSeconds %v", block, daprGrace, grace)
			}
		})
	}
}

func TestImages(t *testing.T) {
	objs := mustBundle(t, manifestsDir).Objects
	deps := mustDeployments(t, objs)
	repos := map[string]bool{}
	for _, d := range deps {
		image := mustAppContainer(t, d).Image
		repo, tag := splitImage(image)
		if tag == "" || tag == "latest" {
			t.Errorf("%s: image %q: want an explicit tag (not latest), so v1 and v2 stay what they are", d.Name, image)
		}
		repos[repo] = true
	}
	if len(repos) != 1 {
		t.Fatalf("Deployments use image repositories %v; both tracks must run the same image name", slices.Sorted(maps.Keys(repos)))
	}
	for repo := range repos {
		if doc := string(mustReadFile(t, "docs/deploy.md")); !strings.Contains(doc, repo+":") {
			t.Errorf("docs/deploy.md never shows the image %s:<tag> the Deployments run", repo)
		}
	}
}

func TestAutoscalers(t *testing.T) {
	objs := mustBundle(t, manifestsDir).Objects
	deps := mustDeployments(t, objs)
	hpas := all[autoscalingv2.HorizontalPodAutoscaler](objs)
	byTarget := map[string]*autoscalingv2.HorizontalPodAutoscaler{}
	for _, h := range hpas {
		ref := h.Spec.ScaleTargetRef
		if ref.APIVersion != "apps/v1" || ref.Kind != "Deployment" {
			t.Errorf("HPA %s targets %s %s, want an apps/v1 Deployment", h.Name, ref.APIVersion, ref.Kind)
		}
		if _, dup := byTarget[ref.Name]; dup {
			t.Errorf("two HPAs target %s", ref.Name)
		}
		byTarget[ref.Name] = h
	}
	for _, d := range deps {
		t.Run(d.Name, func(t *testing.T) {
			h, ok := byTarget[d.Name]
			if !ok {
				t.Fatal("no HorizontalPodAutoscaler targets it")
			}
			if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 1 || *h.Spec.MinReplicas > h.Spec.MaxReplicas {
				t.Errorf("minReplicas %v maxReplicas %d: want 1 <= min <= max", h.Spec.MinReplicas, h.Spec.MaxReplicas)
			}
			var cpu bool
			for _, m := range h.Spec.Metrics {
				switch {
				case m.Type == autoscalingv2.ResourceMetricSourceType && m.Resource != nil && m.Resource.Name == corev1.ResourceCPU:
					cpu = true
				case m.Type == autoscalingv2.ContainerResourceMetricSourceType && m.ContainerResource != nil &&
					m.ContainerResource.Name == corev1.ResourceCPU:
					cpu = true
					if m.ContainerResource.Container != appContainerName {
						t.Errorf("ContainerResource metric on container %q, want %q", m.ContainerResource.Container, appContainerName)
					}
				}
			}
			if !cpu {
				t.Error("no CPU metric")
			}
			if _, ok := mustAppContainer(t, d).Resources.Requests[corev1.ResourceCPU]; !ok {
				t.Error("CPU utilization needs a CPU request on the app container")
			}
		})
	}
	for target := range byTarget {
		if !slices.ContainsFunc(slices.Collect(maps.Values(deps)), func(d *appsv1.Deployment) bool { return d.Name == target }) {
			t.Errorf("an HPA targets %s, which is not a Deployment here", target)
		}
	}
}

func TestDisruptionBudget(t *testing.T) {
	objs := mustBundle(t, manifestsDir).Objects
	pdbs := all[policyv1.PodDisruptionBudget](objs)
	if len(pdbs) == 0 {
		t.Fatal("no PodDisruptionBudget")
	}
	deps := mustDeployments(t, objs)
	var minPods int32
	for _, h := range all[autoscalingv2.HorizontalPodAutoscaler](objs) {
		if h.Spec.MinReplicas != nil {
			minPods += *h.Spec.MinReplicas
		}
	}
	for _, p := range pdbs {
		t.Run(p.Name, func(t *testing.T) {
			if p.Spec.Selector == nil {
				t.Fatal("no selector")
			}
			for _, d := range deps {
				if !selects(p.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
					t.Errorf("selector %v misses %s", p.Spec.Selector.MatchLabels, d.Name)
				}
			}
			switch {
			case p.Spec.MaxUnavailable != nil:
				if p.Spec.MaxUnavailable.Type == intstr.Int && p.Spec.MaxUnavailable.IntValue() < 1 {
					t.Error("maxUnavailable < 1 blocks every node drain")
				}
			case p.Spec.MinAvailable != nil:
				if p.Spec.MinAvailable.Type == intstr.Int && int32(p.Spec.MinAvailable.IntValue()) >= minPods {
					t.Errorf("minAvailable %d >= the %d pods the HPAs keep at least: drains would block", p.Spec.MinAvailable.IntValue(), minPods)
				}
			default:
				t.Error("neither maxUnavailable nor minAvailable")
			}
		})
	}
}

func TestNamespace(t *testing.T) {
	m, i := mustBundle(t, manifestsDir), mustBundle(t, istioDir)
	ns := m.Kustomization.Namespace
	if ns == "" || i.Kustomization.Namespace != ns {
		t.Fatalf("kustomization namespaces %q (manifests) and %q (istio): want the same, set", ns, i.Kustomization.Namespace)
	}
	n := mustOne[corev1.Namespace](t, m.Objects, ns)
	if n.Labels["istio-injection"] != "enabled" {
		t.Errorf("Namespace %s label istio-injection=%q, want enabled (Envoy sidecars for ISTIO_MUTUAL)", ns, n.Labels["istio-injection"])
	}
	for _, b := range []Bundle{m, i} {
		for _, l := range b.Kustomization.Labels {
			if l.IncludeSelectors {
				t.Errorf("%s/kustomization.yaml adds labels to selectors: that changes Deployment selectors, which are immutable", b.Dir)
			}
		}
	}
}

func TestNoSecretsCommitted(t *testing.T) {
	for _, dir := range []string{manifestsDir, istioDir} {
		t.Run(dir, func(t *testing.T) {
			b := mustBundle(t, dir)
			for _, o := range b.Objects {
				if s, ok := o.Value.(*corev1.Secret); ok && (len(s.Data) > 0 || len(s.StringData) > 0) {
					t.Errorf("%s: a Secret with data is committed; create it with kubectl (docs/deploy.md)", o)
				}
				if c, ok := o.Value.(*corev1.ConfigMap); ok {
					for k := range c.Data {
						if looksSecret(k) {
							t.Errorf("%s: key %s looks like a secret in a ConfigMap", o, k)
						}
					}
				}
				if c, ok := o.Value.(*componentsv1alpha1.Component); ok {
					for name, m := range componentMeta(c) {
						if looksSecret(name) && (m.HasValue || m.EnvRef != "") {
							t.Errorf("%s: metadata %s has a literal value; use secretKeyRef", o, name)
						}
					}
				}
			}
		})
	}
}

func looksSecret(name string) bool {
	n := strings.ToLower(name)
	if strings.HasSuffix(n, "_url") || strings.HasSuffix(n, "url") {
		return false
	}
	for _, w := range []string{"password", "secret", "token", "apikey", "api_key", "privatekey", "clientkey"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// knownComponentMetadata lists, per component type, the metadata names the
// Dapr 1.14 components accept (components-contrib metadata.yaml plus the
// runtime's own keyPrefix/actorStateStore), so a misspelt name fails here
// instead of being ignored by daprd.
var knownComponentMetadata = map[string][]string{
	"state.redis": {"redisHost", "redisPassword", "redisUsername", "enableTLS", "clientCert", "clientKey",
		"failover", "sentinelMasterName", "redisType", "redisDB", "redisMaxRetries", "redisMinRetryInterval",
		"redisMaxRetryInterval", "dialTimeout", "readTimeout", "writeTimeout", "poolSize", "poolTimeout",
		"maxConnAge", "minIdleConns", "idleCheckFrequency", "idleTimeout", "ttlInSeconds", "queryIndexes",
		"keyPrefix", "actorStateStore", "outboxPublishPubsub", "outboxPublishTopic", "outboxPubsub",
		"outboxDiscardWhenMissingState"},
	"pubsub.redis": {"redisHost", "redisPassword", "redisUsername", "consumerID", "enableTLS", "clientCert",
		"clientKey", "redeliverInterval", "processingTimeout", "queueDepth", "concurrency", "redisType",
		"redisDB", "redisMaxRetries", "redisMinRetryInterval", "redisMaxRetryInterval", "dialTimeout",
		"readTimeout", "writeTimeout", "poolSize", "poolTimeout", "maxConnAge", "minIdleConns",
		"idleCheckFrequency", "idleTimeout", "failover", "sentinelMasterName", "maxLenApprox"},
	"lock.redis": {"redisHost", "redisPassword", "redisUsername", "enableTLS", "clientCert", "clientKey",
		"redisType", "redisDB", "redisMaxRetries", "redisMinRetryInterval", "redisMaxRetryInterval",
		"dialTimeout", "readTimeout", "writeTimeout", "poolSize", "poolTimeout", "maxConnAge", "minIdleConns",
		"idleCheckFrequency", "idleTimeout", "failover", "sentinelMasterName"},
}

func TestDaprComponents(t *testing.T) {
	objs := mustBundle(t, manifestsDir).Objects
	wantTypes := map[string]string{
		config.DefaultStateStore:      "state.redis",
		config.DefaultBroadcastPubsub: "pubsub.redis",
		config.DefaultTasksPubsub:     "pubsub.redis",
		config.DefaultLockStore:       "lock.redis",
	}
	got := map[string]*componentsv1alpha1.Component{}
	for _, c := range all[componentsv1alpha1.Component](objs) {
		got[c.Name] = c
	}
	if diff := cmp.Diff(slices.Sorted(maps.Keys(wantTypes)), slices.Sorted(maps.Keys(got))); diff != "" {
		t.Fatalf("component names (-want, from app/config +got):\n%s", diff)
	}
	for name, c := range got {
		t.Run(name, func(t *testing.T) {
			if c.Spec.Type != wantTypes[name] || c.Spec.Version != "v1" {
				t.Errorf("type %s %s, want %s v1", c.Spec.Type, c.Spec.Version, wantTypes[name])
			}
			if !slices.Equal(c.Scopes, []string{config.DefaultAppID}) {
				t.Errorf("scopes %v, want [%s]", c.Scopes, config.DefaultAppID)
			}
			meta := componentMeta(c)
			for n := range meta {
				if !slices.Contains(knownComponentMetadata[c.Spec.Type], n) {
					t.Errorf("metadata %q is not a %s setting", n, c.Spec.Type)
				}
			}
			if m := meta["redisHost"]; m.Value == "" {
				t.Error("redisHost missing")
			}
			if m, ok := meta["redisPassword"]; !ok || !m.SecretRef {
				t.Error("redisPassword: want a secretKeyRef")
			}
			if c.Spec.InitTimeout != "" {
				if _, err := time.ParseDuration(c.Spec.InitTimeout); err != nil {
					t.Errorf("initTimeout: %v", err)
				}
			}
		})
	}
	t.Run("BroadcastReachesEveryReplica", func(t *testing.T) {
		meta := componentMeta(got[config.DefaultBroadcastPubsub])
		if v := meta["consumerID"].Value; v != "{podName}" {
			t.Errorf("consumerID %q, want {podName}: one consumer group per pod, so every replica gets every change", v)
		}
		n, err := strconv.Atoi(meta["maxLenApprox"].Value)
		if err != nil || n <= 0 {
			t.Errorf("maxLenApprox %q: want a positive cap; a new per-pod group replays the whole stream", meta["maxLenApprox"].Value)
		}
	})
	t.Run("TasksRunOnce", func(t *testing.T) {
		if m, ok := componentMeta(got[config.DefaultTasksPubsub])["consumerID"]; ok {
			t.Errorf("tasks sets consumerID %q; the default group (the app id) makes each task run once", m.Value)
		}
	})
	t.Run("StateStoreIsNotActorStore", func(t *testing.T) {
		if v := componentMeta(got[config.DefaultStateStore])["actorStateStore"].Value; v == "true" {
			t.Error("actorStateStore true: the service uses no actors")
		}
	})
}

func TestDaprResiliency(t *testing.T) {
	objs := mustBundle(t, manifestsDir).Objects
	res := all[resiliencyv1alpha1.Resiliency](objs)
	if len(res) != 1 {
		t.Fatalf("%d Resiliency objects, want 1", len(res))
	}
	r := res[0]
	if !slices.Contains(r.Scopes, config.DefaultAppID) {
		t.Errorf("scopes %v lack %s", r.Scopes, config.DefaultAppID)
	}
	p := r.Spec.Policies
	for name, d := range p.Timeouts {
		if _, err := time.ParseDuration(d); err != nil {
			t.Errorf("timeout %s: %v", name, err)
		}
	}
	for name, rt := range p.Retries {
		switch rt.Policy {
		case "constant":
			if _, err := time.ParseDuration(rt.Duration); err != nil {
				t.Errorf("retry %s: constant needs a duration: %v", name, err)
			}
		case "exponential":
			if _, err := time.ParseDuration(rt.MaxInterval); err != nil {
				t.Errorf("retry %s: exponential needs a maxInterval: %v", name, err)
			}
		default:
			t.Errorf("retry %s: policy %q, want constant or exponential", name, rt.Policy)
		}
		if rt.MaxRetries == nil || *rt.MaxRetries < 0 {
			t.Errorf("retry %s: want a bounded maxRetries", name)
		}
	}
	for name, cb := range p.CircuitBreakers {
		if cb.Trip == "" {
			t.Errorf("circuit breaker %s: no trip condition", name)
		}
		if _, err := time.ParseDuration(cb.Timeout); err != nil {
			t.Errorf("circuit breaker %s: timeout: %v", name, err)
		}
	}
	// daprd must never retry state calls: it cannot tell a write that was
	// not applied from one that may have been, and would re-apply it.
	if st, ok := r.Spec.Targets.Components[config.DefaultStateStore]; ok && st.Outbound.Retry != "" {
		t.Errorf("the state store has retry policy %q: state writes must be retried by the engine, not daprd", st.Outbound.Retry)
	}
	components := map[string]bool{}
	for _, c := range all[componentsv1alpha1.Component](objs) {
		components[c.Name] = true
	}
	check := func(where string, pn resiliencyv1alpha1.PolicyNames) {
		if _, ok := p.Timeouts[pn.Timeout]; pn.Timeout != "" && !ok {
			t.Errorf("%s: timeout policy %q not defined", where, pn.Timeout)
		}
		if _, ok := p.Retries[pn.Retry]; pn.Retry != "" && !ok {
			t.Errorf("%s: retry policy %q not defined", where, pn.Retry)
		}
		if _, ok := p.CircuitBreakers[pn.CircuitBreaker]; pn.CircuitBreaker != "" && !ok {
			t.Errorf("%s: circuit breaker %q not defined", where, pn.CircuitBreaker)
		}
	}
	for name, target := range r.Spec.Targets.Components {
		if !components[name] {
			t.Errorf("target component %q does not exist", name)
		}
		check(name+" outbound", target.Outbound)
		check(name+" inbound", target.Inbound)
	}
	for _, name := range []string{config.DefaultStateStore, config.DefaultBroadcastPubsub, config.DefaultTasksPubsub} {
		t.Run(name, func(t *testing.T) {
			out := r.Spec.Targets.Components[name].Outbound
			if out.Timeout == "" || out.CircuitBreaker == "" {
				t.Errorf("outbound %+v: want a timeout and a circuit breaker", out)
			}
			if name == config.DefaultStateStore {
				return // not retried by daprd (checked above)
			}
			if rt, ok := p.Retries[out.Retry]; !ok || rt.Policy != "exponential" {
				t.Errorf("outbound retry %q: want an exponential backoff", out.Retry)
			}
		})
	}
}

func TestDaprConfiguration(t *testing.T) {
	objs := mustBundle(t, manifestsDir).Objects
	cfgs := all[configurationv1alpha1.Configuration](objs)
	if len(cfgs) != 1 {
		t.Fatalf("%d Configurations, want 1", len(cfgs))
	}
	c := cfgs[0].Spec
	if c.TracingSpec == nil {
		t.Error("no tracing")
	} else if r, err := strconv.ParseFloat(c.TracingSpec.SamplingRate, 64); err != nil || r < 0 || r > 1 {
		t.Errorf("tracing.samplingRate %q: want a number in [0,1]", c.TracingSpec.SamplingRate)
	}
	if c.MTLSSpec == nil || c.MTLSSpec.Enabled == nil || !*c.MTLSSpec.Enabled {
		t.Error("mtls.enabled: want true")
	}
	if c.APISpec == nil {
		t.Fatal("no api allow-list")
	}
	if len(c.APISpec.Denied) != 0 {
		t.Errorf("api.denied %v: the allow-list alone decides", c.APISpec.Denied)
	}
	// The building blocks the app uses, at the versions daprd 1.14 serves
	// them. daprd applies rules per protocol and leaves a protocol without
	// rules wide open, so each needs both (healthz has no gRPC API).
	type rule struct{ Name, Version, Protocol string }
	want := []rule{
		{"healthz", "v1", "http"},
		{"invoke", "v1", "grpc"}, {"invoke", "v1", "http"},
		{"lock", "v1alpha1", "grpc"}, {"lock", "v1alpha1", "http"},
		{"metadata", "v1", "grpc"}, {"metadata", "v1", "http"},
		{"publish", "v1", "grpc"}, {"publish", "v1", "http"},
		{"state", "v1", "grpc"}, {"state", "v1", "http"},
		{"unlock", "v1alpha1", "grpc"}, {"unlock", "v1alpha1", "http"},
	}
	var got []rule
	for _, r := range c.APISpec.Allowed {
		got = append(got, rule{r.Name, r.Version, r.Protocol})
	}
	slices.SortFunc(got, func(a, b rule) int {
		return strings.Compare(a.Name+a.Version+a.Protocol, b.Name+b.Version+b.Protocol)
	})
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("api.allowed (-want +got):\n%s", diff)
	}
}
