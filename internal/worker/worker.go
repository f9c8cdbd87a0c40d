// Package worker assembles one pharox worker on a NATS connection: the
// store, the events publisher, the manager with its callbacks wired to the
// publisher, the seed, the health checker, the broker and the sweepers.
// cmd/worker, the tests (through internal/workertest) and cmd/bench all
// build their workers here, so there is one way to do it.
package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/broker"
	"github.com/pharox/pharox-nats/events"
	"github.com/pharox/pharox-nats/health"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/manager"
)

// Worker is one assembled worker. Its parts are exported for tests and
// benchmarks that look inside; Stop shuts them down.
type Worker struct {
	Store   *kvstore.Store
	Events  *events.Publisher
	Manager *manager.Manager
	Health  *health.Checker
	Broker  *broker.Broker

	cfg        Config
	log        *zap.Logger
	stopSweeps context.CancelFunc
	sweepsDone sync.WaitGroup
	stopOnce   sync.Once
	stopErr    error
}

const (
	// abortTimeout bounds the clean-up of a Start that failed half-way.
	abortTimeout = 10 * time.Second
	// flushTimeout bounds the round trip that makes sure the server has
	// the broker's subscriptions, when ctx has no earlier deadline.
	flushTimeout = 10 * time.Second
	// spreadTimeout bounds the placement of the proxies streams' leaders
	// at start (kvstore.SpreadLeaders).
	spreadTimeout = 5 * time.Second
)

// Start assembles a worker: store -> events publisher -> manager (its
// committed writes publish their events through the publisher) -> seed -> health checker -> broker ->
// sweepers. ctx bounds the start (bucket and stream creation, the seed), not
// the worker's life. On any failure it shuts down what it had started and
// returns the error; nothing is left running.
//
// Start sets cfg.Conn's error handler to ErrorHandler(cfg.Log) (nats.go's
// default only prints to stderr), so that what NATS reports asynchronously,
// a slow consumer above all, is logged; the broker puts itself in front of
// it for its own subscriptions. A handler set on the connection after Start
// replaces both.
func Start(ctx context.Context, cfg Config) (_ *Worker, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	// A seed file that cannot be read fails the start before anything is
	// created.
	seed := cfg.Seed
	if cfg.SeedPath != "" {
		f, err := manager.LoadSeedFile(cfg.SeedPath)
		if err != nil {
			return nil, fmt.Errorf("worker: %w", err)
		}
		seed = &f
	}
	nc, log := cfg.Conn, cfg.Log
	// Before the broker, which puts itself in front of it.
	nc.SetErrorHandler(ErrorHandler(log.Named("nats")))
	if cfg.IntakeConn != nil && cfg.IntakeConn != nc {
		cfg.IntakeConn.SetErrorHandler(ErrorHandler(log.Named("nats-intake")))
	}

	w := &Worker{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			ctx, cancel := context.WithTimeout(context.Background(), abortTimeout)
			defer cancel()
			if serr := w.Stop(ctx); serr != nil {
				err = errors.Join(err, fmt.Errorf("worker: clean-up after the failed start: %w", serr))
			}
		}
	}()

	sopts := []kvstore.Option{kvstore.WithReplicas(cfg.Replicas), kvstore.WithShards(cfg.Shards), kvstore.WithLogger(log.Named("kvstore")),
		kvstore.WithLeaseHistory(cfg.MaxDuration + cfg.LeaseRetention), kvstore.WithCredentialsKeys(cfg.CredentialsKeys)}
	if cfg.Clock != nil {
		sopts = append(sopts, kvstore.WithClock(cfg.Clock))
	}
	if w.Store, err = kvstore.Open(ctx, nc, sopts...); err != nil {
		return nil, fmt.Errorf("worker: open store: %w", err)
	}
	if !cfg.Maintenance {
		spreadLeaders(ctx, w.Store, log)
	}
	eopts := []events.Option{events.WithPrefix(cfg.Prefix), events.WithReplicas(cfg.Replicas),
		events.WithLogger(log.Named("events")), events.WithEndings(w.Store.PutEnding)}
	if cfg.Heartbeat > 0 {
		eopts = append(eopts, events.WithHeartbeat(cfg.Heartbeat, cfg.DeadAfter))
	}
	// Before the manager: the relay knows every worker's watermark before
	// the proxies feed starts.
	if w.Events, err = events.New(ctx, nc, eopts...); err != nil {
		return nil, fmt.Errorf("worker: events: %w", err)
	}
	if w.Manager, err = manager.New(ctx, w.Store, manager.WithMaxDuration(cfg.MaxDuration), manager.WithLogger(log.Named("manager")),
		manager.WithExpiryGrace(cfg.ExpiryGrace), manager.WithOutbox(w.Events),
		manager.WithMaxLeasesPerConsumer(cfg.MaxLeasesPerConsumer), manager.WithMaxWaiters(cfg.MaxWaiters)); err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	returnLoadGarbage(log)
	if cfg.Maintenance {
		return w, nil
	}

	if seed != nil {
		res, err := w.Manager.Seed(ctx, *seed)
		if err != nil {
			return nil, fmt.Errorf("worker: seed: %w", err)
		}
		log.Info("seeded", zap.Int("pools_created", res.PoolsCreated), zap.Int("proxies_added", res.ProxiesAdded),
			zap.Int("proxies_present", res.ProxiesPresent))
	}
	if w.Health, err = health.New(ctx, nc, w.Manager, append([]health.Option{health.WithConcurrency(cfg.HealthConcurrency),
		health.WithReplicas(cfg.Replicas), health.WithLogger(log.Named("health"))}, cfg.healthObservers()...)...); err != nil {
		return nil, fmt.Errorf("worker: health checks: %w", err)
	}
	bopts := []broker.Option{broker.WithPrefix(cfg.Prefix), broker.WithMaxInflight(cfg.MaxInflight),
		broker.WithRequestTimeout(cfg.RequestTimeout), broker.WithLogger(log.Named("broker")),
		broker.WithHealthChecker(w.Health)}
	bopts = append(bopts, cfg.brokerObservers()...)
	if cfg.IntakeConn != nil {
		bopts = append(bopts, broker.WithIntakeConn(cfg.IntakeConn))
	}
	if w.Broker, err = broker.Start(nc, w.Manager, bopts...); err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	// The endpoints' subscriptions reach the server before anyone is told
	// the worker serves.
	fctx, cancel := context.WithTimeout(ctx, flushTimeout)
	defer cancel()
	for _, c := range []*nats.Conn{nc, cfg.IntakeConn} {
		if c == nil {
			continue
		}
		if err = c.FlushWithContext(fctx); err != nil {
			return nil, fmt.Errorf("worker: flush subscriptions: %w", err)
		}
	}
	w.startSweeps()
	w.bindMonitor()
	return w, nil
}

