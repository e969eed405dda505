// Command daprd is the pinned Dapr sidecar: Dapr's own daprd (app.Run) with
// the stable components, plus the two that the real-backend profiles need
// and Dapr 1.14 does not count as stable: lock.redis (the lease of singleton
// jobs) and pubsub.jetstream (the PostgreSQL profile's broadcast). Each is
// registered exactly as Dapr's allcomponents build registers it. Building
// everything with -tags allcomponents would work too but compiles every
// cloud SDK.
package main

import (
	"github.com/dapr/components-contrib/lock/redis"
	"github.com/dapr/components-contrib/pubsub/jetstream"
	"github.com/dapr/dapr/cmd/daprd/app"
	lockLoader "github.com/dapr/dapr/pkg/components/lock"
	pubsubLoader "github.com/dapr/dapr/pkg/components/pubsub"
)

func init() {
	lockLoader.DefaultRegistry.RegisterComponent(redis.NewStandaloneRedisLock, "redis")
	pubsubLoader.DefaultRegistry.RegisterComponent(jetstream.NewJetStream, "jetstream")
}

func main() { app.Run() }
