// Package deploycheck checks the deployment files of the service (Dockerfile,
// .dockerignore, manifests/, istio/, docs/deploy.md) without a Docker engine
// or a cluster: it decodes every manifest strictly into the real Kubernetes,
// Istio and Dapr Go types, parses the Dockerfile with BuildKit's parser, and
// cross-checks names, ports, labels and app ids against the app's defaults in
// github.com/open-autoglm/autoglm/app/config.
//
// It is a module of its own so that the product module never depends on
// Kubernetes, Istio or BuildKit. Run it with
//
//	cd tools/deploycheck && go test -count=1 ./...
package deploycheck
