package manager

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/internal/retry"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/outbox"
	"github.com/pharox/pharox-nats/record"
)

// ReleaseProxy ends a lease with one revision-checked write of its proxy's
// record that removes its holder and records the release's outcome.
// Releasing an ended lease returns it unchanged, records nothing and fires
// nothing: a release is counted once, by the write that removed the holder.
func (m *Manager) ReleaseProxy(ctx context.Context, req model.ReleaseRequest) (model.Lease, error) {
	lease, _, err := m.release(ctx, req)
	return lease, err
}

// release is ReleaseProxy; changed reports whether this call ended the
// lease (and counted it).
func (m *Manager) release(ctx context.Context, req model.ReleaseRequest) (model.Lease, bool, error) {
	if err := checkLeaseRef(req.LeaseID, req.ConsumerName); err != nil {
		return model.Lease{}, false, err
	}
	if err := checkRelease(req); err != nil {
		return model.Lease{}, false, err
	}
	held, ended, err := m.findLease(ctx, req.LeaseID, false)
	if err != nil {
		return ended, false, err
	}
	if held == nil {
		return ended, false, checkConsumer(ended, req.ConsumerName)
	}
	if err := checkConsumer(*held, req.ConsumerName); err != nil {
		return *held, false, err
	}
	if held.Status != model.LeaseActive {
		// Past its expiry: not counted again here; a sweep (or the next
		// write of the proxy) records it, once.
		return *held, false, nil
	}
	var cooldown *model.Cooldown
	if req.Outcome != nil && *req.Outcome == model.OutcomeFailure {
		if cooldown, err = m.poolCooldown(ctx, held.PoolName); err != nil {
			return *held, false, err
		}
	}
	released, mut, err := mutateHolder(ctx, m, held.ProxyID, req.LeaseID, func(rec *record.Proxy, i int, now time.Time) (*model.Lease, []outbox.Event) {
		ev := releasedEvent(rec, rec.Holders[i], now, req.Outcome, req.Reason)
		rec.Holders = append(rec.Holders[:i], rec.Holders[i+1:]...)
		events := []outbox.Event{ev}
		if fb := recordOutcome(rec, req.Outcome, cooldown, now); fb.cooled {
			events = append(events, cooldownEvent(rec, req.Reason))
		}
		return ev.Payload.(*model.ReleaseEvent).Lease, events
	})
	if err != nil && !errors.Is(err, model.ErrProxyNotFound) {
		return *held, false, err
	}
	if released == nil || !mut.written {
		// The holder was gone: expired (this write or an earlier one
		// recorded it), or ended by a concurrent request that counted it.
		lease, err := m.endedLease(ctx, held.ID, held)
		m.log.Debug("release: already ended", zap.String("lease_id", lease.ID), zap.String("status", string(lease.Status)))
		return lease, false, err
	}
	m.log.Debug("release", zap.String("lease_id", released.ID), zap.String("proxy_id", released.ProxyID),
		zap.Stringp("outcome", (*string)(req.Outcome)), zap.Int("consecutive_failures", mut.rec.ConsecutiveFailures))
	return *released, true, nil
}

// RenewLease extends an active lease to now + duration_seconds (same bounds
// as acquire) with one revision-checked write of its proxy's record. The
// fencing token does not change.
func (m *Manager) RenewLease(ctx context.Context, req model.RenewRequest) (model.Lease, error) {
	lease, _, err := m.renew(ctx, req)
	return lease, err
}

