// Command inventory runs the stock service of the order/inventory saga
// (package inventory), a Dapr app of its own beside the sync service.
// Configuration is read from the environment (inventory.ConfigFromEnv).
package main

import (
	"context"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/open-autoglm/autoglm/app/daprkv"
	"github.com/open-autoglm/autoglm/app/internal/cmdmain"
	"github.com/open-autoglm/autoglm/app/inventory"
)

func main() { cmdmain.Run("inventory", run) }

// run serves until ctx ends; a configuration error exits with 2.
func run(ctx context.Context, _ []string) error {
	log := logrus.New()
	log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	cfg, err := inventory.ConfigFromEnv(os.LookupEnv)
	if err != nil {
		return cmdmain.WithCode(2, err)
	}
	// The stock, the decisions and the outcome events go through the kv
	// port on the sidecar (lazily connected: it may start after the app).
	state, err := daprkv.Dial(cfg.DaprGRPCPort, cfg.DaprAPIToken, cfg.Store, "")
	if err != nil {
		return err
	}
	defer state.Close()
	return inventory.Run(ctx, cfg, state, log)
}
