package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
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
// record the write is based on. That write is the whole commit: an active
// lease lives only as a holder in its proxy's record, and the write's KV
// revision is its fencing token. ErrCASConflict: lost a race (replica
// refreshed); try again. ErrNotEligible: pick another proxy.
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
	return Grant{Lease: m.Record.leaseFor(h, m.Rev, model.LeaseActive), Proxy: m.Record.Model(s.Horizon()), Expired: m.Expired}, nil
}

// Release ends a lease. It reports changed=false, with the lease as it is,
// when the lease had already ended: a release is counted once.
func (s *Store) Release(ctx context.Context, leaseID string, consumerName *string) (lease model.Lease, changed bool, expired []model.Lease, err error) {
	held, ended, err := s.findLease(ctx, leaseID, false)
	if err != nil {
		return ended, false, nil, err
	}
	if held == nil {
		return ended, false, nil, checkConsumer(ended, consumerName)
	}
	if err := checkConsumer(*held, consumerName); err != nil {
		return *held, false, nil, err
	}
	if held.Status != model.LeaseActive {
		// Past its expiry: not counted again here; a sweep (or the next
		// write of the proxy) records it, once.
		return *held, false, nil, nil
	}
	var removed *Holder
	m, err := s.MutateProxy(ctx, held.ProxyID, func(rec *ProxyRecord, _ time.Time) error {
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
		return *held, false, nil, err
	}
	if removed != nil && m.Written {
		lease = m.Record.leaseFor(*removed, m.Rev, model.LeaseReleased)
		lease.ReleasedAt = endTime(model.LeaseReleased, lease.ExpiresAt, s.Now())
		s.recordEnding(ctx, lease)
		return lease, true, m.Expired, nil
	}
	// The holder was gone: expired (this write or an earlier one recorded
	// it), or ended by a concurrent request that counted it.
	lease, err = s.endingOf(ctx, *held, m.Expired)
	return lease, false, m.Expired, err
}

// GetLease reads a lease as of now, reflecting every write acknowledged
// before the call. A lease past its expiry is shown as expired even before
// a sweep has recorded it.
func (s *Store) GetLease(ctx context.Context, leaseID string) (model.Lease, error) {
	if err := s.syncReplica(ctx, s.proxies); err != nil {
		return model.Lease{}, err
	}
	held, ended, err := s.findLease(ctx, leaseID, true)
	if held != nil {
		return *held, nil
	}
	return ended, err
}

// Renew sets an active lease's expiry to now + duration with one
// revision-checked write of its proxy's record; the fencing token stays.
// It returns the renewed lease and its expiry before.
func (s *Store) Renew(ctx context.Context, leaseID string, consumerName *string, duration time.Duration) (model.Lease, time.Time, []model.Lease, error) {
	held, ended, err := s.findLease(ctx, leaseID, false)
	if err != nil {
		return ended, time.Time{}, nil, err
	}
	if held == nil {
		if err := checkConsumer(ended, consumerName); err != nil {
			return ended, time.Time{}, nil, err
		}
		return ended, time.Time{}, nil, leaseNotActive(ended)
	}
	if err := checkConsumer(*held, consumerName); err != nil {
		return *held, time.Time{}, nil, err
	}
	if held.Status != model.LeaseActive {
		return *held, time.Time{}, nil, leaseNotActive(*held)
	}
	var previous time.Time
	var renewed *Holder
	m, err := s.MutateProxy(ctx, held.ProxyID, func(rec *ProxyRecord, now time.Time) error {
		renewed = nil
		i := rec.holder(leaseID)
		if i < 0 {
			return errNoChange
		}
		previous = rec.Holders[i].ExpiresAt
		rec.Holders[i].ExpiresAt = now.Add(duration)
		h := rec.Holders[i]
		renewed = &h
		return nil
	})
	if err != nil && !errors.Is(err, model.ErrProxyNotFound) {
		return *held, time.Time{}, m.Expired, err
	}
	if renewed != nil && m.Written {
		return m.Record.leaseFor(*renewed, m.Rev, model.LeaseActive), previous, m.Expired, nil
	}
	lease, err := s.endingOf(ctx, *held, m.Expired)
	if err != nil {
		return lease, time.Time{}, m.Expired, err
	}
	return lease, time.Time{}, m.Expired, leaseNotActive(lease)
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

// OnLeasesExpired registers fn to be told of leases recorded as expired by
// writes that return no list of their own (a delete), so that their events
// are published too.
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

// findLease looks a lease up by id: held (as its holder shows it now) or
// ended (as its ending record says). A miss in a replica not synced yet is
// asked again once it has caught up with every acknowledged write.
func (s *Store) findLease(ctx context.Context, leaseID string, synced bool) (*model.Lease, model.Lease, error) {
	for ; ; synced = true {
		e, last := s.replica.lease(leaseID)
		var h *Holder
		if e != nil {
			if i := e.rec.holder(leaseID); i >= 0 {
				h = &e.rec.Holders[i]
			}
		}
		switch {
		case h != nil:
			l := e.rec.leaseFor(*h, e.rev, model.LeaseActive)
			if l.ExpiresAt.After(s.Horizon()) {
				return &l, model.Lease{}, nil
			}
			// Expired as this replica has it: a renew elsewhere may say
			// otherwise, so only a synced replica decides that.
			if synced {
				l = endLease(l, s.Now(), s.Horizon())
				return &l, model.Lease{}, nil
			}
		case last != nil || synced:
			ended, err := s.endedLease(ctx, leaseID, last)
			return nil, ended, err
		}
		if err := s.syncReplica(ctx, s.proxies); err != nil {
			return nil, model.Lease{}, err
		}
	}
}

// endingOf is how a lease whose holder a write found gone ended: as that
// write recorded it, or as its ending record says.
func (s *Store) endingOf(ctx context.Context, held model.Lease, expired []model.Lease) (model.Lease, error) {
	for _, e := range expired {
		if e.ID == held.ID {
			return e, nil
		}
	}
	return s.endedLease(ctx, held.ID, &held)
}

// endedLease reads the ending record of a lease its replica does not hold.
// The write that removed a holder writes the record right after, so a
// missing one is waited for briefly: 200 ms when the replica saw the holder
// go (last, its last view), 150 ms when it never saw the holder at all (a
// refresh or the watch can skip revisions, and a lease can start and end
// between two of them). Should the remover have died in between, the
// ending is told from last, or the lease is unknown.
func (s *Store) endedLease(ctx context.Context, leaseID string, last *model.Lease) (model.Lease, error) {
	tries, pause := 20, 10*time.Millisecond
	if last == nil {
		tries, pause = 3, 50*time.Millisecond
	}
	for attempt := 0; ; attempt++ {
		var lease model.Lease
		_, err := s.getJSON(ctx, s.leases, leaseID, &lease)
		if err == nil {
			return lease, nil
		}
		if !errors.Is(err, errNotFound) {
			return lease, err
		}
		if attempt >= tries || ctx.Err() != nil {
			if last == nil {
				return lease, fmt.Errorf("%w: lease %q does not exist", model.ErrLeaseNotFound, leaseID)
			}
			return endLease(*last, s.Now(), s.Horizon()), nil
		}
		sleepJitter(ctx, pause)
	}
}

// finishLeases records the ending of leases whose holders a committed write
// removed (rec as written; the holders sealed) and returns them as ended.
// Only the write that removed a holder calls this, so each ending is
// recorded and published once.
func (s *Store) finishLeases(ctx context.Context, rec *ProxyRecord, holders []Holder, status model.LeaseStatus, now time.Time) []model.Lease {
	out := make([]model.Lease, 0, len(holders))
	for _, h := range holders {
		l := rec.leaseFor(h, 0, status)
		l.ReleasedAt = endTime(status, h.ExpiresAt, now)
		s.recordEnding(ctx, l)
		out = append(out, l)
	}
	return out
}

// recordEnding writes an ended lease's record, the only record a lease has
// of its own: reads find active leases in their proxies' holders, ended ones
// here. The ending has committed already, so neither a cancelled request
// nor a failed write may undo it: the write is retried for as long as a
// JetStream leader election takes (measured 4-9 s), and the reply waits.
func (s *Store) recordEnding(ctx context.Context, l model.Lease) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	data, _ := json.Marshal(l)
	var err error
	for attempt := 0; ctx.Err() == nil; attempt++ {
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = s.leases.Put(actx, l.ID, data)
		acancel()
		if err == nil {
			return
		}
		sleepJitter(ctx, backoff(attempt))
	}
	s.log.Error("could not record a lease's ending; reads tell it from its last holder",
		zap.String("lease_id", l.ID), zap.String("status", string(l.Status)), zapErr(err))
}

func checkConsumer(l model.Lease, consumerName *string) error {
	if consumerName != nil && *consumerName != l.ConsumerName {
		return fmt.Errorf("%w: lease %s is held by consumer %q, not %q", model.ErrForbidden, l.ID, l.ConsumerName, *consumerName)
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
	return fmt.Errorf("%w: lease %s is %s", model.ErrLeaseNotActive, l.ID, l.Status)
}
