package kvstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/model"
)

// errNoChange lets a mutation say the record is fine as it is.
var errNoChange = errors.New("no change")

// ErrCASConflict means a revision-checked write lost to a concurrent one; the
// replica has been refreshed from the leader and the caller may try again.
var ErrCASConflict = errors.New("revision conflict")

// Mutation is the outcome of a revision-checked proxy write.
type Mutation struct {
	Record  *ProxyRecord
	Rev     uint64
	Written bool
	// Expired are leases this write found past their expiry and recorded as
	// expired; the caller publishes their events.
	Expired []model.Lease
}

// AddProxies adds proxies to a pool in one reserved range of added order.
// Either all are added or, on failure, the ones created are removed again.
func (s *Store) AddProxies(ctx context.Context, poolName string, inputs []model.ProxyInput) ([]model.Proxy, error) {
	n := uint64(len(inputs))
	pool, err := s.UpdatePool(ctx, poolName, func(r *PoolRecord) error {
		r.NextSeq += n
		return nil
	})
	if err != nil {
		return nil, err
	}
	first := pool.NextSeq - n
	recs := make([]*ProxyRecord, len(inputs))
	for i, in := range inputs {
		recs[i] = newProxyRecord(pool, first+uint64(i), in)
	}
	revs := make([]uint64, len(recs))
	errs := make([]error, len(recs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i, rec := range recs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			data := encodeRecord(rec)
			s.inflight.start(rec.ID, data, rec.clone())
			revs[i], errs[i] = s.proxies.Create(ctx, rec.ID, data)
		}()
	}
	wg.Wait()
	// The watch installs the records in hand until it has delivered them.
	defer func() {
		for _, rec := range recs {
			s.inflight.done(rec.ID)
		}
	}()
	if err := errors.Join(errs...); err != nil {
		// Undo with a fresh context: the request's may be what ran out.
		uctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for i, rec := range recs {
			if errs[i] == nil {
				_ = s.proxies.Delete(uctx, rec.ID, jetstream.LastRevision(revs[i]))
			}
		}
		return nil, storeErr("add proxies", err)
	}
	var last uint64
	for _, r := range revs {
		last = max(last, r)
	}
	if err := s.replica.waitSeen(ctx, ProxiesBucket, last); err != nil {
		return nil, storeErr("add proxies", err)
	}
	horizon := s.Horizon()
	out := make([]model.Proxy, len(recs))
	for i, rec := range recs {
		out[i] = rec.Model(horizon)
	}
	return out, nil
}

// GetProxy reads a proxy from the bucket's leader.
func (s *Store) GetProxy(ctx context.Context, id string) (model.Proxy, error) {
	rec, _, err := s.getProxyRecord(ctx, id)
	if err != nil {
		return model.Proxy{}, err
	}
	return rec.Model(s.Horizon()), nil
}

// ListProxies pages through a pool's proxies in added order. The cursor is
// the added-order position after which the next page starts.
func (s *Store) ListProxies(ctx context.Context, poolName string, status *model.ProxyStatus, limit int, cursor string) (model.ProxiesPage, error) {
	page := model.ProxiesPage{Proxies: []model.Proxy{}}
	var after uint64
	if cursor != "" {
		v, err := strconv.ParseUint(cursor, 10, 64)
		if err != nil {
			return page, fmt.Errorf("%w: cursor %q is not one this service returned", model.ErrBadRequest, cursor)
		}
		after = v
	}
	if err := s.syncPool(ctx, poolName); err != nil {
		return page, err
	}
	horizon := s.Horizon()
	more := false
	var lastSeq uint64
	s.replica.scanMembers(poolName, func(e *proxyEntry) bool {
		if e.rec.Seq <= after || (status != nil && e.rec.Status != *status) {
			return true
		}
		if len(page.Proxies) == limit {
			more = true
			return false
		}
		page.Proxies = append(page.Proxies, e.rec.Model(horizon))
		lastSeq = e.rec.Seq
		return true
	})
	if more {
		c := strconv.FormatUint(lastSeq, 10)
		page.NextCursor = &c
	}
	return page, nil
}

