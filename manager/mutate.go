package manager

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/internal/retry"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/outbox"
	"github.com/pharox/pharox-nats/record"
	"github.com/pharox/pharox-nats/tracing"
)

// A change decides what to write to a proxy's record, given the latest
// record this worker knows (a copy it may change) and the time of the
// write, and returns the events the change causes. It may be called again
// on a retry, so it must have no side effects beyond its own variables.
type change func(rec *record.Proxy, now time.Time) ([]outbox.Event, error)

// errNoChange lets a change say the record is fine as it is.
var errNoChange = errors.New("no change")

// errLostRace means a revision-checked write lost to a concurrent one; the
// replica has been refreshed from the leader, so trying again is based on
// the latest record.
var errLostRace = errors.New("revision-checked write lost to a concurrent one")

// mutation is the outcome of a revision-checked proxy write.
type mutation struct {
	rec     *record.Proxy // as written, or as it was when nothing was written
	rev     uint64
	written bool
	expired []model.Lease // leases this write recorded as expired
}

// mutateProxy applies fn to the proxy's latest record with a
// revision-checked write, retrying on a lost race.
func (m *Manager) mutateProxy(ctx context.Context, id string, fn change) (mutation, error) {
	for attempt := 0; ; attempt++ {
		mut, err := m.tryMutateProxy(ctx, id, fn)
		if !errors.Is(err, errLostRace) {
			return mut, err
		}
		m.counters.conflicts.Add(1)
		if attempt >= m.opts.maxCASRetries {
			return mut, model.Errorf(model.ErrUnavailable, "proxy %s kept changing under %d attempts", id, attempt+1)
		}
		retry.Sleep(ctx, retry.Backoff(attempt))
	}
}

// tryMutateProxy makes one attempt of mutateProxy: it bases the write on the
// replica's revision of the record (no read when the replica is current),
// prunes the holders that expired in the same write, and commits with one
// revision-checked kvstore write that carries the events the change owes.
// errLostRace: try again.
func (m *Manager) tryMutateProxy(ctx context.Context, id string, fn change) (mutation, error) {
	release, err := m.turns.take(ctx, id)
	if err != nil {
		return mutation{}, unavailable("wait for a turn to write proxy "+id, err)
	}
	defer release()
	base, rev, fromReplica := m.replica.Proxy(id)
	if !fromReplica {
		if base, rev, err = m.store.GetProxy(ctx, id); err != nil {
			return mutation{}, err
		}
	}
	now := m.now()
	next := base.Clone()
	next.Seal(rev)
	expired := next.PruneExpired(now.Add(-m.opts.grace))
	events, err := fn(next, now)
	if err != nil && !(errors.Is(err, errNoChange) && len(expired) > 0) {
		// A decision not to write rests on the record being current: one
		// taken on the replica's copy is confirmed on the leader's.
		if fromReplica {
			if err := m.confirm(ctx, id, rev); err != nil {
				return mutation{}, err
			}
		}
		if errors.Is(err, errNoChange) {
			return mutation{rec: base, rev: rev}, nil
		}
		return mutation{rec: base, rev: rev}, err
	}
	entry := m.owe(append(events, expiredEvents(next, expired, now)...), now, func() model.PoolStatsSnapshot {
		return m.replica.StatsWith(next, m.now())
	})
	ticket := m.begin(entry, next.PoolName)
	wctx, span := tracing.Start(ctx, "pharox.kv.update", attribute.Int64("pharox.base_revision", int64(rev)))
	newRev, err := m.store.UpdateProxy(wctx, next, rev, m.owed(entry))
	endWriteSpan(span, newRev, err)
	if errors.Is(err, kvstore.ErrRevisionConflict) {
		m.abandon(ticket)
		if err := m.refresh(ctx, id); err != nil {
			return mutation{}, err
		}
		return mutation{}, errLostRace
	}
	if err != nil {
		m.abandon(ticket)
		return mutation{}, err
	}
	m.installOwn(next, newRev)
	m.committed(ctx, ticket, newRev, next.PoolName, entry)
	var ended []model.Lease
	if entry != nil {
		for _, ev := range entry.Events {
			if p, ok := ev.Payload.(*model.ExpiredEvent); ok {
				ended = append(ended, *p.Lease)
			}
		}
	}
	return mutation{rec: next, rev: newRev, written: true, expired: ended}, nil
}

// confirm checks on the leader that the proxy is still at rev: errLostRace
// (replica refreshed) when it moved on, its not-found error when it is gone,
// and an unconfirmed decision decides nothing.
func (m *Manager) confirm(ctx context.Context, id string, rev uint64) error {
	fresh, freshRev, err := m.store.GetProxy(ctx, id)
	switch {
	case errors.Is(err, model.ErrProxyNotFound):
		m.replica.RemoveProxy(id)
		return err
	case err != nil:
		return err
	case freshRev != rev:
		m.replica.InstallOwnProxy(id, fresh, freshRev)
		return errLostRace
	}
	return nil
}

