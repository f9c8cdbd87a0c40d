package manager

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/record"
)

// A pool is its record in the pools bucket, under its name, with an id; a
// proxy belongs to the pool whose id it carries. Deleting a pool first
// marks its record deleted (a tombstone, written with a revision-checked
// write): from then on the pool is gone for every reader and writer, an
// add racing the delete fails, and a pool created under the same name is a
// new pool with a new id and no members. The proxies are deleted behind the
// tombstone, then the record; should the deleting worker die in between,
// the sweeps of every worker finish the job, and until then the proxies
// left behind belong to no pool (nothing lists, counts or leases them).

// CreatePool creates a pool; an existing name is model.ErrConflict. A name
// whose pool is being deleted is taken over by the new pool.
func (m *Manager) CreatePool(ctx context.Context, req model.PoolCreateRequest) (model.ProxyPool, error) {
	if err := model.CheckName("name", req.Name); err != nil {
		return model.ProxyPool{}, err
	}
	if err := req.Cooldown.Validate("cooldown"); err != nil {
		return model.ProxyPool{}, err
	}
	rec := &record.Pool{ID: uuid.NewString(), Name: req.Name, Description: req.Description, Cooldown: req.Cooldown, NextSeq: 1, CreatedAt: m.now()}
	rev, err := m.store.CreatePool(ctx, rec)
	if errors.Is(err, model.ErrConflict) {
		var taken *record.Pool
		taken, rev, err = m.store.UpdatePool(ctx, req.Name, func(r *record.Pool) error {
			if !r.Deleted {
				return model.Errorf(model.ErrConflict, "pool %q already exists", req.Name)
			}
			*r = *rec
			return nil
		})
		if err == nil {
			rec = taken
		}
	}
	if err != nil {
		return model.ProxyPool{}, err
	}
	m.replica.InstallPool(rec.Name, rec, rev)
	m.log.Debug("pool created", zap.String("pool", req.Name), zap.String("pool_id", rec.ID))
	return rec.Model(), nil
}

// ListPools lists every pool, oldest first.
func (m *Manager) ListPools(ctx context.Context) ([]model.ProxyPool, error) {
	if err := m.sync(ctx, kvstore.PoolsBucket); err != nil {
		return nil, err
	}
	pools := m.replica.Pools()
	out := make([]model.ProxyPool, 0, len(pools))
	for _, p := range pools {
		out = append(out, p.Model())
	}
	return out, nil
}

// getPool reads a pool from the bucket's leader; one being deleted is not
// found.
func (m *Manager) getPool(ctx context.Context, name string) (*record.Pool, uint64, error) {
	rec, rev, err := m.store.GetPool(ctx, name)
	if err == nil && rec.Deleted {
		return nil, 0, kvstore.PoolNotFound(name)
	}
	return rec, rev, err
}

// poolExists answers from the replica and, when the replica does not know
// the pool, from the bucket's leader: a pool created on another worker a
// moment ago exists.
func (m *Manager) poolExists(ctx context.Context, name string) (*record.Pool, error) {
	if rec, ok := m.replica.Pool(name); ok {
		return rec, nil
	}
	rec, _, err := m.getPool(ctx, name)
	return rec, err
}

// updatePool applies fn to the pool's latest record with a
// revision-checked write; a pool being deleted is not found.
func (m *Manager) updatePool(ctx context.Context, name string, fn func(*record.Pool) error) (*record.Pool, error) {
	rec, rev, err := m.store.UpdatePool(ctx, name, func(r *record.Pool) error {
		if r.Deleted {
			return kvstore.PoolNotFound(name)
		}
		return fn(r)
	})
	if err != nil {
		return nil, err
	}
	m.replica.InstallOwnPool(name, rec, rev)
	return rec, nil
}

