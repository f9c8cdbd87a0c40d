package worker

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/credkey"
	"github.com/pharox/pharox-nats/internal/monitor"
	"github.com/pharox/pharox-nats/manager"
	"github.com/pharox/pharox-nats/model"
)

// Config is everything a worker is told. A zero field takes the default of
// the worker flag of the same name, except where it says otherwise; a value
// that cannot work makes Start fail with an error naming it.
type Config struct {
	// Conn is the NATS connection the worker runs on; the caller owns it
	// and closes it after Stop.
	Conn *nats.Conn
	// IntakeConn, when set, is a second connection on which the worker
	// takes admin.proxies.add requests, so that a flood of large bodies
	// queues on its own socket and cannot delay leasing; the caller owns
	// it too. Without it everything is served on Conn.
	IntakeConn *nats.Conn

	Prefix         string        // subject prefix (default "pharox")
	Replicas       int           // replicas of buckets and stream this worker creates (default 1)
	Shards         int           // shards the pools are spread over, fixed when the buckets are created (default 1)
	MaxInflight    int           // requests handled at once (default 256)
	RequestTimeout time.Duration // deadline of each request (default 5 s)
	MaxDuration    time.Duration // upper bound of duration_seconds (default 24 h)
	LeaseRetention time.Duration // how long ended lease records stay readable (default 24 h)
	// SweepInterval is how often expired leases are recorded; 0 runs no
	// expiry sweeps (the worker flag's default is 5 s).
	SweepInterval time.Duration
	// ExpiryGrace is how long after expires_at a lease counts as expired;
	// 0 is none (the worker flag's default is 1 s).
	ExpiryGrace time.Duration

	// CredentialsKeys seal proxy credentials in the proxies bucket (the
	// first key) and open them (every key); nil writes them in clear.
	CredentialsKeys *credkey.Ring
	// MaxLeasesPerConsumer refuses an acquire by a consumer holding that
	// many active leases (429 limit_reached); 0 is no limit.
	MaxLeasesPerConsumer int
	// MaxWaiters bounds the acquires waiting (wait_seconds) at once
	// (default manager.DefaultMaxWaiters).
	MaxWaiters int
	// Maintenance assembles the store, the events publisher and the
	// manager only: no seed, health checks, broker or sweeps. worker rekey
	// runs on it (its writes owe events like any worker's).
	Maintenance bool

	HealthConcurrency int  // health probes at once (default 32)
	HealthSweeps      bool // take part in the pools' health sweeps (default off here; the flag's is on)

	// SeedPath names a seed file of pools and proxies to create when
	// missing; Seed gives one already decoded. At most one of the two.
	SeedPath string
	Seed     *manager.SeedFile

	// Log is the logger (default: none).
	Log *zap.Logger
	// Clock replaces the store's time.Now, for tests of expiry.
	Clock func() time.Time
	// Heartbeat and DeadAfter are how often this worker writes its outbox
	// watermark and after how long without one another worker counts it
	// dead and publishes what it owed (events.WithHeartbeat); zero: the
	// defaults (500 ms, 3 s).
	Heartbeat, DeadAfter time.Duration

	// Monitor, when set, gets the worker's metrics and readiness (see
	// observe.go); TracerProvider, when set, records a span per request.
	Monitor        *monitor.Monitor
	TracerProvider trace.TracerProvider
}

// withDefaults fills the zero fields that have a default.
func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = model.DefaultPrefix
	}
	if c.Shards == 0 {
		c.Shards = 1
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = 256
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 5 * time.Second
	}
	if c.MaxDuration == 0 {
		c.MaxDuration = 24 * time.Hour
	}
	if c.LeaseRetention == 0 {
		c.LeaseRetention = 24 * time.Hour
	}
	if c.HealthConcurrency == 0 {
		c.HealthConcurrency = 32
	}
	if c.MaxWaiters == 0 {
		c.MaxWaiters = manager.DefaultMaxWaiters
	}
	if c.Log == nil {
		c.Log = zap.NewNop()
	}
	return c
}

// validate checks what no constructor of the parts checks; the parts
// refuse their own options (store, events, manager, health, broker).
func (c Config) validate() error {
	var errs []error
	if c.Conn == nil {
		errs = append(errs, errors.New("a NATS connection (Conn) is required"))
	}
	if c.SweepInterval < 0 {
		errs = append(errs, fmt.Errorf("SweepInterval must not be negative (0 disables sweeps), got %s", c.SweepInterval))
	}
	if c.LeaseRetention < 0 {
		errs = append(errs, fmt.Errorf("LeaseRetention must be positive, got %s", c.LeaseRetention))
	}
	if c.SeedPath != "" && c.Seed != nil {
		errs = append(errs, errors.New("give SeedPath or Seed, not both"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	return nil
}