// renew is RenewLease; it also returns the lease's expiry before.
func (m *Manager) renew(ctx context.Context, req model.RenewRequest) (model.Lease, time.Time, error) {
	var none time.Time
	if err := checkLeaseRef(req.LeaseID, req.ConsumerName); err != nil {
		return model.Lease{}, none, err
	}
	if req.DurationSeconds == nil {
		return model.Lease{}, none, model.Errorf(model.ErrBadRequest, "duration_seconds is required")
	}
	d, err := m.checkDuration(req.DurationSeconds)
	if err != nil {
		return model.Lease{}, none, err
	}
	held, ended, err := m.findLease(ctx, req.LeaseID, false)
	if err != nil {
		return ended, none, err
	}
	if held == nil {
		if err := checkConsumer(ended, req.ConsumerName); err != nil {
			return ended, none, err
		}
		return ended, none, leaseNotActive(ended)
	}
	if err := checkConsumer(*held, req.ConsumerName); err != nil {
		return *held, none, err
	}
	if held.Status != model.LeaseActive {
		return *held, none, leaseNotActive(*held)
	}
	renewed, mut, err := mutateHolder(ctx, m, held.ProxyID, req.LeaseID, func(rec *record.Proxy, i int, now time.Time) (*model.RenewedEvent, []outbox.Event) {
		previous := rec.Holders[i].ExpiresAt
		rec.Holders[i].ExpiresAt = now.Add(d)
		lease := rec.LeaseFor(rec.Holders[i], 0, model.LeaseActive)
		renewed := &model.RenewedEvent{Lease: &lease, PoolName: lease.PoolName, PreviousExpiresAt: previous}
		return renewed, []outbox.Event{{Name: model.EventRenewed, Payload: renewed}}
	})
	if err != nil && !errors.Is(err, model.ErrProxyNotFound) {
		return *held, none, err
	}
	if renewed == nil || !mut.written {
		lease, err := m.endedLease(ctx, held.ID, held)
		if err != nil {
			return lease, none, err
		}
		return lease, none, leaseNotActive(lease)
	}
	m.log.Debug("renew", zap.String("lease_id", renewed.Lease.ID), zap.Time("expires_at", renewed.Lease.ExpiresAt))
	return *renewed.Lease, renewed.PreviousExpiresAt, nil
}

// mutateHolder applies change to the holder of leaseID (at index i of the
// record's holders) with mutateProxy's revision-checked write, and returns
// what change made of the attempt that ended the retries. An attempt that
// finds no such holder (the lease ended meanwhile) changes nothing and
// leaves the result zero, so a value made by an earlier attempt that lost
// its race is never taken for this write's.
func mutateHolder[T any](ctx context.Context, m *Manager, proxyID, leaseID string, change func(rec *record.Proxy, i int, now time.Time) (T, []outbox.Event)) (T, mutation, error) {
	var made T
	mut, err := m.mutateProxy(ctx, proxyID, func(rec *record.Proxy, now time.Time) ([]outbox.Event, error) {
		var zero T
		made = zero
		i := rec.Holder(leaseID)
		if i < 0 {
			return nil, errNoChange
		}
		var events []outbox.Event
		made, events = change(rec, i, now)
		return events, nil
	})
	return made, mut, err
}

// GetLease reads a lease as of now, reflecting every write acknowledged
// before the call. A lease past its expiry is shown as expired even before
// a sweep has recorded it.
func (m *Manager) GetLease(ctx context.Context, leaseID string) (model.Lease, error) {
	if err := checkUUID("lease_id", leaseID); err != nil {
		return model.Lease{}, err
	}
	if err := m.syncProxies(ctx); err != nil {
		return model.Lease{}, err
	}
	held, ended, err := m.findLease(ctx, leaseID, true)
	if held != nil {
		return *held, nil
	}
	return ended, err
}

// CleanupExpiredLeases records every lease past its expiry as expired, frees
// its slot and fires its expired callbacks; it returns how many this call
// expired. A lease is counted by the one write that prunes it, so
// concurrent sweeps on several workers record each expiry once.
func (m *Manager) CleanupExpiredLeases(ctx context.Context) (int, error) {
	expired, err := m.cleanup(ctx)
	return len(expired), err
}

// cleanup is CleanupExpiredLeases; it returns the leases this call expired.
func (m *Manager) cleanup(ctx context.Context) ([]model.Lease, error) {
	// Bring the replica up to every acknowledged write first, so a lease
	// committed through another worker is swept by this call.
	if err := m.syncProxies(ctx); err != nil {
		return nil, err
	}
	var expired []model.Lease
	var errs []error
	for _, id := range m.replica.WithExpiredHolders(m.horizon()) {
		mut, err := m.mutateProxy(ctx, id, func(*record.Proxy, time.Time) ([]outbox.Event, error) { return nil, errNoChange })
		expired = append(expired, mut.expired...)
		if err != nil && !errors.Is(err, model.ErrProxyNotFound) {
			errs = append(errs, err)
		}
	}
	if len(expired) > 0 {
		m.log.Debug("cleanup", zap.Int("expired", len(expired)))
	}
	return expired, errors.Join(errs...)
}

