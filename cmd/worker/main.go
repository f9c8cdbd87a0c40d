// Command worker serves the pharox leasing contract over NATS. With no flags
// it starts an embedded NATS server with JetStream; with --nats-url it joins
// an existing deployment. Any number of workers share the load.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/broker"
	"github.com/pharox/pharox-nats/internal/worker"
	"github.com/pharox/pharox-nats/natsconn"
)

// startTimeout bounds creating the buckets and the stream and seeding.
const startTimeout = 30 * time.Second

func main() {
	if len(os.Args) > 1 && os.Args[1] == "rekey" {
		os.Exit(rekeyMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "spread-leaders" {
		os.Exit(spreadLeadersMain(os.Args[2:]))
	}
	cfg, err := parseConfig(os.Args[1:], os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(2)
	}
	log, err := newLogger(cfg.LogLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("worker stopped on error", zap.Error(err))
		_ = log.Sync()
		os.Exit(1)
	}
	_ = log.Sync()
}

// run starts the embedded server if there is no --nats-url, connects,
// starts the worker, serves until ctx ends and shuts down in order: the
// worker (requests, sweeps, events, store), the connection, the embedded
// server.
func run(ctx context.Context, cfg config, log *zap.Logger) error {
	natsSettings, err := cfg.NATS.Resolve()
	if err != nil {
		return err
	}
	if cfg.keys, err = credentialsKeys(cfg); err != nil {
		return err
	}
	if natsSettings.URLCredentials {
		log.Warn("the NATS URL carries credentials; other local users can read a flag in the process list: prefer PHAROX_NATS_PASSWORD, PHAROX_NATS_TOKEN or a file")
	}
	var srv *server.Server
	if natsSettings.URL == "" {
		if srv, err = startEmbedded(cfg); err != nil {
			return err
		}
		defer stopEmbedded(srv)
	}
	nc, err := connect(natsSettings, srv, log, "pharox-worker")
	if err != nil {
		return err
	}
	defer nc.Close()
	// admin.proxies.add (bodies up to 1 MiB) is taken on a connection of
	// its own, so that a flood of them never delays leasing's socket.
	intake, err := connect(natsSettings, srv, log, "pharox-worker-intake")
	if err != nil {
		return err
	}
	defer intake.Close()

	obs, err := startObserving(ctx, cfg, srv != nil, log)
	if err != nil {
		return err
	}
	defer obs.close(log)

	startCtx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	wcfg := workerConfig(cfg, nc, intake, log)
	wcfg.Monitor, wcfg.TracerProvider = obs.monitor, obs.tracing.Provider
	w, err := worker.Start(startCtx, wcfg)
	if err != nil {
		return err
	}
	log.Info("pharox worker serving",
		zap.String("nats_url", natsconn.Redact(nc.ConnectedUrl())),
		zap.String("nats_login", natsSettings.Login),
		zap.Bool("embedded_server", srv != nil),
		zap.String("listen", listenOf(srv)),
		zap.String("data_dir", dataDirOf(srv)),
		zap.String("service", "pharox "+broker.Version),
		zap.String("id", w.Broker.Info().ID),
		zap.String("subjects", cfg.SubjectPrefix+".>"),
		zap.Int("endpoints", len(w.Broker.Subjects())),
		zap.Int("max_inflight", cfg.MaxInflight),
		zap.Bool("health_sweeps", cfg.HealthSweeps),
		zap.Int("health_concurrency", cfg.HealthConcurrency),
		zap.String("request_timeout", cfg.RequestTimeout.String()),
		zap.String("credentials_keys", keysLog(cfg.keys)),
		zap.Int("max_leases_per_consumer", cfg.MaxLeasesPerConsumer),
		zap.Int("max_waiters", cfg.MaxWaiters),
		zap.String("metrics_listen", obs.addr()),
		zap.Bool("tracing", obs.tracing.Exporting))

	<-ctx.Done()
	log.Info("shutting down: draining requests")
	obs.monitor.Drain() // /readyz says 503 from here on
	stopCtx, cancelStop := context.WithTimeout(context.Background(), cfg.RequestTimeout+5*time.Second)
	defer cancelStop()
	if err := w.Stop(stopCtx); err != nil {
		log.Warn("shutdown incomplete", zap.Error(err))
	}
	log.Info("worker stopped")
	return nil
}
