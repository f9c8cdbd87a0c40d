package manager

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/internal/retry"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/record"
)

// A change decides what to write to a proxy's record, given the latest
// record this worker knows (a copy it may change) and the time of the
// write. It may be called again on a retry, so it must have no side effects
// beyond its own variables.
type change func(rec *record.Proxy, now time.Time) error

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
			return mut, fmt.Errorf("%w: proxy %s kept changing under %d attempts", model.ErrUnavailable, id, attempt+1)
		}
		retry.Sleep(ctx, retry.Backoff(attempt))
	}
}

// tryMutateProxy makes one attempt of mutateProxy: it bases the write on the
// replica's revision of the record (no read when the replica is current),
// prunes the holders that expired in the same write, and commits with one
// revision-checked kvstore write. errLostRace: try again.
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
	err = fn(next, now)
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
	newRev, err := m.store.UpdateProxy(ctx, next, rev)
	if errors.Is(err, kvstore.ErrRevisionConflict) || errors.Is(err, model.ErrProxyNotFound) {
		if err := m.refresh(ctx, id); err != nil {
			return mutation{}, err
		}
		return mutation{}, errLostRace
	}
	if err != nil {
		return mutation{}, err
	}
	m.installOwn(next, newRev)
	ended := m.expire(ctx, next, expired, now)
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

// expire is the one path by which a lease is recorded as expired: a
// committed write of rec (as written, holders sealed) removed these
// holders past their expiry. Only the write that removed a holder calls it,
// so each expiry is recorded and its callbacks fire once, whichever write
// (acquire, release, renew, admin, sweep, delete) found it. It returns the
// leases as recorded.
func (m *Manager) expire(ctx context.Context, rec *record.Proxy, holders []record.Holder, now time.Time) []model.Lease {
	if len(holders) == 0 {
		return nil
	}
	fns := hooks(m, &m.onExpired)
	out := make([]model.Lease, 0, len(holders))
	for _, h := range holders {
		l := rec.LeaseFor(h, 0, model.LeaseExpired)
		l.ReleasedAt = endTime(model.LeaseExpired, h.ExpiresAt, now)
		m.store.PutEnding(ctx, l)
		ev := model.ExpiredEvent{Lease: &l, PoolName: l.PoolName, ExpiredAt: now, PoolStats: m.localStats(l.PoolName)}
		for _, fn := range fns {
			fn(ev)
		}
		m.log.Debug("expired", zap.String("lease_id", l.ID), zap.String("proxy_id", l.ProxyID))
		out = append(out, l)
	}
	return out
}

// released records the ending of leases a committed write released and
// fires their release callbacks. Only the write that removed a holder calls
// it, so a release is counted once.
func (m *Manager) released(ctx context.Context, leases []model.Lease) {
	m.releasedWith(ctx, leases, nil, nil)
}

// releasedWith is released for leases whose release reported an outcome.
func (m *Manager) releasedWith(ctx context.Context, leases []model.Lease, outcome *model.Outcome, reason *string) {
	fns := hooks(m, &m.onRelease)
	for i := range leases {
		l := leases[i]
		m.store.PutEnding(ctx, l)
		ev := model.ReleaseEvent{Lease: &l, PoolName: l.PoolName, ReleasedAt: *l.ReleasedAt,
			LeaseDurationMs: ms(l.ReleasedAt.Sub(l.AcquiredAt)), PoolStats: m.localStats(l.PoolName),
			Outcome: outcome, Reason: reason}
		for _, fn := range fns {
			fn(ev)
		}
	}
}
