package kvstore_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/record"
)

// A pool update that keeps losing to concurrent writes (here another
// writer changes the record during each attempt) is tried again until its
// context ends, however many attempts that takes, and then answers
// unavailable (503: nothing was changed), with the deadline as the cause.
func TestUpdatePoolRetriesUntilItsDeadline(t *testing.T) {
	srv := natstest.RunServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := kvstore.Open(ctx, natstest.Connect(t, srv))
	require.NoError(t, err)
	js, err := jetstream.New(natstest.Connect(t, srv))
	require.NoError(t, err)
	pools, err := js.KeyValue(ctx, kvstore.PoolsBucket)
	require.NoError(t, err)
	_, err = s.CreatePool(ctx, &record.Pool{ID: "p1", Name: "busy", NextSeq: 1})
	require.NoError(t, err)

	const deadline = 2500 * time.Millisecond
	uctx, ucancel := context.WithTimeout(ctx, deadline)
	defer ucancel()
	attempts := 0
	start := time.Now()
	_, _, err = s.UpdatePool(uctx, "busy", func(r *record.Pool) error {
		attempts++
		other := *r // another writer comes first
		other.CreatedAt = other.CreatedAt.Add(time.Second)
		data, _ := json.Marshal(&other)
		if _, err := pools.Put(ctx, "busy", data); err != nil {
			return err
		}
		r.NextSeq += 10
		return nil
	})
	took := time.Since(start)
	require.ErrorIs(t, err, model.ErrUnavailable)
	require.ErrorIs(t, err, context.DeadlineExceeded, "gave up after %d attempts in %v, before the deadline", attempts, took)
	require.GreaterOrEqual(t, took, deadline)
	got, _, err := s.GetPool(ctx, "busy")
	require.NoError(t, err)
	require.Equal(t, uint64(1), got.NextSeq, "a losing attempt changed the pool")
	t.Logf("%d attempts in %v", attempts, took)
}