// UpdatePool changes a pool's description, health-check and cooldown
// settings.
func (m *Manager) UpdatePool(ctx context.Context, req model.PoolUpdateRequest) (model.ProxyPool, error) {
	if err := model.CheckName("name", req.Name); err != nil {
		return model.ProxyPool{}, err
	}
	if err := checkHealthCheck(req.HealthCheck.Value); err != nil {
		return model.ProxyPool{}, err
	}
	if err := req.Cooldown.Value.Validate("cooldown"); err != nil {
		return model.ProxyPool{}, err
	}
	rec, err := m.updatePool(ctx, req.Name, func(r *record.Pool) error {
		if req.Description.Set {
			r.Description = req.Description.Value
		}
		if req.HealthCheck.Set {
			r.HealthCheck = req.HealthCheck.Value
		}
		if req.Cooldown.Set {
			r.Cooldown = req.Cooldown.Value
		}
		return nil
	})
	if err != nil {
		return model.ProxyPool{}, err
	}
	return rec.Model(), nil
}

// DeletePool deletes a pool and its proxies, all or nothing as seen from
// outside: with live leases it refuses with model.ErrConflict, changing
// nothing, unless force; once it goes ahead the pool is gone at once and
// every lease still held on its proxies is released, with its event (force,
// or an acquire that raced the delete).
func (m *Manager) DeletePool(ctx context.Context, req model.PoolDeleteRequest) error {
	_, err := m.deletePool(ctx, req)
	return err
}