// refresh installs the leader's version of a proxy after a lost race, or
// forgets it (and returns its not-found error) when it was deleted.
func (m *Manager) refresh(ctx context.Context, id string) error {
	fresh, freshRev, err := m.store.GetProxy(ctx, id)
	switch {
	case errors.Is(err, model.ErrProxyNotFound):
		m.replica.RemoveProxy(id)
		return err
	case err == nil:
		m.replica.InstallOwnProxy(id, fresh, freshRev)
	}
	return nil
}

// expiredEvents are the events of the holders a write of rec (holders
// sealed) removes past their expiry. Every write prunes expired holders, so
// this is the one path by which a lease is recorded as expired: only the
// write that removed a holder owes its event and ending record, so each
// expiry is recorded and published once, whichever write (acquire,
// release, renew, admin, sweep, delete) found it.
func expiredEvents(rec *record.Proxy, holders []record.Holder, now time.Time) []outbox.Event {
	out := make([]outbox.Event, 0, len(holders))
	for _, h := range holders {
		l := rec.LeaseFor(h, 0, model.LeaseExpired)
		l.ReleasedAt = endTime(model.LeaseExpired, h.ExpiresAt, now)
		out = append(out, outbox.Event{Name: model.EventExpired, Payload: &model.ExpiredEvent{Lease: &l, PoolName: l.PoolName, ExpiredAt: now}})
	}
	return out
}

// releasedEvent is the event of a lease a write releases at now, with the
// outcome the release reported (nil: none).
func releasedEvent(rec *record.Proxy, h record.Holder, now time.Time, outcome *model.Outcome, reason *string) outbox.Event {
	l := rec.LeaseFor(h, 0, model.LeaseReleased)
	l.ReleasedAt = endTime(model.LeaseReleased, h.ExpiresAt, now)
	return outbox.Event{Name: model.EventReleased, Payload: &model.ReleaseEvent{Lease: &l, PoolName: l.PoolName,
		ReleasedAt: *l.ReleasedAt, LeaseDurationMs: ms(l.ReleasedAt.Sub(l.AcquiredAt)), Outcome: outcome, Reason: reason}}
}

// owe builds the outbox entry of a write that causes events, with the pool
// statistics as they will be once it commits; nil when it causes none.
func (m *Manager) owe(events []outbox.Event, now time.Time, statsAfter func() model.PoolStatsSnapshot) *outbox.Entry {
	if len(events) == 0 {
		return nil
	}
	m.advance()
	e := &outbox.Entry{At: now, Events: events}
	if m.opts.outbox != nil {
		e.Worker = m.opts.outbox.WorkerID()
	}
	e.SetPoolStats(statsAfter())
	return e
}

// owed is what the write of entry carries in its headers: nothing without
// an outbox (a Go program embedding the manager, with callbacks only).
func (m *Manager) owed(e *outbox.Entry) kvstore.Owed {
	if e == nil || m.opts.outbox == nil {
		return kvstore.Owed{}
	}
	return kvstore.Owed{Worker: e.Worker, Entry: e.Encode()}
}

// begin registers a write of a proxy of pool that owes e.
func (m *Manager) begin(e *outbox.Entry, pool string) uint64 {
	if e == nil || m.opts.outbox == nil {
		return 0
	}
	return m.opts.outbox.Begin(m.store.ProxiesStreamOf(pool), m.replica.Seen(m.store.ProxiesBucketOf(pool)))
}

func (m *Manager) abandon(ticket uint64) {
	if ticket != 0 {
		m.opts.outbox.Abandon(ticket)
	}
}

// committed delivers what a write committed at rev owed: the ending records
// of the leases it ended (written before the request answers, so reads find
// them), the callbacks, and the events through the outbox, with ids derived
// from rev.
func (m *Manager) committed(ctx context.Context, ticket, rev uint64, pool string, e *outbox.Entry) {
	if e == nil {
		return
	}
	e.Seal(rev)
	for _, l := range e.Endings() {
		m.store.PutEnding(ctx, l)
	}
	for _, ev := range e.Events {
		m.fire(ev)
	}
	if ticket != 0 {
		_, span := tracing.Start(ctx, "pharox.events.publish", attribute.Int("pharox.events", len(e.Events)))
		m.opts.outbox.Committed(ticket, m.store.ProxiesStreamOf(pool), rev, e)
		span.End()
	}
}

// fire runs the callbacks registered for an event.
func (m *Manager) fire(ev outbox.Event) {
	switch p := ev.Payload.(type) {
	case *model.AcquireEvent:
		runHooks(m, &m.onAcquire, *p)
	case *model.ReleaseEvent:
		runHooks(m, &m.onRelease, *p)
	case *model.ExpiredEvent:
		runHooks(m, &m.onExpired, *p)
		m.log.Debug("expired", zap.String("lease_id", p.Lease.ID), zap.String("proxy_id", p.Lease.ProxyID))
	case *model.RenewedEvent:
		runHooks(m, &m.onRenew, *p)
	case *model.HealthEvent:
		runHooks(m, &m.onHealth, *p)
	case *model.CooldownEvent:
		runHooks(m, &m.onCooldown, *p)
		m.log.Info("proxy cooling down", zap.String("proxy_id", p.ProxyID), zap.String("pool", p.PoolName),
			zap.Int("consecutive_failures", p.ConsecutiveFailures), zap.Time("cooldown_until", p.CooldownUntil))
	}
}
