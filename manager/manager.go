// Package manager is pharox's ProxyManager over the JetStream KV store:
// request defaults and validation, proxy selection from the worker's
// replica, lease commit with one revision-checked write, and the lifecycle
// callbacks that events (or any Go user) hook into. An acquire reads
// top-down: AcquireProxy -> commit -> pick (replica) -> tryMutateProxy
// (one kvstore write) -> the acquire callbacks.
package manager

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/internal/periodic"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/outbox"
	"github.com/pharox/pharox-nats/replica"
)

// Callback types mirror pharox's register_*_callback hooks; each receives the
// payload the matching event carries.
type (
	AcquireCallback func(model.AcquireEvent)
	ReleaseCallback func(model.ReleaseEvent)
	ExpiredCallback func(model.ExpiredEvent)
	HealthCallback  func(model.HealthEvent)
	RenewCallback   func(model.RenewedEvent)
)

// Manager leases proxies from pools to consumers.
type Manager struct {
	store     *kvstore.Store
	replica   *replica.Replica
	stopWatch func()
	opts      options
	log       *zap.Logger

	cbMu       sync.RWMutex
	onAcquire  []AcquireCallback
	onRelease  []ReleaseCallback
	onExpired  []ExpiredCallback
	onHealth   []HealthCallback
	onRenew    []RenewCallback
	onCooldown []CooldownCallback

	// endingMissed, when set (by tests), is told each time a read looked
	// for an ending record that is not there yet.
	endingMissed func(leaseID string)

	turns    *turns
	rr       *rotation
	waiters  *waitQueue
	counters counters
	applied  appliedTimes // observe.go
}

// counters are cumulative since the manager started.
type counters struct {
	granted, empty, conflicts atomic.Uint64
	sleeps, retries           atomic.Uint64
}

// Counters is a snapshot of a manager's acquire counters.
type Counters struct {
	// Granted is acquires that returned a lease; Empty those that found no
	// proxy free; Conflicts the revision-checked writes lost to a concurrent
	// one and retried.
	Granted, Empty, Conflicts uint64
	// Sleeps is how many times a waiting acquire (wait_seconds) went to
	// sleep, again after each wake-up or alarm; Retries how many times one
	// woke and tried the pool again. Tests read them as barriers ("every
	// waiter is asleep") and to show that parked waiters do no work.
	Sleeps, Retries uint64
}

// Counters returns the acquire counters, for metrics and benchmarks.
func (m *Manager) Counters() Counters {
	return Counters{Granted: m.counters.granted.Load(), Empty: m.counters.empty.Load(), Conflicts: m.counters.conflicts.Load(),
		Sleeps: m.counters.sleeps.Load(), Retries: m.counters.retries.Load()}
}

type options struct {
	outbox        Outbox
	maxDuration   time.Duration
	grace         time.Duration
	endedWindow   time.Duration
	log           *zap.Logger
	maxAttempts   int
	maxCASRetries int
	claimStale    time.Duration

	maxPerConsumer int // 0: no limit
	maxWaiters     int
}

// Option configures New.
type Option func(*options)

// WithMaxDuration bounds duration_seconds (default 24 h).
func WithMaxDuration(d time.Duration) Option { return func(o *options) { o.maxDuration = d } }

// WithExpiryGrace makes a lease count as expired only grace after its
// expires_at, so that workers whose clocks run a little ahead never free a
// slot before its holder's own clock says the lease ended.
func WithExpiryGrace(d time.Duration) Option { return func(o *options) { o.grace = d } }

// WithEndedWindow sets how long a lease whose holder was removed is told
// from its last holder while its ending record is missing (by default
// replica.DefaultEndedWindow, which covers a dead worker's relay), and never
// longer than the store keeps ended records: past that, the lease is gone
// whether or not its record was ever written.
func WithEndedWindow(d time.Duration) Option { return func(o *options) { o.endedWindow = d } }

