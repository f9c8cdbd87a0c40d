package manager

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
)

// CreatePool creates a pool; an existing name is model.ErrConflict.
func (m *Manager) CreatePool(ctx context.Context, req model.PoolCreateRequest) (model.ProxyPool, error) {
	if err := model.CheckName("name", req.Name); err != nil {
		return model.ProxyPool{}, err
	}
	pool, err := m.store.CreatePool(ctx, req.Name, req.Description)
	if err == nil {
		m.log.Debug("pool created", zap.String("pool", req.Name))
	}
	return pool, err
}

// ListPools lists every pool.
func (m *Manager) ListPools(ctx context.Context) ([]model.ProxyPool, error) {
	return m.store.ListPools(ctx)
}

// UpdatePool changes a pool's description and health-check settings.
func (m *Manager) UpdatePool(ctx context.Context, req model.PoolUpdateRequest) (model.ProxyPool, error) {
	if err := model.CheckName("name", req.Name); err != nil {
		return model.ProxyPool{}, err
	}
	if err := checkHealthCheck(req.HealthCheck.Value); err != nil {
		return model.ProxyPool{}, err
	}
	rec, err := m.store.UpdatePool(ctx, req.Name, func(r *kvstore.PoolRecord) error {
		if req.Description.Set {
			r.Description = req.Description.Value
		}
		if req.HealthCheck.Set {
			r.HealthCheck = req.HealthCheck.Value
		}
		return nil
	})
	if err != nil {
		return model.ProxyPool{}, err
	}
	return rec.Model(), nil
}

// DeletePool deletes a pool and its proxies; force releases live leases
// first, firing their release callbacks.
func (m *Manager) DeletePool(ctx context.Context, req model.PoolDeleteRequest) error {
	if err := model.CheckName("name", req.Name); err != nil {
		return err
	}
	released, err := m.store.DeletePool(ctx, req.Name, req.Force)
	m.fireReleased(released)
	if err == nil {
		m.log.Info("pool deleted", zap.String("pool", req.Name), zap.Int("released_leases", len(released)))
	}
	return err
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
	proxies, err := m.store.AddProxies(ctx, req.PoolName, req.Proxies)
	if err == nil {
		m.log.Debug("proxies added", zap.String("pool", req.PoolName), zap.Int("count", len(proxies)))
	}
	return proxies, err
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
	cursor := ""
	if req.Cursor != nil {
		cursor = *req.Cursor
	}
	return m.store.ListProxies(ctx, req.PoolName, req.Status, limit, cursor)
}

// GetProxy reads a proxy.
func (m *Manager) GetProxy(ctx context.Context, id string) (model.Proxy, error) {
	if err := checkUUID("proxy_id", id); err != nil {
		return model.Proxy{}, err
	}
	return m.store.GetProxy(ctx, id)
}

// UpdateProxy changes the given fields of a proxy with a revision-checked
// write, so a lease committed meanwhile is never lost.
func (m *Manager) UpdateProxy(ctx context.Context, req model.ProxyUpdateRequest) (model.Proxy, error) {
	if err := checkProxyUpdate(req); err != nil {
		return model.Proxy{}, err
	}
	mut, err := m.store.MutateProxy(ctx, req.ProxyID, func(r *kvstore.ProxyRecord, _ time.Time) error {
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
		return nil
	})
	m.fireExpired(mut.Expired)
	if err != nil {
		return model.Proxy{}, err
	}
	return mut.Record.Model(m.store.Horizon()), nil
}

// DeleteProxy deletes a proxy; force releases its live leases first.
func (m *Manager) DeleteProxy(ctx context.Context, req model.ProxyDeleteRequest) error {
	if err := checkUUID("proxy_id", req.ProxyID); err != nil {
		return err
	}
	released, err := m.store.DeleteProxy(ctx, req.ProxyID, req.Force)
	m.fireReleased(released)
	return err
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
	res, err := checkHealthApply(req, m.store.Now())
	if err != nil {
		return model.Proxy{}, err
	}
	proxy, previous, mut, err := m.store.ApplyHealth(ctx, res.ProxyID, res.Status, res.CheckedAt)
	m.fireExpired(mut.Expired)
	if err != nil {
		return model.Proxy{}, err
	}
	if previous != res.Status {
		ev := model.HealthEvent{ProxyID: proxy.ID, PoolName: proxy.PoolName, PreviousStatus: previous, Result: res}
		for _, fn := range hooks(m, &m.onHealth) {
			fn(ev)
		}
		m.log.Info("proxy status changed by health result", zap.String("proxy_id", proxy.ID),
			zap.String("from", string(previous)), zap.String("to", string(res.Status)))
	}
	return proxy, nil
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

func (m *Manager) fireReleased(leases []model.Lease) {
	for i := range leases {
		l := leases[i]
		ev := model.ReleaseEvent{Lease: &l, PoolName: l.PoolName, ReleasedAt: *l.ReleasedAt,
			LeaseDurationMs: ms(l.ReleasedAt.Sub(l.AcquiredAt)), PoolStats: m.localStats(l.PoolName)}
		for _, fn := range hooks(m, &m.onRelease) {
			fn(ev)
		}
	}
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