// spreadLeaders spreads the leaders of the shards' proxies streams over
// the cluster's nodes (kvstore.SpreadLeaders), for at most spreadTimeout;
// a placement it could not finish is logged, and the worker starts anyway.
func spreadLeaders(ctx context.Context, store *kvstore.Store, log *zap.Logger) {
	if store.Shards() < 2 {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, spreadTimeout)
	defer cancel()
	p, err := store.SpreadLeaders(sctx)
	fields := []zap.Field{zap.Strings("streams", p.Streams), zap.Strings("leaders", p.Leaders), zap.Strings("moved", p.Moved),
		zap.Int("step_downs", p.StepDowns), zap.Duration("took", p.Took)}
	switch {
	case p.Skipped != "":
		log.Info("proxies stream leaders not placed", append(fields, zap.String("reason", p.Skipped))...)
	case err != nil || !p.Balanced:
		log.Warn("could not spread the proxies stream leaders over the nodes; move them with `nats stream cluster step-down` (README, Running on a cluster)",
			append(fields, zap.Error(err))...)
	case p.StepDowns > 0:
		log.Info("spread the proxies stream leaders over the nodes", fields...)
	default:
		log.Info("proxies stream leaders already spread over the nodes", fields...)
	}
}

// startSweeps runs the expiry sweeps and the health sweeps the config asks
// for, until Stop.
func (w *Worker) startSweeps() {
	ctx, cancel := context.WithCancel(context.Background())
	w.stopSweeps = cancel
	if w.cfg.SweepInterval > 0 {
		w.sweepsDone.Go(func() { w.Manager.Sweep(ctx, w.cfg.SweepInterval) })
	}
	if w.cfg.HealthSweeps {
		w.sweepsDone.Go(func() { w.Health.Sweep(ctx) })
	}
}

// Stop shuts the worker down in order: the broker stops taking requests
// (the queue group sends new ones to the other workers; one still
// delivered here gets 503, a waiting acquire tries once more and gets 503
// if nothing is free) and answers those in flight (until ctx ends), the
// sweepers stop, the health checker stops, the events of what was
// committed are published and the last outbox watermark written (until
// ctx ends), the manager stops feeding its replica. A request that
// outlives ctx may still commit: the publisher is closed anyway, and the
// events that write owes are published by another worker from the write's
// own headers (events.Publisher.Close). Every part stops even if an earlier
// one reported an error; the errors are returned together. The
// connections are the caller's. Calling Stop again returns the first
// call's result.
func (w *Worker) Stop(ctx context.Context) error {
	w.stopOnce.Do(func() { w.stopErr = w.stop(ctx) })
	return w.stopErr
}

func (w *Worker) stop(ctx context.Context) error {
	var errs []error
	if w.Broker != nil {
		if err := w.Broker.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("drain requests: %w", err))
		}
	}
	if w.stopSweeps != nil {
		w.stopSweeps()
		w.sweepsDone.Wait()
	}
	if w.Health != nil {
		w.Health.Close()
	}
	if w.Events != nil {
		if err := w.Events.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("flush events: %w", err))
		}
	}
	if w.Manager != nil {
		w.Manager.Close()
	}
	return errors.Join(errs...)
}