// WithLogger sets the logger.
func WithLogger(l *zap.Logger) Option { return func(o *options) { o.log = l } }

// Outbox publishes what committed writes owe (the events package's
// Publisher). Without one, a manager only runs its callbacks.
type Outbox interface {
	// WorkerID names this worker in the entries its writes carry.
	WorkerID() string
	// Begin is called before a write that owes events, with a stream
	// sequence the write's revision will be above; the ticket it returns
	// goes to Committed or Abandon.
	Begin(stream string, above uint64) (ticket uint64)
	// Committed publishes the events of the write committed at stream
	// sequence rev (its ending records are written already).
	Committed(ticket uint64, stream string, rev uint64, e *outbox.Entry)
	// Abandon says the write did not commit.
	Abandon(ticket uint64)
	// Owed is told of every write of another worker that owes events, as
	// the proxies feed delivers it, so that they are published even if that
	// worker dies before it does.
	Owed(stream string, rev uint64, owed kvstore.Owed)
	// Publish publishes an event that no write owes (acquire_failed).
	Publish(name string, payload any)
}

// WithOutbox publishes events through o: in the headers of the writes that
// owe them, then from the worker that committed them, or from another
// worker if that one dies first.
func WithOutbox(o Outbox) Option { return func(o2 *options) { o2.outbox = o } }

// New returns a manager over store. It refuses option values that cannot
// work, naming the option; it loads the worker's replica of pools and
// proxies from the buckets' watches and returns once the replica holds
// everything the buckets held when it started. Close stops the watches.
func New(ctx context.Context, store *kvstore.Store, opts ...Option) (*Manager, error) {
	o := options{maxDuration: 24 * time.Hour, endedWindow: replica.DefaultEndedWindow, log: zap.NewNop(), maxAttempts: 256, maxCASRetries: 64, claimStale: 2 * time.Minute,
		maxWaiters: DefaultMaxWaiters}
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	if store == nil {
		return nil, errors.New("manager: a store is required")
	}
	m := &Manager{store: store, replica: replica.New(replica.WithGrace(o.grace), replica.WithEndedWindow(min(o.endedWindow, store.LeaseHistory()))), opts: o, log: o.log, turns: newTurns(), rr: newRotation(), waiters: newWaitQueue(o.maxWaiters)}
	stop, err := store.Watch(ctx, feed{m})
	if err != nil {
		return nil, err
	}
	m.stopWatch = stop
	return m, nil
}

// validate refuses option values that cannot work, naming the option.
func (o options) validate() error {
	var errs []error
	if o.maxDuration < time.Second || o.maxDuration > 24*time.Hour {
		// Below a second no duration_seconds would be accepted; the
		// contract bounds duration_seconds by 86400.
		errs = append(errs, fmt.Errorf("WithMaxDuration must be 1s..24h, got %s", o.maxDuration))
	}
	if o.grace < 0 {
		errs = append(errs, fmt.Errorf("WithExpiryGrace must not be negative, got %s", o.grace))
	}
	if o.endedWindow < time.Second {
		errs = append(errs, fmt.Errorf("WithEndedWindow must be at least 1s (the time to write an ending record), got %s", o.endedWindow))
	}
	if o.log == nil {
		errs = append(errs, errors.New("WithLogger must not be nil (use zap.NewNop())"))
	}
	errs = append(errs, o.validateLimits()...)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	return nil
}

// Close stops feeding the replica. The manager must not be used after.
func (m *Manager) Close() { m.stopWatch() }

// RegisterAcquireCallback adds fn to the hooks run after every acquire,
// successful or not (lease nil), like pharox's register_acquire_callback.
func (m *Manager) RegisterAcquireCallback(fn AcquireCallback) {
	addHook(m, &m.onAcquire, fn)
}

// RegisterReleaseCallback adds fn to the hooks run after every release that
// ended a lease.
func (m *Manager) RegisterReleaseCallback(fn ReleaseCallback) {
	addHook(m, &m.onRelease, fn)
}

