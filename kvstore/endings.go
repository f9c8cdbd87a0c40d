package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/internal/retry"
	"github.com/pharox/pharox-nats/model"
)

// PutEnding writes an ended lease's record, the only record a lease has of
// its own: active leases live in their proxies' holders, ended ones here.
// The ending has committed already, so neither a cancelled request nor a
// failed write may undo it: the write is retried for as long as a JetStream
// leader election takes (measured 4-9 s), and the caller waits.
func (s *Store) PutEnding(ctx context.Context, l model.Lease) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	data, _ := json.Marshal(l)
	var err error
	for attempt := 0; ctx.Err() == nil; attempt++ {
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = s.shardOfPool(l.PoolName).leases.Put(actx, l.ID, data)
		acancel()
		if err == nil {
			return
		}
		retry.Sleep(ctx, retry.Backoff(attempt))
	}
	s.log.Error("could not record a lease's ending; reads tell it from its last holder",
		zap.String("lease_id", l.ID), zap.String("status", string(l.Status)), zapErr(err))
}

// GetEnding reads an ended lease's record from the leader;
// model.ErrLeaseNotFound when there is none.
func (s *Store) GetEnding(ctx context.Context, leaseID string) (model.Lease, error) {
	var lease model.Lease
	var err error
	// A lease id does not say its pool: with several shards, each one's
	// history is read until one has it.
	for i := range s.shards {
		lease = model.Lease{}
		if _, err = s.getJSON(ctx, s.shards[i].leases, leaseID, &lease); !errors.Is(err, errNotFound) {
			break
		}
	}
	if errors.Is(err, errNotFound) {
		return lease, model.Errorf(model.ErrLeaseNotFound, "lease %q does not exist", leaseID)
	}
	return lease, err
}
