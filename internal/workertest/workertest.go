// Package workertest starts whole workers (internal/worker: store,
// manager, events, health checker, broker) on a NATS connection for tests
// and benchmarks that run several workers in one process.
package workertest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/credkey"
	"github.com/pharox/pharox-nats/internal/testclock"
	"github.com/pharox/pharox-nats/internal/worker"
)

// Worker is one assembled worker; its parts (Store, Manager, Events,
// Health, Broker) are internal/worker's.
type Worker struct {
	*worker.Worker
}

// Config tunes a test worker; zero values take the worker's defaults.
// Test workers run no health sweeps, and expiry sweeps only when asked.
type Config struct {
	Prefix         string
	Replicas       int
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
	// Heartbeat and DeadAfter are the outbox heartbeat period and after how
	// long without one a worker counts as dead (see events.WithHeartbeat).
	Heartbeat, DeadAfter time.Duration
	// CredentialsKeys, MaxLeasesPerConsumer and MaxWaiters are
	// internal/worker's (the flags --credentials-key-file,
	// --max-leases-per-consumer, --max-waiters).
	CredentialsKeys      *credkey.Ring
	MaxLeasesPerConsumer int
	MaxWaiters           int
	// IntakeConn is internal/worker's Config.IntakeConn.
	IntakeConn *nats.Conn
}

// Start assembles a worker on nc and stops it when the test ends.
func Start(t testing.TB, nc *nats.Conn, cfg Config) *Worker {
	t.Helper()
	w, err := New(t.Context(), nc, cfg)
	if err != nil {
		t.Fatalf("start worker: %v", err)
	}
	t.Cleanup(w.Stop)
	return w
}

// New assembles a worker on nc.
func New(ctx context.Context, nc *nats.Conn, cfg Config) (*Worker, error) {
	w, err := worker.Start(ctx, worker.Config{
		Conn:           nc,
		IntakeConn:     cfg.IntakeConn,
		Prefix:         cfg.Prefix,
		Replicas:       cfg.Replicas,
		MaxInflight:    cfg.MaxInflight,
		RequestTimeout: cfg.RequestTimeout,
		MaxDuration:    cfg.MaxDuration,
		LeaseRetention: cfg.LeaseRetention,
		SweepInterval:  cfg.SweepInterval,
		ExpiryGrace:    cfg.ExpiryGrace,
		Log:            cfg.Log,
		Clock:          cfg.Clock,
		Heartbeat:      cfg.Heartbeat,
		DeadAfter:      cfg.DeadAfter,

		CredentialsKeys:      cfg.CredentialsKeys,
		MaxLeasesPerConsumer: cfg.MaxLeasesPerConsumer,
		MaxWaiters:           cfg.MaxWaiters,
	})
	if err != nil {
		return nil, err
	}
	return &Worker{w}, nil
}

// Stop shuts the worker down (internal/worker's Stop), giving it 10 s.
func (w *Worker) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = w.Worker.Stop(ctx)
}

// FlushEvents waits, up to 10 s each, until every event the workers have
// published so far is stored in the events stream. Each worker publishes on
// its own connection, so an event seen from one says nothing of another's.
func FlushEvents(t testing.TB, workers ...*Worker) {
	t.Helper()
	for _, w := range workers {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := w.Events.Flush(ctx)
		cancel()
		if err != nil {
			t.Fatalf("flush events: %v", err)
		}
	}
}

// Clock is a store clock that a test moves by hand; give its Now as
// Config.Clock (or kvstore.WithClock). Every worker of a test may share one.
type Clock = testclock.Clock

// NewClock starts a clock at the current time, to the millisecond.
func NewClock() *Clock { return testclock.New() }