// MutateProxy applies fn to the proxy's latest record with a revision-checked
// write, retrying on conflict. Expired holders are pruned in the same write.
func (s *Store) MutateProxy(ctx context.Context, id string, fn func(rec *ProxyRecord, now time.Time) error) (Mutation, error) {
	for attempt := 0; ; attempt++ {
		m, err := s.TryMutateProxy(ctx, id, fn)
		if !errors.Is(err, ErrCASConflict) {
			return m, err
		}
		if attempt >= s.opts.maxCASRetries {
			return m, fmt.Errorf("%w: proxy %s kept changing under %d attempts", model.ErrUnavailable, id, attempt+1)
		}
		sleepJitter(ctx, backoff(attempt))
	}
}

// TryMutateProxy makes one attempt of MutateProxy, based on the replica's
// revision of the record (no read when the replica is current). On a lost
// race it refreshes the replica from the leader and returns ErrCASConflict.
func (s *Store) TryMutateProxy(ctx context.Context, id string, fn func(rec *ProxyRecord, now time.Time) error) (Mutation, error) {
	unlock, err := s.locks.lock(ctx, id)
	if err != nil {
		return Mutation{}, storeErr("update proxy", err)
	}
	defer unlock()
	base := s.replica.proxy(id)
	fromReplica := base != nil
	if base == nil {
		rec, rev, err := s.getProxyRecord(ctx, id)
		if err != nil {
			return Mutation{}, err
		}
		base = &proxyEntry{rec: rec, rev: rev}
	}
	now := s.Now()
	rec := base.rec.clone()
	rec.seal(base.rev)
	expired := rec.pruneExpired(now.Add(-s.opts.grace))
	err = fn(rec, now)
	if err != nil && !(errors.Is(err, errNoChange) && len(expired) > 0) {
		// A decision not to write rests on the record being current: one
		// taken on the replica's copy is confirmed on the leader's.
		if fromReplica {
			fresh, freshRev, gerr := s.getProxyRecord(ctx, id)
			switch {
			case gerr == nil && freshRev != base.rev:
				s.replica.applyProxy(id, fresh, freshRev, false)
				return Mutation{}, ErrCASConflict
			case errors.Is(gerr, model.ErrProxyNotFound):
				s.replica.applyProxy(id, nil, ^uint64(0), false)
				return Mutation{}, gerr
			case gerr != nil:
				return Mutation{}, gerr // unconfirmed: decide nothing
			}
		}
		if errors.Is(err, errNoChange) {
			return Mutation{Record: base.rec, Rev: base.rev}, nil
		}
		return Mutation{Record: base.rec, Rev: base.rev}, err
	}
	data := encodeRecord(rec)
	s.inflight.start(id, data, rec.clone())
	defer s.inflight.done(id)
	rev, err := s.proxies.Update(ctx, id, data, base.rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound) {
		if fresh, freshRev, gerr := s.getProxyRecord(ctx, id); gerr == nil {
			s.replica.applyProxy(id, fresh, freshRev, false)
		} else if errors.Is(gerr, model.ErrProxyNotFound) {
			s.replica.applyProxy(id, nil, ^uint64(0), false)
			return Mutation{}, gerr
		}
		return Mutation{}, ErrCASConflict
	}
	if err != nil {
		// A write whose answer did not come may still have committed; a
		// failed request must leave nothing behind, so find out.
		var committed bool
		if rev, committed = s.landed(id, data, base.rev); !committed {
			return Mutation{}, storeErr("update proxy", err)
		}
	}
	s.replica.applyProxy(id, rec, rev, false)
	m := Mutation{Record: rec, Rev: rev, Written: true}
	if len(expired) > 0 {
		m.Expired = s.finishLeases(ctx, rec, expired, model.LeaseExpired, now)
	}
	return m, nil
}

