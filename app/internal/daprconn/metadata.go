package daprconn

import dapr "github.com/dapr/go-sdk/client"

// Component returns the component named name among those the sidecar's
// metadata lists, or nil when it has none of that name. Names are unique
// within a sidecar (daprd refuses a second component of a name it has), so
// the name alone picks the component, whatever its type.
func Component(md *dapr.GetMetadataResponse, name string) *dapr.MetadataRegisteredComponents {
	if md == nil {
		return nil
	}
	for _, c := range md.RegisteredComponents {
		if c.Name == name {
			return c
		}
	}
	return nil
}
