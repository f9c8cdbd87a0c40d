package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/model"
)

// ErrNotEligible means the proxy, as the latest write left it, cannot take
// this lease (not active, no longer matching, or full); try another one.
var ErrNotEligible = errors.New("proxy not eligible")

// Grant is a committed lease and the proxy it holds.
type Grant struct {
	Lease model.Lease
	Proxy model.Proxy
	// Expired are leases the committing write found expired and recorded.
	Expired []model.Lease
}

// TryAcquire makes one revision-checked attempt to add a lease for consumer
// to the proxy. eligible re-checks the proxy against the request on the
// record the write is based on. The write's KV revision is the lease's
// fencing token. ErrCASConflict: lost a race (replica refreshed); try again.
// ErrNotEligible: pick another proxy.
func (s *Store) TryAcquire(ctx context.Context, proxyID string, consumer model.Consumer, duration time.Duration, eligible func(*ProxyRecord) bool) (Grant, error) {
	h := Holder{LeaseID: uuid.NewString(), ConsumerID: consumer.ID, ConsumerName: consumer.Name}
	m, err := s.TryMutateProxy(ctx, proxyID, func(rec *ProxyRecord, now time.Time) error {
		if rec.Status != model.ProxyActive || !eligible(rec) || !rec.HasRoom(now.Add(-s.opts.grace)) {
			return ErrNotEligible
		}
		h.AcquiredAt = now
		h.ExpiresAt = now.Add(duration)
		rec.Holders = append(rec.Holders, h)
		return nil
	})
	if errors.Is(err, model.ErrProxyNotFound) {
		return Grant{}, ErrNotEligible
	}
	if err != nil {
		return Grant{Expired: m.Expired}, err
	}
	lease := m.Record.leaseFor(h, model.LeaseActive)
	lease.FencingToken = m.Rev
	data, _ := json.Marshal(lease)
	leaseRev, err := s.leases.Create(ctx, lease.ID, data)
	if err != nil && !s.leaseWritten(lease.ID) {
		// The slot is counted but its lease cannot be found: give it back so
		// the failed request changes nothing. Should that fail too, the
		// holder still lapses at its expiry.
		s.undoHold(proxyID, h.LeaseID)
		return Grant{Expired: m.Expired}, storeErr("create lease record", err)
	}
	if err == nil {
		s.granted.put(lease, leaseRev)
	}
	return Grant{Lease: lease, Proxy: m.Record.Model(s.Horizon()), Expired: m.Expired}, nil
}

// Release ends a lease. It reports changed=false, with the lease as it is,
// when the lease had already ended: a release is counted once.
func (s *Store) Release(ctx context.Context, leaseID string, consumerName *string) (lease model.Lease, changed bool, expired []model.Lease, err error) {
	var rev uint64
	if c, ok := s.granted.take(leaseID); ok && c.lease.ExpiresAt.After(s.Horizon()) {
		lease, rev = c.lease, c.rev
	} else if lease, rev, err = s.getLeaseRecord(ctx, leaseID); err != nil {
		return lease, false, nil, err
	}
	if consumerName != nil && *consumerName != lease.ConsumerName {
		return lease, false, nil, fmt.Errorf("%w: lease %s is held by consumer %q, not %q", model.ErrForbidden, leaseID, lease.ConsumerName, *consumerName)
	}
	if lease.Status != model.LeaseActive {
		return lease, false, nil, nil
	}
	var removed *Holder
	m, err := s.MutateProxy(ctx, lease.ProxyID, func(rec *ProxyRecord, now time.Time) error {
		removed = nil
		i := rec.holder(leaseID)
		if i < 0 {
			return errNoChange
		}
		h := rec.Holders[i]
		removed = &h
		rec.Holders = append(rec.Holders[:i], rec.Holders[i+1:]...)
		return nil
	})
	if err != nil && !errors.Is(err, model.ErrProxyNotFound) {
		return lease, false, nil, err
	}
	if removed != nil && m.Written {
		// The record read above is the base of the ending's write: no second
		// read unless a renew changed it meanwhile.
		now := s.Now()
		lease.Status = model.LeaseReleased
		lease.ExpiresAt = removed.ExpiresAt
		lease.ReleasedAt = endTime(model.LeaseReleased, lease.ExpiresAt, now)
		data, _ := json.Marshal(lease)
		if _, err := s.leases.Update(ctx, leaseID, data, rev); err == nil {
			return lease, true, m.Expired, nil
		}
		return s.finishLease(ctx, m.Record, *removed, model.LeaseReleased, now), true, m.Expired, nil
	}
	// The holder was gone: expired (this write or an earlier one recorded
	// it), or released by a concurrent request that counted it.
	for _, e := range m.Expired {
		if e.ID == leaseID {
			return e, false, m.Expired, nil
		}
	}
	latest, _, err := s.getLeaseRecord(ctx, leaseID)
	if err != nil {
		return lease, false, m.Expired, err
	}
	if latest.Status == model.LeaseActive {
		// A holder without its record's ending: the request that removed it
		// failed half-way. Record the ending so reads stop showing it active.
		latest = endLease(latest, s.Now(), s.Horizon())
		data, _ := json.Marshal(latest)
		if _, err := s.leases.Update(ctx, leaseID, data, rev); err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return lease, false, m.Expired, storeErr("repair lease record", err)
		}
	}
	return latest, false, m.Expired, nil
}