// RegisterExpiredCallback adds fn to the hooks run once per lease recorded
// as expired by this worker.
func (m *Manager) RegisterExpiredCallback(fn ExpiredCallback) {
	addHook(m, &m.onExpired, fn)
}

// RegisterRenewCallback adds fn to the hooks run after every renew.
func (m *Manager) RegisterRenewCallback(fn RenewCallback) {
	addHook(m, &m.onRenew, fn)
}

// RegisterHealthCallback adds fn to the hooks run when a health result
// changes a proxy's status.
func (m *Manager) RegisterHealthCallback(fn HealthCallback) {
	addHook(m, &m.onHealth, fn)
}

// WithLease acquires a lease, runs fn with it and always releases it, also
// when fn fails or panics (the panic goes on after the release). With no
// proxy free it returns model.ErrNoProxyAvailable without calling fn.
//
// The release reports fn's outcome (v1.1): success when fn returns nil,
// failure (the error's text as reason) when it returns an error, nothing
// when the error is marked by model.NotProxyFault, fn panicked or ctx
// ended.
func (m *Manager) WithLease(ctx context.Context, req model.AcquireRequest, fn func(model.Lease, model.Proxy) error) (err error) {
	lease, proxy, err := m.AcquireProxy(ctx, req)
	if err != nil {
		return err
	}
	if lease == nil {
		return fmt.Errorf("%w in pool %q", model.ErrNoProxyAvailable, req.PoolName)
	}
	returned := false
	defer func() {
		// Release with a context of its own: the caller's may be the reason
		// fn returned.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		rel := model.ReleaseRequest{LeaseID: lease.ID}
		if returned && ctx.Err() == nil {
			rel.Outcome, rel.Reason = model.OutcomeOf(err)
		}
		if _, rerr := m.ReleaseProxy(rctx, rel); rerr != nil {
			m.log.Warn("release after with_lease failed; the lease lapses at its expiry",
				zap.String("lease_id", lease.ID), zap.Error(rerr))
			err = errors.Join(err, rerr)
		}
	}()
	err = fn(*lease, *proxy)
	returned = true
	return err
}

// sweepTimeout bounds one sweep when the interval is shorter.
const sweepTimeout = time.Minute

// Sweep runs CleanupExpiredLeases every interval until ctx ends.
func (m *Manager) Sweep(ctx context.Context, interval time.Duration) {
	periodic.Run(ctx, interval, func() {
		// Not cut short at the next tick: a proxy write abandoned in
		// flight may still commit, and the expiries it recorded would
		// then never be published nor written to their lease records.
		sctx, cancel := context.WithTimeout(ctx, max(interval, sweepTimeout))
		defer cancel()
		if _, err := m.CleanupExpiredLeases(sctx); err != nil && ctx.Err() == nil {
			m.log.Warn("expiry sweep incomplete; the next one retries", zap.Error(err))
		}
		if err := m.sweepPools(sctx); err != nil && ctx.Err() == nil {
			m.log.Warn("sweep of deleted pools incomplete; the next one retries", zap.Error(err))
		}
	})
}

// addHook appends fn to one of the manager's lists of callbacks, under the
// lock hooks reads them with.
func addHook[T any](m *Manager, list *[]T, fn T) {
	m.cbMu.Lock()
	defer m.cbMu.Unlock()
	*list = append(*list, fn)
}

// runHooks calls the callbacks of list registered so far with ev. They are
// called without the lock held, so a callback may register another or
// re-enter the manager.
func runHooks[E any, F ~func(E)](m *Manager, list *[]F, ev E) {
	m.cbMu.RLock()
	fns := *list
	m.cbMu.RUnlock()
	for _, fn := range fns {
		fn(ev)
	}
}

// unavailable wraps an error of reaching the store (or the replica catching
// up with it) in time as the contract's 503: nothing was changed.
func unavailable(op string, err error) error {
	return model.Errorf(model.ErrUnavailable, "%s: %w", op, err)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
