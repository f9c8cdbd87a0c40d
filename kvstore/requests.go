package kvstore

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pharox/pharox-nats/internal/retry"
	"github.com/pharox/pharox-nats/model"
)

// RequestsBucket holds acquire idempotency keys: consumer + request_id ->
// the lease that request created. Concurrent duplicates on any number of
// workers are decided by one revision-checked Create, not by a local map.
const RequestsBucket = "PHAROX_REQUESTS"

type requestRecord struct {
	LeaseID   string    `json:"lease_id,omitempty"`
	ClaimedAt time.Time `json:"claimed_at"`
}

// RequestClaim is this worker's hold on an idempotency key while it
// acquires; Complete or Abandon ends it.
type RequestClaim struct {
	key string
	rev uint64
	s   *Store
}

// ClaimRequest decides what an acquire with a request_id does. When the key
// already names a lease that active says is still active, it returns that
// lease's id and a nil claim: answer with that lease. Otherwise it returns a
// claim: go on and acquire, then Complete (or Abandon). A claim left by a
// request that died is taken over after staleAfter.
func (s *Store) ClaimRequest(ctx context.Context, consumer, requestID string, staleAfter time.Duration, active func(ctx context.Context, leaseID string) (bool, error)) (string, *RequestClaim, error) {
	key := consumer + "." + base64.RawURLEncoding.EncodeToString([]byte(requestID))
	for {
		data, _ := json.Marshal(requestRecord{ClaimedAt: s.Now()})
		rev, err := s.requests.Create(ctx, key, data)
		if err == nil {
			return "", &RequestClaim{key: key, rev: rev, s: s}, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return "", nil, storeErr("claim request_id", err)
		}
		var rec requestRecord
		rev, err = s.getJSON(ctx, s.requests, key, &rec)
		switch {
		case errors.Is(err, errNotFound):
			continue // ended and removed in between: claim again
		case err != nil:
			return "", nil, err
		case rec.LeaseID != "":
			isActive, err := active(ctx, rec.LeaseID)
			if err != nil {
				return "", nil, err
			}
			if isActive {
				return rec.LeaseID, nil, nil
			}
			// That lease has ended: the key starts a new one.
			if err := s.requests.Delete(ctx, key, jetstream.LastRevision(rev)); err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				return "", nil, storeErr("reuse request_id", err)
			}
		case s.Now().Sub(rec.ClaimedAt) > staleAfter:
			data, _ := json.Marshal(requestRecord{ClaimedAt: s.Now()})
			if newRev, err := s.requests.Update(ctx, key, data, rev); err == nil {
				return "", &RequestClaim{key: key, rev: newRev, s: s}, nil
			}
		default:
			// A duplicate is acquiring right now: wait for its outcome.
			retry.Sleep(ctx, 10*time.Millisecond)
			if ctx.Err() != nil {
				return "", nil, model.Errorf(model.ErrUnavailable, "waiting for a concurrent request with the same request_id: %w", ctx.Err())
			}
		}
	}
}

// Complete records the lease the claimed request created.
func (c *RequestClaim) Complete(ctx context.Context, leaseID string) error {
	data, _ := json.Marshal(requestRecord{LeaseID: leaseID, ClaimedAt: c.s.Now()})
	_, err := c.s.requests.Update(ctx, c.key, data, c.rev)
	return storeErr("complete request_id", err)
}

// Abandon frees the key after a request that created no lease.
func (c *RequestClaim) Abandon() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.s.requests.Delete(ctx, c.key, jetstream.LastRevision(c.rev))
}
