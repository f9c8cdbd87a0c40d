package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pharox/pharox-nats/model"
)

// CreatePool creates a pool; a name already taken is ErrConflict.
func (s *Store) CreatePool(ctx context.Context, name string, description *string) (model.ProxyPool, error) {
	rec := &PoolRecord{ID: uuid.NewString(), Name: name, Description: description, NextSeq: 1, CreatedAt: s.Now()}
	data, _ := json.Marshal(rec)
	rev, err := s.pools.Create(ctx, name, data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return model.ProxyPool{}, fmt.Errorf("%w: pool %q already exists", model.ErrConflict, name)
	}
	if err != nil {
		return model.ProxyPool{}, storeErr("create pool", err)
	}
	s.replica.applyPool(name, rec, rev, true)
	return rec.Model(), nil
}

// GetPool reads a pool from the bucket's leader.
func (s *Store) GetPool(ctx context.Context, name string) (*PoolRecord, uint64, error) {
	rec := new(PoolRecord)
	rev, err := s.getJSON(ctx, s.pools, name, rec)
	if errors.Is(err, errNotFound) {
		return nil, 0, poolNotFound(name)
	}
	if err != nil {
		return nil, 0, err
	}
	return rec, rev, nil
}

// ListPools lists every pool, oldest first.
func (s *Store) ListPools(ctx context.Context) ([]model.ProxyPool, error) {
	if err := s.syncReplica(ctx, s.pools); err != nil {
		return nil, err
	}
	entries := s.replica.allPools()
	out := make([]model.ProxyPool, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.rec.Model())
	}
	return out, nil
}

// UpdatePool applies fn to the pool's latest record with a revision-checked
// write, retrying fn on a concurrent change.
func (s *Store) UpdatePool(ctx context.Context, name string, fn func(*PoolRecord) error) (*PoolRecord, error) {
	for attempt := 0; ; attempt++ {
		rec, rev, err := s.GetPool(ctx, name)
		if err != nil {
			return nil, err
		}
		if err := fn(rec); err != nil {
			return nil, err
		}
		data, _ := json.Marshal(rec)
		newRev, err := s.pools.Update(ctx, name, data, rev)
		if err == nil {
			s.replica.applyPool(name, rec, newRev, false)
			return rec, nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return nil, storeErr("update pool", err)
		}
		if attempt >= s.opts.maxCASRetries {
			return nil, fmt.Errorf("%w: pool %q kept changing under %d attempts", model.ErrUnavailable, name, attempt+1)
		}
		sleepJitter(ctx, backoff(attempt))
	}
}

// DeletePool deletes a pool and its proxies. With live leases it refuses
// with ErrConflict unless force, which first releases them; the released
// leases are returned so the caller can publish their events.
func (s *Store) DeletePool(ctx context.Context, name string, force bool) ([]model.Lease, error) {
	if _, _, err := s.GetPool(ctx, name); err != nil {
		return nil, err
	}
	if err := s.syncReplica(ctx, s.proxies); err != nil {
		return nil, err
	}
	var ids []string
	live := 0
	horizon := s.Horizon()
	s.replica.scanMembers(name, func(e *proxyEntry) bool {
		ids = append(ids, e.rec.ID)
		live += e.rec.LiveHolders(horizon)
		return true
	})
	if live > 0 && !force {
		return nil, fmt.Errorf("%w: pool %q has %d active leases; delete with force to release them", model.ErrConflict, name, live)
	}
	var released []model.Lease
	for _, id := range ids {
		rel, err := s.DeleteProxy(ctx, id, force)
		if errors.Is(err, model.ErrProxyNotFound) {
			continue
		}
		released = append(released, rel...)
		if err != nil {
			return released, err
		}
	}
	if err := s.pools.Delete(ctx, name); err != nil {
		return released, storeErr("delete pool", err)
	}
	s.replica.applyPool(name, nil, ^uint64(0), true)
	return released, nil
}

// PoolExists answers from the replica and, when the replica does not know the
// pool, from the bucket's leader: a pool created on another worker a moment
// ago exists.
func (s *Store) PoolExists(ctx context.Context, name string) (*PoolRecord, error) {
	if e := s.replica.pool(name); e != nil {
		return e.rec, nil
	}
	rec, _, err := s.GetPool(ctx, name)
	return rec, err
}

func poolNotFound(name string) error {
	return fmt.Errorf("%w: pool %q does not exist", model.ErrPoolNotFound, name)
}
