package manager

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/internal/retry"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/record"
)

// CreatePool creates a pool; an existing name is model.ErrConflict.
func (m *Manager) CreatePool(ctx context.Context, req model.PoolCreateRequest) (model.ProxyPool, error) {
	if err := model.CheckName("name", req.Name); err != nil {
		return model.ProxyPool{}, err
	}
	if err := req.Cooldown.Validate("cooldown"); err != nil {
		return model.ProxyPool{}, err
	}
	rec := &record.Pool{ID: uuid.NewString(), Name: req.Name, Description: req.Description, Cooldown: req.Cooldown, NextSeq: 1, CreatedAt: m.now()}
	rev, err := m.store.CreatePool(ctx, rec)
	if err != nil {
		return model.ProxyPool{}, err
	}
	m.replica.InstallPool(rec.Name, rec, rev)
	m.log.Debug("pool created", zap.String("pool", req.Name))
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

// poolExists answers from the replica and, when the replica does not know
// the pool, from the bucket's leader: a pool created on another worker a
// moment ago exists.
func (m *Manager) poolExists(ctx context.Context, name string) (*record.Pool, error) {
	if rec, ok := m.replica.Pool(name); ok {
		return rec, nil
	}
	rec, _, err := m.store.GetPool(ctx, name)
	return rec, err
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
	rec, rev, err := m.store.UpdatePool(ctx, req.Name, func(r *record.Pool) error {
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
	m.replica.InstallOwnPool(req.Name, rec, rev)
	return rec.Model(), nil
}

// DeletePool deletes a pool and its proxies. With live leases it refuses
// with model.ErrConflict unless force, which first releases them, firing
// their release callbacks.
func (m *Manager) DeletePool(ctx context.Context, req model.PoolDeleteRequest) error {
	_, err := m.deletePool(ctx, req)
	return err
}

// deletePool is DeletePool; it returns the leases it released.
func (m *Manager) deletePool(ctx context.Context, req model.PoolDeleteRequest) ([]model.Lease, error) {
	if err := model.CheckName("name", req.Name); err != nil {
		return nil, err
	}
	if _, _, err := m.store.GetPool(ctx, req.Name); err != nil {
		return nil, err
	}
	if err := m.sync(ctx, kvstore.ProxiesBucket); err != nil {
		return nil, err
	}
	var ids []string
	live := 0
	horizon := m.horizon()
	m.replica.Members(req.Name, 0, func(rec *record.Proxy) bool {
		ids = append(ids, rec.ID)
		live += rec.LiveHolders(horizon)
		return true
	})
	if live > 0 && !req.Force {
		return nil, fmt.Errorf("%w: pool %q has %d active leases; delete with force to release them", model.ErrConflict, req.Name, live)
	}
	var released []model.Lease
	for _, id := range ids {
		leases, err := m.deleteProxy(ctx, id, req.Force)
		released = append(released, leases...)
		if errors.Is(err, model.ErrProxyNotFound) {
			continue
		}
		if err != nil {
			return released, err
		}
	}
	if err := m.store.DeletePool(ctx, req.Name); err != nil {
		return released, err
	}
	m.replica.InstallPool(req.Name, nil, ^uint64(0))
	m.log.Info("pool deleted", zap.String("pool", req.Name), zap.Int("released_leases", len(released)))
	return released, nil
}

// AddProxies adds 1..1000 proxies to a pool, all or none.
func (m *Manager) AddProxies(ctx context.Context, req model.ProxiesAddRequest) ([]model.Proxy, error) {
	if err := model.CheckName("pool_name", req.PoolName); err != nil {
		return nil, err
	}
	if len(req.Proxies) < 1 || len(req.Proxies) > model.MaxProxiesPerAdd {
		return nil, fmt.Errorf("%w: proxies must hold 1..%d proxies, got %d", model.ErrBadRequest, model.MaxProxiesPerAdd, len(req.Proxies))
	}
	for i, in := range req.Proxies {
		if err := checkProxyInput(i, in); err != nil {
			return nil, err
		}
	}
	n := uint64(len(req.Proxies))
	pool, _, err := m.store.UpdatePool(ctx, req.PoolName, func(r *record.Pool) error {
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
	if err := m.replica.WaitSeen(ctx, kvstore.ProxiesBucket, last); err != nil {
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

// ListProxies pages through a pool's proxies in added order.
func (m *Manager) ListProxies(ctx context.Context, req model.ProxiesListRequest) (model.ProxiesPage, error) {
	if err := model.CheckName("pool_name", req.PoolName); err != nil {
		return model.ProxiesPage{}, err
	}
	if req.Status != nil && !req.Status.Valid() {
		return model.ProxiesPage{}, fmt.Errorf("%w: status must be active, inactive, slow or banned, got %q", model.ErrBadRequest, *req.Status)
	}
	limit := model.DefaultListLimit
	if req.Limit != nil {
		if *req.Limit < 1 || *req.Limit > model.MaxListLimit {
			return model.ProxiesPage{}, fmt.Errorf("%w: limit must be in 1..%d, got %d", model.ErrBadRequest, model.MaxListLimit, *req.Limit)
		}
		limit = *req.Limit
	}
	page := model.ProxiesPage{Proxies: []model.Proxy{}}
	// The cursor is the added-order position after which the next page
	// starts, so a page costs the same wherever it starts.
	var after uint64
	if req.Cursor != nil && *req.Cursor != "" {
		v, err := strconv.ParseUint(*req.Cursor, 10, 64)
		if err != nil {
			return page, fmt.Errorf("%w: cursor %q is not one this service returned", model.ErrBadRequest, *req.Cursor)
		}
		after = v
	}
	if err := m.syncPool(ctx, req.PoolName); err != nil {
		return page, err
	}
	horizon := m.horizon()
	more := false
	var lastSeq uint64
	m.replica.Members(req.PoolName, after, func(rec *record.Proxy) bool {
		if req.Status != nil && rec.Status != *req.Status {
			return true
		}
		if len(page.Proxies) == limit {
			more = true
			return false
		}
		page.Proxies = append(page.Proxies, rec.Model(horizon))
		lastSeq = rec.Seq
		return true
	})
	if more {
		c := strconv.FormatUint(lastSeq, 10)
		page.NextCursor = &c
	}
	return page, nil
}

// GetProxy reads a proxy from the bucket's leader.
func (m *Manager) GetProxy(ctx context.Context, id string) (model.Proxy, error) {
	if err := checkUUID("proxy_id", id); err != nil {
		return model.Proxy{}, err
	}
	rec, _, err := m.store.GetProxy(ctx, id)
	if err != nil {
		return model.Proxy{}, err
	}
	return rec.Model(m.horizon()), nil
}

// UpdateProxy changes the given fields of a proxy with a revision-checked
// write, so a lease committed meanwhile is never lost.
func (m *Manager) UpdateProxy(ctx context.Context, req model.ProxyUpdateRequest) (model.Proxy, error) {
	if err := checkProxyUpdate(req); err != nil {
		return model.Proxy{}, err
	}
	until, _ := cooldownUntil(req.CooldownUntil) // checked above
	mut, err := m.mutateProxy(ctx, req.ProxyID, func(r *record.Proxy, _ time.Time) error {
		set(&r.Host, req.Host)
		set(&r.Port, req.Port)
		set(&r.Protocol, req.Protocol)
		set(&r.Status, req.Status)
		setNullable(&r.Credentials, req.Credentials)
		setNullable(&r.Source, req.Source)
		setNullable(&r.Country, req.Country)
		setNullable(&r.City, req.City)
		setNullable(&r.Latitude, req.Latitude)
		setNullable(&r.Longitude, req.Longitude)
		setNullable(&r.ISP, req.ISP)
		setNullable(&r.ASN, req.ASN)
		setNullable(&r.MaxConcurrency, req.MaxConcurrency)
		set(&r.ConsecutiveFailures, req.ConsecutiveFailures)
		if req.CooldownUntil.Set {
			r.CooldownUntil = until
		}
		return nil
	})
	if err != nil {
		return model.Proxy{}, err
	}
	return mut.rec.Model(m.horizon()), nil
}

// DeleteProxy deletes a proxy; force releases its live leases first.
func (m *Manager) DeleteProxy(ctx context.Context, req model.ProxyDeleteRequest) error {
	if err := checkUUID("proxy_id", req.ProxyID); err != nil {
		return err
	}
	_, err := m.deleteProxy(ctx, req.ProxyID, req.Force)
	return err
}

// deleteProxy deletes a proxy with a revision-checked delete based on the
// leader's latest record. With live leases it refuses with
// model.ErrConflict unless force: the delete then releases them (their
// release callbacks fire) and records the expired ones. It returns the
// leases it released.
func (m *Manager) deleteProxy(ctx context.Context, id string, force bool) ([]model.Lease, error) {
	for attempt := 0; ; attempt++ {
		rec, rev, err := m.store.GetProxy(ctx, id)
		if err != nil {
			return nil, err
		}
		rec.Seal(rev)
		now, horizon := m.now(), m.horizon()
		live := rec.LiveHolders(horizon)
		if live > 0 && !force {
			return nil, fmt.Errorf("%w: proxy %s has %d active leases; delete with force to release them", model.ErrConflict, id, live)
		}
		err = m.store.DeleteProxy(ctx, id, rev)
		if errors.Is(err, kvstore.ErrRevisionConflict) {
			m.counters.conflicts.Add(1)
			if attempt >= m.opts.maxCASRetries {
				return nil, fmt.Errorf("%w: proxy %s kept changing", model.ErrUnavailable, id)
			}
			retry.Sleep(ctx, retry.Backoff(attempt))
			continue
		}
		if err != nil {
			return nil, err
		}
		m.replica.RemoveProxy(id)
		expired := rec.PruneExpired(horizon)
		m.expire(ctx, rec, expired, now)
		released := make([]model.Lease, 0, len(rec.Holders))
		for _, h := range rec.Holders {
			l := rec.LeaseFor(h, 0, model.LeaseReleased)
			l.ReleasedAt = endTime(model.LeaseReleased, h.ExpiresAt, now)
			released = append(released, l)
		}
		m.released(ctx, released)
		return released, nil
	}
}

// EnsureConsumer returns the consumer named name, creating it once.
func (m *Manager) EnsureConsumer(ctx context.Context, name string) (model.Consumer, error) {
	if err := model.CheckName("name", name); err != nil {
		return model.Consumer{}, err
	}
	return m.store.EnsureConsumer(ctx, name)
}

// ListConsumers lists every consumer.
func (m *Manager) ListConsumers(ctx context.Context) ([]model.Consumer, error) {
	return m.store.ListConsumers(ctx)
}

// ApplyHealthResult records a health-check result on its proxy, as pharox's
// apply_health_check_result does, and fires the health callbacks when the
// status changed.
func (m *Manager) ApplyHealthResult(ctx context.Context, req model.HealthApplyRequest) (model.Proxy, error) {
	res, err := checkHealthApply(req, m.now())
	if err != nil {
		return model.Proxy{}, err
	}
	proxy, _, err := m.ApplyHealthDecision(ctx, res, func(model.ProxyStatus) model.ProxyStatus { return res.Status })
	return proxy, err
}

func checkHealthApply(req model.HealthApplyRequest, now time.Time) (model.HealthCheckResult, error) {
	res := model.HealthCheckResult{ProxyID: req.ProxyID, Status: req.Status, LatencyMs: req.LatencyMs,
		Protocol: req.Protocol, Attempts: 1, StatusCode: req.StatusCode, CheckedAt: now, ErrorMessage: req.ErrorMessage}
	if err := checkUUID("proxy_id", req.ProxyID); err != nil {
		return res, err
	}
	if !req.Status.Valid() {
		return res, fmt.Errorf("%w: status must be active, inactive, slow or banned, got %q", model.ErrBadRequest, req.Status)
	}
	if !req.Protocol.Valid() {
		return res, fmt.Errorf("%w: protocol must be http, https, socks4 or socks5, got %q", model.ErrBadRequest, req.Protocol)
	}
	if req.LatencyMs < 0 {
		return res, fmt.Errorf("%w: latency_ms must be >= 0", model.ErrBadRequest)
	}
	if req.Attempts != nil {
		if *req.Attempts < 1 || *req.Attempts > 5 {
			return res, fmt.Errorf("%w: attempts must be in 1..5, got %d", model.ErrBadRequest, *req.Attempts)
		}
		res.Attempts = *req.Attempts
	}
	if req.StatusCode != nil && (*req.StatusCode < 100 || *req.StatusCode > 599) {
		return res, fmt.Errorf("%w: status_code must be an HTTP status, got %d", model.ErrBadRequest, *req.StatusCode)
	}
	if req.CheckedAt != nil {
		t, err := time.Parse(time.RFC3339Nano, *req.CheckedAt)
		if err != nil {
			return res, fmt.Errorf("%w: checked_at must be an RFC 3339 time, got %q", model.ErrBadRequest, *req.CheckedAt)
		}
		res.CheckedAt = t.UTC()
	}
	return res, nil
}

func set[T any](dst *T, o model.Optional[T]) {
	if o.Set && o.Value != nil {
		*dst = *o.Value
	}
}

func setNullable[T any](dst **T, o model.Optional[T]) {
	if o.Set {
		*dst = o.Value
	}
}
