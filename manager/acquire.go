package manager

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
)

// AcquireProxy leases a proxy of the pool to the consumer. It returns nil, nil,
// nil when no eligible proxy is free, like pharox's None. A write lost to a
// concurrent one is retried with fresh state, never reported as "none free".
func (m *Manager) AcquireProxy(ctx context.Context, req model.AcquireRequest) (*model.Lease, *model.Proxy, error) {
	p, err := m.checkAcquire(req)
	if err != nil {
		return nil, nil, err
	}
	started := m.store.Now()
	if _, err := m.store.PoolExists(ctx, p.pool); err != nil {
		return nil, nil, err
	}
	consumer, err := m.store.EnsureConsumer(ctx, p.consumer)
	if err != nil {
		return nil, nil, err
	}
	if p.requestID != "" {
		leaseID, claim, err := m.store.ClaimRequest(ctx, p.consumer, p.requestID, m.opts.claimStale)
		if err != nil {
			return nil, nil, err
		}
		if claim == nil {
			return m.existingLease(ctx, leaseID)
		}
		lease, proxy, err := m.acquire(ctx, p, consumer, started)
		if err != nil || lease == nil {
			claim.Abandon()
			return lease, proxy, err
		}
		if err := claim.Complete(ctx, lease.ID); err != nil {
			m.log.Warn("request_id not recorded; a retry would lease again", zap.String("lease_id", lease.ID), zap.Error(err))
		}
		return lease, proxy, nil
	}
	return m.acquire(ctx, p, consumer, started)
}

// existingLease answers a repeated request_id with the lease it created.
func (m *Manager) existingLease(ctx context.Context, leaseID string) (*model.Lease, *model.Proxy, error) {
	lease, err := m.store.GetLease(ctx, leaseID)
	if err != nil {
		return nil, nil, err
	}
	proxy, err := m.store.GetProxy(ctx, lease.ProxyID)
	if err != nil {
		return nil, nil, err
	}
	m.log.Debug("acquire: repeated request_id answered with its lease", zap.String("lease_id", lease.ID))
	return &lease, &proxy, nil
}

// acquire commits a lease, waiting up to p.wait for a proxy to free up when
// none is, and fires the acquire callbacks once with the outcome.
func (m *Manager) acquire(ctx context.Context, p acquireParams, consumer model.Consumer, started time.Time) (*model.Lease, *model.Proxy, error) {
	grant, conflicts, err := m.commit(ctx, p, consumer, false)
	if err == nil && grant == nil && p.wait > 0 {
		var more int
		grant, more, err = m.wait(ctx, p, consumer, started)
		conflicts += more
	}
	m.counters.conflicts.Add(uint64(conflicts))
	if err != nil {
		return nil, nil, err
	}
	completed := m.store.Now()
	ev := model.AcquireEvent{
		PoolName: p.pool, ConsumerName: p.consumer, Filters: p.filters, Selector: p.selector,
		StartedAt: started, CompletedAt: completed, DurationMs: ms(completed.Sub(started)),
		PoolStats: m.localStats(p.pool),
	}
	if grant != nil {
		ev.Lease = &grant.Lease
	}
	for _, fn := range hooks(m, &m.onAcquire) {
		fn(ev)
	}
	if grant == nil {
		m.counters.empty.Add(1)
		m.log.Debug("acquire: no proxy free", zap.String("pool", p.pool), zap.String("consumer", p.consumer), zap.Int("conflicts", conflicts))
		return nil, nil, nil
	}
	m.counters.granted.Add(1)
	m.log.Debug("acquire", zap.String("pool", p.pool), zap.String("consumer", p.consumer),
		zap.String("lease_id", grant.Lease.ID), zap.String("proxy_id", grant.Proxy.ID),
		zap.Uint64("fencing_token", grant.Lease.FencingToken), zap.Int("conflicts", conflicts))
	return &grant.Lease, &grant.Proxy, nil
}

// commit proposes candidates from the replica and commits the lease with one
// revision-checked write. A lost race refreshes the proposal; a proxy that
// filled up moves on to the next. "None free" is only answered from a replica
// brought up to date with every acknowledged write. fresh says the replica
// was just synced and the pool checked (a waiting acquire right after its
// first try): "none free" is then answered from the replica until a write
// is lost.
func (m *Manager) commit(ctx context.Context, p acquireParams, consumer model.Consumer, fresh bool) (*kvstore.Grant, int, error) {
	synced := fresh
	conflicts := 0
	for attempt := 0; attempt < m.opts.maxAttempts; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, conflicts, fmt.Errorf("%w: acquire: %w", model.ErrUnavailable, err)
		}
		id, busy := m.pick(p, conflicts)
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
				if err := m.store.SyncProxies(ctx); err != nil {
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
			if _, _, err := m.store.GetPool(ctx, p.pool); err != nil {
				return nil, conflicts, err
			}
			return nil, conflicts, nil
		}
		done := m.inflight.begin(id)
		grant, err := m.store.TryAcquire(ctx, id, consumer, p.duration, func(rec *kvstore.ProxyRecord) bool { return p.filters.Matches(rec.Attrs()) })
		done()
		m.fireExpired(grant.Expired)
		switch {
		case err == nil:
			return &grant, conflicts, nil
		case errors.Is(err, kvstore.ErrCASConflict):
			conflicts++
			synced, fresh = false, false
		case errors.Is(err, kvstore.ErrNotEligible):
			synced, fresh = false, false
		default:
			return nil, conflicts, err
		}
	}
	return nil, conflicts, fmt.Errorf("%w: acquire gave up after %d contended attempts", model.ErrUnavailable, m.opts.maxAttempts)
}

// pick chooses a proxy by the selector among those the replica's indexes
// show available, skipping proxies this worker has a write in flight on.
// When the only candidates are in flight it returns a channel that closes
// when one lands.
//
// After a lost race the pick passes over a random number (up to 7) of
// otherwise good candidates: workers that collided on the first free proxy
// then spread over the next ones instead of colliding again in step.
func (m *Manager) pick(p acquireParams, conflicts int) (string, <-chan struct{}) {
	horizon := m.store.Horizon()
	wake := m.inflight.changed() // before the pick, so no landing is missed
	skip := 0
	if conflicts > 0 && (p.selector == model.SelectorFirstAvailable || p.selector == model.SelectorLeastUsed) {
		skip = rand.IntN(min(conflicts, 7) + 1)
	}
	for {
		busy, passed := false, 0
		rec := m.store.Pick(p.pool, p.selector, p.filters, m.rr.cursor(p.pool), func(rec *kvstore.ProxyRecord) bool {
			if rec.Status != model.ProxyActive || !rec.HasRoom(horizon) {
				return false
			}
			if m.inflight.has(rec.ID) {
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

func (m *Manager) picked(p acquireParams, rec *kvstore.ProxyRecord, busy bool, wake <-chan struct{}) (string, <-chan struct{}) {
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

// inflight tracks the proxies this worker has a write in flight on, so that
// its own requests spread over the pool instead of colliding on one key.
type inflight struct {
	mu   sync.Mutex
	ids  map[string]int
	wake chan struct{}
}

func newInflight() *inflight {
	return &inflight{ids: map[string]int{}, wake: make(chan struct{})}
}

func (f *inflight) begin(id string) func() {
	f.mu.Lock()
	f.ids[id]++
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		if f.ids[id]--; f.ids[id] == 0 {
			delete(f.ids, id)
		}
		close(f.wake)
		f.wake = make(chan struct{})
		f.mu.Unlock()
	}
}

func (f *inflight) has(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ids[id] > 0
}

func (f *inflight) changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.wake
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
