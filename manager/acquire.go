package manager

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/outbox"
	"github.com/pharox/pharox-nats/record"
	"github.com/pharox/pharox-nats/replica"
	"github.com/pharox/pharox-nats/tracing"
)

// AcquireProxy leases a proxy of the pool to the consumer. It returns nil, nil,
// nil when no eligible proxy is free, like pharox's None. A write lost to a
// concurrent one is retried with fresh state, never reported as "none free".
func (m *Manager) AcquireProxy(ctx context.Context, req model.AcquireRequest, opts ...AcquireOption) (*model.Lease, *model.Proxy, error) {
	var o acquireOptions
	for _, opt := range opts {
		opt(&o)
	}
	p, err := m.checkAcquire(req)
	if err != nil {
		return nil, nil, err
	}
	started := m.now()
	if _, err := m.poolExists(ctx, p.pool); err != nil {
		return nil, nil, err
	}
	consumer, err := m.store.EnsureConsumer(ctx, p.consumer)
	if err != nil {
		return nil, nil, err
	}
	if p.requestID != "" {
		leaseID, claim, err := m.store.ClaimRequest(ctx, p.consumer, p.requestID, m.opts.claimStale, m.leaseActive)
		if err != nil {
			return nil, nil, err
		}
		if claim == nil {
			return m.existingLease(ctx, leaseID)
		}
		lease, proxy, err := m.acquire(ctx, p, consumer, started, o.parker)
		if err != nil || lease == nil {
			claim.Abandon()
			return lease, proxy, err
		}
		if err := claim.Complete(ctx, lease.ID); err != nil {
			m.log.Warn("request_id not recorded; a retry would lease again", zap.String("lease_id", lease.ID), zap.Error(err))
		}
		return lease, proxy, nil
	}
	return m.acquire(ctx, p, consumer, started, o.parker)
}

// leaseActive tells the request_id claim whether the lease a key names is
// still active.
func (m *Manager) leaseActive(ctx context.Context, leaseID string) (bool, error) {
	lease, err := m.GetLease(ctx, leaseID)
	if errors.Is(err, model.ErrLeaseNotFound) {
		return false, nil
	}
	return err == nil && lease.Status == model.LeaseActive, err
}

// existingLease answers a repeated request_id with the lease it created.
func (m *Manager) existingLease(ctx context.Context, leaseID string) (*model.Lease, *model.Proxy, error) {
	lease, err := m.GetLease(ctx, leaseID)
	if err != nil {
		return nil, nil, err
	}
	proxy, err := m.GetProxy(ctx, lease.ProxyID)
	if err != nil {
		return nil, nil, err
	}
	m.log.Debug("acquire: repeated request_id answered with its lease", zap.String("lease_id", lease.ID))
	return &lease, &proxy, nil
}

// acquire commits a lease, waiting up to p.wait for a proxy to free up when
// none is, and fires the acquire callbacks once with the outcome.
func (m *Manager) acquire(ctx context.Context, p acquireParams, consumer model.Consumer, started time.Time, parker Parker) (*model.Lease, *model.Proxy, error) {
	grant, conflicts, err := m.commit(ctx, p, consumer, started, false)
	if err == nil && grant == nil && p.wait > 0 {
		var more int
		grant, more, err = m.wait(ctx, p, consumer, started, parker)
		conflicts += more
	}
	m.counters.conflicts.Add(uint64(conflicts))
	if err != nil {
		return nil, nil, err
	}
	if grant == nil {
		// No write owes this event: it is published as it is.
		completed := m.now()
		ev := &model.AcquireEvent{
			PoolName: p.pool, ConsumerName: p.consumer, Filters: p.filters, Selector: p.selector,
			StartedAt: started, CompletedAt: completed, DurationMs: ms(completed.Sub(started)),
			PoolStats: m.localStats(p.pool),
		}
		m.fire(outbox.Event{Name: model.EventAcquireFailed, Payload: ev})
		if m.opts.outbox != nil {
			m.opts.outbox.Publish(model.EventAcquireFailed, ev)
		}
		m.counters.empty.Add(1)
		m.log.Debug("acquire: no proxy free", zap.String("pool", p.pool), zap.String("consumer", p.consumer), zap.Int("conflicts", conflicts))
		return nil, nil, nil
	}
	m.counters.granted.Add(1)
	m.log.Debug("acquire", zap.String("pool", p.pool), zap.String("consumer", p.consumer),
		zap.String("lease_id", grant.lease.ID), zap.String("proxy_id", grant.proxy.ID),
		zap.Uint64("fencing_token", grant.lease.FencingToken), zap.Int("conflicts", conflicts))
	return &grant.lease, &grant.proxy, nil
}

