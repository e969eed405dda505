// Command autoglm runs the Open-AutoGLM sync service beside a Dapr sidecar.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/daprdeps"
	"github.com/open-autoglm/autoglm/app/internal/cmdmain"
	"github.com/open-autoglm/autoglm/app/internal/procs"
)

// version is set at build time: -ldflags "-X main.version=...".
var version = "dev"

func main() { cmdmain.Run("autoglm", run) }

func run(ctx context.Context, _ []string) error {
	cfg, err := config.FromEnv(os.LookupEnv)
	if err != nil {
		return err
	}
	cfg.Version = version
	log := newLogger(cfg)
	log.WithFields(cfg.Fields()).Info("starting")

	go procs.Size(ctx, cfg.Procs, func(from, to int, load float64) {
		log.WithFields(logrus.Fields{"from": from, "to": to, "load_cores": load}).Debug("scheduler resized")
	})

	svc, err := daprdeps.NewService(cfg, log)
	if err != nil {
		return err
	}
	if err := svc.Start(nil); err != nil {
		return err
	}
	select {
	case err := <-svc.Done():
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	return svc.Shutdown(sctx)
}

func newLogger(cfg config.Config) *logrus.Logger {
	log := logrus.New()
	log.SetOutput(os.Stderr)
	if cfg.LogFormat == "json" {
		log.SetFormatter(&logrus.JSONFormatter{})
	} else {
		log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	}
	if lvl, err := logrus.ParseLevel(cfg.LogLevel); err == nil {
		log.SetLevel(lvl)
	}
	return log
}
