// Command daprd is the pinned Dapr sidecar: Dapr's own daprd (app.Run) with
// the stable components, plus the three that the runners and real-backend
// profiles need and Dapr 1.14 does not count as stable: lock.redis (the
// lease of singleton jobs), pubsub.jetstream (the PostgreSQL profile's
// broadcast) and nameresolution.sqlite (the dev runners' app-id lookup,
// private to one data directory instead of mDNS across the host). Each is
// registered exactly as Dapr's allcomponents build registers it. Building
// everything with -tags allcomponents would work too but compiles every
// cloud SDK.
package main

import (
	"github.com/dapr/components-contrib/lock/redis"
	nrsqlite "github.com/dapr/components-contrib/nameresolution/sqlite"
	"github.com/dapr/components-contrib/pubsub/jetstream"
	"github.com/dapr/dapr/cmd/daprd/app"
	lockLoader "github.com/dapr/dapr/pkg/components/lock"
	nrLoader "github.com/dapr/dapr/pkg/components/nameresolution"
	pubsubLoader "github.com/dapr/dapr/pkg/components/pubsub"
)

func init() {
	lockLoader.DefaultRegistry.RegisterComponent(redis.NewStandaloneRedisLock, "redis")
	pubsubLoader.DefaultRegistry.RegisterComponent(jetstream.NewJetStream, "jetstream")
	nrLoader.DefaultRegistry.RegisterComponent(nrsqlite.NewResolver, "sqlite")
}

func main() { app.Run() }
