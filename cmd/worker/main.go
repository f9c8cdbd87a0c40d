// Command worker serves the pharox leasing contract over NATS. With no flags
// it starts an embedded NATS server with JetStream; with --nats-url it joins
// an existing deployment. Any number of workers share the load.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pharox/pharox-nats/broker"
	"github.com/pharox/pharox-nats/events"
	"github.com/pharox/pharox-nats/health"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/manager"
)

func main() {
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

// run wires the worker together, serves until ctx ends and shuts down in
// order: stop taking requests, finish those in flight, flush events, close
// the store, the connection and the embedded server.
func run(ctx context.Context, cfg config, log *zap.Logger) error {
	var srv *server.Server
	url := cfg.NATSURL
	connOpts := []nats.Option{
		nats.Name("pharox-worker"),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err != nil && !nc.IsClosed() {
				log.Warn("NATS connection lost; reconnecting", zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS connection restored", zap.String("url", nc.ConnectedUrlRedacted()))
		}),
	}
	if url == "" {
		var err error
		srv, err = startEmbedded(cfg)
		if err != nil {
			return err
		}
		defer func() {
			srv.Shutdown()
			srv.WaitForShutdown()
		}()
		url = srv.ClientURL()
		connOpts = append(connOpts, nats.InProcessServer(srv))
	} else if cfg.NATSCreds != "" {
		connOpts = append(connOpts, nats.UserCredentials(cfg.NATSCreds))
	}
	nc, err := nats.Connect(url, connOpts...)
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	defer nc.Close()

	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	store, err := kvstore.Open(startCtx, nc, kvstore.WithReplicas(cfg.Replicas), kvstore.WithLogger(log.Named("kvstore")),
		kvstore.WithLeaseHistory(cfg.MaxDuration+cfg.LeaseRetention))
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	pub, err := events.New(startCtx, nc, events.WithPrefix(cfg.SubjectPrefix), events.WithReplicas(cfg.Replicas), events.WithLogger(log.Named("events")))
	if err != nil {
		return fmt.Errorf("events stream: %w", err)
	}
	mgr, err := manager.New(startCtx, store, manager.WithMaxDuration(cfg.MaxDuration), manager.WithLogger(log.Named("manager")),
		manager.WithExpiryGrace(cfg.ExpiryGrace))
	if err != nil {
		return fmt.Errorf("load replica: %w", err)
	}
	defer mgr.Close()
	mgr.RegisterAcquireCallback(pub.Acquired)
	mgr.RegisterReleaseCallback(pub.Released)
	mgr.RegisterExpiredCallback(pub.Expired)
	mgr.RegisterHealthCallback(pub.Health)
	mgr.RegisterRenewCallback(pub.Renewed)
	mgr.RegisterCooldownCallback(pub.Cooldown)

	if cfg.Seed != "" {
		f, err := manager.LoadSeedFile(cfg.Seed)
		if err != nil {
			return err
		}
		if _, err := mgr.Seed(startCtx, f); err != nil {
			return err
		}
	}
	checker, err := health.New(startCtx, nc, mgr, health.WithConcurrency(cfg.HealthConcurrency),
		health.WithReplicas(cfg.Replicas), health.WithLogger(log.Named("health")))
	if err != nil {
		return fmt.Errorf("health checks: %w", err)
	}
	defer checker.Close()
	brk, err := broker.Start(nc, mgr, broker.WithPrefix(cfg.SubjectPrefix), broker.WithMaxInflight(cfg.MaxInflight),
		broker.WithRequestTimeout(cfg.RequestTimeout), broker.WithLogger(log.Named("broker")), broker.WithHealthChecker(checker))
	if err != nil {
		return err
	}
	sweepCtx, stopSweep := context.WithCancel(ctx)
	sweepDone := make(chan struct{})
	go func() {
		defer close(sweepDone)
		if cfg.SweepInterval > 0 {
			mgr.Sweep(sweepCtx, cfg.SweepInterval)
		}
	}()
	healthDone := make(chan struct{})
	go func() {
		defer close(healthDone)
		if cfg.HealthSweeps {
			checker.Sweep(sweepCtx)
		}
	}()
	log.Info("pharox worker serving",
		zap.String("nats_url", nc.ConnectedUrlRedacted()),
		zap.Bool("embedded_server", srv != nil),
		zap.String("listen", listenOf(srv, cfg)),
		zap.String("data_dir", dataDirOf(srv, cfg)),
		zap.String("service", "pharox "+broker.Version),
		zap.String("id", brk.Info().ID),
		zap.String("subjects", cfg.SubjectPrefix+".>"),
		zap.Int("endpoints", len(brk.Subjects())),
		zap.Int("max_inflight", cfg.MaxInflight),
		zap.Bool("health_sweeps", cfg.HealthSweeps),
		zap.Int("health_concurrency", cfg.HealthConcurrency),
		zap.String("request_timeout", cfg.RequestTimeout.String()))

	<-ctx.Done()
	log.Info("shutting down: draining requests")
	stopCtx, cancelStop := context.WithTimeout(context.Background(), cfg.RequestTimeout+5*time.Second)
	defer cancelStop()
	if err := brk.Stop(stopCtx); err != nil {
		log.Warn("drain incomplete", zap.Error(err))
	}
	stopSweep()
	<-sweepDone
	<-healthDone
	checker.Close()
	if err := pub.Close(stopCtx); err != nil {
		log.Warn("events not all flushed", zap.Error(err))
	}
	log.Info("worker stopped")
	return nil
}

func startEmbedded(cfg config) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: port: %w", cfg.Listen, err)
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "pharox-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.DataDir,
		// Room for a 1 MiB proxies.add plus headers, so an oversize body
		// reaches the worker and gets the contract's 413.
		MaxPayload: 8 << 20,
		NoSigs:     true,
		NoLog:      true,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded NATS server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(15 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded NATS server did not start on %s (is the port in use?)", cfg.Listen)
	}
	return srv, nil
}

func newLogger(level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, err
	}
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.EncoderConfig.TimeKey = "time"
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	zc.Sampling = nil
	return zc.Build()
}

func listenOf(srv *server.Server, cfg config) string {
	if srv == nil {
		return ""
	}
	return cfg.Listen
}

func dataDirOf(srv *server.Server, cfg config) string {
	if srv == nil {
		return ""
	}
	return cfg.DataDir
}
