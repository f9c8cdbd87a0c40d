package manager_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/model"
)

// TestReplicaLag: a replica that applied everything has no lag; one whose
// feed stopped is behind by the time between the write it applied last and
// the bucket's last write; KnownPool and Waiters read the replica.
func TestReplicaLag(t *testing.T) {
	srv := natstest.RunServer(t)
	ctx := t.Context()
	behind, current := openManager(t, ctx, srv), openManager(t, ctx, srv)
	t.Cleanup(current.Close)
	_, err := current.CreatePool(ctx, model.PoolCreateRequest{Name: "first"})
	require.NoError(t, err)
	require.NoError(t, behind.CaughtUp(ctx))
	lag, err := behind.ReplicaLag(ctx)
	require.NoError(t, err)
	require.Zero(t, lag)
	require.True(t, behind.KnownPool("first"))
	require.False(t, behind.KnownPool("second"))

	behind.Close() // its feed stops here
	_, err = current.CreatePool(ctx, model.PoolCreateRequest{Name: "second"})
	require.NoError(t, err)
	lag, err = behind.ReplicaLag(ctx)
	require.NoError(t, err)
	require.Positive(t, lag, "the replica missed a write")
	require.False(t, behind.KnownPool("second"))

	require.NoError(t, current.CaughtUp(ctx))
	lag, err = current.ReplicaLag(ctx)
	require.NoError(t, err)
	require.Zero(t, lag)
	require.Zero(t, current.Waiters())

	// A waiting acquire is counted while it is parked.
	wait := 10.0
	got := make(chan *model.Lease, 1)
	go func() {
		lease, _, err := current.AcquireProxy(ctx, model.AcquireRequest{PoolName: "second", WaitSeconds: &wait})
		if err != nil {
			lease = nil
		}
		got <- lease
	}()
	deadline := time.Now().Add(10 * time.Second)
	for current.Waiters() != 1 {
		require.True(t, time.Now().Before(deadline), "the acquire never parked")
		time.Sleep(5 * time.Millisecond) // polling a count that has no event to wait on
	}
	_, err = current.AddProxies(ctx, model.ProxiesAddRequest{PoolName: "second", Proxies: []model.ProxyInput{{Host: "127.0.0.1", Port: 3128}}})
	require.NoError(t, err)
	require.NotNil(t, <-got, "the waiter got the new proxy")
	require.Zero(t, current.Waiters())
}
