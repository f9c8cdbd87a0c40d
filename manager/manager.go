// Package manager is pharox's ProxyManager over the JetStream KV store:
// request defaults and validation, proxy selection, lease commit through the
// store's revision-checked writes, and the lifecycle callbacks that events
// (or any Go user) hook into.
package manager

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
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
	store *kvstore.Store
	opts  options
	log   *zap.Logger

	cbMu      sync.RWMutex
	onAcquire []AcquireCallback
	onRelease []ReleaseCallback
	onExpired []ExpiredCallback
	onHealth  []HealthCallback
	onRenew   []RenewCallback

	inflight *inflight
	rr       *rotation
	waiters  *waitQueue
	counters counters
}

// counters are cumulative since the manager started.
type counters struct {
	granted, empty, conflicts atomic.Uint64
}

// Counters is a snapshot of a manager's acquire counters.
type Counters struct {
	// Granted is acquires that returned a lease; Empty those that found no
	// proxy free; Conflicts the revision-checked writes lost to a concurrent
	// one and retried.
	Granted, Empty, Conflicts uint64
}

// Counters returns the acquire counters, for metrics and benchmarks.
func (m *Manager) Counters() Counters {
	return Counters{Granted: m.counters.granted.Load(), Empty: m.counters.empty.Load(), Conflicts: m.counters.conflicts.Load()}
}

type options struct {
	maxDuration time.Duration
	log         *zap.Logger
	maxAttempts int
	claimStale  time.Duration
}

// Option configures New.
type Option func(*options)

// WithMaxDuration bounds duration_seconds (default 24 h).
func WithMaxDuration(d time.Duration) Option { return func(o *options) { o.maxDuration = d } }

// WithLogger sets the logger.
func WithLogger(l *zap.Logger) Option { return func(o *options) { o.log = l } }