// GetLease reads a lease record. A lease past its expiry is shown as expired
// even before a sweep has recorded it.
func (s *Store) GetLease(ctx context.Context, leaseID string) (model.Lease, error) {
	lease, _, err := s.getLeaseRecord(ctx, leaseID)
	return lease, err
}

// CleanupExpired records every lease past its expiry as expired and frees its
// slot. A lease is counted by the one write that prunes it, so concurrent
// sweeps on several workers publish one expiry each.
func (s *Store) CleanupExpired(ctx context.Context) ([]model.Lease, error) {
	// Bring the replica up to every acknowledged write first, so a lease
	// committed through another worker is swept by this call.
	if err := s.syncReplica(ctx, s.proxies); err != nil {
		return nil, err
	}
	horizon := s.Horizon()
	var out []model.Lease
	var errs []error
	for _, e := range s.replica.allProxies() {
		if e.rec.LiveHolders(horizon) == len(e.rec.Holders) {
			continue
		}
		m, err := s.MutateProxy(ctx, e.rec.ID, func(*ProxyRecord, time.Time) error { return errNoChange })
		out = append(out, m.Expired...)
		if err != nil && !errors.Is(err, model.ErrProxyNotFound) {
			errs = append(errs, err)
		}
	}
	return out, errors.Join(errs...)
}

// leaseWritten reports whether a lease record whose create got no answer
// exists after all.
func (s *Store) leaseWritten(leaseID string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _, err := s.leaderGet(ctx, s.leases, leaseID)
	return err == nil
}

// OnLeasesExpired registers fn to be told of leases recorded as expired by
// writes that return no list of their own (a delete, an undone hold), so
// that their events are published too.
func (s *Store) OnLeasesExpired(fn func([]model.Lease)) {
	s.consumerMu.Lock()
	defer s.consumerMu.Unlock()
	s.onExpired = fn
}

func (s *Store) reportExpired(leases []model.Lease) {
	s.consumerMu.RLock()
	fn := s.onExpired
	s.consumerMu.RUnlock()
	if fn != nil && len(leases) > 0 {
		fn(leases)
	}
}

// undoHold removes a holder whose lease record could not be written.
func (s *Store) undoHold(proxyID, leaseID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := s.MutateProxy(ctx, proxyID, func(rec *ProxyRecord, _ time.Time) error {
		i := rec.holder(leaseID)
		if i < 0 {
			return errNoChange
		}
		rec.Holders = append(rec.Holders[:i], rec.Holders[i+1:]...)
		return nil
	})
	s.reportExpired(m.Expired)
	if err != nil {
		s.log.Warn("could not give back a slot whose lease record failed; it lapses at its expiry",
			zap.String("proxy_id", proxyID), zap.String("lease_id", leaseID), zapErr(err))
	}
}

// finishLeases writes the ending of leases whose holders a committed write
// removed, and returns them as ended. Only the write that removed a holder
// calls this, so each ending is recorded and published once.
func (s *Store) finishLeases(ctx context.Context, rec *ProxyRecord, holders []Holder, status model.LeaseStatus, now time.Time) []model.Lease {
	out := make([]model.Lease, 0, len(holders))
	for _, h := range holders {
		out = append(out, s.finishLease(ctx, rec, h, status, now))
	}
	return out
}

func (s *Store) finishLease(ctx context.Context, rec *ProxyRecord, h Holder, status model.LeaseStatus, now time.Time) model.Lease {
	for attempt := 0; attempt < 8; attempt++ {
		lease, rev, err := s.getLeaseRecord(ctx, h.LeaseID)
		if errors.Is(err, model.ErrLeaseNotFound) {
			// The acquire that made this holder failed before its record
			// was written; record the ending so the event has a lease.
			lease = rec.leaseFor(h, status)
			lease.ReleasedAt = endTime(status, h.ExpiresAt, now)
			data, _ := json.Marshal(lease)
			if _, err := s.leases.Create(ctx, lease.ID, data); err == nil || !errors.Is(err, jetstream.ErrKeyExists) {
				return lease
			}
			continue
		}
		if err != nil {
			break
		}
		lease.Status = status
		lease.ReleasedAt = endTime(status, lease.ExpiresAt, now)
		data, _ := json.Marshal(lease)
		_, err = s.leases.Update(ctx, lease.ID, data, rev)
		if err == nil {
			return lease
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			break
		}
	}
	s.log.Warn("could not record a lease's ending; reads show it by its expiry",
		zap.String("lease_id", h.LeaseID), zap.String("status", string(status)))
	lease := rec.leaseFor(h, status)
	lease.ReleasedAt = endTime(status, h.ExpiresAt, now)
	return lease
}