// grant is a committed lease and the proxy it holds.
type grant struct {
	lease model.Lease
	proxy model.Proxy
	// expired are the leases the committing write recorded as expired.
	expired []model.Lease
}

// commit proposes candidates from the replica and commits the lease with one
// revision-checked write. A lost race refreshes the proposal; a proxy that
// filled up moves on to the next. "None free" is only answered from a replica
// brought up to date with every acknowledged write. fresh says the replica
// was just synced and the pool checked (a waiting acquire right after its
// first try): "none free" is then answered from the replica until a write
// is lost.
func (m *Manager) commit(ctx context.Context, p acquireParams, consumer model.Consumer, started time.Time, fresh bool) (*grant, int, error) {
	if err := m.checkConsumerLimit(p.consumer); err != nil {
		return nil, 0, err
	}
	synced := fresh
	conflicts := 0
	// Only tries count against maxAttempts: waiting for a write of ours to
	// land, or syncing the replica, writes nothing and may happen many
	// times while other requests on this worker take their turns.
	for attempt := 0; attempt < m.opts.maxAttempts; {
		if err := ctx.Err(); err != nil {
			return nil, conflicts, model.Errorf(model.ErrUnavailable, "acquire: %w", err)
		}
		_, span := tracing.Start(ctx, "pharox.select")
		id, busy := m.pick(p, conflicts)
		span.End()
		if id == "" {
			if busy != nil {
				// Every eligible proxy has a write of ours in flight: wait
				// for one to land rather than pile onto the same key.
				select {
				case <-busy:
				case <-ctx.Done():
				}
				continue
			}
			if !synced {
				// Both buckets: a pool created on another worker a moment
				// ago may not be in this replica yet.
				if err := m.sync(ctx, kvstore.PoolsBucket); err != nil {
					return nil, conflicts, err
				}
				if err := m.sync(ctx, m.store.ProxiesBucketOf(p.pool)); err != nil {
					return nil, conflicts, err
				}
				synced = true
				continue
			}
			if fresh {
				return nil, conflicts, nil
			}
			// None free: make sure the pool was not deleted meanwhile,
			// which is a 404, not an empty pool.
			if _, _, err := m.getPool(ctx, p.pool); err != nil {
				return nil, conflicts, err
			}
			return nil, conflicts, nil
		}
		attempt++
		g, err := m.tryAcquire(ctx, id, p, consumer, started)
		switch {
		case err == nil:
			return g, conflicts, nil
		case errors.Is(err, errLostRace):
			conflicts++
			synced, fresh = false, false
		case errors.Is(err, errNotEligible):
			synced, fresh = false, false
		default:
			return nil, conflicts, err
		}
	}
	return nil, conflicts, model.Errorf(model.ErrUnavailable, "acquire gave up after %d contended attempts", m.opts.maxAttempts)
}

// errNotEligible means the proxy, as the latest write left it, cannot take
// this lease (not active, cooling down, no longer matching, full, or
// deleted); pick another one.
var errNotEligible = errors.New("proxy not eligible")

