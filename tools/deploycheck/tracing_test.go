package deploycheck

import (
	"strings"
	"testing"

	configurationv1alpha1 "github.com/dapr/dapr/pkg/apis/configuration/v1alpha1"
)

// The tracing Configuration the local runners give daprd decodes strictly
// as a Dapr Configuration once daprrun has filled in its placeholders, and
// sends every sampled span to the OTLP endpoint it is given.
func TestTracingConfiguration(t *testing.T) {
	const rel = "components/tracing/config.yaml"
	s := string(mustReadFile(t, rel))
	for k, v := range map[string]string{"OTLP_ENDPOINT": "127.0.0.1:4317", "OTLP_SECURE": "false", "OTLP_PROTOCOL": "grpc"} {
		if !strings.Contains(s, "{{"+k+"}}") {
			t.Errorf("%s has no {{%s}} placeholder", rel, k)
		}
		s = strings.ReplaceAll(s, "{{"+k+"}}", v)
	}
	objs, err := DecodeFile([]byte(s), rel)
	if err != nil {
		t.Fatal(err)
	}
	cfgs := all[configurationv1alpha1.Configuration](objs)
	if len(objs) != 1 || len(cfgs) != 1 {
		t.Fatalf("%s: %d objects, want one Configuration", rel, len(objs))
	}
	tr := cfgs[0].Spec.TracingSpec
	if tr == nil || tr.Otel == nil {
		t.Fatalf("%s has no tracing.otel", rel)
	}
	if tr.SamplingRate != "1" || tr.Otel.EndpointAddress != "127.0.0.1:4317" || tr.Otel.Protocol != "grpc" ||
		tr.Otel.IsSecure == nil || *tr.Otel.IsSecure {
		t.Errorf("tracing %+v, otel %+v", tr, tr.Otel)
	}
}
