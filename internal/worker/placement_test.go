package worker_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/worker"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
)

// TestShardsSpreadLeaders runs workers with --shards 3 --replicas 3 on a
// 3-node cluster: a worker that starts puts the three proxies streams'
// leaders on three different nodes (read back through the JetStream API),
// again after an operator moved them all to one node; a placement lock
// held by another worker makes it leave them alone, one left by a dead
// worker is taken over; and pools of each shard lease afterwards.
func TestShardsSpreadLeaders(t *testing.T) {
	c := natstest.RunCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	streams := []string{kvstore.ProxiesStreamName(0, 3), kvstore.ProxiesStreamName(1, 3), kvstore.ProxiesStreamName(2, 3)}
	leaders := func() []string {
		t.Helper()
		return natstest.StreamLeaders(ctx, t, c, streams...)
	}
	requireSpread := func(ls []string) {
		t.Helper()
		require.ElementsMatch(t, []string{"n1", "n2", "n3"}, ls, "leaders of %v", streams)
	}
	allOn := func(node string) {
		t.Helper()
		for _, st := range streams {
			require.NoError(t, c.MoveStreamLeader(ctx, st, c.Node(node)))
		}
		require.Equal(t, []string{node, node, node}, leaders())
	}
	start := func() (*worker.Worker, *observer.ObservedLogs) {
		t.Helper()
		core, logs := observer.New(zap.InfoLevel)
		w, err := worker.Start(ctx, worker.Config{Conn: natstest.ConnectCluster(t, c), Shards: 3, Replicas: 3, Log: zap.New(core)})
		require.NoError(t, err)
		t.Cleanup(func() { _ = w.Stop(context.Background()) })
		return w, logs
	}

	// The first worker creates the buckets, wherever their leaders land,
	// and spreads them before it serves.
	w1, logs := start()
	requireSpread(leaders())
	placed := logs.FilterMessageSnippet("proxies stream leaders").All()
	require.Len(t, placed, 1)
	t.Logf("first start: %s %v", placed[0].Message, placed[0].ContextMap())

	// Another worker holds the lock: nothing is moved.
	allOn("n1")
	js, err := jetstream.New(natstest.ConnectCluster(t, c))
	require.NoError(t, err)
	requests, err := js.KeyValue(ctx, kvstore.RequestsBucket)
	require.NoError(t, err)
	lock, _ := json.Marshal(map[string]any{"holder": "other", "at": time.Now().UTC()})
	rev, err := requests.Create(ctx, kvstore.PlacementLockKey, lock)
	require.NoError(t, err)
	p, err := w1.Store.SpreadLeaders(ctx)
	require.NoError(t, err)
	require.Contains(t, p.Skipped, "another worker")
	require.Zero(t, p.StepDowns)
	require.Equal(t, []string{"n1", "n1", "n1"}, leaders())

	// A lock left by a worker that died is taken over (and given back).
	stale, _ := json.Marshal(map[string]any{"holder": "dead", "at": time.Now().Add(-time.Minute).UTC()})
	_, err = requests.Update(ctx, kvstore.PlacementLockKey, stale, rev)
	require.NoError(t, err)
	p, err = w1.Store.SpreadLeaders(ctx)
	require.NoError(t, err)
	require.Empty(t, p.Skipped)
	require.True(t, p.Balanced, "%+v", p)
	// Two of the three streams move off n1 (more only if a step-down
	// went to another node than the one it named).
	require.GreaterOrEqual(t, p.StepDowns, 2, "%+v", p)
	require.LessOrEqual(t, p.StepDowns, 4, "%+v", p)
	requireSpread(p.Leaders)
	requireSpread(leaders())
	t.Logf("rebalance from n1,n1,n1: %d step-downs in %s: %v", p.StepDowns, p.Took, p.Moved)
	_, err = requests.Get(ctx, kvstore.PlacementLockKey)
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound, "the lock is given back")

	// An operator put them all on n2: the next worker to start spreads them.
	allOn("n2")
	began := time.Now()
	_, logs = start()
	requireSpread(leaders())
	placed = logs.FilterMessage("spread the proxies stream leaders over the nodes").All()
	require.Len(t, placed, 1, "%v", logs.All())
	require.GreaterOrEqual(t, placed[0].ContextMap()["step_downs"], int64(2))
	t.Logf("second worker's start (%s): %v", time.Since(began), placed[0].ContextMap())

	// Pools of every shard lease through either worker.
	cnc := natstest.ConnectCluster(t, c)
	for _, pool := range poolPerShard(3) {
		rep := acquireInNewPool(t, cnc, pool)
		request(t, cnc, "pharox.release", map[string]any{"lease_id": rep.Lease.ID}, nil)
		var st model.PoolStatsSnapshot
		request(t, cnc, "pharox.stats", map[string]any{"pool_name": pool}, &st)
		require.Equal(t, 0, st.TotalLeases, pool)
	}
}
