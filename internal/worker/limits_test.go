package worker_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/model"
)

// TestLeasesPerConsumer: with a limit of 2, a consumer's third acquire
// (over every pool) is refused with 429 limit_reached naming the limit, a
// waiting one at once, and nothing changes; other consumers are not
// limited, and a release makes room again. A second worker, once its
// replica has a lease taken through the first, counts it too.
func TestLeasesPerConsumer(t *testing.T) {
	t.Parallel()
	_, nc := runServer(t)
	ctx := t.Context()
	workertest.Start(t, nc, workertest.Config{MaxLeasesPerConsumer: 2})
	c := client.New(nc, client.WithTimeout(timeout))
	for _, pool := range []string{"a", "b"} {
		_, err := c.CreatePool(ctx, model.PoolCreateRequest{Name: pool})
		require.NoError(t, err)
		_, err = c.AddProxies(ctx, model.ProxiesAddRequest{PoolName: pool, Proxies: []model.ProxyInput{{Host: "203.0.113.1", Port: 1}, {Host: "203.0.113.2", Port: 1}}})
		require.NoError(t, err)
	}
	acquire := func(pool, consumer string, wait float64) (*model.Lease, error) {
		l, _, err := c.Acquire(ctx, model.AcquireRequest{PoolName: pool, ConsumerName: &consumer, WaitSeconds: &wait})
		return l, err
	}
	first, err := acquire("a", "greedy", 0)
	require.NoError(t, err)
	require.NotNil(t, first)
	second, err := acquire("b", "greedy", 0)
	require.NoError(t, err)
	require.NotNil(t, second)

	before, err := c.Stats(ctx, "a")
	require.NoError(t, err)
	for _, wait := range []float64{0, 5} {
		start := time.Now()
		_, err = acquire("a", "greedy", wait)
		require.ErrorIs(t, err, model.ErrLimitReached)
		require.ErrorIs(t, err, client.ErrLimitReached)
		var ce *client.Error
		require.ErrorAs(t, err, &ce)
		require.Equal(t, 429, ce.Status)
		require.Equal(t, "limit_reached", ce.Code)
		require.Contains(t, ce.Message, `consumer "greedy" holds 2 active leases`)
		require.Contains(t, ce.Message, "--max-leases-per-consumer 2")
		require.Less(t, time.Since(start), 2*time.Second, "refused at once, not after wait_seconds")
	}
	after, err := c.Stats(ctx, "a")
	require.NoError(t, err)
	require.Equal(t, before.TotalLeases, after.TotalLeases, "nothing changed")

	other, err := acquire("a", "modest", 0)
	require.NoError(t, err)
	require.NotNil(t, other, "another consumer is not limited")

	_, err = c.Release(ctx, model.ReleaseRequest{LeaseID: first.ID})
	require.NoError(t, err)
	again, err := acquire("a", "greedy", 0)
	require.NoError(t, err)
	require.NotNil(t, again, "a release makes room")

	// A second worker (its own prefix, reading the same buckets) counts
	// the leases the first committed once its replica has them.
	workertest.Start(t, nc, workertest.Config{Prefix: "second", MaxLeasesPerConsumer: 2})
	c2 := client.New(nc, client.WithPrefix("second"), client.WithTimeout(timeout))
	st, err := c2.Stats(ctx, "b") // a read reflects every acknowledged write
	require.NoError(t, err)
	require.Equal(t, 1, st.TotalLeases)
	_, _, err = c2.Acquire(ctx, model.AcquireRequest{PoolName: "b", ConsumerName: ptr("greedy")})
	require.ErrorIs(t, err, client.ErrLimitReached)
}

// TestMaxWaiters: with room for one waiting acquire, a second is refused
// with 503 at once, changing nothing, while the first goes on waiting and
// gets the proxy when it is released.
func TestMaxWaiters(t *testing.T) {
	t.Parallel()
	_, nc := runServer(t)
	ctx := t.Context()
	w := workertest.Start(t, nc, workertest.Config{MaxWaiters: 1})
	c := client.New(nc, client.WithTimeout(timeout))
	_, err := c.CreatePool(ctx, model.PoolCreateRequest{Name: "one"})
	require.NoError(t, err)
	_, err = c.AddProxies(ctx, model.ProxiesAddRequest{PoolName: "one", Proxies: []model.ProxyInput{{Host: "203.0.113.1", Port: 1, MaxConcurrency: ptr(1)}}})
	require.NoError(t, err)
	held, _, err := c.Acquire(ctx, model.AcquireRequest{PoolName: "one"})
	require.NoError(t, err)
	require.NotNil(t, held)

	waited := make(chan *model.Lease, 1)
	go func() {
		l, _, err := c.Acquire(ctx, model.AcquireRequest{PoolName: "one", ConsumerName: ptr("patient"), WaitSeconds: ptr(20.0)})
		if err != nil {
			t.Errorf("the waiting acquire: %v", err)
		}
		waited <- l
	}()
	require.Eventually(t, func() bool { return w.Manager.Waiting() == 1 }, timeout, 5*time.Millisecond)

	start := time.Now()
	_, _, err = c.Acquire(ctx, model.AcquireRequest{PoolName: "one", ConsumerName: ptr("second"), WaitSeconds: ptr(20.0), RequestID: ptr("r-1")})
	require.ErrorIs(t, err, client.ErrUnavailable)
	var ce *client.Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, 503, ce.Status)
	require.Contains(t, ce.Message, "--max-waiters 1")
	require.Less(t, time.Since(start), 2*time.Second)
	require.Equal(t, 1, w.Manager.Waiting())

	_, err = c.Release(ctx, model.ReleaseRequest{LeaseID: held.ID})
	require.NoError(t, err)
	got := <-waited
	require.NotNil(t, got)
	require.Equal(t, "patient", got.ConsumerName)
	// The refused request changed nothing: its request_id starts afresh.
	_, err = c.Release(ctx, model.ReleaseRequest{LeaseID: got.ID})
	require.NoError(t, err)
	l, _, err := c.Acquire(ctx, model.AcquireRequest{PoolName: "one", ConsumerName: ptr("second"), RequestID: ptr("r-1")})
	require.NoError(t, err)
	require.NotNil(t, l)
}