// tryAcquire makes one revision-checked attempt to add a lease for consumer
// to the proxy, re-checking the request against the record the write is
// based on. That write is the whole commit: an active lease lives only as a
// holder in its proxy's record, and the write's KV revision is its fencing
// token. The write owes the acquired event, which the acquire callbacks
// get. errLostRace: try again; errNotEligible: pick another proxy.
func (m *Manager) tryAcquire(ctx context.Context, proxyID string, p acquireParams, consumer model.Consumer, started time.Time) (*grant, error) {
	h := record.Holder{LeaseID: uuid.NewString(), ConsumerID: consumer.ID, ConsumerName: consumer.Name}
	mut, err := m.tryMutateProxy(ctx, proxyID, func(rec *record.Proxy, now time.Time) ([]outbox.Event, error) {
		if rec.Status != model.ProxyActive || rec.Cooling(now) || !p.filters.Matches(rec.Attrs()) || !rec.HasRoom(now.Add(-m.opts.grace)) ||
			rec.CredentialsUnreadable() {
			return nil, errNotEligible
		}
		h.AcquiredAt = now
		h.ExpiresAt = now.Add(p.duration)
		rec.Holders = append(rec.Holders, h)
		lease := rec.LeaseFor(h, 0, model.LeaseActive) // the token is the write's revision, filled in once known
		return []outbox.Event{{Name: model.EventAcquired, Payload: &model.AcquireEvent{
			Lease: &lease, PoolName: rec.PoolName, ConsumerName: consumer.Name, Filters: p.filters, Selector: p.selector,
			StartedAt: started, CompletedAt: now, DurationMs: ms(now.Sub(started)),
		}}}, nil
	})
	if errors.Is(err, model.ErrProxyNotFound) {
		return nil, errNotEligible
	}
	if err != nil {
		return nil, err
	}
	return &grant{lease: mut.rec.LeaseFor(h, mut.rev, model.LeaseActive), proxy: mut.rec.Model(m.horizon()), expired: mut.expired}, nil
}

// pick chooses a proxy by the selector among those the replica's indexes
// show available (cooling proxies are not there), passing over the
// excluded ones and those this worker has a write in flight on.
// When the only candidates are in flight it returns a channel that closes
// when one lands.
//
// After a lost race the pick passes over a random number (up to 7) of
// otherwise good candidates: workers that collided on the first free proxy
// then spread over the next ones instead of colliding again in step.
func (m *Manager) pick(p acquireParams, conflicts int) (string, <-chan struct{}) {
	m.advance()
	now := m.now()
	horizon := now.Add(-m.opts.grace)
	wake := m.turns.changed() // before the pick, so no landing is missed
	skip := 0
	if conflicts > 0 && (p.selector == model.SelectorFirstAvailable || p.selector == model.SelectorLeastUsed) {
		skip = rand.IntN(min(conflicts, 7) + 1)
	}
	for {
		busy, passed := false, 0
		q := replica.Query{Pool: p.pool, Selector: p.selector, Filters: p.filters, After: m.rr.cursor(p.pool), Exclude: p.exclude}
		rec := m.replica.Pick(q, func(rec *record.Proxy) bool {
			if rec.Status != model.ProxyActive || !rec.HasRoom(horizon) || rec.Cooling(now) {
				return false
			}
			if m.turns.busy(rec.ID) {
				busy = true
				return false
			}
			if passed < skip {
				passed++
				return false
			}
			return true
		})
		if rec == nil && passed > 0 {
			skip = 0 // fewer candidates than skipped: take the first
			continue
		}
		return m.picked(p, rec, busy, wake)
	}
}

func (m *Manager) picked(p acquireParams, rec *record.Proxy, busy bool, wake <-chan struct{}) (string, <-chan struct{}) {
	if rec == nil {
		if busy {
			return "", wake
		}
		return "", nil
	}
	if p.selector == model.SelectorRoundRobin {
		m.rr.advance(p.pool, rec.Seq)
	}
	return rec.ID, nil
}

// rotation keeps each pool's round-robin position on this worker: the added
// order of the proxy it handed out last.
type rotation struct {
	mu  sync.Mutex
	pos map[string]uint64
}

func newRotation() *rotation { return &rotation{pos: map[string]uint64{}} }

func (r *rotation) cursor(pool string) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pos[pool]
}

func (r *rotation) advance(pool string, seq uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pos[pool] = seq
}