// findLease looks a lease up by id: held (as its holder shows it now) or
// ended (as its ending record says). A miss in a replica not synced yet is
// asked again once it has caught up with every acknowledged write.
func (m *Manager) findLease(ctx context.Context, leaseID string, synced bool) (*model.Lease, model.Lease, error) {
	for ; ; synced = true {
		rec, rev, last := m.replica.Lease(leaseID)
		i := -1
		if rec != nil {
			i = rec.Holder(leaseID)
		}
		switch {
		case i >= 0:
			l := rec.LeaseFor(rec.Holders[i], rev, model.LeaseActive)
			if l.ExpiresAt.After(m.horizon()) {
				return &l, model.Lease{}, nil
			}
			// Expired as this replica has it: a renew elsewhere may say
			// otherwise, so only a synced replica decides that.
			if synced {
				l = endLease(l, m.now(), m.horizon())
				return &l, model.Lease{}, nil
			}
		case last != nil || synced:
			ended, err := m.endedLease(ctx, leaseID, last)
			return nil, ended, err
		}
		if err := m.syncProxies(ctx); err != nil {
			return nil, model.Lease{}, err
		}
	}
}

// endedLease reads the ending record of a lease its replica does not hold.
// The write that removed a holder writes the record right after, so a
// missing one is waited for briefly: 200 ms when the replica saw the holder
// go (last, its last view), 150 ms when it never saw the holder at all (a
// refresh or the watch can skip revisions, and a lease can start and end
// between two of them). Should the remover have died in between, the
// ending is told from last, or the lease is unknown.
func (m *Manager) endedLease(ctx context.Context, leaseID string, last *model.Lease) (model.Lease, error) {
	tries, pause := 20, 10*time.Millisecond
	if last == nil {
		tries, pause = 3, 50*time.Millisecond
	}
	for attempt := 0; ; attempt++ {
		lease, err := m.store.GetEnding(ctx, leaseID)
		if !errors.Is(err, model.ErrLeaseNotFound) {
			return lease, err
		}
		if attempt >= tries || ctx.Err() != nil {
			if last == nil {
				return lease, err
			}
			return endLease(*last, m.now(), m.horizon()), nil
		}
		if m.endingMissed != nil {
			m.endingMissed(leaseID)
		}
		retry.Sleep(ctx, pause)
	}
}

// checkLeaseRef checks the lease id and optional consumer name of a release
// or renew.
func checkLeaseRef(leaseID string, consumerName *string) error {
	if err := checkUUID("lease_id", leaseID); err != nil {
		return err
	}
	if consumerName != nil {
		return model.CheckName("consumer_name", *consumerName)
	}
	return nil
}

func checkConsumer(l model.Lease, consumerName *string) error {
	if consumerName != nil && *consumerName != l.ConsumerName {
		return model.Errorf(model.ErrForbidden, "lease %s is held by consumer %q, not %q", l.ID, l.ConsumerName, *consumerName)
	}
	return nil
}

// endLease marks a lease that is no longer held as ended at now: released
// if it had not expired by the horizon, else expired.
func endLease(l model.Lease, now, horizon time.Time) model.Lease {
	if l.ExpiresAt.After(horizon) {
		l.Status = model.LeaseReleased
	} else {
		l.Status = model.LeaseExpired
	}
	l.ReleasedAt = endTime(l.Status, l.ExpiresAt, now)
	return l
}

// endTime is a lease's released_at: when it was released, or, for an expired
// lease, its expiry — the moment its slot was free again, the same on every
// worker whenever the sweep ran.
func endTime(status model.LeaseStatus, expiresAt, now time.Time) *time.Time {
	t := now.UTC()
	if status == model.LeaseExpired {
		t = expiresAt.UTC()
	}
	return &t
}

func leaseNotActive(l model.Lease) error {
	return model.Errorf(model.ErrLeaseNotActive, "lease %s is %s", l.ID, l.Status)
}