// DeleteProxy deletes a proxy. With live leases it refuses with ErrConflict
// unless force, which releases them in the same revision-checked delete; the
// released leases are returned for their events.
func (s *Store) DeleteProxy(ctx context.Context, id string, force bool) ([]model.Lease, error) {
	for attempt := 0; ; attempt++ {
		rec, rev, err := s.getProxyRecord(ctx, id)
		if err != nil {
			return nil, err
		}
		rec.seal(rev)
		now, horizon := s.Now(), s.Horizon()
		live := rec.LiveHolders(horizon)
		if live > 0 && !force {
			return nil, fmt.Errorf("%w: proxy %s has %d active leases; delete with force to release them", model.ErrConflict, id, live)
		}
		err = s.proxies.Delete(ctx, id, jetstream.LastRevision(rev))
		if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && s.deleted(id, rev) {
			err = nil // the answer was lost, not the delete
		}
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			if attempt >= s.opts.maxCASRetries {
				return nil, fmt.Errorf("%w: proxy %s kept changing", model.ErrUnavailable, id)
			}
			sleepJitter(ctx, backoff(attempt))
			continue
		}
		if err != nil {
			return nil, storeErr("delete proxy", err)
		}
		s.replica.applyProxy(id, nil, ^uint64(0), false)
		var released, expired []Holder
		for _, h := range rec.Holders {
			if h.ExpiresAt.After(horizon) {
				released = append(released, h)
			} else {
				expired = append(expired, h)
			}
		}
		s.reportExpired(s.finishLeases(ctx, rec, expired, model.LeaseExpired, now))
		return s.finishLeases(ctx, rec, released, model.LeaseReleased, now), nil
	}
}

// ApplyHealth records a health-check result's status and time on a proxy,
// never losing a concurrent lease change. It returns the proxy and its
// status before.
func (s *Store) ApplyHealth(ctx context.Context, id string, status model.ProxyStatus, checkedAt time.Time) (model.Proxy, model.ProxyStatus, Mutation, error) {
	var previous model.ProxyStatus
	m, err := s.MutateProxy(ctx, id, func(rec *ProxyRecord, _ time.Time) error {
		previous = rec.Status
		rec.Status = status
		t := checkedAt.UTC()
		rec.CheckedAt = &t
		return nil
	})
	if err != nil {
		return model.Proxy{}, "", m, err
	}
	return m.Record.Model(s.Horizon()), previous, m, nil
}

// deleted reports whether a delete of id based on rev committed although
// its answer was lost: the leader then holds a delete marker after rev.
func (s *Store) deleted(id string, rev uint64) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, seq, err := s.leaderGet(ctx, s.proxies, id)
	return errors.Is(err, errNotFound) && seq > rev
}

// landed reports whether an update of id to data, based on base, committed
// although its caller gave up waiting: the leader then holds exactly data at
// a later revision. Asked with a fresh deadline of its own.
func (s *Store) landed(id string, data []byte, base uint64) (uint64, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for attempt := 0; attempt < 3; attempt++ {
		got, rev, err := s.leaderGet(ctx, s.proxies, id)
		if err == nil {
			return rev, rev > base && bytes.Equal(got, data)
		}
		if errors.Is(err, errNotFound) {
			return 0, false
		}
		sleepJitter(ctx, 100*time.Millisecond)
	}
	s.log.Error("could not tell whether a proxy write committed; a lease it added lapses at its expiry", zap.String("proxy_id", id))
	return 0, false
}

func (s *Store) getProxyRecord(ctx context.Context, id string) (*ProxyRecord, uint64, error) {
	rec := new(ProxyRecord)
	rev, err := s.getJSON(ctx, s.proxies, id, rec)
	if errors.Is(err, errNotFound) {
		return nil, 0, fmt.Errorf("%w: proxy %q does not exist", model.ErrProxyNotFound, id)
	}
	if err != nil {
		return nil, 0, err
	}
	return rec, rev, nil
}

func newProxyRecord(pool *PoolRecord, seq uint64, in model.ProxyInput) *ProxyRecord {
	rec := &ProxyRecord{
		ID: uuid.NewString(), PoolID: pool.ID, PoolName: pool.Name, Seq: seq,
		Host: in.Host, Port: in.Port, Protocol: model.ProtocolHTTP, Status: model.ProxyActive,
		Credentials: in.Credentials, Source: in.Source, Country: in.Country, City: in.City,
		Latitude: in.Latitude, Longitude: in.Longitude, ISP: in.ISP, ASN: in.ASN,
		MaxConcurrency: in.MaxConcurrency, Holders: []Holder{},
	}
	if in.Protocol != nil {
		rec.Protocol = *in.Protocol
	}
	if in.Status != nil {
		rec.Status = *in.Status
	}
	return rec
}