// deletePool is DeletePool; it returns the leases it released.
func (m *Manager) deletePool(ctx context.Context, req model.PoolDeleteRequest) ([]model.Lease, error) {
	if err := model.CheckName("name", req.Name); err != nil {
		return nil, err
	}
	pool, _, err := m.getPool(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	if err := m.syncProxies(ctx); err != nil {
		return nil, err
	}
	live := 0
	horizon := m.horizon()
	m.replica.Members(req.Name, 0, func(rec *record.Proxy) bool {
		live += rec.LiveHolders(horizon)
		return true
	})
	if live > 0 && !req.Force {
		return nil, model.Errorf(model.ErrConflict, "pool %q has %d active leases; delete with force to release them", req.Name, live)
	}
	tomb, rev, err := m.store.UpdatePool(ctx, req.Name, func(r *record.Pool) error {
		if r.Deleted || r.ID != pool.ID {
			return kvstore.PoolNotFound(req.Name) // deleted (and maybe re-created) meanwhile
		}
		r.Deleted = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	m.replica.InstallPool(req.Name, tomb, rev)
	released, err := m.finishDelete(ctx, tomb, rev)
	if err != nil {
		// The pool is gone already; the sweeps delete what is left of it.
		m.log.Warn("pool deleted; some of its proxies are left for the sweeps to delete",
			zap.String("pool", req.Name), zap.Error(err))
	}
	m.log.Info("pool deleted", zap.String("pool", req.Name), zap.String("pool_id", pool.ID), zap.Int("released_leases", len(released)))
	return released, nil
}

// finishDelete deletes the proxies of a pool marked deleted (the
// tombstone at rev), releasing their leases, then the record itself unless
// a new pool took the name over meanwhile.
func (m *Manager) finishDelete(ctx context.Context, tomb *record.Pool, rev uint64) ([]model.Lease, error) {
	if err := m.syncProxies(ctx); err != nil {
		return nil, err
	}
	var released []model.Lease
	for _, id := range m.replica.MembersOf(tomb.ID) {
		leases, err := m.deleteProxy(ctx, id, true)
		released = append(released, leases...)
		if err != nil && !errors.Is(err, model.ErrProxyNotFound) {
			return released, err
		}
	}
	if err := m.store.DeletePoolAt(ctx, tomb.Name, rev); err != nil && !errors.Is(err, kvstore.ErrRevisionConflict) {
		return released, err
	}
	m.replica.InstallPool(tomb.Name, nil, ^uint64(0))
	return released, nil
}

// AddProxies adds 1..1000 proxies to a pool, all or none. An add that races
// the pool's delete adds nothing and answers that the pool does not exist.
func (m *Manager) AddProxies(ctx context.Context, req model.ProxiesAddRequest) ([]model.Proxy, error) {
	if err := model.CheckName("pool_name", req.PoolName); err != nil {
		return nil, err
	}
	if len(req.Proxies) < 1 || len(req.Proxies) > model.MaxProxiesPerAdd {
		return nil, model.Errorf(model.ErrBadRequest, "proxies must hold 1..%d proxies, got %d", model.MaxProxiesPerAdd, len(req.Proxies))
	}
	for i, in := range req.Proxies {
		if err := checkProxyInput(i, in); err != nil {
			return nil, err
		}
	}
	n := uint64(len(req.Proxies))
	pool, err := m.updatePool(ctx, req.PoolName, func(r *record.Pool) error {
		r.NextSeq += n // reserve the added-order range of this batch
		return nil
	})
	if err != nil {
		return nil, err
	}
	first := pool.NextSeq - n
	recs := make([]*record.Proxy, len(req.Proxies))
	for i, in := range req.Proxies {
		recs[i] = record.NewProxy(pool, first+uint64(i), in)
	}
	last, err := m.store.CreateProxies(ctx, recs)
	if err != nil {
		return nil, err
	}
	// A delete that marked the pool after the range was reserved may have
	// listed its members before these were written: look again, and take
	// them back if the pool is gone.
	if now, _, err := m.getPool(ctx, req.PoolName); err != nil || now.ID != pool.ID {
		m.takeBack(recs)
		if err == nil || errors.Is(err, model.ErrPoolNotFound) {
			err = kvstore.PoolNotFound(req.PoolName)
		}
		return nil, err
	}
	if err := m.replica.WaitSeen(ctx, m.store.ProxiesBucketOf(req.PoolName), last); err != nil {
		return nil, unavailable("add proxies", err)
	}
	horizon := m.horizon()
	out := make([]model.Proxy, len(recs))
	for i, rec := range recs {
		out[i] = rec.Model(horizon)
	}
	m.log.Debug("proxies added", zap.String("pool", req.PoolName), zap.Int("count", len(out)))
	return out, nil
}

// takeBack deletes proxies an add created for a pool that went away, with
// a deadline of its own: the request's may be what ran out.
func (m *Manager) takeBack(recs []*record.Proxy) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, rec := range recs {
		if _, err := m.deleteProxy(ctx, rec.ID, true); err != nil && !errors.Is(err, model.ErrProxyNotFound) {
			m.log.Warn("proxy of a deleted pool left for the sweeps", zap.String("proxy_id", rec.ID), zap.Error(err))
		}
	}
}

// sweepPools finishes the deletes of pools whose deleting worker stopped
// (racing the one still at it is harmless: every delete is
// revision-checked) and deletes proxies that belong to no pool, checked on
// the leader first (the replica may not know a pool created a moment ago).
func (m *Manager) sweepPools(ctx context.Context) error {
	if err := m.sync(ctx, kvstore.PoolsBucket); err != nil {
		return err
	}
	var errs []error
	for _, tomb := range m.replica.Tombstones() {
		rec, rev, err := m.store.GetPool(ctx, tomb.Name)
		if err != nil || !rec.Deleted || rec.ID != tomb.ID {
			continue
		}
		if _, err := m.finishDelete(ctx, rec, rev); err != nil {
			errs = append(errs, err)
		}
	}
	for _, id := range m.replica.Orphans() {
		rec, _, err := m.store.GetProxy(ctx, id)
		if err != nil {
			continue
		}
		if pool, _, err := m.getPool(ctx, rec.PoolName); err == nil && pool.ID == rec.PoolID {
			continue // its pool is new to this replica
		}
		if _, err := m.deleteProxy(ctx, id, true); err != nil && !errors.Is(err, model.ErrProxyNotFound) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