// getLeaseRecord reads a lease record as of now: an active one past its
// expiry is shown expired.
func (s *Store) getLeaseRecord(ctx context.Context, leaseID string) (model.Lease, uint64, error) {
	var lease model.Lease
	rev, err := s.getJSON(ctx, s.leases, leaseID, &lease)
	if errors.Is(err, errNotFound) {
		return lease, 0, fmt.Errorf("%w: lease %q does not exist", model.ErrLeaseNotFound, leaseID)
	}
	if err != nil {
		return lease, 0, err
	}
	if lease.Status == model.LeaseActive && !lease.ExpiresAt.After(s.Horizon()) {
		lease.Status = model.LeaseExpired
		lease.ReleasedAt = endTime(model.LeaseExpired, lease.ExpiresAt, s.Now())
	}
	return lease, rev, nil
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

// Renew sets an active lease's expiry to now + duration in the same
// revision-checked way a lease is committed; the fencing token stays.
// It returns the renewed lease and its expiry before.
func (s *Store) Renew(ctx context.Context, leaseID string, consumerName *string, duration time.Duration) (model.Lease, time.Time, []model.Lease, error) {
	s.granted.take(leaseID) // its revision is about to change
	lease, rev, err := s.getLeaseRecord(ctx, leaseID)
	if err != nil {
		return lease, time.Time{}, nil, err
	}
	if consumerName != nil && *consumerName != lease.ConsumerName {
		return lease, time.Time{}, nil, fmt.Errorf("%w: lease %s is held by consumer %q, not %q", model.ErrForbidden, leaseID, lease.ConsumerName, *consumerName)
	}
	if lease.Status != model.LeaseActive {
		return lease, time.Time{}, nil, leaseNotActive(lease)
	}
	var previous, next time.Time
	m, err := s.MutateProxy(ctx, lease.ProxyID, func(rec *ProxyRecord, now time.Time) error {
		i := rec.holder(leaseID)
		if i < 0 {
			return model.ErrLeaseNotActive
		}
		previous = rec.Holders[i].ExpiresAt
		next = now.Add(duration)
		rec.Holders[i].ExpiresAt = next
		return nil
	})
	if errors.Is(err, model.ErrLeaseNotActive) || errors.Is(err, model.ErrProxyNotFound) {
		latest, _, gerr := s.getLeaseRecord(ctx, leaseID)
		if gerr != nil {
			latest = lease
		}
		if latest.Status == model.LeaseActive {
			latest = endLease(latest, s.Now(), s.Horizon())
		}
		return latest, time.Time{}, m.Expired, leaseNotActive(latest)
	}
	if err != nil {
		return lease, time.Time{}, m.Expired, err
	}
	// The holder decides the slot; the record follows it. A concurrent
	// renew or release changed the record meanwhile: follow the latest. If
	// the record cannot follow, the extension is taken back, so that the
	// failed request leaves the lease as it was.
	undo := func() []model.Lease {
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		u, _ := s.MutateProxy(uctx, lease.ProxyID, func(rec *ProxyRecord, _ time.Time) error {
			if i := rec.holder(leaseID); i >= 0 && rec.Holders[i].ExpiresAt.Equal(next) {
				rec.Holders[i].ExpiresAt = previous
				return nil
			}
			return errNoChange
		})
		return append(m.Expired, u.Expired...)
	}
	for attempt := 0; ; attempt++ {
		lease.ExpiresAt = next
		data, _ := json.Marshal(lease)
		_, err = s.leases.Update(ctx, leaseID, data, rev)
		if err == nil {
			return lease, previous, m.Expired, nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) || attempt >= 8 {
			break
		}
		var gerr error
		if lease, rev, gerr = s.getLeaseRecord(ctx, leaseID); gerr != nil {
			err = gerr
			break
		}
		if lease.Status != model.LeaseActive {
			return lease, time.Time{}, undo(), leaseNotActive(lease)
		}
	}
	return lease, time.Time{}, undo(), storeErr("renew lease record", err)
}

func leaseNotActive(l model.Lease) error {
	return fmt.Errorf("%w: lease %s is %s", model.ErrLeaseNotActive, l.ID, l.Status)
}
