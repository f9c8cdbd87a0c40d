// Package workertest assembles a whole worker (store, manager, events,
// broker) on a NATS connection, the way cmd/worker does, for tests and
// benchmarks that run several workers in one process.
package workertest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/broker"
	"github.com/pharox/pharox-nats/events"
	"github.com/pharox/pharox-nats/internal/testclock"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/manager"
)

// Worker is one assembled worker.
type Worker struct {
	Store   *kvstore.Store
	Manager *manager.Manager
	Events  *events.Publisher
	Broker  *broker.Broker

	stopSweep context.CancelFunc
	sweepDone chan struct{}
}

// Config tunes a test worker; zero values take the worker's defaults.
type Config struct {
	Prefix         string
	MaxInflight    int
	RequestTimeout time.Duration
	MaxDuration    time.Duration
	Clock          func() time.Time
	Log            *zap.Logger
	// SweepInterval starts the expiry sweeper when positive.
	SweepInterval time.Duration
	// ExpiryGrace and LeaseRetention are the worker flags of the same names.
	ExpiryGrace    time.Duration
	LeaseRetention time.Duration
}

// Start assembles a worker on nc and stops it when the test ends.
func Start(t testing.TB, nc *nats.Conn, cfg Config) *Worker {
	t.Helper()
	w, err := New(context.Background(), nc, cfg)
	if err != nil {
		t.Fatalf("start worker: %v", err)
	}
	t.Cleanup(func() { w.Stop() })
	return w
}

// New assembles a worker on nc.
func New(ctx context.Context, nc *nats.Conn, cfg Config) (*Worker, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = "pharox"
	}
	if cfg.MaxInflight == 0 {
		cfg.MaxInflight = 256
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 5 * time.Second
	}
	if cfg.MaxDuration == 0 {
		cfg.MaxDuration = 24 * time.Hour
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.LeaseRetention == 0 {
		cfg.LeaseRetention = 24 * time.Hour
	}
	sopts := []kvstore.Option{kvstore.WithLogger(cfg.Log), kvstore.WithLeaseHistory(cfg.MaxDuration + cfg.LeaseRetention)}
	if cfg.Clock != nil {
		sopts = append(sopts, kvstore.WithClock(cfg.Clock))
	}
	store, err := kvstore.Open(ctx, nc, sopts...)
	if err != nil {
		return nil, err
	}
	pub, err := events.New(ctx, nc, events.WithPrefix(cfg.Prefix), events.WithLogger(cfg.Log))
	if err != nil {
		return nil, err
	}
	mgr, err := manager.New(ctx, store, manager.WithMaxDuration(cfg.MaxDuration), manager.WithLogger(cfg.Log), manager.WithExpiryGrace(cfg.ExpiryGrace))
	if err != nil {
		_ = pub.Close(ctx)
		return nil, err
	}
	mgr.RegisterAcquireCallback(pub.Acquired)
	mgr.RegisterReleaseCallback(pub.Released)
	mgr.RegisterExpiredCallback(pub.Expired)
	mgr.RegisterHealthCallback(pub.Health)
	mgr.RegisterRenewCallback(pub.Renewed)
	mgr.RegisterCooldownCallback(pub.Cooldown)
	brk, err := broker.Start(nc, mgr, broker.WithPrefix(cfg.Prefix), broker.WithMaxInflight(cfg.MaxInflight),
		broker.WithRequestTimeout(cfg.RequestTimeout), broker.WithLogger(cfg.Log))
	if err != nil {
		mgr.Close()
		_ = pub.Close(ctx)
		return nil, err
	}
	// The endpoints' subscriptions reach the server before anyone asks.
	if err := nc.Flush(); err != nil {
		return nil, err
	}
	w := &Worker{Store: store, Manager: mgr, Events: pub, Broker: brk}
	if cfg.SweepInterval > 0 {
		sctx, cancel := context.WithCancel(context.Background())
		w.stopSweep = cancel
		w.sweepDone = make(chan struct{})
		go func() {
			defer close(w.sweepDone)
			mgr.Sweep(sctx, cfg.SweepInterval)
		}()
	}
	return w, nil
}

// Stop drains the broker, flushes events and closes the store.
func (w *Worker) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = w.Broker.Stop(ctx)
	if w.stopSweep != nil {
		w.stopSweep()
		<-w.sweepDone
	}
	_ = w.Events.Close(ctx)
	w.Manager.Close()
}

// Clock is a store clock that a test moves by hand; give its Now as
// Config.Clock (or kvstore.WithClock). Every worker of a test may share one.
type Clock = testclock.Clock

// NewClock starts a clock at the current time, to the millisecond.
func NewClock() *Clock { return testclock.New() }
