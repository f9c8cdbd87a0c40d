package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pharox/pharox-nats/internal/retry"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/record"
)

// CreatePool creates a pool's record and returns its revision; a name
// already taken is model.ErrConflict.
func (s *Store) CreatePool(ctx context.Context, rec *record.Pool) (uint64, error) {
	data, _ := json.Marshal(rec)
	rev, err := s.pools.Create(ctx, rec.Name, data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, model.Errorf(model.ErrConflict, "pool %q already exists", rec.Name)
	}
	if err != nil {
		return 0, storeErr("create pool", err)
	}
	return rev, nil
}

// GetPool reads a pool from the bucket's leader.
func (s *Store) GetPool(ctx context.Context, name string) (*record.Pool, uint64, error) {
	data, rev, err := s.leaderGet(ctx, s.pools, name)
	if errors.Is(err, errNotFound) {
		return nil, 0, PoolNotFound(name)
	}
	if err != nil {
		return nil, 0, err
	}
	rec, err := record.DecodePool(data)
	if err != nil {
		return nil, 0, fmt.Errorf("decode %s/%s: %w", PoolsBucket, name, err)
	}
	return rec, rev, nil
}

// UpdatePool applies fn to the pool's latest record with a revision-checked
// write, retrying fn on a concurrent change. It returns the record written
// and its revision.
//
// Every change of a pool (an add reserving its range of the added order, a
// settings update, a delete) goes through here, so adds at once to one
// pool collide on it: a write that lost is tried again, after a jittered
// backoff, for as long as ctx (the request's deadline) allows; only a ctx
// without a deadline gives up after maxCASRetries attempts. One that could
// not land answers unavailable: nothing was changed.
func (s *Store) UpdatePool(ctx context.Context, name string, fn func(*record.Pool) error) (*record.Pool, uint64, error) {
	_, bounded := ctx.Deadline()
	for attempt := 0; ; attempt++ {
		rec, rev, err := s.GetPool(ctx, name)
		if err != nil {
			return nil, 0, err
		}
		if err := fn(rec); err != nil {
			return nil, 0, err
		}
		data, _ := json.Marshal(rec)
		newRev, err := s.pools.Update(ctx, name, data, rev)
		if err == nil {
			return rec, newRev, nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return nil, 0, storeErr("update pool", err)
		}
		if !bounded && attempt+1 >= s.opts.maxCASRetries {
			return nil, 0, model.Errorf(model.ErrUnavailable, "pool %q kept changing under %d attempts", name, attempt+1)
		}
		retry.Sleep(ctx, retry.Backoff(attempt))
		if err := ctx.Err(); err != nil {
			return nil, 0, model.Errorf(model.ErrUnavailable, "pool %q kept changing under %d attempts: %w", name, attempt+1, err)
		}
	}
}

// DeletePoolAt deletes a pool's record if it is still at revision rev;
// ErrRevisionConflict otherwise.
func (s *Store) DeletePoolAt(ctx context.Context, name string, rev uint64) error {
	err := s.pools.Delete(ctx, name, jetstream.LastRevision(rev))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return ErrRevisionConflict
	}
	return storeErr("delete pool", err)
}

// PoolNotFound is the error for a pool name that names nothing.
func PoolNotFound(name string) error {
	return model.Errorf(model.ErrPoolNotFound, "pool %q does not exist", name)
}
