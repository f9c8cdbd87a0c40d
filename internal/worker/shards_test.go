package worker_test

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/worker"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
)

// TestShards runs a worker with --shards 3: pools that land in different
// shards are created, filled, leased, released and counted, each proxy's
// write lands in its pool's shard bucket, and a worker started with
// another shard count refuses to start, saying the recorded one.
func TestShards(t *testing.T) {
	srv := natstest.RunServer(t)
	wnc, cnc := natstest.Connect(t, srv), natstest.Connect(t, srv)
	ctx := t.Context()
	w, err := worker.Start(ctx, worker.Config{Conn: wnc, Shards: 3})
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Stop(ctx) })

	// One pool per shard.
	pools := poolPerShard(3)
	js, err := jetstream.New(cnc)
	require.NoError(t, err)
	for shard, pool := range pools {
		rep := acquireInNewPool(t, cnc, pool)
		var st model.PoolStatsSnapshot
		request(t, cnc, "pharox.stats", map[string]any{"pool_name": pool}, &st)
		require.Equal(t, 1, st.TotalLeases, pool)
		request(t, cnc, "pharox.release", map[string]any{"lease_id": rep.Lease.ID}, nil)
		request(t, cnc, "pharox.stats", map[string]any{"pool_name": pool}, &st)
		require.Equal(t, 0, st.TotalLeases, pool)
		// The ended lease is read back from its shard's history.
		var lease model.LeaseReply
		request(t, cnc, "pharox.leases.get", map[string]any{"lease_id": rep.Lease.ID}, &lease)
		require.Equal(t, model.LeaseReleased, lease.Lease.Status)
		// The proxy's key is in its pool's shard bucket and no other.
		for i := 0; i < 3; i++ {
			kv, err := js.KeyValue(ctx, kvstore.ProxiesBucketName(i, 3))
			require.NoError(t, err)
			_, err = kv.Get(ctx, rep.Lease.ProxyID)
			if i == shard {
				require.NoError(t, err, "shard %d", i)
			} else {
				require.ErrorIs(t, err, jetstream.ErrKeyNotFound, "shard %d", i)
			}
		}
	}
	var list model.ProxiesReply
	request(t, cnc, "pharox.admin.proxies.list", map[string]any{"pool_name": pools[2]}, &list)
	require.Len(t, list.Proxies, 1)
	request(t, cnc, "pharox.admin.proxies.delete", map[string]any{"proxy_id": list.Proxies[0].ID}, nil)

	// S = 1 names are not made for a sharded deployment.
	_, err = js.KeyValue(ctx, kvstore.ProxiesBucket)
	require.ErrorIs(t, err, jetstream.ErrBucketNotFound)

	other := natstest.Connect(t, srv)
	_, err = worker.Start(ctx, worker.Config{Conn: other, Shards: 1})
	require.ErrorIs(t, err, kvstore.ErrShardsMismatch)
	require.ErrorContains(t, err, "created with --shards 3")
	require.ErrorContains(t, err, "started with --shards 1")
}
