package manager

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/outbox"
	"github.com/pharox/pharox-nats/record"
)

// HealthDecision returns the status a proxy gets from a health result, given
// the status the proxy has in the record the write is based on. It is called
// again on every retry of the revision-checked write, so it must not have
// side effects.
type HealthDecision func(current model.ProxyStatus) model.ProxyStatus

// ApplyHealthDecision records a probe's result on its proxy through the same
// revision-checked write as ApplyHealthResult (a lease committed meanwhile is
// never lost; checked_at is set to the result's), but the new status is
// decided inside that write from the proxy's current status. The health
// package's policy needs this: a proxy banned by an admin a moment before
// must stay banned, which a decision taken on an older read could undo.
//
// The result as probed (its status is what the probe found, which the
// decision may not have applied) is kept in the record as the proxy's last
// health result (latency_ms, admin.health.last), in the same write.
//
// The health callbacks fire, as for ApplyHealthResult, when the status
// changed; their result carries the decided status. It returns the proxy as
// written and the result as applied.
func (m *Manager) ApplyHealthDecision(ctx context.Context, res model.HealthCheckResult, decide HealthDecision) (model.Proxy, model.HealthCheckResult, error) {
	applied := res
	applied.CheckedAt = res.CheckedAt.UTC()
	if err := checkUUID("proxy_id", res.ProxyID); err != nil {
		return model.Proxy{}, applied, err
	}
	var previous model.ProxyStatus
	mut, err := m.mutateProxy(ctx, res.ProxyID, func(r *record.Proxy, _ time.Time) ([]outbox.Event, error) {
		if r.CredentialsUnreadable() {
			return nil, unreadable(r) // the reply would show the proxy without them
		}
		next := decide(r.Status)
		if !next.Valid() {
			return nil, fmt.Errorf("health decision gave status %q", next)
		}
		previous = r.Status
		applied.Status = next
		r.Status = next
		t := applied.CheckedAt
		r.CheckedAt = &t
		r.Health = record.HealthOf(res)
		if previous == next {
			return nil, nil
		}
		return []outbox.Event{{Name: model.EventHealth, Payload: &model.HealthEvent{
			ProxyID: r.ID, PoolName: r.PoolName, PreviousStatus: previous, Result: applied}}}, nil
	})
	if err != nil {
		return model.Proxy{}, applied, err
	}
	proxy := mut.rec.Model(m.horizon())
	if previous != applied.Status {
		m.log.Info("proxy status changed by a health result", zap.String("proxy_id", proxy.ID),
			zap.String("from", string(previous)), zap.String("to", string(applied.Status)))
	}
	return proxy, applied, nil
}

// LastHealth returns the last health result recorded for a proxy (by a
// sweep, admin.health.check or admin.health.apply), or nil if none was,
// read from the bucket's leader.
func (m *Manager) LastHealth(ctx context.Context, proxyID string) (*model.HealthCheckResult, error) {
	if err := checkUUID("proxy_id", proxyID); err != nil {
		return nil, err
	}
	rec, _, err := m.store.GetProxy(ctx, proxyID)
	if err != nil {
		return nil, err
	}
	return rec.LastHealth(), nil
}
