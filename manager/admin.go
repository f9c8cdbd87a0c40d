package manager

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/pharox/pharox-nats/internal/retry"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/outbox"
	"github.com/pharox/pharox-nats/record"
)

// ListProxies pages through a pool's proxies in added order. A page that
// would hold a proxy whose credentials this worker cannot decrypt is a 503
// (model.ErrUnavailable): a worker with the key can answer it.
func (m *Manager) ListProxies(ctx context.Context, req model.ProxiesListRequest) (model.ProxiesPage, error) {
	return m.listProxies(ctx, req, false)
}

// ListReadableProxies pages through a pool's proxies as ListProxies does,
// leaving out those whose credentials this worker cannot decrypt (a
// health sweep skips them: a worker with the key probes them).
func (m *Manager) ListReadableProxies(ctx context.Context, req model.ProxiesListRequest) (model.ProxiesPage, error) {
	return m.listProxies(ctx, req, true)
}

func (m *Manager) listProxies(ctx context.Context, req model.ProxiesListRequest, skipUnreadable bool) (model.ProxiesPage, error) {
	if err := model.CheckName("pool_name", req.PoolName); err != nil {
		return model.ProxiesPage{}, err
	}
	if req.Status != nil && !req.Status.Valid() {
		return model.ProxiesPage{}, model.Errorf(model.ErrBadRequest, "status must be active, inactive, slow or banned, got %q", *req.Status)
	}
	limit := model.DefaultListLimit
	if req.Limit != nil {
		if *req.Limit < 1 || *req.Limit > model.MaxListLimit {
			return model.ProxiesPage{}, model.Errorf(model.ErrBadRequest, "limit must be in 1..%d, got %d", model.MaxListLimit, *req.Limit)
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
			return page, model.Errorf(model.ErrBadRequest, "cursor %q is not one this service returned", *req.Cursor)
		}
		after = v
	}
	if err := m.syncPool(ctx, req.PoolName); err != nil {
		return page, err
	}
	horizon := m.horizon()
	more := false
	var lastSeq uint64
	var cannot *record.Proxy
	m.replica.Members(req.PoolName, after, func(rec *record.Proxy) bool {
		if req.Status != nil && rec.Status != *req.Status {
			return true
		}
		if len(page.Proxies) == limit {
			more = true
			return false
		}
		if rec.CredentialsUnreadable() {
			if skipUnreadable {
				return true
			}
			cannot = rec
			return false
		}
		page.Proxies = append(page.Proxies, rec.Model(horizon))
		lastSeq = rec.Seq
		return true
	})
	if cannot != nil {
		return model.ProxiesPage{Proxies: []model.Proxy{}}, unreadable(cannot)
	}
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
	if err := m.checkInPool(ctx, rec); err != nil {
		return model.Proxy{}, err
	}
	if rec.CredentialsUnreadable() {
		return model.Proxy{}, unreadable(rec)
	}
	return rec.Model(m.horizon()), nil
}

// checkInPool answers that a proxy left behind by a deleted pool does not
// exist: it is about to be deleted too.
func (m *Manager) checkInPool(ctx context.Context, rec *record.Proxy) error {
	if m.replica.InPool(rec) {
		return nil
	}
	if err := m.sync(ctx, kvstore.PoolsBucket); err != nil {
		return err
	}
	if !m.replica.InPool(rec) {
		return model.Errorf(model.ErrProxyNotFound, "proxy %q does not exist", rec.ID)
	}
	return nil
}

// UpdateProxy changes the given fields of a proxy with a revision-checked
// write, so a lease committed meanwhile is never lost.
func (m *Manager) UpdateProxy(ctx context.Context, req model.ProxyUpdateRequest) (model.Proxy, error) {
	if err := checkProxyUpdate(req); err != nil {
		return model.Proxy{}, err
	}
	if rec, _, ok := m.replica.Proxy(req.ProxyID); ok {
		if err := m.checkInPool(ctx, rec); err != nil {
			return model.Proxy{}, err
		}
	}
	until, _ := cooldownUntil(req.CooldownUntil) // checked above
	mut, err := m.mutateProxy(ctx, req.ProxyID, func(r *record.Proxy, _ time.Time) ([]outbox.Event, error) {
		if r.CredentialsUnreadable() && !req.Credentials.Set {
			return nil, unreadable(r) // the reply would show the proxy without them
		}
		set(&r.Host, req.Host)
		set(&r.Port, req.Port)
		set(&r.Protocol, req.Protocol)
		set(&r.Status, req.Status)
		if req.Credentials.Set {
			r.ReplaceCredentials(req.Credentials.Value)
		}
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
		return nil, nil
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
			return nil, model.Errorf(model.ErrConflict, "proxy %s has %d active leases; delete with force to release them", id, live)
		}
		// The delete owes the events of the leases it ends: released if
		// live, expired otherwise.
		gone := rec.Clone()
		expired := gone.PruneExpired(horizon)
		events := expiredEvents(gone, expired, now)
		for _, h := range gone.Holders {
			events = append(events, releasedEvent(gone, h, now, nil, nil))
		}
		entry := m.owe(events, now, func() model.PoolStatsSnapshot {
			st, _ := m.replica.StatsWithout(id, m.now())
			return st
		})
		ticket := m.begin(entry, rec.PoolName)
		var delRev uint64
		delRev, err = m.store.DeleteProxy(ctx, id, rev, m.owed(entry))
		if err != nil {
			m.abandon(ticket)
		}
		if errors.Is(err, kvstore.ErrRevisionConflict) {
			m.counters.conflicts.Add(1)
			if attempt >= m.opts.maxCASRetries {
				return nil, model.Errorf(model.ErrUnavailable, "proxy %s kept changing", id)
			}
			retry.Sleep(ctx, retry.Backoff(attempt))
			continue
		}
		if err != nil {
			return nil, err
		}
		m.replica.RemoveProxy(id)
		m.committed(ctx, ticket, delRev, rec.PoolName, entry)
		var released []model.Lease
		for _, ev := range events {
			if p, ok := ev.Payload.(*model.ReleaseEvent); ok {
				released = append(released, *p.Lease)
			}
		}
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
		return res, model.Errorf(model.ErrBadRequest, "status must be active, inactive, slow or banned, got %q", req.Status)
	}
	if !req.Protocol.Valid() {
		return res, model.Errorf(model.ErrBadRequest, "protocol must be http, https, socks4 or socks5, got %q", req.Protocol)
	}
	if req.LatencyMs < 0 {
		return res, model.Errorf(model.ErrBadRequest, "latency_ms must be >= 0")
	}
	if req.Attempts != nil {
		if *req.Attempts < 1 || *req.Attempts > 5 {
			return res, model.Errorf(model.ErrBadRequest, "attempts must be in 1..5, got %d", *req.Attempts)
		}
		res.Attempts = *req.Attempts
	}
	if req.StatusCode != nil && (*req.StatusCode < 100 || *req.StatusCode > 599) {
		return res, model.Errorf(model.ErrBadRequest, "status_code must be an HTTP status, got %d", *req.StatusCode)
	}
	if req.CheckedAt != nil {
		t, err := time.Parse(time.RFC3339Nano, *req.CheckedAt)
		if err != nil {
			return res, model.Errorf(model.ErrBadRequest, "checked_at must be an RFC 3339 time, got %q", *req.CheckedAt)
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