// New returns a manager over store. It refuses option values that cannot
// work, naming the option.
func New(store *kvstore.Store, opts ...Option) (*Manager, error) {
	o := options{maxDuration: 24 * time.Hour, log: zap.NewNop(), maxAttempts: 256, claimStale: 2 * time.Minute}
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	if store == nil {
		return nil, errors.New("manager: a store is required")
	}
	m := &Manager{store: store, opts: o, log: o.log, inflight: newInflight(), rr: newRotation(), waiters: newWaitQueue()}
	store.OnProxyChange(m.proxyChanged)
	store.OnLeasesExpired(m.fireExpired)
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
	if o.log == nil {
		errs = append(errs, errors.New("WithLogger must not be nil (use zap.NewNop())"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	return nil
}

// RegisterAcquireCallback adds fn to the hooks run after every acquire,
// successful or not (lease nil), like pharox's register_acquire_callback.
func (m *Manager) RegisterAcquireCallback(fn AcquireCallback) {
	m.cbMu.Lock()
	defer m.cbMu.Unlock()
	m.onAcquire = append(m.onAcquire, fn)
}

// RegisterReleaseCallback adds fn to the hooks run after every release that
// ended a lease.
func (m *Manager) RegisterReleaseCallback(fn ReleaseCallback) {
	m.cbMu.Lock()
	defer m.cbMu.Unlock()
	m.onRelease = append(m.onRelease, fn)
}

// RegisterExpiredCallback adds fn to the hooks run once per lease recorded
// as expired by this worker.
func (m *Manager) RegisterExpiredCallback(fn ExpiredCallback) {
	m.cbMu.Lock()
	defer m.cbMu.Unlock()
	m.onExpired = append(m.onExpired, fn)
}

// RegisterRenewCallback adds fn to the hooks run after every renew.
func (m *Manager) RegisterRenewCallback(fn RenewCallback) {
	m.cbMu.Lock()
	defer m.cbMu.Unlock()
	m.onRenew = append(m.onRenew, fn)
}

// RegisterHealthCallback adds fn to the hooks run when a health result
// changes a proxy's status.
func (m *Manager) RegisterHealthCallback(fn HealthCallback) {
	m.cbMu.Lock()
	defer m.cbMu.Unlock()
	m.onHealth = append(m.onHealth, fn)
}

// WithLease acquires a lease, runs fn with it and always releases it, also
// when fn fails or panics (the panic goes on after the release). With no
// proxy free it returns model.ErrNoProxyAvailable without calling fn.
func (m *Manager) WithLease(ctx context.Context, req model.AcquireRequest, fn func(model.Lease, model.Proxy) error) (err error) {
	lease, proxy, err := m.AcquireProxy(ctx, req)
	if err != nil {
		return err
	}
	if lease == nil {
		return fmt.Errorf("%w in pool %q", model.ErrNoProxyAvailable, req.PoolName)
	}
	defer func() {
		// Release with a context of its own: the caller's may be the reason
		// fn returned.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, rerr := m.ReleaseProxy(rctx, model.ReleaseRequest{LeaseID: lease.ID}); rerr != nil {
			m.log.Warn("release after with_lease failed; the lease lapses at its expiry",
				zap.String("lease_id", lease.ID), zap.Error(rerr))
			err = errors.Join(err, rerr)
		}
	}()
	return fn(*lease, *proxy)
}

// ReleaseProxy ends a lease. Releasing an ended lease returns it unchanged
// and fires nothing: a release is counted once.
func (m *Manager) ReleaseProxy(ctx context.Context, req model.ReleaseRequest) (model.Lease, error) {
	if err := checkUUID("lease_id", req.LeaseID); err != nil {
		return model.Lease{}, err
	}
	if req.ConsumerName != nil {
		if err := model.CheckName("consumer_name", *req.ConsumerName); err != nil {
			return model.Lease{}, err
		}
	}
	lease, changed, expired, err := m.store.Release(ctx, req.LeaseID, req.ConsumerName)
	m.fireExpired(expired)
	if err != nil {
		return lease, err
	}
	if changed {
		m.fireReleased([]model.Lease{lease})
	}
	m.log.Debug("release", zap.String("lease_id", lease.ID), zap.String("proxy_id", lease.ProxyID),
		zap.String("status", string(lease.Status)), zap.Bool("changed", changed))
	return lease, nil
}

// RenewLease extends an active lease to now + duration_seconds (same bounds
// as acquire). The fencing token does not change.
func (m *Manager) RenewLease(ctx context.Context, req model.RenewRequest) (model.Lease, error) {
	if err := checkUUID("lease_id", req.LeaseID); err != nil {
		return model.Lease{}, err
	}
	if req.ConsumerName != nil {
		if err := model.CheckName("consumer_name", *req.ConsumerName); err != nil {
			return model.Lease{}, err
		}
	}
	if req.DurationSeconds == nil {
		return model.Lease{}, fmt.Errorf("%w: duration_seconds is required", model.ErrBadRequest)
	}
	d, err := m.checkDuration(req.DurationSeconds)
	if err != nil {
		return model.Lease{}, err
	}
	lease, previous, expired, err := m.store.Renew(ctx, req.LeaseID, req.ConsumerName, d)
	m.fireExpired(expired)
	if err != nil {
		return lease, err
	}
	ev := model.RenewedEvent{Lease: &lease, PoolName: lease.PoolName, PreviousExpiresAt: previous}
	for _, fn := range hooks(m, &m.onRenew) {
		fn(ev)
	}
	m.log.Debug("renew", zap.String("lease_id", lease.ID), zap.Time("expires_at", lease.ExpiresAt))
	return lease, nil
}

// GetLease reads a lease.
func (m *Manager) GetLease(ctx context.Context, leaseID string) (model.Lease, error) {
	if err := checkUUID("lease_id", leaseID); err != nil {
		return model.Lease{}, err
	}
	return m.store.GetLease(ctx, leaseID)
}

// CleanupExpiredLeases records every lease past its expiry as expired, frees
// its slot and fires its expired callbacks; it returns how many it expired.
func (m *Manager) CleanupExpiredLeases(ctx context.Context) (int, error) {
	expired, err := m.store.CleanupExpired(ctx)
	m.fireExpired(expired)
	if len(expired) > 0 {
		m.log.Debug("cleanup", zap.Int("expired", len(expired)))
	}
	return len(expired), err
}

// PoolStats reads a pool's statistics.
func (m *Manager) PoolStats(ctx context.Context, pool string) (model.PoolStatsSnapshot, error) {
	if err := model.CheckName("pool_name", pool); err != nil {
		return model.PoolStatsSnapshot{}, err
	}
	return m.store.PoolStats(ctx, pool)
}

// sweepTimeout bounds one sweep when the interval is shorter.
const sweepTimeout = time.Minute

// Sweep runs CleanupExpiredLeases every interval until ctx ends.
func (m *Manager) Sweep(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// Not cut short at the next tick: a proxy write abandoned in
			// flight may still commit, and the expiries it recorded would
			// then never be published nor written to their lease records.
			sctx, cancel := context.WithTimeout(ctx, max(interval, sweepTimeout))
			if _, err := m.CleanupExpiredLeases(sctx); err != nil && ctx.Err() == nil {
				m.log.Warn("expiry sweep incomplete; the next one retries", zap.Error(err))
			}
			cancel()
		}
	}
}

func (m *Manager) fireExpired(leases []model.Lease) {
	if len(leases) == 0 {
		return
	}
	now := m.store.Now()
	fns := hooks(m, &m.onExpired)
	for i := range leases {
		l := leases[i]
		ev := model.ExpiredEvent{Lease: &l, PoolName: l.PoolName, ExpiredAt: now, PoolStats: m.localStats(l.PoolName)}
		for _, fn := range fns {
			fn(ev)
		}
		m.log.Debug("expired", zap.String("lease_id", l.ID), zap.String("proxy_id", l.ProxyID))
	}
}

// hooks returns the callbacks registered so far. They are called without
// the lock held, so a callback may register another or re-enter the manager.
func hooks[T any](m *Manager, list *[]T) []T {
	m.cbMu.RLock()
	defer m.cbMu.RUnlock()
	return *list
}

func (m *Manager) localStats(pool string) *model.PoolStatsSnapshot {
	st := m.store.LocalPoolStats(pool)
	return &st
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
